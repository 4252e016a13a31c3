"""The two languages an entrypoint can be written in; each picks a base image."""

from __future__ import annotations

from enum import StrEnum


class Language(StrEnum):
    PYTHON = "python"  # `*.py`: the python base image
    NODE = "node"  # `*.js`: the Node.js base image

    @property
    def label(self) -> str:
        """The language's name in messages."""
        return "Python" if self is Language.PYTHON else "JavaScript"


def language_of(path: str) -> Language | None:
    """The language of a file by its suffix, or None when it is neither `.py` nor `.js`."""
    if path.endswith(".py"):
        return Language.PYTHON
    if path.endswith(".js"):
        return Language.NODE
    return None
