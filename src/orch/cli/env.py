"""`orch env`: list, inspect, create, validate, delete environments and set the default."""

from __future__ import annotations

import contextlib
import re
import sys
import time
from collections.abc import Iterator
from typing import Any

import typer

from orch.cli import interrupt
from orch.cli.output import Console, command, console, err_console, escape, ok, print_json, warn
from orch.cli.terminal_text import TerminalText, shown
from orch.cli.utils import JSON, confirm_delete, following, plain_table
from orch.client.transport import Transport, check_name, listed, segment
from orch.errors import InvalidInput, NotFound, OrchError
from orch.reading import STDIN, read_bounded

app = typer.Typer(help="Environments: the images sandboxes run in.", no_args_is_help=True)

FINAL = {"ready", "failed"}
POLL = 0.5


# The most bytes of a Dockerfile read: 4 for each of the 262,144 characters the validator takes
# (orch.dockerfile.bounded.MAX_TEXT), the API's own bound. A longer text (more characters than the
# validator takes, whatever they are) is refused before it is all read.
DOCKERFILE_BYTES = 4 * 256 * 1024


def _read_dockerfile(path: str) -> str:
    # Bytes, decoded alike from a file and from stdin, so the same bytes get the same verdict
    # as through the API: no newline translation (a lone CR is no line break to BuildKit), and
    # bytes that are not UTF-8 kept as surrogates, which validation reports on their line.
    what = "The Dockerfile on standard input" if path == STDIN else f"The Dockerfile {path!r}"
    too_large = InvalidInput(
        f"{what} is larger than 1 MiB: more than the 262,144 characters a Dockerfile may have.",
        "Pass a Dockerfile of at most 262,144 characters (docs/environments.md).",
    )
    try:
        data = read_bounded(path, DOCKERFILE_BYTES, too_large)
    except FileNotFoundError:
        raise InvalidInput(f"There is no file {path!r}.", "Pass the path of a Dockerfile with -f.") from None
    except IsADirectoryError:
        raise InvalidInput(
            f"{path!r} is a directory.", f"Pass the file itself, e.g. -f {path}/Dockerfile."
        ) from None
    except OSError as e:
        raise InvalidInput(f"Cannot read {path!r}: {e}.", "Pass a readable file.") from None
    return data.decode("utf-8", errors="surrogateescape")


def _status_json(env: dict[str, Any]) -> dict[str, Any]:
    keys = (
        "id",
        "name",
        "kind",
        "status",
        "cache",
        "cache_reason",
        "build_id",
        "error",
        "default",
        "image",
        "image_digest",
    )
    out = {k: env.get(k) for k in keys}
    build = env.get("build") or {}
    out["failed_step"] = build.get("failed_step")
    out["duration"] = build.get("duration")
    out["size_bytes"] = build.get("size_bytes")
    out["base_image"] = build.get("base_image")
    out["log_excerpt"] = build.get("log_tail") or None
    return out


def print_findings(findings: list[dict[str, object]], out: Console = console) -> None:
    """A Dockerfile's findings, one a line (also how `orch publish --docker` and `orch service
    deploy` say those of a bundle's Dockerfile the server rejected, on stderr)."""
    for f in findings:
        colour = "red" if f["severity"] == "error" else "yellow"
        where = f"line {f['line']}" if f["line"] else "file"
        instr = f"  {f['instruction']}" if f["instruction"] else ""
        text = escape(f"{f['message']} {f['fix']}")
        out.print(f"  [{colour}]{where}{escape(instr)}[/{colour}]  {text}", soft_wrap=True)


def _summary(findings: list[dict[str, object]]) -> str:
    warnings = sum(1 for f in findings if f["severity"] == "warning")
    return f" ({warnings} warning{'s' if warnings != 1 else ''})" if warnings else ""


