"""The sandbox's init under runc runs from a copy only root may read (mode 0111): executed so,
it is non-dumpable and its agent cannot ptrace-attach it. One copy per version of the binary."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from orch.sandbox import runc


def test_the_copy_is_execute_only_made_once_and_anew_for_a_new_binary(tmp_path: Path) -> None:
    binary = tmp_path / "catatonit"
    binary.write_bytes(b"\x7fELF one")
    state = tmp_path / "state"
    copy = runc.unreadable_copy(binary, state)
    assert copy.parent == state and copy.read_bytes() == b"\x7fELF one"
    assert stat.S_IMODE(copy.stat().st_mode) == 0o111
    assert runc.unreadable_copy(binary, state) == copy
    binary.write_bytes(b"\x7fELF two, upgraded")
    os.utime(binary, ns=(1, 1))
    newer = runc.unreadable_copy(binary, state)
    assert newer != copy and newer.read_bytes() == b"\x7fELF two, upgraded"
    assert sorted(p.name for p in state.iterdir()) == sorted([copy.name, newer.name])  # no partial left
