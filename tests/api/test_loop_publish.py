"""Publishing a managed-loop agent: no entrypoint needed, its `loop:` kept with the version, and
an endpoint the server does not allow refused (HTTP 400, CLI exit 2) with the allowed ones."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from typer.testing import Result

from orch.services.platform import Platform
from tests.api import test_cli_runs
from tests.api.test_agents_runs import bundle, publish

LOCAL = "http://127.0.0.1:11434/v1"
MANIFEST = f"loop:\n  model: qwen2.5:7b\n  provider: openai\n  base_url: {LOCAL}\n  system: Be brief.\n"


def allow(platform: Platform, *urls: str) -> None:
    platform.config = platform.config.with_values(model_endpoints=urls)


def test_a_loop_agent_needs_no_entrypoint(api: httpx.Client, platform: Platform, tmp_path: Path) -> None:
    allow(platform, LOCAL)
    resp = publish(api, "researcher", bundle(tmp_path, {"orch.yaml": MANIFEST, "notes.md": "# notes\n"}))
    assert resp.status_code == 201, resp.text
    version = resp.json()["version"]
    assert (version["entrypoint"], version["language"], version["command"]) == ("", "python", [])
    loop = version["manifest"]["loop"]
    assert (loop["model"], loop["base_url"], loop["system"], loop["max_turns"]) == (
        "qwen2.5:7b",
        LOCAL,
        "Be brief.",
        20,
    )
    assert api.get("/v1/agents/researcher").json()["latest"]["manifest"]["loop"] == loop


def test_an_endpoint_not_allowed_is_refused_with_the_allowed_ones(
    api: httpx.Client, platform: Platform, tmp_path: Path
) -> None:
    resp = publish(api, "researcher", bundle(tmp_path, {"orch.yaml": MANIFEST}))
    assert resp.status_code == 400
    body = resp.json()
    assert body["message"] == (
        f"orch.yaml: loop.base_url {LOCAL} is not one of this server's allowed model endpoints "
        "(https://api.openai.com/v1, https://api.anthropic.com)."
    )
    assert "ORCH_MODEL_ENDPOINTS" in body["fix"]
    assert api.get("/v1/agents").json() == []  # nothing stored
    internal = MANIFEST.replace(LOCAL, "http://169.254.169.254/latest")
    allow(platform, LOCAL)
    assert publish(api, "researcher", bundle(tmp_path, {"orch.yaml": internal}, "b")).status_code == 400


def test_the_public_endpoints_are_allowed_by_default(api: httpx.Client, tmp_path: Path) -> None:
    manifest = (
        "loop:\n  model: claude-sonnet-4-5\n  provider: anthropic\n  api_key_secret: ANTHROPIC_API_KEY\n"
    )
    resp = publish(api, "claude", bundle(tmp_path, {"orch.yaml": manifest}))
    assert resp.status_code == 201, resp.text


def test_a_bad_loop_section_is_refused_with_its_line(api: httpx.Client, tmp_path: Path) -> None:
    resp = publish(api, "bad", bundle(tmp_path, {"orch.yaml": "loop:\n  model: x\n  provider: gemini\n"}))
    assert resp.status_code == 400
    assert resp.json()["message"] == "orch.yaml line 3: loop.provider: 'gemini' is not a provider."


@pytest.mark.parametrize(
    ("manifest", "where", "half"),
    [
        ('loop:\n  model: m\n  provider: openai\n  system: "a \\ud800"\n', "4: loop.system", "ud800"),
        ('loop:\n  model: "m\\udc80"\n  provider: openai\n', "2: loop.model", "udc80"),
        ('runtime:\n  command: "echo \\ud83d\\ude00"\n', "2: runtime.command", "ud83d"),
    ],
)
def test_a_lone_surrogate_in_the_manifest_is_refused_with_its_line(
    api: httpx.Client, tmp_path: Path, manifest: str, where: str, half: str
) -> None:
    """A double-quoted `\\ud800` reads as half of a UTF-16 pair, which the store can't hold: the
    publish answered 500 (PydanticSerializationError), and the CLI said it was a bug."""
    resp = publish(api, "halves", bundle(tmp_path, {"main.py": "", "orch.yaml": manifest}))
    assert resp.status_code == 400, resp.text
    said = resp.json()["message"]
    assert said.startswith(f"orch.yaml line {where}: \\{half} is half of a UTF-16 surrogate pair"), said
    assert resp.json()["fix"].startswith("Write the character itself"), resp.json()
    assert api.get("/v1/agents").json() == []  # nothing stored


cli = test_cli_runs.cli  # `orch ...` on the in-process API


def test_the_cli_exits_2_naming_the_allowed_endpoints(cli: Callable[..., Result], tmp_path: Path) -> None:
    (tmp_path / "agent").mkdir()
    (tmp_path / "agent" / "orch.yaml").write_text(MANIFEST)
    result = cli("publish", str(tmp_path / "agent"), "--name", "researcher")
    assert result.exit_code == 2, result.output
    assert "is not one of this server's allowed model endpoints" in result.output
    assert "Traceback" not in result.output


def test_the_cli_exits_2_for_a_lone_surrogate(cli: Callable[..., Result], tmp_path: Path) -> None:
    (tmp_path / "agent").mkdir()
    (tmp_path / "agent" / "orch.yaml").write_text(MANIFEST.replace("Be brief.", '"a \\ud800 c"'))
    result = cli("publish", str(tmp_path / "agent"), "--name", "halves")
    assert result.exit_code == 2, result.output
    assert "orch.yaml line 5: loop.system: \\ud800 is half of a UTF-16 surrogate pair" in result.output
    assert "Traceback" not in result.output and "bug" not in result.output
