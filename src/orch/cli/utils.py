"""What the CLI's commands share: the --json option, the style of their tables, --env KEY=VALUE,
float options that must be numbers, the name a bundle directory gets by default and the text of
its manifest, what a follower says when the server goes.

The bundle packer is imported where it is used: every command imports this module, and the
packer's models (pydantic) alone cost more than a light command's whole run."""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from orch.cli.output import Table, err_console
from orch.client.follow import lost_server
from orch.errors import InvalidInput, ServerUnreachable
from orch.text import utf8

if TYPE_CHECKING:
    from orch.bundle import Bundle

JSON = typer.Option(False, "--json", help="Print JSON (a stable contract for scripts).")


def plain_table() -> Table:
    """An empty table in the CLI's one style: no borders, bold headers, flush left. Its columns
    are key columns, never cut on a terminal, unless added with `key=False` (output.Table)."""
    return Table()


def finite(value: float | None, option: str) -> None:
    """InvalidInput for a float option given nan, inf, or a number too large to hold (1e400 reads
    as inf), none of which a JSON request can carry."""
    if value is None or math.isfinite(value):
        return
    why = "" if math.isnan(value) else ": it is infinite, or too large to hold (such as 1e400)"
    raise InvalidInput(f"{option} {value} is not a number{why}.", f"Pass {option} with a number such as 0.5.")


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
    from orch.models import check_name

    if name is not None:  # given: checked here, as the server would (`--name ''` is not "none")
        check_name(
            name, f"{what.capitalize()} name", id_prefix={"agent": "agt_", "service": "svc_"}.get(what, "")
        )
    if not path.is_dir():
        raise InvalidInput(
            f"{str(path)!r} is not a directory.", f"Pass the {what}'s directory, e.g. `{example}`."
        )
    return name if name is not None else default_name(path, what), pack_directory(path, what=what)


def default_name(root: Path, what: str) -> str:
    """The name of the agent or service in directory `root`: orch.yaml's `name:`, else the
    directory's name made valid."""
    from orch.bundle import parse_manifest

    for candidate in ("orch.yaml", "orch.yml"):
        path = root / candidate
        if path.is_file():
            name = parse_manifest(manifest_text(path), candidate).name
            if name:
                return name
    slug = re.sub(r"[^a-z0-9._-]+", "-", root.resolve().name.lower()).strip("-._")
    if not slug:
        raise InvalidInput(f"Cannot make the {what}'s name from {root}.", "Pass --name NAME.")
    return slug[:63]


def manifest_text(path: Path) -> str:
    """The text of the manifest (orch.yaml) at `path`, read within the bundle's bound for it."""
    from orch.bundle.limits import MAX_MANIFEST_BYTES
    from orch.reading import read_bounded

    too_large = InvalidInput(
        f"{path.name} is larger than {MAX_MANIFEST_BYTES // 2**20} MiB, the most a manifest may be.",
        "Keep only the manifest's keys in it.",
    )
    try:
        data = read_bounded(path, MAX_MANIFEST_BYTES, too_large)
    except OSError as e:
        raise InvalidInput(f"Cannot read {str(path)!r}: {e.strerror}.", "Make it a readable file.") from None
    return utf8(data, path.name, f"Save {path.name} as UTF-8.")


def confirm_delete(question: str, what: str) -> None:
    """Ask `question` (y/N) on a terminal before deleting `what`; without one, --yes is needed
    (InvalidInput). Anything but y or yes (Enter, n, the end of input) deletes nothing: it is
    said, on a line of its own, and the command exits 1 (docs/cli.md)."""
    if not terminal_input():
        raise InvalidInput(f"Deleting {what} needs confirmation.", "Pass --yes to delete without asking.")
    sys.stdout.write(f"{question} [y/N]: ")
    sys.stdout.flush()
    answer = sys.stdin.buffer.readline(1024)  # Ctrl-C here is Ctrl-C: 130 (output.errors_to_exit)
    if not answer.endswith(b"\n"):  # Ctrl-D: the prompt's line is still open
        sys.stdout.write("\n")
        sys.stdout.flush()
    if answer.strip().lower() not in (b"y", b"yes"):
        err_console.print("Nothing was deleted.")
        raise typer.Exit(1)


def terminal_input() -> bool:
    """Whether standard input is a terminal someone can answer a question on."""
    return sys.stdin is not None and sys.stdin.isatty()


@contextmanager
def following(followed: str, fix: str) -> Iterator[None]:
    """Following `followed` (a build, a deployment) that the server has answered for: a server
    that goes meanwhile is said as `orch run` says it (client/follow.py's `lost_server`, exit 1),
    with `fix` (what becomes of it, and the command that follows or shows it once the server
    answers again), not as a server never reached, which reads as if nothing was done."""
    try:
        yield
    except ServerUnreachable:
        raise lost_server(followed, fix) from None
