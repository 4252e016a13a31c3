"""`orch admin`: operator commands that work on this machine directly, without a server."""

from __future__ import annotations

import typer

from orch import config
from orch.builder import base_images
from orch.cli.output import command, console, ok
from orch.engine import PodmanEngine

app = typer.Typer(help="Operator commands that act on this machine directly.", no_args_is_help=True)


@app.command("build-images")
@command
def build_images(
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only the result."),
) -> None:
    """Build the base images whose recipe changed or that are missing; reuse the others, and
    remove those of older recipes that nothing uses."""
    cfg = config.load()
    engine = PodmanEngine()
    todo = base_images.missing(engine)

    def show(line: str) -> None:
        if not quiet:
            console.print(line, markup=False, highlight=False, soft_wrap=True)

    images = base_images.ensure(engine, cfg, show)
    for name, info in images.items():
        mark = "built" if name in todo else "reused"
        ok(f"{base_images.image_tag(name)}  {info.size / 1e6:.0f} MB  ({mark})")
    for tag in base_images.prune(engine):
        ok(f"{tag}  removed (an older recipe)")
