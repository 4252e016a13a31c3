"""Found by a tester (findings F4-F6, and the publish sizes):

- a name or id that is not a `str` (`runs.get(5)`) is refused before any request, as
  `secrets.set(5, …)` was, by every client method that takes one (docs/client.md);
- `orch login` saves a server only when orch answers there (it lists the token's workspace): a
  program that answers 200 with any JSON was saved, and the admin token sent to it from then on;
- `orch login` with an `ORCH_URL` that no server has refuses it (exit 2) before any request, as
  docs/cli.md says: it exited 0, and every next command refused the variable;
- `orch publish` and `orch agents show` print sizes in binary units (`251 B`, `1.5 KiB`): "KB"
  and "MB" were computed in 1024s.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from orch import Client
from orch.cli import client as client_mod
from orch.cli.main import app
from orch.client.transport import Transport
from orch.errors import InvalidInput
from tests.api.test_client_wrong_shape import SAID, Other

runner = CliRunner()

# ---- F4: names and ids that are not text -------------------------------------------------------

NAMED = [  # a name or id in the path: said as `secrets.set(5, …)` said it
    ("runs.get(5)", lambda c: c.runs.get(5), "A name or id must be text, not an int."),
    ("agents.get(5)", lambda c: c.agents.get(5), "A name or id must be text, not an int."),
    ("agents.get(1.5)", lambda c: c.agents.get(1.5), "A name or id must be text, not a float."),
    ("environments.get(5)", lambda c: c.environments.get(5), "A name or id must be text, not an int."),
    ("sandboxes.get(5)", lambda c: c.sandboxes.get(5), "A name or id must be text, not an int."),
    ("secrets.set(5, 'x')", lambda c: c.secrets.set(5, "x"), "A name or id must be text, not an int."),
    ("secrets.delete(True)", lambda c: c.secrets.delete(True), "A name or id must be text, not a bool."),
    # one in the body or the query: the argument named
    ("runs.create(5)", lambda c: c.runs.create(5), "`agent` is an int, not text (a name or id)."),
    ("runs.create(None)", lambda c: c.runs.create(None), "`agent` is None, not text (a name or id)."),
    ("runs.list(agent=5)", lambda c: c.runs.list(agent=5), "`agent` is an int, not text (a name or id)."),
    ("runs.list(before=5)", lambda c: c.runs.list(before=5), "`before` is an int, not text (a name or id)."),
    (
        "sandboxes.create(environment=5)",
        lambda c: c.sandboxes.create(environment=5),
        "`environment` is an int, not text (a name or id).",
    ),
]


@pytest.mark.parametrize(("call", "said"), [(c, s) for _, c, s in NAMED], ids=[n for n, _, _ in NAMED])
def test_a_name_that_is_not_text_is_refused_before_any_request(call: Any, said: str) -> None:
    sent: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(500)

    client = Client(url="http://orch.test", token="orch_x", transport=httpx.MockTransport(answer))
    with client, pytest.raises(InvalidInput) as refused:
        call(client)
    assert refused.value.message == said and refused.value.fix.startswith("Pass ")
    assert sent == []


def test_text_names_are_still_sent() -> None:
    sent: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(str(request.url))
        return httpx.Response(404, json={"error": "not_found", "message": "No run.", "fix": "x"})

    with Client(url="http://orch.test", token="orch_x", transport=httpx.MockTransport(answer)) as client:
        with pytest.raises(InvalidInput):
            client.runs.get("5")
        with pytest.raises(InvalidInput):
            client.runs.list(agent="hello", before="run_1")
    assert sent[0] == "http://orch.test/v1/runs/5"
    assert "agent=hello" in sent[1] and "before=run_1" in sent[1]


# ---- F5, F6: orch login ------------------------------------------------------------------------


@pytest.fixture
def other(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Callable[[bytes], None], list[str]]]:
    """A server that is not orch's, answering 200 with a body set by the second item; the paths
    it was asked for in the third."""
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy", "ORCH_URL", "ORCH_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    asked: list[str] = []

    class Counting(Other):
        def _answer(self) -> None:
            asked.append(self.path)
            super()._answer()

        do_GET = do_POST = do_PUT = do_DELETE = _answer

    server = ThreadingHTTPServer(("127.0.0.1", 0), Counting)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def answer(body: bytes) -> None:
        Counting.body = body

    made: list[Transport] = []  # login's own
    monkeypatch.setattr(
        "orch.cli.server.Transport", lambda url, token: made.append(Transport(url, token)) or made[-1]
    )
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", answer, asked
    finally:
        for transport in made:
            transport.close()
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    "body",
    [
        b"{}",
        b"[]",
        b"null",
        b'[{"id": 1}]',
        b'[{"id": "env_1", "name": "python"}]',  # an orch-like list, but not of workspaces
        b'[{"id": "ws_1", "name": 5}]',
        b'{"id": "ws_1", "name": "team"}',
    ],
)
def test_login_refuses_a_server_that_is_not_orch(
    other: tuple[str, Any, list[str]], body: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, answer, asked = other
    answer(body)
    monkeypatch.setenv("ORCH_HOME", str(tmp_path / "home"))
    res = runner.invoke(app, ["login", "--url", url, "--token", "orch_x"])
    assert res.exit_code == 1, res.output
    assert f"The server at {url} {SAID}" in res.output, res.output
    assert "Logged in" not in res.output and "bug" not in res.output
    assert not (tmp_path / "home" / "config.toml").exists()
    assert asked == ["/v1/workspaces"]


def test_login_closes_its_connection_whatever_the_answer(
    other: tuple[str, Any, list[str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its check's connection is closed when the command is done with it (it was left open)."""
    url, answer, _ = other
    made: list[Transport] = []
    monkeypatch.setattr(
        "orch.cli.server.Transport", lambda url, token: made.append(Transport(url, token)) or made[-1]
    )
    monkeypatch.setenv("ORCH_HOME", str(tmp_path / "home"))
    for body, code in (
        (b"{}", 1),
        (b'[{"id": "ws_1", "name": "team", "created_at": "2026-01-01T00:00:00"}]', 0),
    ):
        answer(body)
        res = runner.invoke(app, ["login", "--url", url, "--token", "orch_x"])
        assert res.exit_code == code, res.output
        assert made[-1].closed, res.output
    assert len(made) == 2


