"""The helper a warm sandbox waits in (handoff.c), and the message that hands it a run.

The helper is a small static program, built from handoff.c by the machine's C compiler (scripts/
setup installs gcc and the static C library) the first time a launcher needs it, and kept under
the launcher's state directory named after its source's hash: a changed source builds anew,
and there is nothing to install or keep in step by hand.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import struct
import subprocess
import threading
from collections.abc import Sequence
from pathlib import Path

log = logging.getLogger(__name__)
SOURCE = Path(__file__).with_name("handoff.c")
MAGIC = b"orch"
_lock = threading.Lock()


class Unavailable(Exception):
    """The helper could not be built here (no C compiler): sandboxes start cold."""


def binary(state: Path) -> Path:
    """The built helper under `state`, built first if missing. Raises Unavailable."""
    return build(SOURCE, state)


def build(source_file: Path, state: Path) -> Path:
    """The static program built from the C file `source_file` under `state`, named after the
    file's stem and its source's hash, built first if missing (this helper, and the relay of
    sandbox/relay.py). Raises Unavailable."""
    source = source_file.read_bytes()
    path = state / f"{source_file.stem}-{hashlib.sha256(source).hexdigest()[:16]}"
    if path.exists():
        return path
    with _lock:
        if path.exists():
            return path
        compiler = shutil.which("cc") or shutil.which("gcc")
        if compiler is None:
            raise Unavailable("no C compiler (cc) is installed")
        state.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}")
        res = subprocess.run(
            [compiler, "-static", "-Os", "-s", "-o", str(partial), str(source_file)],
            capture_output=True,
            text=True,
            check=False,
        )
        if res.returncode != 0:
            partial.unlink(missing_ok=True)
            raise Unavailable(f"building {source_file.name} failed: {res.stderr.strip()[-300:]}")
        partial.chmod(0o755)
        os.replace(partial, path)  # another process building the same source wins alike
        log.info("built %s", path)
        return path


def message(argv: Sequence[str], env: Sequence[str], copy: tuple[str, str] | None = None) -> bytes:
    """What hands a run to the helper: its command and its whole environment (NAME=VALUE); with
    `copy` (FROM, TO), what the helper first copies as `cp -R FROM/. TO/` would (handoff.c)."""
    fields = [*(copy or ("", "")), str(len(argv)), *argv, *env]
    if any("\0" in f for f in fields):
        raise ValueError("a command's argument or environment holds a NUL byte")
    payload = b"\0".join(f.encode() for f in fields) + b"\0"
    return MAGIC + struct.pack(">I", len(payload)) + payload
