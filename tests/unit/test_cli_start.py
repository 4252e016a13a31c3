"""The CLI's start stays light (issue 12, 8): a quick command imports its own noun's module and
what it uses, never the heavy packages of other commands or of the server; piped output imports
no rich, and a plain http:// server is reached without httpx or http.client.

Each command runs in a fresh interpreter against a stub server, then the modules it imported are
checked by name (timings are bench/cli_start.py's business).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from typer.testing import CliRunner

from orch import __version__
from orch.cli import main as cli_main
from orch.cli import plain_values

# Never imported by the quick commands: the bundle packer and its manifest model, the Dockerfile
# validator, the server's stack, and what only some commands or only help and errors need.
HEAVY = (
    "pydantic",
    "yaml",
    "dockerfile",
    "orch.bundle",
    "orch.dockerfile",
    "orch.builder",
    "orch.engine",
    "orch.sandbox",
    "orch.store",
    "orch.services",
    "orch.workers",
    "orch.server",
    "fastapi",
    "starlette",
    "sqlalchemy",
    "uvicorn",
    "cryptography",
    "rich.progress",
    "click",  # httpx's own command line (httpx._main) pulls it in; client/transport.py keeps it out
    # httpx and its own transport: client/plain_http.py reaches http:// without them.
    "httpx",
    "httpcore",
    "h11",
    "anyio",
    "sniffio",
    "certifi",
    # and the standard library's HTTP client, whose header parsing imports the email package
    # (~24 ms): plain_http reads HTTP/1.1 off the socket itself.
    "http.client",
    "email",
)
# Typer's rich formatting of help and usage errors, and rich itself, which output to a terminal
# uses: not for a command that succeeds with its output piped (cli/output.py prints it plain).
HELP_ONLY = ("typer.rich_utils", "markdown_it", "pygments", "rich")

PROBE = """
import json, os, sys
sys.argv = ["orch", *json.loads(os.environ["PROBE_ARGS"])]
code = 0
try:
    from orch.cli.main import main
    main()
except SystemExit as e:
    code = e.code or 0
finally:
    with open(os.environ["PROBE_OUT"], "w") as f:
        json.dump({"code": code, "modules": sorted(sys.modules)}, f)
"""

RUN = {"id": "run_1", "agent": "hello", "agent_version": 1}
ENDED = {
    **RUN,
    "status": "succeeded",
    "exit_code": 0,
    "reason": None,
    "duration": 0.1,
    "environment": {"name": "python"},
    "environment_rule": "base-image",
    "deps": "none",
    "queued_at": "2026-01-01T00:00:00",
}
ENVS = [
    {
        "id": "env_python",
        "name": "python",
        "kind": "base",
        "status": "ready",
        "default": False,
        "description": "Python 3.11",
        "image": "orch/python",
    }
]


class Stub(BaseHTTPRequestHandler):
    """The few answers the probed commands need, shaped as the API's."""

    def _send(self, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path == "/v1/environments":
            self._send(ENVS)
        elif url.path == "/v1/runs":
            self._send([ENDED])
        elif url.path == "/v1/runs/run_1":
            self._send(ENDED)
        elif url.path in ("/v1/secrets", "/v1/sandboxes"):
            self._send([])
        elif url.path == "/v1/runs/run_1/logs":
            first = parse_qs(url.query).get("stdout") == ["0"]
            out = "hello\n" if first else ""
            offsets = {"stdout": 6, "stderr": 0, "log": 0}
            self._send({"offsets": offsets, "log": "", "stdout": out, "stderr": "", "status": "succeeded"})
        else:
            self.send_error(404)

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path == "/v1/runs":
            self._send(RUN)
        else:
            self.send_error(404)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Stub)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def probe(tmp_path: Path, url: str, *args: str, **env: str) -> tuple[set[str], str]:
    """The modules `orch ARGS` imports in a fresh interpreter, and its output; fail unless it
    exits 0. Its output is piped (no terminal) unless `env` says otherwise."""
    out = tmp_path / "probe.json"
    environ = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "TTY_COMPATIBLE")}
    environ |= {
        "ORCH_HOME": str(tmp_path),
        "ORCH_URL": url,
        "ORCH_TOKEN": "t",
        "PROBE_ARGS": json.dumps(args),
        "PROBE_OUT": str(out),
        **env,
    }
    proc = subprocess.run(
        [sys.executable, "-c", PROBE], env=environ, capture_output=True, text=True, timeout=120
    )
    result = json.loads(out.read_text())
    assert result["code"] == 0, proc.stdout + proc.stderr
    return set(result["modules"]), proc.stdout


def imported(tmp_path: Path, url: str, *args: str) -> set[str]:
    return probe(tmp_path, url, *args)[0]


