"""`loop:` in orch.yaml: defaults, each mistake with its line and fix, the JSON trip versions
take; the allowed model endpoints; the entrypoint of a loop agent; the output clip."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from orch import config
from orch.bundle import Manifest, detect_entrypoint, parse_manifest
from orch.bundle.language import Language
from orch.bundle.loop_manifest import BUILTIN_TOOLS, DEFAULT_SYSTEM, LoopConfig
from orch.errors import InvalidInput
from orch.loop.clip import clip
from orch.loop.endpoints import DEFAULT_URLS, check_allowed, normalised
from orch.loop.tools import SPECS

LOOP = """\
name: researcher
loop:
  model: gpt-4o-mini
  provider: openai
  api_key_secret: OPENAI_API_KEY
"""


def refusal(text: str) -> InvalidInput:
    with pytest.raises(InvalidInput) as caught:
        parse_manifest(text)
    return caught.value


def test_defaults() -> None:
    loop = parse_manifest(LOOP).loop
    assert loop == LoopConfig(model="gpt-4o-mini", provider="openai", api_key_secret="OPENAI_API_KEY")
    assert loop.base_url is None and loop.system == DEFAULT_SYSTEM and loop.tools == BUILTIN_TOOLS
    assert (loop.max_turns, loop.max_tokens, loop.tool_timeout, loop.tool_output_limit) == (
        20,
        200_000,
        120,
        16384,
    )


def test_every_key() -> None:
    m = parse_manifest(
        "loop:\n"
        "  model: qwen2.5:7b\n"
        "  provider: anthropic\n"
        "  base_url: http://127.0.0.1:11434/v1/\n"
        "  system: |\n    Be brief.\n"
        "  tools: [bash, read_file]\n"
        "  max_turns: 5\n"
        "  max_tokens: 5000\n"
        "  tool_timeout: 30\n"
        "  tool_output_limit: 4Ki\n"
    )
    assert m.loop == LoopConfig(
        model="qwen2.5:7b",
        provider="anthropic",
        base_url="http://127.0.0.1:11434/v1",
        system="Be brief.\n",
        tools=("bash", "read_file"),
        max_turns=5,
        max_tokens=5000,
        tool_timeout=30,
        tool_output_limit=4096,
    )
    assert m.has_loop


@pytest.mark.parametrize("text", [LOOP, LOOP + "  tools: []\n  max_turns: '7'\n"])
def test_the_loop_survives_json_as_versions_store_it(text: str) -> None:
    m = parse_manifest(text)
    assert Manifest.model_validate_json(m.model_dump_json()) == m


BAD = [
    ("loop: yes\n", 1, "loop: true is not a mapping.", "`loop:`"),
    ("loop:\n  provider: openai\n", 1, "loop: names no model.", "model: NAME"),
    # An empty section (its keys commented out, or null) is refused as `loop: {}` is, not taken as
    # no loop at all (a main.py beside it was published as a code agent).
    ("loop: {}\n", 1, "loop: names no model.", "model: NAME"),
    ("name: a\nloop:\n#  model: x\n#  provider: openai\n", 2, "loop: names no model.", "model: NAME"),
    ("loop: ~\n", 1, "loop: names no model.", "model: NAME"),
    ("loop:\n  model: x\n", 1, "loop: names no provider.", "provider: anthropic"),
    (
        "loop:\n  model: x\n  provider: azure\n",
        3,
        "loop.provider: 'azure' is not a provider.",
        "provider: openai",
    ),
    (
        "loop:\n  model: x\n  provider: openai\n",
        1,
        "names no api_key_secret, and openai's public",
        "orch secret set",
    ),
    (
        "loop:\n  model: ''\n  provider: openai\n",
        2,
        "loop.model: '' is not a model name.",
        "name of the model",
    ),
    # The CLI prints the model (`orch agents list`): an ESC in it would clear the lister's screen.
    (
        'loop:\n  model: "x\\e[2J\\e]0;pwned\\a"\n  provider: openai\n  base_url: http://h\n',
        2,
        "loop.model: 'x\\x1b[2J\\x1b]0;pwned\\x07' holds a control character or a line break",
        "on one line",
    ),
    (
        'loop:\n  model: "a\\nb"\n  provider: openai\n  base_url: http://h\n',
        2,
        "loop.model: 'a\\nb' holds a control character or a line break",
        "on one line",
    ),
    (
        'loop:\n  model: "a\\x9bb"\n  provider: openai\n  base_url: http://h\n',
        2,
        "holds a control character or a line break",
        "on one line",
    ),
    # urlsplit drops the line break: http://h/v1 (allowed) would be kept as http://h/v\n1.
    (
        'loop:\n  model: x\n  provider: openai\n  base_url: "http://h/v\\n1"\n',
        4,
        "loop.base_url: 'http://h/v\\n1' holds a control character or a line break.",
        "endpoint's URL",
    ),
    (
        "loop:\n  model: x\n  provider: openai\n  base_url: localhost:8000\n",
        4,
        "loop.base_url: 'localhost:8000' is not an http:// or https:// URL.",
        "http://127.0.0.1",
    ),
    (
        "loop:\n  model: x\n  provider: openai\n  base_url: http://u:p@h/v1\n",
        4,
        "holds a user name or password",
        "endpoint's URL",
    ),
    (
        "loop:\n  model: x\n  provider: openai\n  api_key_secret: key\n",
        4,
        "'key' is not a secret name.",
        "upper",
    ),
    (
        "loop:\n  model: x\n  provider: openai\n  base_url: http://h\n  tools: [bash, web]\n",
        5,
        "'web' is not a built-in tool",
        "edit_file",
    ),
    (
        "loop:\n  model: x\n  provider: openai\n  base_url: http://h\n  tools: bash\n",
        5,
        "is not a list of tools",
        "bash",
    ),
    (
        "loop:\n  model: x\n  provider: openai\n  base_url: http://h\n  tools: [bash, bash]\n",
        5,
        "bash is listed more than once",
        "once",
    ),
    (
        "loop:\n  model: x\n  provider: openai\n  base_url: http://h\n  max_turns: 0\n",
        5,
        "0 is not between 1 and 1000",
        "1 to 1000",
    ),
    # YAML's own words for YAML's values, never Python's (True, None).
    (
        "loop:\n  model: x\n  provider: openai\n  base_url: http://h\n  max_turns: true\n",
        5,
        "loop.max_turns: true is not a whole number.",
        "20",
    ),
    (
        "loop:\n  model: x\n  provider: openai\n  base_url: http://h\n  max_turns: null\n",
        5,
        "loop.max_turns: an empty value (null) is not a whole number.",
        "20",
    ),
    (
        "loop:\n  model: x\n  provider: openai\n  base_url: http://h\n  tool_timeout:\n",
        5,
        "loop.tool_timeout: an empty value (null) is not a whole number.",
        "120",
    ),
    (
        "loop:\n  model: x\n  provider: openai\n  base_url: http://h\n  tools:\n",
        5,
        "loop.tools: an empty value (null) is not a list of tools.",
        "bash",
    ),
    (
        "loop:\n  model: false\n  provider: openai\n  base_url: http://h\n",
        2,
        "loop.model: false is not a model name.",
        "name of the model",
    ),
    (
        "loop:\n  model: x\n  provider: openai\n  api_key_secret: true\n",
        4,
        "loop.api_key_secret: true is not a secret name.",
        "upper",
    ),
    (
        "loop:\n  model: x\n  provider: openai\n  base_url: http://h\n  tool_output_limit: null\n",
        5,
        "an empty value (null) is not a size",
        "16Ki",
    ),
    (
        "loop:\n  model: x\n  provider: openai\n  base_url: http://h\n  max_tokens: lots\n",
        5,
        "'lots' is not a whole number",
        "200000",
    ),
    (
        "loop:\n  model: x\n  provider: openai\n  base_url: http://h\n  tool_timeout: 1.5\n",
        5,
        "1.5 is not a whole number",
        "120",
    ),
    (
        "loop:\n  model: x\n  provider: openai\n  base_url: http://h\n  tool_output_limit: 5Mi\n",
        5,
        "not between 1 KiB and 1 MiB",
        "1Ki",
    ),
    (
        "loop:\n  model: x\n  provider: openai\n  base_url: http://h\n  system: [a]\n",
        5,
        "['a'] is not text",
        "system prompt",
    ),
    (
        "runtime:\n  command: python main.py\nloop: {model: x, provider: openai, base_url: 'http://h'}\n",
        3,
        "loop: a loop agent runs no command of its own",
        "Remove runtime.command",
    ),
    (
        "secrets: [K]\nloop: {model: x, provider: openai, api_key_secret: K}\n",
        2,
        "K is also under secrets:, which would put the model's key in the sandbox",
        "Remove it from secrets:",
    ),
]


@pytest.mark.parametrize(("text", "line", "message", "fix"), BAD)
def test_each_mistake_names_its_line_and_a_fix(text: str, line: int, message: str, fix: str) -> None:
    error = refusal(text)
    assert error.message.startswith(f"orch.yaml line {line}: "), error.message
    assert message in error.message
    assert fix in error.fix


# The sentence refusing a base_url quotes it without what may be a credential: its user name and
# password (up to the host's last @), its query.
@pytest.mark.parametrize(
    ("url", "shown", "why"),
    [
        ("http://u:pw@127.0.0.1:18822/v1", "'http://***@127.0.0.1:18822/v1'", "holds a user name"),
        ("http://u:pw@h:99999/v1", "'http://***@h:99999/v1'", "is not a URL"),
        ("http://u:pw@h:0/v1", "'http://***@h:0/v1'", "names port 0"),
        ("ftp://u:pw@h/v1", "'ftp://***@h/v1'", "is not an http:// or https:// URL"),
        ("http://u:pw@", "'http://***@'", "names no host"),
        ("u:pw@h/v1", "'***@h/v1'", "is not an http:// or https:// URL"),
        ("http://u:p@pw@h/v1", "'http://***@h/v1'", "holds a user name"),
        ("http://u:p/pw@h/v1", "'http://***@h/v1'", "is not a URL"),  # its port is `p`
        ("http://h/v1?key=pw", "'http://h/v1?***'", "has a query or fragment"),
        ("http://u:pw@h/v1\\e[2J", "'http://***@h/v1\\x1b[2J'", "holds a control character"),
    ],
)
def test_a_refused_base_url_is_quoted_without_its_credentials(url: str, shown: str, why: str) -> None:
    error = refusal(f'loop:\n  model: x\n  provider: openai\n  base_url: "{url}"\n')
    assert error.message.startswith(f"orch.yaml line 4: loop.base_url: {shown} {why}"), error.message
    assert "pw" not in error.message


def test_a_misspelt_key_is_named_with_what_is_missing() -> None:
    error = refusal("loop:\n  modle: x\n  provider: openai\n")
    assert error.message.splitlines() == [
        "orch.yaml line 1: loop.model: is missing.",
        "orch.yaml line 2: loop.modle: unknown key.",
    ]
    assert error.fix.startswith("Add `model:` under `loop:`.")


def test_the_tools_are_the_ones_the_manifest_knows() -> None:
    assert tuple(SPECS) == BUILTIN_TOOLS
    for spec in SPECS.values():
        assert spec.parameters["type"] == "object" and spec.parameters["additionalProperties"] is False
        assert set(spec.parameters["required"]) == set(spec.parameters["properties"])
    assert SPECS["edit_file"].parameters["required"] == ["path", "old", "new"]


# The allowed endpoints


def test_the_setting_defaults_to_the_providers_public_urls(tmp_path: Path) -> None:
    assert config.load(tmp_path, environ={}).model_endpoints == tuple(DEFAULT_URLS.values())
    cfg = config.load(
        tmp_path, environ={"ORCH_MODEL_ENDPOINTS": " http://127.0.0.1:11434/v1/ ,https://x.example"}
    )
    assert cfg.model_endpoints == ("http://127.0.0.1:11434/v1", "https://x.example")
    with pytest.raises(InvalidInput, match="ORCH_MODEL_ENDPOINTS"):
        config.load(tmp_path, environ={"ORCH_MODEL_ENDPOINTS": "localhost:11434"})


@pytest.mark.parametrize(
    ("url", "same"),
    [
        ("HTTPS://API.OpenAI.com:443/v1/", "https://api.openai.com/v1"),
        ("http://127.0.0.1:80/v1", "http://127.0.0.1/v1"),
        ("http://[::1]:8000/v1", "http://[::1]:8000/v1"),
    ],
)
def test_urls_are_compared_normalised(url: str, same: str) -> None:
    assert normalised(url) == normalised(same)


def test_a_loop_must_call_an_allowed_endpoint() -> None:
    allowed = ("https://api.openai.com/v1", "http://127.0.0.1:11434/v1")
    assert check_allowed("openai", None, allowed) == "https://api.openai.com/v1"
    assert check_allowed("openai", "http://127.0.0.1:11434/v1", allowed) == "http://127.0.0.1:11434/v1"
    with pytest.raises(InvalidInput) as caught:
        check_allowed("openai", "http://169.254.169.254/v1", allowed)
    assert caught.value.message == (
        "orch.yaml: loop.base_url http://169.254.169.254/v1 is not one of this server's allowed model "
        "endpoints (https://api.openai.com/v1, http://127.0.0.1:11434/v1)."
    )
    assert "ORCH_MODEL_ENDPOINTS" in caught.value.fix
    with pytest.raises(
        InvalidInput, match=re.escape("anthropic's public endpoint https://api.anthropic.com")
    ):
        check_allowed("anthropic", None, allowed)
    with pytest.raises(InvalidInput, match=r"endpoints \(none\)"):
        check_allowed("openai", None, ())
    with pytest.raises(InvalidInput):  # the same host on another port is another endpoint
        check_allowed("openai", "http://127.0.0.1:11435/v1", allowed)


# A loop agent's entrypoint


def test_a_loop_agent_needs_no_entrypoint() -> None:
    loop = parse_manifest(LOOP)
    found = detect_entrypoint(["orch.yaml", "notes.md"], loop, None)
    assert (found.path, found.language, found.command) == ("", Language.PYTHON, ())
    node = detect_entrypoint(["orch.yaml", "index.js"], loop, None)  # its language picks the base
    assert (node.path, node.language, node.command) == ("index.js", Language.NODE, ())
    with pytest.raises(InvalidInput, match="No entrypoint found"):
        detect_entrypoint(["notes.md"], Manifest(), None)


# The clip


def test_clip_keeps_head_and_tail() -> None:
    assert clip(b"short", 10) == "short"
    assert clip(b"0123456789", 10) == "0123456789"
    assert clip(b"0123456789abcdef", 10) == "01234\n[... 6 bytes cut ...]\nbcdef"
