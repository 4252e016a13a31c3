"""Exec and file refusals of sandboxes on demand say what the server applied and counted, through
the API and the CLI on the fake holder (docs/sandboxes.md)."""

from __future__ import annotations

import json
from urllib.parse import quote

import httpx

from orch.sandbox.held_fake import FakeHolder
from orch.services.platform import Platform
from tests.api.test_sandboxes import NDJSON, cli, create, error, holder  # fixtures

__all__ = ["cli", "holder"]


def test_a_timeout_is_said_as_the_server_applied_it(cli, api: httpx.Client, platform: Platform) -> None:  # type: ignore[no-untyped-def]
    """F4: with a lifetime under 60 s the server gave a command the lifetime, and the CLI said
    "timed out after 60 s", its own default. The answer says the timeout it applied."""
    platform.config = platform.config.with_values(sandbox_lifetime=1)
    sb = create(api)
    url = f"/v1/sandboxes/{sb['id']}/exec"
    collected = api.post(url, json={"command": ["sleep", "5"]}).json()
    assert (collected["timed_out"], collected["timeout"]) == (True, 1)
    lines = [
        json.loads(x) for x in api.post(url, json={"command": ["true"]}, headers=NDJSON).text.splitlines()
    ]
    assert lines[-1] == {"exit_code": 0, "duration": lines[-1]["duration"], "timed_out": False, "timeout": 1}
    res = cli("sandbox", "exec", sb["id"], "--", "sleep", "5")
    assert res.exit_code == 124
    assert "timed out after 1 s; it was killed." in res.stderr and "60 s" not in res.stderr
    res = cli("sandbox", "exec", sb["id"], "--timeout", "0.2", "--", "sleep", "5")
    assert res.exit_code == 124 and "timed out after 0.2 s" in res.stderr


def test_a_variable_too_large_is_said_by_the_size_the_limit_counts(
    api: httpx.Client, holder: FakeHolder
) -> None:
    """F2: `A` of 131,070 bytes was said as "131,070 bytes; Linux takes at most 131,071": the
    limit counts NAME=value, 131,072 bytes here."""
    sb = create(api)
    url = f"/v1/sandboxes/{sb['id']}/exec"
    resp = api.post(url, json={"command": ["true"], "env": {"A": "b" * 131070}})
    assert error(resp, 400) == (
        "The environment variable A is 131,072 bytes as NAME=value; Linux takes at most 131,071 in "
        "one variable (NAME=value)."
    )
    assert api.post(url, json={"command": ["true"], "env": {"A": "b" * 131069}}).status_code == 200


def test_a_name_is_counted_in_bytes_before_anything_is_sent(api: httpx.Client, holder: FakeHolder) -> None:
    """F7: a name of 128 'é' (256 bytes) passed the check, which counted characters, and came
    back from the sandbox as "Could not write /tmp ...: File name too long", with a fix about
    permissions."""
    sb = create(api)
    files = f"/v1/sandboxes/{sb['id']}/files"
    name = "é" * 128
    resp = api.put(f"{files}?path=/tmp&name={quote(name)}", content=b"x")
    assert error(resp, 400) == (
        "The file name is 256 bytes long (128 characters); Linux takes at most 255 bytes in one file name."
    )
    assert "shorter name" in resp.json()["fix"]
    resp = api.put(files, params={"path": f"/tmp/{name}"}, content=b"x")
    assert error(resp, 400).startswith("A name in the path is 256 bytes long (128 characters);")
    resp = api.get(files, params={"path": f"/tmp/{name}/x"})
    assert error(resp, 400).startswith("A name in the path is 256 bytes long")
    assert not holder.last().files
    ok = "é" * 127 + "a"  # 255 bytes
    assert api.put(f"{files}?path=/tmp&name={quote(ok)}", content=b"x").json()["path"] == f"/tmp/{ok}"
