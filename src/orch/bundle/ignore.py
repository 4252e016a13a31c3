"""What `orch publish` leaves out of a bundle: tool and dependency directories, and `.orchignore`."""

from __future__ import annotations

from pathlib import Path

import pathspec

from orch.errors import InvalidInput

IGNORE_FILE = ".orchignore"
# Version control, installed dependencies (the sandbox installs them from requirements.txt or
# package.json) and caches: never part of an agent, and often most of a directory's size.
SKIPPED_NAMES = frozenset({".git", "node_modules", "__pycache__", ".venv", "venv"})


class Rules:
    """The skipping rules of one directory being packed; paths are relative and '/'-separated."""

    def __init__(self, spec: pathspec.GitIgnoreSpec) -> None:
        self._spec = spec

    @classmethod
    def load(cls, root: Path) -> Rules:
        """The built-in rules plus those of `root/.orchignore` (gitignore syntax), if it exists."""
        path = root / IGNORE_FILE
        try:
            lines = path.read_text(encoding="utf-8", errors="replace").splitlines() if path.is_file() else []
        except OSError as exc:
            raise InvalidInput(
                f"Can't read {path}: {exc.strerror}.", f"Fix the permissions of {IGNORE_FILE}."
            ) from None
        return cls(pathspec.GitIgnoreSpec.from_lines(lines))

    def skips_directory(self, rel: str, path: Path) -> bool:
        name = rel.rpartition("/")[2]
        return name in SKIPPED_NAMES or _is_virtualenv(name, path) or self._spec.match_file(rel + "/")

    def skips_file(self, rel: str) -> bool:
        if rel == IGNORE_FILE:
            return False  # kept, so that the bundle says what was left out of it
        name = rel.rpartition("/")[2]
        return name in SKIPPED_NAMES or name.endswith(".pyc") or self._spec.match_file(rel)


def _is_virtualenv(name: str, path: Path) -> bool:
    # Every virtualenv has pyvenv.cfg; `env` is a common name for one, but also for a package or a
    # directory of settings, so a directory called `env` is skipped only when it looks like one.
    markers = ["pyvenv.cfg", "bin/activate", "Scripts/activate.bat"] if name == "env" else ["pyvenv.cfg"]
    try:
        return any((path / marker).is_file() for marker in markers)
    except PermissionError:
        return False  # not ours to judge: the walk reports the directory it can't read
