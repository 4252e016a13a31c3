"""`orch run` and `orch runs` against the in-process API: output streamed as it comes (through
orch.client's `follow`), the --json contract, logs of an ended run, exit codes."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner, Result

from orch.cli import client as client_mod
from orch.cli.main import app
from orch.engine.base import ContainerExit, ContainerSpec
from orch.engine.fake import FakeEngine
from orch.services.platform import Platform
from tests.api.test_agents_runs import bundle, publish
from tests.conftest import drain_runs

runner = CliRunner()


@pytest.fixture
def cli(
    api: httpx.Client, monkeypatch: pytest.MonkeyPatch, workspace: tuple[str, str]
) -> Callable[..., Result]:
    def make() -> client_mod.Client:
        return client_mod.Client("http://testserver", workspace[1], transport=api._transport)

    monkeypatch.setattr(client_mod.Client, "from_settings", staticmethod(make))

    def invoke(*args: str, input: str | bytes | None = None) -> Result:
        return runner.invoke(app, list(args), input=input)

    return invoke


@pytest.fixture
def worker(platform: Platform) -> Iterator[None]:
    """Runs queued runs in the background, as the server's workers would."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            drain_runs(platform)
            time.sleep(0.05)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    yield
    stop.set()
    thread.join(30)


@pytest.fixture
def agent(api: httpx.Client, tmp_path: Path, fake_engine: FakeEngine) -> str:
    def behave(spec: ContainerSpec, out, err) -> ContainerExit:  # type: ignore[no-untyped-def]
        out(b"out: " + spec.env["ORCH_INPUT"].encode() + b"\n")
        err(b"[bold]not markup[/bold]\n")
        return ContainerExit(3 if "fail" in spec.env["ORCH_INPUT"] else 0)

    fake_engine.behaviour = behave
    assert publish(api, "hello", bundle(tmp_path, {"main.py": ""})).status_code == 201
    return "hello"


def test_run_streams_and_exits_with_the_runs_outcome(cli, agent: str, worker: None) -> None:  # type: ignore[no-untyped-def]
    res = cli("run", agent, "--input", '{"a": 1}')
    assert res.exit_code == 0, res.output
    assert res.stdout == 'out: {"a": 1}\n'
    assert "[bold]not markup[/bold]" in res.stderr and "✓ succeeded in" in res.stderr
    assert "→ environment python (base)" in res.stderr  # the platform's notes
    failed = cli("run", agent, "--input", '"fail"')
    assert failed.exit_code == 1 and "✗ failed" in failed.stderr and "exit 3" in failed.stderr
    assert "exit code 3" not in failed.stderr  # the reason only repeated the code: said once


def test_a_run_s_duration_reads_in_ms_below_a_tenth_of_a_second() -> None:
    from orch.cli.run import _summary

    run = {"status": "succeeded", "exit_code": 0, "reason": None}
    assert _summary({**run, "duration": 0.0321}) == "succeeded in 32 ms · exit 0"
    assert _summary({**run, "duration": 0.61}) == "succeeded in 0.6 s · exit 0"
    assert _summary({**run, "duration": None}) == "succeeded · exit 0"


def test_run_json_then_show_and_logs(cli, agent: str, worker: None) -> None:  # type: ignore[no-untyped-def]
    res = cli("run", agent, "--json", "-i", "[1]")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert {k: data[k] for k in ("agent", "status", "exit_code", "stdout")} == {
        "agent": "hello",
        "status": "succeeded",
        "exit_code": 0,
        "stdout": "out: [1]\n",
    }
    assert data["stderr"] == "[bold]not markup[/bold]\n" and data["environment"]["name"] == "python"
    shown = json.loads(cli("runs", "show", data["id"], "--json").stdout)
    assert shown == data
    # Every key the list has (its agent_version, times, usage), and the output.
    [listed_run] = json.loads(cli("runs", "list", "--json").stdout)
    assert set(listed_run) <= set(shown) and {"agent_version", "queued_at", "finished_at"} <= set(shown)
    logs = cli("runs", "logs", data["id"])
    assert logs.stdout == "out: [1]\n" and "[bold]not markup[/bold]" in logs.stderr
    listed = cli("runs", "list")
    assert data["id"] in listed.stdout and "python (base)" in listed.stdout


