"""What the CLI's commands share: the --json option, the style of their tables, --env KEY=VALUE,
and the name a bundle directory gets by default.

The bundle packer is imported where it is used: every command imports this module, and the
packer's models (pydantic) alone cost more than a light command's whole run."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from orch.cli.output import Table
from orch.errors import InvalidInput

if TYPE_CHECKING:
    from orch.bundle import Bundle

JSON = typer.Option(False, "--json", help="Print JSON (a stable contract for scripts).")


def plain_table() -> Table:
    """An empty table in the CLI's one style: no borders, bold headers, flush left."""
    return Table()


def variables(pairs: list[str]) -> dict[str, str]:
    """The environment variables of repeated `--env KEY=VALUE` options."""
    found = {}
    for pair in pairs:
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
            name = parse_manifest(path.read_text(encoding="utf-8-sig"), candidate).name
            if name:
                return name
    slug = re.sub(r"[^a-z0-9._-]+", "-", root.resolve().name.lower()).strip("-._")
    if not slug:
        raise InvalidInput(f"Cannot make the {what}'s name from {root}.", "Pass --name NAME.")
    return slug[:63]