def heavy(modules: set[str], names: tuple[str, ...] = HEAVY) -> list[str]:
    return sorted(m for m in modules if any(m == n or m.startswith(n + ".") for n in names))


@pytest.mark.parametrize(
    "args",
    [
        ("--version",),
        ("env", "list"),
        ("env", "list", "--json"),
        ("runs", "list"),
        ("runs", "show", "run_1", "--json"),
        ("run", "hello"),
        ("secret", "list"),
        ("sandbox", "list"),
        # Text, a list of text and a whole number: the values typer would convert with pydantic.
        ("run", "hello", "--input", '{"a": 1}', "-e", "K=V", "--timeout", "5", "--json"),
    ],
)
def test_quick_commands_import_nothing_heavy(tmp_path: Path, server: str, args: tuple[str, ...]) -> None:
    modules = imported(tmp_path, server, *args)
    assert not heavy(modules, HEAVY + HELP_ONLY)
    # `orch.Client` and its resources: the commands use the client's transport (and `follow`).
    assert not {"orch.client.client", "orch.client.sandboxes"} & modules
    if args == ("--version",):
        assert not heavy(modules, ("orch.client",))
    else:
        assert "orch.client.plain_http" in modules  # the probe saw the command do its work


def test_a_terminal_gets_rich_tables(tmp_path: Path, server: str) -> None:
    """On a terminal (as rich judges one: FORCE_COLOR here) the table is rich's, in colour; still
    nothing heavy, and only rich's console and table."""
    modules, out = probe(tmp_path, server, "env", "list", FORCE_COLOR="1", COLUMNS="120")
    assert {"rich.console", "rich.table"} <= modules and not heavy(modules, HEAVY)
    assert "\x1b[1m" in out and "env_python" in out  # bold headers
    _, piped = probe(tmp_path, server, "env", "list")
    assert piped.splitlines() == [
        "ID          NAME    KIND  STATUS  DESCRIPTION",
        "env_python  python  base  ready   Python 3.11",
    ]


@pytest.mark.parametrize("args", [("--help",), ("env", "--help"), ("run", "--help")])
def test_help_imports_nothing_heavy(tmp_path: Path, server: str, args: tuple[str, ...]) -> None:
    """`orch --help` imports every noun's module to list them: still none of their heavy parts."""
    modules = imported(tmp_path, server, *args)
    assert not heavy(modules)
    # Typer's help formatting, without rich's Markdown and Traceback (cli/lazy_help.py).
    assert "typer.rich_utils" in modules
    assert not heavy(modules, ("markdown_it", "pygments", "rich.markdown", "rich.traceback", "rich.syntax"))
    if args == ("--help",):
        assert {f"orch.cli.{module}" for module, _ in cli_main.COMMANDS.values()} <= modules


def test_the_probe_sees_heavy_imports(tmp_path: Path, server: str) -> None:
    """The checks above would pass on a probe that saw nothing: validation does import the
    validator."""
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("FROM e2bdev/code-interpreter:latest\n")
    modules = imported(tmp_path, server, "env", "validate", "-f", str(dockerfile))
    assert "orch.dockerfile" in heavy(modules)


def test_help_lists_every_command_and_typos_get_suggestions() -> None:
    runner = CliRunner()
    listing = runner.invoke(cli_main.app, ["--help"], env={"COLUMNS": "200"})
    assert listing.exit_code == 0
    for name in cli_main.COMMANDS:
        assert f" {name} " in listing.output
    assert "Environments: the images sandboxes run in." in listing.output
    assert "Run an agent in a fresh sandbox" in listing.output
    typo = runner.invoke(cli_main.app, ["envv"])
    assert typo.exit_code == 2 and "Did you mean 'env'?" in typo.output
    version = runner.invoke(cli_main.app, ["--version"])
    assert version.exit_code == 0 and version.output == f"orch {__version__}\n"


