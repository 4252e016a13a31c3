"""`orch admin`: operator commands that work on this machine directly, without a server.

What the commands use (the builder, the engine, the sandbox, the store) is imported in them:
`orch --help` imports this module to list it."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING

import typer

from orch import config
from orch.cli.output import command, console, ok, print_json, warn
from orch.errors import OrchError

if TYPE_CHECKING:
    from orch.services import host_check

app = typer.Typer(help="Operator commands that act on this machine directly.", no_args_is_help=True)


@app.command("build-images")
@command
def build_images(
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only the result."),
) -> None:
    """Build the base images that are missing or whose recipe changed; reuse the others.

    Base images of older recipes that nothing uses are removed. With a registry set
    (ORCH_REGISTRY), the missing ones another machine pushed are pulled, and those this one made
    are pushed."""
    from orch.builder import base_images
    from orch.engine import PodmanEngine

    cfg = config.load()
    engine = PodmanEngine()
    todo = base_images.missing(engine)
    store = None
    digests: dict[str, str] = {}
    if cfg.registry:  # the digests are in the store every machine shares
        from orch.services import base_digests
        from orch.store import Store
        from orch.store.db import check_url

        check_url(cfg.database_url)  # said as a server's start says it, not as a bug
        store = Store(cfg.database_url)
        store.migrate()
        digests = base_digests.known(store)

    def show(line: str) -> None:
        if not quiet:
            console.print(line, markup=False, highlight=False, soft_wrap=True)

    try:
        images = base_images.ensure(engine, cfg, show, digests=digests)
        for name, info in images.items():
            tag = base_images.image_tag(name)
            mark = "reused" if name not in todo else "pulled" if tag in digests else "built"
            ok(f"{tag}  {info.size / 1e6:.0f} MB  ({mark})")
        if store is not None:
            show(f"Pushing the base images to {cfg.registry}")
            tags = {name: base_images.image_tag(name) for name in images}
            for name, digest in base_digests.push(engine, cfg, store, tags).items():
                ok(f"{tags[name]}  {digest}")
    finally:
        if store is not None:
            store.dispose()
    for tag in base_images.prune(engine):
        ok(f"{tag}  removed (an older recipe)")


@app.command("check")
@command
def check(json_: bool = typer.Option(False, "--json", help="Print the report as JSON.")) -> None:
    """Check that this machine can run sandboxes and builds; exit 1 with what is missing.

    It checks the host packages the engine needs, then runs one sandbox and one build step. What
    weakens sandboxes without stopping them is printed as a warning (the exit stays 0)."""
    from orch.services import host_check

    def show(name: str, seconds: float) -> None:
        if not json_:
            ok(f"{name}  ({seconds:.1f} s)")

    try:
        report = _check(show)
    except OrchError as e:  # before the check could start (the settings, the store): its problem
        if not json_:
            raise
        report = host_check.Report(problem=e)
    if json_:
        print_json(report.to_dict())
        if report.problem:
            raise typer.Exit(report.problem.exit_code)
        return
    for warning in report.warnings:
        warn(warning)
    if report.problem:
        raise report.problem
    ok("This machine can run orch's sandboxes and builds.")


def _check(on_step: Callable[[str, float], None]) -> host_check.Report:
    """The machine's self-check (`host_check.run`) on this ORCH_HOME's settings and store."""
    from orch.engine import PodmanEngine
    from orch.sandbox import runc
    from orch.services import host_check
    from orch.services.platform import Platform
    from orch.store import Store

    cfg = config.load()
    platform = Platform(cfg, Store(cfg.database_url), PodmanEngine())
    platform.launchers = dict(runc.launchers(platform.container_prefix))
    try:
        return host_check.run(platform, on_step)
    finally:
        for launcher in platform.launchers.values():
            # A Podman that cannot be run (the check says why) holds no image for a launcher.
            with contextlib.suppress(FileNotFoundError):
                launcher.close()
