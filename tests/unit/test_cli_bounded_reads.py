"""What the CLI reads of a user's file or standard input is bounded by the documented limit
(orch.reading.read_bounded): an endless source (/dev/zero, `yes |`), a sparse file of 100 GiB or a
config.toml that links to a device end in one sentence and exit 2, never in a process that grows
until the machine's memory is gone (it did: 23 GB). Each command runs as its own `orch` process
under an address-space limit, so that an unbounded read ends in MemoryError, not in the OOM killer.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from orch.errors import InvalidInput
from orch.reading import read_bounded

MEMORY = 1_500_000_000  # bytes of address space each `orch` may take: far less than a bad read


def _orch(
    args: list[str], home: Path, stdin: object = subprocess.DEVNULL
) -> subprocess.CompletedProcess[str]:
    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY, MEMORY))

    env = {**os.environ, "ORCH_HOME": str(home), "ORCH_URL": "http://127.0.0.1:9", "ORCH_TOKEN": "t"}
    return subprocess.run(
        [sys.executable, "-c", "from orch.cli.main import main; main()", *args],
        stdin=stdin,
        capture_output=True,
        text=True,
        env=env,
        preexec_fn=limited,
        timeout=120,
        check=False,
    )


@pytest.fixture
def sparse(tmp_path: Path) -> Path:
    path = tmp_path / "big100g"
    with path.open("wb") as f:
        f.truncate(100 * 2**30)  # sparse: no disk, no time
    return path


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["env", "validate", "-f", "/dev/zero"], "The Dockerfile '/dev/zero' is larger than 1 MiB"),
        (["env", "create", "-f", "/dev/zero", "-n", "zz"], "The Dockerfile '/dev/zero' is larger than 1 MiB"),
        (["env", "validate", "-f", "-"], "The Dockerfile on standard input is larger than 1 MiB"),
        (
            ["run", "summarizer", "--input", "@/dev/zero"],
            "The input in '/dev/zero' is larger than 131,060 bytes",
        ),
        (["run", "summarizer", "--input", "-"], "The input on standard input is larger than 131,060 bytes"),
        (
            ["sandbox", "cp", "/dev/zero", "sbx_abcdefghij:x"],
            "'/dev/zero' is larger than the 64 MiB a sandbox",
        ),
        (
            ["sandbox", "cp", "-", "sbx_abcdefghij:x"],
            "The standard input is larger than the 64 MiB a sandbox",
        ),
        (["sandbox", "exec", "sbx_abcdefghij", "-i", "--", "cat"], "The standard input is larger than 1 MiB"),
        (["secret", "set", "ZZ"], "The value on standard input is larger than 64 KiB"),
    ],
)
def test_an_endless_source_is_refused_with_its_limit(tmp_path: Path, args: list[str], said: str) -> None:
    with open("/dev/zero", "rb") as zeros:  # `-` reads it as standard input
        res = _orch(args, tmp_path / "home", stdin=zeros)
    assert res.returncode == 2, res.stderr
    assert said in res.stderr and "unexpectedly" not in res.stderr


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["sandbox", "cp", "{file}", "sbx_abcdefghij:big"], "is larger than the 64 MiB a sandbox takes"),
        (["run", "summarizer", "--input", "@{file}"], "is larger than 131,060 bytes"),
        (["env", "validate", "-f", "{file}"], "is larger than 1 MiB"),
    ],
)
def test_a_huge_sparse_file_is_refused_unread(
    tmp_path: Path, sparse: Path, args: list[str], said: str
) -> None:
    res = _orch([a.format(file=sparse) for a in args], tmp_path / "home")
    assert res.returncode == 2, res.stderr
    assert said in res.stderr and "unexpectedly" not in res.stderr


def test_a_config_file_that_links_to_a_device_is_refused(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.toml").symlink_to("/dev/zero")
    res = _orch(["env", "list"], home)
    assert res.returncode == 2, res.stderr
    assert f"{home / 'config.toml'} is not a regular file" in res.stderr


def test_a_file_within_the_limit_is_read_whole(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x" * 10)
    refused = InvalidInput("too large", "")
    assert read_bounded(path, 10, refused) == b"x" * 10
    assert read_bounded(str(path), 10, refused) == b"x" * 10
    with pytest.raises(InvalidInput, match="too large"):
        read_bounded(path, 9, refused)


def test_a_pipe_is_read_up_to_its_limit_and_one_byte(monkeypatch: pytest.MonkeyPatch) -> None:
    """A writer that never stops: what is read is the limit and one byte, then the refusal."""
    read_end, write_end = os.pipe()
    writer = subprocess.Popen(["yes"], stdout=write_end)
    os.close(write_end)
    try:
        with os.fdopen(read_end, "rb") as pipe:
            monkeypatch.setattr(sys, "stdin", type("Stdin", (), {"buffer": pipe})())
            with pytest.raises(InvalidInput, match="too large"):
                read_bounded("-", 4096, InvalidInput("too large", ""))
    finally:
        writer.kill()
        writer.wait()


def test_a_closed_standard_input_reads_as_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", None)
    assert read_bounded("-", 10, InvalidInput("too large", "")) == b""
