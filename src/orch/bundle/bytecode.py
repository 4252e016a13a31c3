"""The bytecode of a bundle's own Python modules, compiled once where the bundle is extracted.

Each run copies the bundle into its working directory, a tmpfs that goes with the sandbox, so
Python's own cache of compiled modules is lost with every run: an agent of several modules paid
for compiling them all at each start (a module of 1,000 lines: ~6 ms). With their bytecode in
the bundle's `__pycache__`, copied with the files, a run imports them compiled.

The cache files are "checked-hash" ones (PEP 552): Python uses one only while the hash of the
source matches it, so an agent that edits its own modules imports its edits, and the copy's new
modification times do not matter. They name the server's Python (`cpython-311`); a sandbox
whose image has another Python ignores them and compiles, as before.

The source is a user's, and the compiler is not hardened against hostile input, so it runs in a
child process with bounds on its time and memory; a failure only costs the gain. Compiled: each
regular `.py` file, never a link, in a directory that has no `__pycache__` of the bundle's own,
and only when the bundle has two or more of them (a single module has none of its own to import;
the entrypoint is run, never imported from a cache).

A module's cache is kept only when it takes no more of the working directory (a tmpfs, in whole
pages) than the module itself: so a run's copy of the bundle never takes more than twice its
modules, the bound publish counts with before it measures (services/agents.py). Terse code can
compile to five times its size (`f(x, y)` on every line); a bundle of such modules that fit its
working directory did not fit with their caches, and every run of it failed before its start.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import subprocess
import sys
from pathlib import Path

from orch.sandbox.spec import on_tmpfs

log = logging.getLogger(__name__)

TIMEOUT = 60.0  # seconds for the whole bundle
MEMORY = 1 << 30  # bytes of address space for the compiling process

# Run as `python -I -S -c _COMPILE ROOT`, the paths (relative to ROOT) on stdin, NUL-separated.
_COMPILE = f"""\
import os, py_compile, resource, sys
resource.setrlimit(resource.RLIMIT_AS, ({MEMORY}, {MEMORY}))
os.umask(0o022)  # readable by the sandbox's user, whatever the server's umask
for rel in sys.stdin.read().split("\\0"):
    if rel:
        try:
            py_compile.compile(sys.argv[1] + "/" + rel, doraise=True,
                               invalidation_mode=py_compile.PycInvalidationMode.CHECKED_HASH)
        except Exception:
            pass  # a syntax error, say: the run reports it, as without a cache
"""


def modules(root: Path) -> list[str]:
    """The `.py` files under `root` to compile, relative to it: regular files only, links and
    what they lead to left out, and none in a directory holding a `__pycache__` of its own."""
    found: list[str] = []
    for top, dirs, files in os.walk(root):  # never follows a link to a directory
        own_cache = os.path.lexists(Path(top, "__pycache__"))  # a directory, file or link
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        if own_cache:
            continue
        for name in sorted(files):
            path = Path(top, name)
            if name.endswith(".py") and path.is_file() and not path.is_symlink():
                found.append(path.relative_to(root).as_posix())
    return found


def compile_modules(root: Path) -> int:
    """Write the bytecode of the bundle's modules under `root` next to them (`__pycache__`);
    return how many there were to compile (0: fewer than two, nothing done)."""
    found = modules(root)
    if len(found) < 2:
        return 0
    try:
        done = subprocess.run(
            [sys.executable, "-I", "-S", "-c", _COMPILE, str(root)],
            input="\0".join(found).encode(),
            capture_output=True,
            timeout=TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        log.warning("the bytecode of %s was not compiled: %s", root.name, e)
        return len(found)
    if done.returncode != 0:
        why = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or [f"exit {done.returncode}"]
        log.warning("the bytecode of %s was not compiled: %s", root.name, why[0])
    _drop_larger_than_source(root, found)
    return len(found)


def _drop_larger_than_source(root: Path, found: list[str]) -> None:
    """Remove each cache that takes more pages than its module (see the module's docstring)."""
    for rel in found:
        source = root / rel
        cached = Path(importlib.util.cache_from_source(str(source)))
        try:
            if on_tmpfs([cached.stat().st_size]) > on_tmpfs([source.stat().st_size]):
                cached.unlink()
        except FileNotFoundError:
            pass  # not compiled (a syntax error, say)
