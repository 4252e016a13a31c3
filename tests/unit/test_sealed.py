"""The runtime's sealed in-memory copy (sandbox/sealed.py), on a plain host program."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from orch.sandbox import sealed


def program(tmp_path: Path, text: str) -> Path:
    """A small program that answers `--version` with `text`."""
    path = tmp_path / "tool"
    path.write_text(f"#!/bin/sh\necho {text}\n")
    path.chmod(0o755)
    return path


def test_the_copy_is_sealed_as_runc_checks_and_runs(tmp_path: Path) -> None:
    binary = program(tmp_path, "one")
    found = sealed.executable(str(binary))
    assert found.startswith(f"/proc/{os.getpid()}/fd/")
    fd = os.open(found, os.O_RDONLY)
    try:
        assert fcntl.fcntl(fd, fcntl.F_GET_SEALS) == sealed.SEALS  # runc's is_self_cloned()
    finally:
        os.close(fd)
    with pytest.raises(PermissionError), open(found, "r+b") as f:
        f.write(b"x")
    assert subprocess.run([found, "--version"], capture_output=True, text=True).stdout == "one\n"
    assert sealed.executable(str(binary)) == found  # made once


def test_a_changed_binary_is_copied_afresh(tmp_path: Path) -> None:
    binary = program(tmp_path, "one")
    first = sealed.executable(str(binary))
    replacement = tmp_path / "new"
    replacement.write_text("#!/bin/sh\necho two\n")
    replacement.chmod(0o755)
    replacement.replace(binary)  # as a package upgrade does: another inode
    second = sealed.executable(str(binary))
    assert first != second
    assert subprocess.run([second, "--version"], capture_output=True, text=True).stdout == "two\n"


def test_what_cannot_be_copied_is_run_as_it_is(tmp_path: Path) -> None:
    assert sealed.executable("no-such-runtime-here") == "no-such-runtime-here"
    broken = tmp_path / "broken"
    broken.write_text("#!/bin/sh\nexit 3\n")
    broken.chmod(0o755)
    assert sealed.executable(str(broken)) == str(broken)  # it would not run: the file is used


def test_runc_runs_from_its_copy() -> None:
    runc = shutil.which("runc")
    assert runc is not None, "scripts/setup installs runc"
    found = sealed.executable("runc")
    assert (
        found.startswith("/proc/")
        and "runc version" in subprocess.run([found, "--version"], capture_output=True, text=True).stdout
    )