@app.command("list")
@command
def list_(json_: bool = JSON) -> None:
    """List environments: ids, names (★ marks the workspace default), kind and status."""
    envs = listed(Transport.from_settings().get("/v1/environments"))
    if json_:
        print_json(
            [
                {k: e[k] for k in ("id", "name", "kind", "status", "default", "description", "image")}
                for e in envs
            ]
        )
        return
    colours = {"ready": "green", "failed": "red", "building": "cyan", "queued": "cyan"}
    rows = [
        (e["id"], e["name"] + (" ★" if e["default"] else ""), e["kind"], e["status"], e["description"] or "")
        for e in envs
    ]
    table = plain_table()
    for col in ("ID", "NAME", "KIND", "STATUS"):
        table.add_column(col)  # ids and names are what users type next: never cut
    table.add_column("DESCRIPTION", key=False)  # it gives way
    for id_, name, kind, status, description in rows:
        colour = colours.get(status, "dim")
        table.add_row(id_, name, kind, f"[{colour}]{status}[/]", escape(description))
    console.print(table)


@app.command()
@command
def status(
    env: str = typer.Argument(..., help="Environment id or name."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Stream the build log until it ends."),
    json_: bool = JSON,
) -> None:
    """Show an environment's build: status, progress, cache hit or miss, and logs."""
    client = Transport.from_settings()
    data = client.get(f"/v1/environments/{segment(env)}")
    # A finished build is followed too: its whole log is printed, then the outcome.
    if follow and data["status"] != "not-built" and not (json_ and data["status"] in FINAL):
        data = follow_build(
            client, data["id"], quiet=json_, logs=not json_, name=data["name"], build_id=data["build_id"]
        )
    if json_:
        print_json(_status_json(data))
    else:
        _print_status(client, data, show_log=not follow)
    if data["status"] == "failed":
        raise typer.Exit(1)


@app.command()
@command
def logs(
    env: str = typer.Argument(..., help="Environment id or name."),
    build: str | None = typer.Option(
        None, "--build", metavar="ID", help="A build id of this environment (default: its latest build)."
    ),
    follow: bool = typer.Option(
        False, "--follow", "-f", help="Keep printing while it builds, until the build ends."
    ),
    json_: bool = JSON,
) -> None:
    """Print the whole log of an environment's latest build (or of --build ID)."""
    if follow and json_:
        raise InvalidInput("--follow and --json don't go together.", "Leave out one of them.")
    if build is not None and not re.fullmatch(r"bld_[0-9a-z]{1,60}", build):
        shown = repr(build) if len(build) <= 80 else f"{build[:40]!r}… ({len(build):,} characters)"
        raise InvalidInput(
            f"--build {shown} is not a build id.",
            "Build ids look like bld_0123456789; `orch env status ENV` shows the latest build's.",
        )
    client = Transport.from_settings()
    data = client.get(f"/v1/environments/{segment(env)}")
    path = f"/v1/environments/{segment(data['id'])}/logs"
    params: dict[str, Any] = {"build": build} if build else {}
    offset, text, open_line = 0, [], False
    log_out = TerminalText(sys.stdout, console.is_terminal)  # see cli/terminal_text.py
    # Only a follower is said to have lost the server: a log read once fails as any command.
    again = f"orch env logs {data['name']}{f' --build {build}' if build else ''} -f"
    watched = (
        _following_build(client, data["id"], data["name"], build or data.get("build_id"), again=again)
        if follow
        else _deleted_meanwhile(client, data["id"], data["name"])
    )
    # Following, Ctrl-C is how it ends: 0, whatever another Ctrl-C a moment later does.
    with interrupt.FirstOnly() if follow else contextlib.nullcontext():
        try:
            with watched:
                while True:
                    chunk = client.get(path, params={**params, "offset": offset})
                    offset = chunk["offset"]
                    if chunk["build_id"]:  # the same build to its end, should another one be queued
                        params["build"] = chunk["build_id"]
                    if json_:
                        text.append(chunk["text"])
                    elif chunk["text"]:
                        log_out.write(chunk["text"])
                        sys.stdout.flush()
                        open_line = not chunk["text"].endswith("\n")
                    if chunk["more"]:
                        continue
                    if not follow or chunk["status"] in FINAL or chunk["build_id"] is None:
                        break
                    time.sleep(POLL)
        except KeyboardInterrupt:
            raise typer.Exit(0) from None
        except OrchError:  # said on stderr next: on a terminal, on a line of its own
            log_out.end()
            if open_line and console.is_terminal:
                sys.stdout.write("\n")
            raise
        finally:
            log_out.end()
    if json_:
        print_json(
            {"id": data["id"], "name": data["name"], "build_id": chunk["build_id"], "status": chunk["status"]}
            | {"log": "".join(text)}
        )
    elif offset == 0:
        _no_log_note(data, chunk)


@contextlib.contextmanager
def _following_build(
    client: Transport,
    env_id: str,
    name: str | None = None,
    build_id: str | None = None,
    created: bool = False,
    again: str | None = None,
) -> Iterator[None]:
    """Following build `build_id` of environment `env_id` (`name`, else its id): the one place
    that says what ended the following early. An environment deleted meanwhile is said as such
    (`_deleted_meanwhile`); a server that goes is said as lost (utils.following), with what was
    stored (the environment, when this command `created` it) and what becomes of the build: it
    goes on, or a server that stops queues it again (workers/builds.py's `_interrupted`; a
    killed one's next start does), and `again` (default `orch env logs NAME -f`) follows it."""
    shown = name or env_id
    build = f"the build {build_id}" if build_id else "the build"
    kept = f"The environment {shown} was created, and its build is kept" if created else "The build is kept"
    fix = (
        f"{kept}: it goes on, or, if the server stopped, runs again once it is back (a build "
        f"stopped twice fails). Once the server answers, `{again or f'orch env logs {shown} -f'}` "
        "follows it."
    )
    with following(f"{build} of environment {shown}", fix), _deleted_meanwhile(client, env_id, name):
        yield


@contextlib.contextmanager
def _deleted_meanwhile(client: Transport, env_id: str, name: str | None = None) -> Iterator[None]:
    """Following the build of environment `env_id`: one deleted meanwhile (its build stopped
    with it) is said as such, rather than as an id this workspace has no environment of."""
    try:
        yield
    except NotFound:
        try:
            client.get(f"/v1/environments/{segment(env_id)}")
        except NotFound:
            raise OrchError(
                f"The environment {name or env_id} was deleted while it was being built; its "
                "build was stopped with it.",
                "`orch env list` shows the workspace's environments.",
            ) from None
        raise


def _no_log_note(e: dict[str, Any], chunk: dict[str, Any]) -> None:
    """Why there is nothing to print (on stderr, so that stdout holds only the log)."""
    if e["kind"] == "base":
        note = f"{e['name']} is a base environment: the platform builds its image, with no build log here."
    elif chunk["build_id"] is None:
        note = f"{e['name']} was never built; `orch env build {e['name']}` builds it."
    elif chunk["status"] == "ready":
        note = f"Build {chunk['build_id']} has no log: it was a cache hit, so nothing was built."
    elif chunk["status"] == "failed":  # before any step ran (the disk reserve, the base image)
        why = e.get("error") if e.get("build_id") == chunk["build_id"] else None
        why = escape(shown(why, err_console.is_terminal)) if why else None  # it may quote the step
        said = f": {why}" if why else f"; `orch env status {e['name']}` says why"
        note = f"Build {chunk['build_id']} failed before it wrote any output{said}"
    else:
        note = f"Build {chunk['build_id']} has no output yet; `orch env logs {e['name']} -f` follows it."
    err_console.print(note, soft_wrap=True)


def _print_status(client: Transport, e: dict[str, Any], show_log: bool) -> None:
    b = e.get("build") or {}
    console.print(
        f"[bold]{e['name']}[/bold]  {e['id']}  ({e['kind']}){'  ★ workspace default' if e['default'] else ''}"
    )
    console.print(f"  status   {e['status']}")
    if e.get("image"):
        console.print(f"  image    {e['image']}")
    if e.get("image_digest"):
        console.print(f"  digest   {e['image_digest']}")
    if b.get("base_image"):
        console.print(f"  base     {b['base_image']}")
    if b:
        cache = b["cache"] + (f" ({escape(b['cache_reason'])})" if b["cache_reason"] else "")
        console.print(f"  build    {b['id']}  cache {cache}")
        if b["status"] == "building" and b["total_steps"]:
            text = shown(b["step_text"][:80], console.is_terminal)  # the Dockerfile's: untrusted
            console.print(f"  progress step {b['step']}/{b['total_steps']}  {escape(text)}")
        if b.get("duration") is not None:
            size = f" · {b['size_bytes'] / 1e6:.0f} MB" if b.get("size_bytes") else ""
            console.print(f"  took     {b['duration']:.1f} s{size}")
    elif e["status"] == "not-built":
        console.print("  built on first use, or now with `orch env build " + e["name"] + "`")
    if e["status"] == "failed":
        _print_failure(e)
    elif show_log and b and e["status"] != "ready":
        lines = _last_lines(client, e["id"])
        if lines:
            console.print("  last lines of the log:")
            for line in lines:  # a build's output: made safe on a terminal (cli/terminal_text.py)
                console.print(f"    {escape(shown(line, console.is_terminal))}", soft_wrap=True)


def _last_lines(client: Transport, env_id: str, count: int = 15) -> list[str]:
    """The log's last lines so far, without reading the whole of a long log."""
    path = f"/v1/environments/{segment(env_id)}/logs"
    chunk = client.get(path)
    if not chunk.get("more"):
        return list(chunk["text"].splitlines()[-count:])
    chunk = client.get(path, params={"offset": max(chunk["size"] - 16384, 0)})
    return list(chunk["text"].splitlines()[1:][-count:])  # the first line may be cut


def _print_failure(e: dict[str, Any]) -> None:
    b = e.get("build") or {}
    terminal = err_console.is_terminal  # the error quotes the step, the excerpt its output
    error = shown(e.get("error") or "unknown error", terminal)
    err_console.print(f"[red]✗[/red] Build failed: {escape(error)}", soft_wrap=True)
    # The server's excerpt: the failing step, its error lines and the last lines, so the line
    # that says why (often far from the end) is shown.
    for line in (b.get("log_tail") or "").splitlines():
        err_console.print(f"    {escape(shown(line, terminal))}", soft_wrap=True, style="dim")
    name = e["name"]
    if not b.get("failed_step"):
        # Not a step of the Dockerfile (a timeout, a push, a server stopped twice): the error
        # says what to do.
        err_console.print(f"  Whole log: orch env logs {name}", soft_wrap=True)
        return
    fix = (  # an environment keeps its Dockerfile: a fixed one is a new environment
        f"Fix the step, then `orch env delete {name} --yes` and create it again"
        if e.get("kind") == "custom"
        else f"Build it again with `orch env build {name}` once the cause is fixed"
    )
    err_console.print(f"  {fix}; whole log: orch env logs {name}", soft_wrap=True)


def follow_build(
    client: Transport,
    env_id: str,
    quiet: bool = False,
    logs: bool = True,
    deadline: float = 6 * 3600,
    name: str | None = None,
    build_id: str | None = None,
    created: bool = False,
) -> dict[str, Any]:
    """Show a progress bar (and the log, if `logs`) until the build ends; return the final state.
    With `quiet` (--json: standard output holds only the JSON) there is no bar, and the log, if
    `logs`, goes to stderr. An environment deleted meanwhile, or a server that goes, is said as
    such (`_following_build`: `name`, else its id; `build_id`; `created`: this command created
    the environment)."""
    # Here rather than at the top: `orch env list` and the other quick commands import this module.
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    offset = 0
    end = time.monotonic() + deadline
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[step]}"),
        TimeElapsedColumn(),
        console=console.rich(),
        transient=True,
        # Piped or redirected, a bar can't redraw: it would leave only a blank line behind.
        disable=quiet or not console.rich().is_terminal,
    )
    with progress, _following_build(client, env_id, name, build_id, created):
        task = progress.add_task("Building", total=None, step="queued")

        def show(chunk: dict[str, Any]) -> None:
            if not logs:
                return
            if quiet:  # --json --logs: the log on stderr, as it came (cli/terminal_text.py)
                for line in chunk["text"].splitlines():
                    err_console.print(
                        f"  {shown(line, err_console.is_terminal)}", markup=False, style="dim", soft_wrap=True
                    )
                return
            for line in chunk["text"].splitlines():  # a build's output: made safe on a terminal
                text = shown(line, console.is_terminal)
                progress.console.print(f"  {escape(text)}", style="dim", soft_wrap=True)

        while True:
            chunk = client.get(f"/v1/environments/{segment(env_id)}/logs", params={"offset": offset})
            offset = chunk["offset"]
            show(chunk)
            if chunk.get("more") and logs:
                continue  # catching up with a long log: no wait
            data: dict[str, Any] = client.get(f"/v1/environments/{segment(env_id)}")
            b = data.get("build") or {}
            desc = f'Building {data["id"]} "{data["name"]}"'
            if b.get("total_steps"):
                # The Dockerfile's text: made safe (the bar is shown on a terminal only).
                step = f"step {b['step']}/{b['total_steps']}  {shown(b['step_text'][:40])}"
                progress.update(
                    task,
                    description=desc,
                    total=b["total_steps"],
                    completed=max(b["step"] - 1, 0),
                    step=escape(step),
                )
            else:
                progress.update(task, description=desc, step=data["status"])
            if data["status"] in FINAL:
                while logs:  # the rest, to its end
                    chunk = client.get(f"/v1/environments/{segment(env_id)}/logs", params={"offset": offset})
                    offset = chunk["offset"]
                    show(chunk)
                    if not chunk.get("more"):
                        break
                return data
            if time.monotonic() > end:
                raise OrchError(
                    "Gave up following the build.", f"Check later with `orch env status {env_id}`."
                )
            time.sleep(POLL)


