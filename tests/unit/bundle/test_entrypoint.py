"""Which file a run starts: the manifest's choice, else the detected one (docs/agents.md,
"Publishing")."""

from __future__ import annotations

import pytest

from orch.bundle import Entrypoint, Language, Manifest, detect_entrypoint, parse_manifest
from orch.errors import InvalidInput

NONE = Manifest()


@pytest.mark.parametrize(
    ("name", "language", "program"),
    [
        ("main.py", Language.PYTHON, "python"),
        ("agent.py", Language.PYTHON, "python"),
        ("app.py", Language.PYTHON, "python"),
        ("index.js", Language.NODE, "node"),
        ("main.js", Language.NODE, "node"),
    ],
)
def test_each_default_candidate(name: str, language: Language, program: str) -> None:
    found = detect_entrypoint([name, "README.md", "lib/helpers.py"], NONE, None)
    assert found == Entrypoint(name, language, (program, name))


@pytest.mark.parametrize(
    ("files", "chosen"),
    [
        (["app.py", "agent.py", "main.py"], "main.py"),
        (["app.py", "agent.py"], "agent.py"),
        (["main.js", "index.js"], "index.js"),
    ],
)
def test_preference_order_within_a_language(files: list[str], chosen: str) -> None:
    assert detect_entrypoint(files, NONE, None).path == chosen


def test_only_top_level_files_are_candidates() -> None:
    with pytest.raises(InvalidInput, match="No entrypoint found"):
        detect_entrypoint(["src/main.py", "lib/index.js"], NONE, None)


def test_package_json_main() -> None:
    found = detect_entrypoint(["server.js", "package.json"], NONE, b'{"name": "x", "main": "server.js"}')
    assert found == Entrypoint("server.js", Language.NODE, ("node", "server.js"))


def test_package_json_main_comes_before_index_js() -> None:
    files = ["index.js", "src/start.js", "package.json"]
    assert detect_entrypoint(files, NONE, b'{"main": "./src/start.js"}').path == "src/start.js"


def test_package_json_main_resolved_as_node_does() -> None:
    assert detect_entrypoint(["lib/run.js"], NONE, b'{"main": "lib/run"}').path == "lib/run.js"
    assert detect_entrypoint(["lib/index.js"], NONE, b'{"main": "lib"}').path == "lib/index.js"


def test_package_json_main_that_is_missing_is_not_a_candidate() -> None:
    assert detect_entrypoint(["index.js"], NONE, b'{"main": "dist/bundle.js"}').path == "index.js"
    # With nothing else found, the sentence names "main", the rule its author relied on (found
    # by a tester: "No entrypoint found: the bundle has none of main.py, ...").
    with pytest.raises(InvalidInput) as caught:
        detect_entrypoint(["package.json"], NONE, b'{"main": "dist/bundle.js"}')
    assert caught.value.message == (
        'package.json\'s "main" names dist/bundle.js, which is not a .js file of the bundle.'
    )
    assert 'correct "main" in package.json' in caught.value.fix


def test_package_json_main_with_python_is_mixed() -> None:
    with pytest.raises(InvalidInput) as caught:
        detect_entrypoint(["main.py", "server.js"], NONE, b'{"main": "server.js"}')
    assert "(main.py, server.js)" in caught.value.message


@pytest.mark.parametrize(
    ("package_json", "message"),
    [
        (b"{not json", "package.json is not valid JSON."),
        (b"[1, 2]", "package.json is not a JSON object."),
        (b'{"main": 5}', 'package.json\'s "main" is 5, not a path.'),
        (b"\xff\xfe", "package.json is not valid JSON."),
        (b"[" * 100_000, "package.json is not valid JSON."),
    ],
)
def test_malformed_package_json(package_json: bytes, message: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        detect_entrypoint(["index.js"], NONE, package_json)
    assert caught.value.message == message
    assert "package.json" in caught.value.fix


def test_manifest_entrypoint_wins_over_detection() -> None:
    manifest = parse_manifest("entrypoint: src/bot.js")
    found = detect_entrypoint(["main.py", "src/bot.js"], manifest, None)
    assert found == Entrypoint("src/bot.js", Language.NODE, ("node", "src/bot.js"))


def test_manifest_entrypoint_settles_mixed_languages() -> None:
    found = detect_entrypoint(["main.py", "index.js"], parse_manifest("entrypoint: index.js"), None)
    assert found.language is Language.NODE


def test_manifest_entrypoint_must_be_in_the_bundle() -> None:
    with pytest.raises(InvalidInput) as caught:
        detect_entrypoint(["main.py"], parse_manifest("entrypoint: bot.py"), None)
    assert caught.value.message == "orch.yaml names the entrypoint bot.py, which is not in the bundle."
    assert "entrypoint:" in caught.value.fix


def test_runtime_command_is_split_like_a_shell() -> None:
    manifest = parse_manifest("runtime:\n  command: python main.py --fast --name 'two words'\n")
    found = detect_entrypoint(["main.py"], manifest, None)
    assert found == Entrypoint(
        "main.py", Language.PYTHON, ("python", "main.py", "--fast", "--name", "two words")
    )


def test_mixed_languages_without_manifest() -> None:
    with pytest.raises(InvalidInput) as caught:
        detect_entrypoint(["index.js", "main.py", "README.md"], NONE, None)
    assert caught.value.message == (
        "Found both Python and JavaScript entrypoints (main.py, index.js) and no manifest entrypoint."
    )
    assert caught.value.fix == "Add `entrypoint: FILE` to orch.yaml."


def test_none_found_names_the_files() -> None:
    files = ["README.md", "run.sh", "lib/x.py", "a.txt", "b.txt", "c.txt", "d.txt"]
    with pytest.raises(InvalidInput) as caught:
        detect_entrypoint(files, NONE, None)
    message = caught.value.message
    assert message.startswith(
        "No entrypoint found: the bundle has none of main.py, agent.py, app.py, index.js, main.js"
    )
    assert "README.md, a.txt, b.txt, c.txt, d.txt and 2 more" in message
    assert "entrypoint: FILE" in caught.value.fix


def test_none_found_in_an_empty_list() -> None:
    with pytest.raises(InvalidInput, match=r"\(its files: none\)"):
        detect_entrypoint([], NONE, None)
