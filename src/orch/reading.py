"""Reading a user's file or standard input within a bound, the one way the CLI and the settings
read what a user names (a Dockerfile, a run's input, a file to copy, config.toml, ...).

Every such read has a documented limit, and nothing more than the limit and one byte is ever
read: `/dev/zero`, `yes |`, a pipe that never ends or a sparse file of 100 GiB end at once in
the caller's sentence (exit 2), never in a process that grows until the machine runs out of
memory. A regular file is measured first, so one far over the limit is not read at all.
"""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

from orch.errors import InvalidInput

STDIN = "-"  # the name that stands for standard input, as the CLI's options take it


def read_bounded(source: str | Path, limit: int, too_large: InvalidInput) -> bytes:
    """The bytes of file `source` (`-`: standard input), at most `limit` of them; past that,
    `too_large` is raised, having read at most `limit + 1` bytes. Opening or reading the file
    raises OSError as open() does (the caller says which file and what to do); a closed standard
    input reads as nothing."""
    if str(source) == STDIN and not isinstance(source, Path):
        stream = sys.stdin.buffer if sys.stdin is not None else None
        data = stream.read(limit + 1) if stream is not None else b""
    else:
        with open(source, "rb") as f:  # a FIFO waits for its writer here, as `cat` does
            info = os.fstat(f.fileno())
            if stat.S_ISREG(info.st_mode) and info.st_size > limit:
                raise too_large
            data = f.read(limit + 1)
    if len(data) > limit:
        raise too_large
    return data