def _print_ready(data: dict[str, Any]) -> None:
    b = data.get("build") or {}
    if b.get("cache") == "hit":
        ok(f"Ready at once · cache hit ({escape(b.get('cache_reason') or '')})")
        return
    size = f" · {b['size_bytes'] / 1e6:.0f} MB" if b.get("size_bytes") else ""
    took = f" in {b['duration']:.1f} s" if b.get("duration") is not None else ""
    ok(f"Ready{took}{size} · cache miss ({escape(b.get('cache_reason') or '')})")


def _detached_logs(detach: bool, logs: bool) -> None:
    """--detach returns once the build is queued; --logs streams its log while it is waited for:
    asked together, one would be dropped without a word (docs/cli.md)."""
    if detach and logs:
        raise InvalidInput(
            "--detach and --logs don't go together: a detached build is not waited for.",
            "Leave out one of them; `orch env logs ENV -f` follows a detached build's log.",
        )


def _wait_and_report(
    client: Transport,
    data: dict[str, Any],
    detach: bool,
    logs: bool,
    json_: bool,
    already: bool = False,
    created: bool = False,
) -> None:
    """After a create or build: follow it unless detached, print the outcome, exit 1 on failure.
    `already`: the build is one that was under way before (nothing new was queued); `created`:
    the environment is new (said, should the server go while the build is followed)."""
    follow = f"Follow it with `orch env status {data['name']} --follow`."
    if already and not json_ and data["status"] not in FINAL:
        note = f"{data['name']} is already being built ({data['build_id']}); no other build was queued."
        if detach:
            ok(f"{note} {follow}")
            return
        ok(f"{note} Following it.")
    if not detach and data["status"] not in FINAL:
        data = follow_build(
            client,
            data["id"],
            quiet=json_,
            logs=logs,
            name=data["name"],
            build_id=data["build_id"],
            created=created,
        )
    if json_:
        print_json(_status_json(data))
    elif data["status"] == "ready":
        _print_ready(data)
    elif data["status"] == "failed":
        _print_failure(data)
    else:
        ok(f'Queued {data["id"]} "{data["name"]}". {follow}')
    if data["status"] == "failed":
        raise typer.Exit(1)