def _commands(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    yield path, command
    for name in getattr(command, "commands", {}):
        yield from _commands(command.commands[name], (*path, name))


def test_every_help_text_is_shown_whole() -> None:
    """Help is formatted with rich markup: a text in square brackets ("[default: 8750]") would be
    taken for a markup tag and vanish unless escaped. Every command's and option's help shows in
    full."""
    import typer.main

    runner = CliRunner()
    root = typer.main.get_command(cli_main.app)
    checked = 0
    for path, command in _commands(root):
        shown = runner.invoke(cli_main.app, [*path, "--help"], env={"COLUMNS": "400"})
        assert shown.exit_code == 0, (path, shown.output)
        flat = " ".join(shown.output.split())
        texts = [command.help or ""] + [getattr(p, "help", None) or "" for p in command.params]
        for text in filter(None, texts):
            want = " ".join(text.replace("\\[", "[").split())
            assert want in flat, (path, want)
            checked += "[" in want
    assert checked >= 15  # the "[default: …]" texts among them


def test_help_shows_a_type_only_for_options_that_take_a_value() -> None:
    shown = CliRunner().invoke(cli_main.app, ["sandbox", "create", "--help"], env={"COLUMNS": "200"})
    lines = {line.split()[1]: line for line in shown.output.splitlines() if line[2:4] == "--"}
    assert "SIZE" in lines["--memory"] and "NUMBER" in lines["--cpus"]
    assert lines["--json"].split()[:2] == ["│", "--json"] and lines["--json"].split()[2] == "Print"
    assert lines["--network"].split()[2] == "Let", shown.output


def test_every_summary_reads_as_one_line_in_its_listing() -> None:
    """A command's summary in its group's listing is the first paragraph of its help, with its
    line breaks kept (rich markup mode): a summary wrapped in the source would break mid-sentence
    there. Each first paragraph is one line; more follows after a blank line."""
    import inspect

    import typer.main

    root = typer.main.get_command(cli_main.app)
    wrapped = [
        " ".join(path)
        for path, command in _commands(root)
        if "\n" in inspect.cleandoc(command.help or "").split("\n\n")[0]
    ]
    assert wrapped == []


def test_the_stand_ins_make_the_real_objects(monkeypatch: pytest.MonkeyPatch) -> None:
    """What typer.rich_utils got in place of rich's Markdown and Traceback builds the real ones,
    and only typer.rich_utils got them."""
    import sys

    from orch.cli import lazy_help

    markdown = lazy_help.STAND_INS["rich.markdown"]().Markdown("# Title")
    assert type(markdown).__module__ == "rich.markdown" and type(markdown).__name__ == "Markdown"
    try:
        raise ValueError("boom")
    except ValueError as e:
        traceback = lazy_help.STAND_INS["rich.traceback"]().Traceback.from_exception(
            type(e), e, e.__traceback__
        )
    assert type(traceback).__module__ == "rich.traceback"
    # Imported through the hook: the stand-ins are gone from sys.modules afterwards.
    for name in ("typer.rich_utils", "rich.markdown", "rich.traceback"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.setattr(sys, "meta_path", list(sys.meta_path))
    lazy_help.install()
    import typer.rich_utils

    assert typer.rich_utils.Markdown.__module__ == lazy_help.__name__
    assert "rich.markdown" not in sys.modules and "rich.traceback" not in sys.modules
    import rich.markdown

    assert rich.markdown.Markdown is not typer.rich_utils.Markdown


@pytest.mark.parametrize(
    ("annotation", "value"),
    [
        (str, "x y "),
        (str, ""),
        (int, "5"),
        (int, "007"),
        (int, "-3"),
        (int, 20),
        (bool, True),
        (list[str], ("a", "b")),
        (list[str], ()),
    ],
)
def test_plain_values_convert_as_typer_would(annotation: Any, value: Any) -> None:
    from typer._coercion import build_runtime_param, resolve_type_descriptor
    from typer.models import OptionInfo

    descriptor = resolve_type_descriptor(annotation, OptionInfo())
    assert plain_values._is_plain(descriptor)
    ours = plain_values._plain_value(annotation, value)
    theirs = build_runtime_param(descriptor)._coerce_value(value, param=None, ctx=None)  # type: ignore[arg-type]
    assert ours == theirs and type(ours) is type(theirs)


@pytest.mark.parametrize(("annotation", "value"), [(int, "+4"), (int, " 5"), (int, "5.0"), (bool, "yes")])
def test_other_values_are_left_to_typer(annotation: Any, value: Any) -> None:
    assert plain_values._plain_value(annotation, value) is plain_values._NOT_PLAIN


def test_quick_commands_collect_less_and_the_server_as_cpython_does(monkeypatch: pytest.MonkeyPatch) -> None:
    import gc

    from orch import cli
    from orch.server import main as server_main

    probe = "import gc, orch.cli.main; print(gc.get_threshold())"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "(10000, 50, 50)"
    seen = []
    monkeypatch.setattr(server_main, "serve", lambda cfg: seen.append(gc.get_threshold()))
    before = gc.get_threshold()
    gc.set_threshold(10_000, 50, 50)
    try:
        assert CliRunner().invoke(cli_main.app, ["server"]).exit_code == 0
    finally:
        gc.set_threshold(*before)
    assert seen == [cli.GC_DEFAULTS] and cli.GC_DEFAULTS != (10_000, 50, 50)


def test_orch_run_loads_no_record_of_the_client(tmp_path: Path, server: str) -> None:
    """`orch run` follows its run with `orch.client.follow` alone: the client's records (its
    dataclasses, a few ms to define) are not imported."""
    modules = imported(tmp_path, server, "run", "hello")
    assert "orch.client.follow" in modules
    assert not {"orch.client.records", "orch.client.runs"} & modules