@pytest.mark.parametrize(
    ("variable", "said"),
    [
        ("ftp://x", "The server's URL 'ftp://x' is not an http:// or https:// address"),
        ("http://", "The server's URL 'http://' names no host"),
        ("http://127.0.0.1:99999", "has no valid port"),
        ("http://127.0.0.1:8750/v1", "ends in /v1"),
    ],
)
def test_login_refuses_an_orch_url_that_no_server_has(
    other: tuple[str, Any, list[str]],
    variable: str,
    said: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, answer, asked = other
    answer(b'[{"id": "ws_1", "name": "team", "created_at": "2026-01-01T00:00:00"}]')
    monkeypatch.setenv("ORCH_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ORCH_URL", variable)
    res = runner.invoke(app, ["login", "--url", url, "--token", "orch_x"])
    assert res.exit_code == 2, res.output
    assert said in res.output and "ORCH_URL" in res.output and "unset ORCH_URL" in res.output
    assert "Logged in" not in res.output
    assert asked == []  # before any request
    assert not (tmp_path / "home" / "config.toml").exists()


def test_login_to_orch_saves_for_an_admin_and_a_plain_token(
    api: httpx.Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(  # login's own request, to the URL and token it was given
        "orch.cli.server.Transport", lambda url, token: client_mod.Client(url, token, api._transport)
    )
    for name in ("ORCH_URL", "ORCH_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ORCH_HOME", str(tmp_path / "home"))
    admin = api.headers["Authorization"].removeprefix("Bearer ")
    plain = api.post("/v1/workspaces", json={"name": "acme"}).json()["token"]
    for token in (admin, plain):
        res = runner.invoke(app, ["login", "--url", "http://testserver", "--token", token])
        assert res.exit_code == 0, res.output
        assert "Logged in to http://testserver" in res.output
        assert f'token = "{token}"' in (tmp_path / "home" / "config.toml").read_text()
    res = runner.invoke(app, ["login", "--url", "http://testserver", "--token", "orch_" + "x" * 43])
    assert res.exit_code == 2 and "Logged in" not in res.output, res.output


# ---- sizes in binary units -----------------------------------------------------------------------


def test_publish_and_agents_show_print_sizes_in_binary_units(
    api: httpx.Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workspace: tuple[str, str]
) -> None:
    def make() -> client_mod.Client:
        return client_mod.Client("http://testserver", workspace[1], transport=api._transport)

    monkeypatch.setattr(client_mod.Client, "from_settings", staticmethod(make))
    monkeypatch.setenv("COLUMNS", "200")
    root = tmp_path / "summarizer"  # the README's tour's agent
    root.mkdir()
    (root / "main.py").write_text(
        "import json\nimport sys\n\nimport humanize\n\ndata = json.load(sys.stdin)\n"
        'words = data["text"].split()\n'
        'print(f"{humanize.apnumber(len(words))} words, longest: {max(words, key=len)}")\n'
    )
    (root / "requirements.txt").write_text("humanize==4.9.0\n")
    (root / "orch.yaml").write_text("name: summarizer\nresources: {memory: 256Mi, timeout: 60}\n")
    res = runner.invoke(app, ["publish", str(root)])
    assert res.exit_code == 0, res.output
    assert "✓ Published summarizer v1 · main.py (python) · 3 files, 251 B\n" in res.output
    (root / "data.txt").write_text("x" * 1536)
    res = runner.invoke(app, ["publish", str(root)])
    assert "· 4 files, 1.7 KiB\n" in res.output, res.output  # 1787 bytes
    res = runner.invoke(app, ["agents", "show", "summarizer"])
    assert res.exit_code == 0, res.output
    assert " KB" not in res.output and " MB" not in res.output
    sizes = [line.split()[-2:] for line in res.output.splitlines() if line.startswith("    v")]
    assert len(sizes) == 2 and all(unit in ("B", "KiB") for _, unit in sizes), res.output