@app.command()
@command
def create(
    file: str = typer.Option(
        ..., "--file", "-f", metavar="FILE", help="The Dockerfile ('-' reads standard input)."
    ),
    name: str = typer.Option(
        ..., "--name", "-n", help="A name for the environment, unique in the workspace."
    ),
    no_cache: bool = typer.Option(False, "--no-cache", help="Build even when a cached image matches."),
    detach: bool = typer.Option(False, "--detach", "-d", help="Return once the build is queued."),
    logs: bool = typer.Option(
        False, "--logs", help="Stream the build log while it builds (with --json, on stderr)."
    ),
    json_: bool = JSON,
) -> None:
    """Create a custom environment from a Dockerfile and build it (or reuse a cached build).

    With --json and --logs, the JSON is printed at the end and the log streamed on stderr."""
    _detached_logs(detach, logs)  # before anything is read or created
    from orch import dockerfile  # the validator and its parser: only for the commands that validate

    text = _read_dockerfile(file)
    validation = dockerfile.validate(text)
    findings = [f.to_dict() for f in validation.findings]
    if not validation.ok:
        if json_:
            print_json(validation.to_dict())
        else:
            console.print("[red]✗[/red] Dockerfile rejected; nothing was created.")
            print_findings(findings)
        raise typer.Exit(2)
    if not json_:
        ok(f"Dockerfile valid{_summary(findings)}")
        print_findings(findings)
    client = Transport.from_settings()
    data = client.post("/v1/environments", json={"name": name, "dockerfile": text, "no_cache": no_cache})
    _wait_and_report(client, data, detach, logs, json_, created=True)


