"""The predefined environments: each defined by a Dockerfile on the code-interpreter base."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

_DIR = Path(__file__).parent / "predefined"


@dataclass(frozen=True)
class Predefined:
    name: str
    description: str
    dockerfile: str


def _load(name: str) -> Predefined:
    text = (_DIR / f"{name}.Dockerfile").read_text()
    description = text.splitlines()[0].lstrip("# ").strip()
    return Predefined(name, description, text)


PREDEFINED: tuple[Predefined, ...] = tuple(
    _load(n) for n in ("python-ml", "python-ffmpeg", "python-image", "python-scraping")
)

# Base environments shown in `orch env list`: name -> (base image recipe, description).
BASE_ENVIRONMENTS: dict[str, tuple[str, str]] = {
    "python": ("python", "Python 3.11, pip, uv (for .py agents)"),
    "node": ("node", "Node.js 20, npm, Python 3 (for .js agents)"),
}
