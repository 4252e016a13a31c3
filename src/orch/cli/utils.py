"""What the CLI's commands share: the --json option, the style of their tables, and the name a
bundle directory gets by default.

The table and the bundle packer are imported where they are used: every command imports this
module, and the packer's models (pydantic) alone cost more than a light command's whole run."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from orch.errors import InvalidInput

if TYPE_CHECKING:
    from rich.table import Table

    from orch.bundle import Bundle

JSON = typer.Option(False, "--json", help="Print JSON (a stable contract for scripts).")


def plain_table() -> Table:
    """An empty table in the CLI's one style: no borders, bold headers, flush left."""
    from rich.table import Table

    return Table(box=None, header_style="bold", pad_edge=False)


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
