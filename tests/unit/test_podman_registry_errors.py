"""PodmanEngine's push and pull against a stand-in `podman` that fails as Podman does: what the
error says is one sentence, from Podman's last `Error:` line, not its retries' warnings."""

from __future__ import annotations

from pathlib import Path

import pytest

from orch.engine.podman import _REGISTRY_FIX, PodmanEngine
from orch.errors import EngineError

BLOB = "sha256:c0da15936ceded53b3dbfefe742c76d8facc70e9c2bb07337d7d1ec2a124804c"
DIGEST_REF = "127.0.0.1:18899/orch/python@sha256:" + "0" * 64
# What Podman 4 says when nothing listens at the registry's address: a warning for each retry,
# then the error, the same chain four times (over 1,000 characters).
REFUSED = 'Get \\"http://127.0.0.1:18899/v2/\\": dial tcp 127.0.0.1:18899: connect: connection refused'
PUSH_REFUSED = "".join(
    f'time="2026-12-06T22:32:0{n}Z" level=warning msg="Failed, retrying in 1s ... ({n}/3). Error: '
    f'trying to reuse blob {BLOB} at destination: pinging container registry 127.0.0.1:18899: {REFUSED}"\n'
    for n in (1, 2, 3)
) + (
    f"Error: trying to reuse blob {BLOB} at destination: pinging container registry 127.0.0.1:18899: "
    f"{REFUSED.replace(chr(92), '')}\n"
)
PULL_REFUSED = PUSH_REFUSED.replace(
    f"trying to reuse blob {BLOB} at destination", f"initializing source docker://{DIGEST_REF}"
)
NO_SUCH_HOST = (
    "Error: initializing source docker://registry.invalid/x@sha256:0: pinging container registry "
    'registry.invalid: Get "https://registry.invalid/v2/": dial tcp: lookup registry.invalid on '
    "127.0.0.53:53: no such host\n"
)
PLAIN_HTTP = (
    "Error: trying to reuse blob sha256:0 at destination: pinging container registry 127.0.0.1:5000: "
    'Get "https://127.0.0.1:5000/v2/": http: server gave HTTP response to HTTPS client\n'
)
MANIFEST_UNKNOWN = (
    f"Error: initializing source docker://{DIGEST_REF}: reading manifest sha256:0 in "
    "127.0.0.1:18899/orch/python: manifest unknown\n"
)

FAKE = """#!/bin/sh
cat "{said}" >&2
exit 125
"""


def engine(tmp_path: Path, stderr: str) -> PodmanEngine:
    (tmp_path / "said").write_text(stderr)
    script = tmp_path / "podman"
    script.write_text(FAKE.format(said=tmp_path / "said"))
    script.chmod(0o755)
    return PodmanEngine(binary=str(script))


def test_an_unreachable_registry_is_one_sentence_on_push(tmp_path: Path) -> None:
    with pytest.raises(EngineError) as failed:
        engine(tmp_path, PUSH_REFUSED).push_image("localhost/orch/python:1", "127.0.0.1:18899/orch/python:1")
    assert failed.value.message == (
        "podman push of localhost/orch/python:1 to 127.0.0.1:18899/orch/python:1 failed: "
        "the registry at 127.0.0.1:18899 could not be reached (connection refused)."
    )
    assert failed.value.fix == _REGISTRY_FIX


def test_an_unreachable_registry_is_one_sentence_on_pull(tmp_path: Path) -> None:
    with pytest.raises(EngineError) as failed:
        engine(tmp_path, PULL_REFUSED).pull_image(DIGEST_REF, "localhost/orch/python:1")
    assert failed.value.message == (
        f"podman pull of {DIGEST_REF} failed: "
        "the registry at 127.0.0.1:18899 could not be reached (connection refused)."
    )
    assert failed.value.fix == _REGISTRY_FIX


@pytest.mark.parametrize(
    ("stderr", "said"),
    [
        (NO_SUCH_HOST, "the registry at registry.invalid could not be reached (no such host)."),
        (
            PLAIN_HTTP,
            "the registry at 127.0.0.1:5000 could not be reached "
            "(server gave HTTP response to HTTPS client).",
        ),
        # Not a registry that did not answer: Podman's last line, as it is.
        (
            MANIFEST_UNKNOWN,
            f"initializing source docker://{DIGEST_REF}: reading manifest sha256:0 in "
            "127.0.0.1:18899/orch/python: manifest unknown.",
        ),
        # No `Error:` line at all: the last lines, as before.
        ("something odd\n", "something odd."),
    ],
)
def test_a_failed_pull_says_podman_s_last_error_only(tmp_path: Path, stderr: str, said: str) -> None:
    with pytest.raises(EngineError) as failed:
        engine(tmp_path, stderr).pull_image(DIGEST_REF, "localhost/orch/python:1")
    assert failed.value.message == f"podman pull of {DIGEST_REF} failed: {said}"
    assert "retrying" not in failed.value.message
