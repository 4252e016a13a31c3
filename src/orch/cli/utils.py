"""What the CLI's commands share: the --json option, the style of their tables, --env KEY=VALUE,
float options that must be numbers, and the name a bundle directory gets
by default.

The bundle packer is imported where it is used: every command imports this module, and the
packer's models (pydantic) alone cost more than a light command's whole run."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from orch.cli.output import Table
from orch.errors import InvalidInput
from orch.text import utf8

if TYPE_CHECKING:
    from orch.bundle import Bundle

JSON = typer.Option(False, "--json", help="Print JSON (a stable contract for scripts).")


def plain_table() -> Table:
    """An empty table in the CLI's one style: no borders, bold headers, flush left."""
    return Table()


def finite(value: float | None, option: str) -> None:
    """InvalidInput for a float option given nan or inf (which no JSON request can carry)."""
    if value is not None and not math.isfinite(value):
        raise InvalidInput(f"{option} {value} is not a number.", f"Pass {option} with a number such as 0.5.")


def variables(pairs: list[str]) -> dict[str, str]:
    """The environment variables of repeated `--env KEY=VALUE` options."""
    found = {}
    for pair in pairs:
        utf8(pair, f"--env {pair.partition('=')[0]!r}", "Pass values as UTF-8 text.")
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InvalidInput(f"--env {pair!r} is not KEY=VALUE.", "Pass e.g. --env LOG_LEVEL=debug.")
        found[key] = value
    return found


def packed(path: Path, name: str | None, what: str, example: str) -> tuple[str, Bundle]:
    """The name and the bundle of the `what` (agent, service) in directory `path`; `example` is a
    command line that shows how to pass a directory."""
    from orch.bundle import pack_directory

    if not path.is_dir():
        raise InvalidInput(
            f"{str(path)!r} is not a directory.", f"Pass the {what}'s directory, e.g. `{example}`."
        )
    return name or default_name(path, what), pack_directory(path)


def default_name(root: Path, what: str) -> str:
    """The name of the agent or service in directory `root`: orch.yaml's `name:`, else the
    directory's name made valid."""
    from orch.bundle import parse_manifest

    for candidate in ("orch.yaml", "orch.yml"):
        path = root / candidate
        if path.is_file():
            text = utf8(path.read_bytes(), candidate, f"Save {candidate} as UTF-8.")
            name = parse_manifest(text, candidate).name
            if name:
                return name
    slug = re.sub(r"[^a-z0-9._-]+", "-", root.resolve().name.lower()).strip("-._")
    if not slug:
        raise InvalidInput(f"Cannot make the {what}'s name from {root}.", "Pass --name NAME.")
    return slug[:63]