@app.command()
@command
def validate(
    file: str = typer.Option(
        ..., "--file", "-f", metavar="FILE", help="The Dockerfile ('-' reads standard input)."
    ),
    json_: bool = JSON,
) -> None:
    """Check a Dockerfile without building it (works offline). Exit 0 when it can be built."""
    from orch import dockerfile

    validation = dockerfile.validate(_read_dockerfile(file))
    findings = [f.to_dict() for f in validation.findings]
    if json_:
        print_json(validation.to_dict())
    elif validation.ok:
        ok(f"Dockerfile valid{_summary(findings)}")
        print_findings(findings)
    else:
        errors = sum(1 for f in findings if f["severity"] == "error")
        console.print(f"[red]✗[/red] Dockerfile rejected ({errors} error{'s' if errors != 1 else ''})")
        print_findings(findings)
    if not validation.ok:
        raise typer.Exit(2)


@app.command()
@command
def build(
    env: str = typer.Argument(..., help="Environment id or name."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Build even when a cached image matches."),
    detach: bool = typer.Option(False, "--detach", "-d", help="Return once the build is queued."),
    logs: bool = typer.Option(
        False, "--logs", help="Stream the build log while it builds (with --json, on stderr)."
    ),
    json_: bool = JSON,
) -> None:
    """Build an environment now: a predefined one ahead of first use, or a custom one again.

    An image of its Dockerfile that is still there is reused at once: --no-cache builds anew.
    With --json and --logs, the JSON is printed at the end and the log streamed on stderr."""
    _detached_logs(detach, logs)  # before any request
    client = Transport.from_settings()
    before = client.get(f"/v1/environments/{segment(env)}")
    data = client.post(f"/v1/environments/{segment(before['id'])}/build", json={"no_cache": no_cache})
    # A build under way goes on (the server queues no other): the same build, not finished.
    already = before["status"] in ("queued", "building") and data["build_id"] == before["build_id"]
    _wait_and_report(client, data, detach, logs, json_, already)


@app.command()
@command
def delete(
    env: str = typer.Argument(..., help="Environment id or name."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
) -> None:
    """Delete a custom environment and its image. Refused while it is used or the default."""
    client = Transport.from_settings()
    data = client.get(f"/v1/environments/{segment(env)}")
    if not yes:
        confirm_delete(f"Delete environment {data['name']} ({data['id']})?", data["name"])
    client.delete(f"/v1/environments/{segment(data['id'])}")
    ok(f"Deleted {data['name']} ({data['id']}).")


@app.command("set-default")
@command
def set_default(env: str = typer.Argument(..., help="Environment id or name.")) -> None:
    """Make ENV the workspace default: agents without their own Dockerfile or pin use it."""
    check_name(env)  # before any request, as every command taking a name (docs/cli.md)
    client = Transport.from_settings()
    answer = client.put("/v1/workspace/default-environment", json={"environment": env})
    data, n = answer["default"], answer["affected_agents"]
    if n == 0:
        who = "Agents without their own Dockerfile or pinned environment will use it (none does yet)."
    elif n == 1:
        who = "1 agent without its own Dockerfile or pinned environment will use it on its next run."
    else:
        who = f"{n} agents without their own Dockerfile or pinned environment will use it on their next run."
    ok(f"Workspace default is now {data['name']}. {who}")
    if data["status"] in ("queued", "building"):
        warn(f"{data['name']} is being built now; follow it with `orch env status {data['name']} --follow`.")


@app.command("clear-default")
@command
def clear_default() -> None:
    """Clear the workspace default: agents fall back to the base image for their entrypoint."""
    data = Transport.from_settings().delete("/v1/workspace/default-environment")["default"]
    if data:
        ok(f"Workspace default cleared (was {data['name']}). Agents fall back to their base image.")
    else:
        ok("The workspace had no default environment; nothing changed.")