def test_detached_run_and_an_unknown_agent(cli, agent: str) -> None:  # type: ignore[no-untyped-def]
    run_id = cli("run", agent, "--detach").stdout.strip()
    assert run_id.startswith("run_")
    queued = json.loads(cli("run", agent, "--detach", "--json").stdout)  # JSON, as --json promises
    assert queued["id"].startswith("run_") and queued["status"] == "queued" and queued["agent"] == "hello"
    missing = cli("run", "nope")
    assert missing.exit_code == 2 and "nope" in missing.stderr and "Traceback" not in missing.output


def test_input_that_is_not_utf8_text_or_json_exits_2(cli, agent: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "bad.json"
    bad.write_bytes(b'"\xff"')
    for args, stdin, said in [
        (("--input", "-"), b'"\xff"', "The standard input is not UTF-8 text (byte 1)."),
        (("--input", f"@{bad}"), None, f"The input file '{bad}' is not UTF-8 text (byte 1)."),
        (("--input", '"\udcff"'), None, "The input is not UTF-8 text (character 1)."),
        (("--env", "A=\udcff"), None, "--env 'A' is not UTF-8 text"),
        (("--input", "NaN"), None, "The input is not valid JSON (NaN is not a JSON value)."),
        (("--input", "[Infinity]"), None, "Infinity is not a JSON value"),
    ]:
        res = cli("run", agent, *args, input=stdin)
        assert res.exit_code == 2 and said in res.stderr, (args, res.output)
        assert "This is a bug" not in res.output
    assert json.loads(cli("runs", "list", "--json").stdout) == []
    # A byte-order mark is dropped, from standard input as from a file.
    assert cli("run", agent, "--input", "-", "--detach", input=b'\xef\xbb\xbf"x"').exit_code == 0


@pytest.mark.parametrize("limit", ["0", "501"])
def test_a_list_limit_out_of_range_is_named_by_its_option(cli, limit: str) -> None:  # type: ignore[no-untyped-def]
    res = cli("runs", "list", "--limit", limit)
    assert res.exit_code == 2 and f"--limit {limit} is out of range" in res.output
    assert "query.limit" not in res.output  # the API's name for it, not the command's


def test_text_input_is_refused_with_how_to_pass_it_as_json(cli, agent: str) -> None:  # type: ignore[no-untyped-def]
    for args, stdin in [
        (("--input", "Summarise notes.md in three bullets."), None),
        (("--input", "-"), b"Summarise notes.md in three bullets.\n"),
    ]:
        res = cli("run", agent, *args, input=stdin)
        assert res.exit_code == 2 and "The input is not valid JSON" in res.stderr, res.output
        assert "text in double quotes inside single ones (--input '\"Summarise notes.md\"')" in res.stderr
    assert json.loads(cli("runs", "list", "--json").stdout) == []


def test_every_input_the_docs_pass_is_json() -> None:
    """The docs' `--input '...'` examples are what the CLI takes: JSON (text in quotes)."""
    docs = Path(__file__).parents[2] / "docs"
    found = [
        (doc.name, given)
        for doc in [*docs.glob("*.md"), docs.parent / "README.md"]
        for given in re.findall(r"--input '([^']*)'", doc.read_text())
    ]
    assert ("loop.md", '"Summarise notes.md in three bullets."') in found
    for doc, given in found:
        json.loads(given), doc


@pytest.fixture
def unended(api: httpx.Client, tmp_path: Path, fake_engine: FakeEngine) -> str:
    """An agent whose output does not end its line, on stdout or stderr as its input says (as
    `print('x', end='')` leaves it)."""

    def behave(spec: ContainerSpec, out, err) -> ContainerExit:  # type: ignore[no-untyped-def]
        (out if "out" in spec.env["ORCH_INPUT"] else err)(b"done")
        return ContainerExit(0)

    fake_engine.behaviour = behave
    assert publish(api, "unended", bundle(tmp_path, {"main.py": ""})).status_code == 201
    return "unended"


def test_the_end_line_starts_a_line_of_its_own(cli, unended: str, worker: None, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    piped = cli("run", unended, "--input", '"out"')
    assert piped.exit_code == 0, piped.output
    assert piped.stdout == "done"  # piped: not a byte the run did not write
    assert piped.stderr.splitlines()[-1].startswith("✓ succeeded")
    on_stderr = cli("run", unended, "--input", '"err"')
    assert "\ndone\n✓ succeeded" in on_stderr.stderr  # the end line's own stream: ended there
    logs = cli("runs", "logs", json.loads(cli("runs", "list", "--json").stdout)[0]["id"])
    assert logs.stderr.endswith("done")  # nothing follows it: left as the run wrote it

    monkeypatch.setenv("TTY_COMPATIBLE", "1")  # stdout and stderr are terminals, as rich sees it
    shown = cli("run", unended, "--input", '"out"')
    assert shown.exit_code == 0 and shown.stdout == "done\n"
    assert "succeeded" in shown.stderr


def test_events_of_a_code_agent_s_run_say_there_are_none(cli, agent: str, worker: None) -> None:  # type: ignore[no-untyped-def]
    run_id = json.loads(cli("run", agent, "--json").stdout)["id"]
    for args in ((), ("--json",), ("-f",)):
        res = cli("runs", "events", run_id, *args)
        assert res.exit_code == 0, res.output
        assert f"{run_id} is a run of a code agent: only a managed loop's runs have events." in res.stderr
        assert f"`orch runs logs {run_id}` prints its output." in res.stderr
        assert res.stdout == ("[]\n" if args == ("--json",) else "")


def test_a_run_whose_stdout_was_cut_says_so_on_stderr(  # type: ignore[no-untyped-def]
    cli, api: httpx.Client, tmp_path: Path, fake_engine: FakeEngine, worker: None
) -> None:
    """Piped, `orch run` printed the 1 MiB kept and exited 0 with no word of the rest: stdout
    stays the run's bytes, and stderr says it was cut (as `orch runs logs` does)."""

    def flood(spec: ContainerSpec, out, err) -> ContainerExit:  # type: ignore[no-untyped-def]
        out(b"x" * (2 * 1024 * 1024))
        return ContainerExit(0)

    fake_engine.behaviour = flood
    assert publish(api, "flood", bundle(tmp_path, {"main.py": ""}, "flood")).status_code == 201
    res = cli("run", "flood")
    assert res.exit_code == 0, res.stderr
    assert res.stdout == "x" * (1024 * 1024)
    assert "(output was cut at the 1 MiB limit per stream)" in res.stderr


HOSTILE_OUT = b"ansi: \x1b[31mRED\x1b[0m \x1b]0;PWNED\x07 \x1b[2J\x1b[1A up\rU\n\x1b[8mhidden"
HOSTILE_ERR = b"\x1b]8;;http://evil.example/\x07link\x1b]8;;\x07 \xc2\x9b6n \x1b[3"  # C1 CSI: U+009B


def test_control_sequences_an_agent_writes_are_shown_not_obeyed_on_a_terminal(  # type: ignore[no-untyped-def]
    cli, api: httpx.Client, tmp_path: Path, fake_engine: FakeEngine, worker: None, monkeypatch
) -> None:
    """A terminal obeys what an agent writes: it set the title, cleared the screen, moved the
    cursor over the CLI's own lines, hid a link, and a style left on (`ESC [8m`, hidden) hid
    the CLI's end line. Colours pass; a style is reset before the CLI writes. Piped, stdout is
    the run's bytes, exactly."""

    def behave(spec: ContainerSpec, out, err) -> ContainerExit:  # type: ignore[no-untyped-def]
        out(HOSTILE_OUT)
        err(HOSTILE_ERR)
        return ContainerExit(0)

    fake_engine.behaviour = behave
    assert publish(api, "ansi", bundle(tmp_path, {"main.py": ""})).status_code == 201
    piped = cli("run", "ansi")
    assert piped.exit_code == 0 and piped.stdout == HOSTILE_OUT.decode(), piped.output
    run_id = json.loads(cli("runs", "list", "--json").stdout)[0]["id"]

    monkeypatch.setenv("TTY_COMPATIBLE", "1")  # stdout and stderr are terminals, as rich sees it
    for res in (cli("run", "ansi"), cli("runs", "logs", run_id)):
        assert res.exit_code == 0, res.output
        # No newline after it: the screen's open line is stderr's, ended there.
        shown_out = "ansi: \x1b[31mRED\x1b[0m ^[]0;PWNED^G ^[[2J^[[1A up\rU\n\x1b[8mhidden\x1b[0m"
        assert res.stdout == shown_out, repr(res.stdout)
        shown_err = "^[]8;;http://evil.example/^Glink^[]8;;^G \\x9b6n ^[[3\n"
        assert shown_err in res.stderr and "\x1b]" not in res.stderr, repr(res.stderr)
