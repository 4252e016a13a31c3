"""orch.yaml: every key, its defaults, and a message naming the file, line and key for each mistake."""

from __future__ import annotations

import pytest

from orch.bundle import Manifest, Resources, parse_manifest
from orch.errors import InvalidInput

MiB = 1024**2
GiB = 1024**3

FULL = """\
name: summarizer
entrypoint: main.py
runtime:
  command: python main.py --fast
environment: python-ml
resources: {cpus: 1, memory: 512Mi, timeout: 300}
env: {LOG_LEVEL: info}
network: true
run_command: apt-get install -y ffmpeg
"""


def refusal(text: str) -> InvalidInput:
    with pytest.raises(InvalidInput) as caught:
        parse_manifest(text)
    return caught.value


def test_full_manifest() -> None:
    m = parse_manifest(FULL)
    assert m.name == "summarizer"
    assert m.entrypoint == "main.py"
    assert m.command == "python main.py --fast"
    assert m.environment == "python-ml"
    assert m.resources == Resources(cpus=1.0, memory_bytes=512 * MiB, timeout=300, pids=256)
    assert m.env == {"LOG_LEVEL": "info"}
    assert m.network is True
    assert m.run_command == "apt-get install -y ffmpeg"
    assert m.loop is None and not m.has_loop


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n", "{}", "---\n", "\ufeff"])
def test_empty_manifest_is_all_defaults(text: str) -> None:
    m = parse_manifest(text)
    assert m == Manifest()
    assert (m.name, m.entrypoint, m.command, m.environment, m.run_command) == (None,) * 5
    assert m.resources == Resources(cpus=1.0, memory_bytes=512 * MiB, timeout=300, pids=256)
    assert m.env == {} and m.network is True and not m.has_loop


def test_loop_section_is_accepted() -> None:
    # Its keys and their mistakes: tests/unit/test_loop_manifest.py.
    m = parse_manifest("loop:\n  model: some-llm\n  provider: openai\n  base_url: http://127.0.0.1:8000/v1\n")
    assert m.has_loop
    assert m.loop is not None and (m.loop.model, m.loop.provider) == ("some-llm", "openai")


@pytest.mark.parametrize(
    "text",
    [
        FULL,
        "loop: {model: x, provider: anthropic, base_url: 'http://h', tools: [bash]}\n",
        "resources: {memory: 1Gi}",
    ],
)
def test_manifest_survives_json_as_versions_store_it(text: str) -> None:
    m = parse_manifest(text)
    assert Manifest.model_validate_json(m.model_dump_json()) == m


@pytest.mark.parametrize(
    ("written", "size"),
    [
        ("512Mi", 512 * MiB),
        ("1Gi", GiB),
        ("256M", 256 * 10**6),
        ("1G", 10**9),
        ("300000k", 300_000_000),
        ("1.5Gi", 3 * GiB // 2),
        ("2GiB", 2 * GiB),
        ("64Gi", 64 * GiB),
        ("16Mi", 16 * MiB),
        ("1073741824", GiB),
        ("1073741824  # bytes", GiB),
    ],
)
def test_memory_sizes(written: str, size: int) -> None:
    assert parse_manifest(f"resources:\n  memory: {written}\n").resources.memory_bytes == size


def test_memory_as_plain_int() -> None:
    assert parse_manifest("resources: {memory: 33554432}").resources.memory_bytes == 32 * MiB


def test_other_resources() -> None:
    r = parse_manifest("resources: {cpus: 0.5, timeout: 5m, pids: 64}").resources
    assert (r.cpus, r.timeout, r.pids) == (0.5, 300, 64)
    assert parse_manifest("resources: {timeout: 1h}").resources.timeout == 3600
    assert parse_manifest("resources: {timeout: '90'}").resources.timeout == 90


def test_env_values_become_text() -> None:
    m = parse_manifest("env:\n  A: 1\n  B: 2.5\n  C: true\n  D: off\n  E: ''\n  _F9: x\n")
    assert m.env == {"A": "1", "B": "2.5", "C": "true", "D": "false", "E": "", "_F9": "x"}


def test_network_false_and_paths_normalised() -> None:
    m = parse_manifest("network: false\nentrypoint: ./src/app.js\n")
    assert m.network is False
    assert m.entrypoint == "src/app.js"


# (manifest, line, message part, fix part): each mistake names its file, line and key.
BAD = [
    (
        "name: a\nresources:\n  cpus: 1\n  memory: 12 bananas\n",
        4,
        "resources.memory: '12 bananas' is not a size.",
        "512Mi",
    ),
    ("name: a\ncolour: red\n", 2, "colour: unknown key.", "Known keys here: name, entrypoint, runtime"),
    ("resources:\n  cpu: 2\n", 2, "resources.cpu: unknown key.", "cpus, memory, timeout, pids"),
    ("runtime:\n  cmd: x\n", 2, "runtime.cmd: unknown key.", "command"),
    ("resources:\n  memory_bytes: 1024\n", 2, "resources.memory_bytes: unknown key.", "memory"),
    (
        "\nresources:\n  memory: 1Mi\n",
        3,
        "resources.memory: '1Mi' is less than the minimum of 16 MiB.",
        "16Mi",
    ),
    (
        "resources:\n  memory: 65Gi\n",
        2,
        "resources.memory: '65Gi' is more than the maximum of 64 GiB.",
        "64Gi",
    ),
    ("resources:\n  memory: true\n", 2, "resources.memory: true is not a size.", "512Mi"),
    ("resources:\n  memory: -5\n", 2, "resources.memory: -5 is less than the minimum", "16Mi"),
    ("resources: {cpus: 0}", 1, "resources.cpus: 0 is not between 0.01 and 64 CPUs.", "a hundredth"),
    ("resources: {cpus: 65}", 1, "resources.cpus: 65 is not between 0.01 and 64 CPUs.", "to 64"),
    ("resources: {cpus: many}", 1, "resources.cpus: 'many' is not a number of CPUs.", "0.5"),
    ("resources: {cpus: .nan}", 1, "resources.cpus: nan is not between", "64"),
    (
        "resources:\n\n  timeout: 0\n",
        3,
        "resources.timeout: 0 is not between 1 second and 24 hours.",
        "86400",
    ),
    ("resources:\n  timeout: 86401\n", 2, "resources.timeout: 86401 is not between", "86400"),
    ("resources:\n  timeout: 1.5\n", 2, "resources.timeout: 1.5 is not a number of seconds.", "300"),
    ("resources:\n  timeout: soon\n", 2, "resources.timeout: 'soon' is not a number of seconds.", "300"),
    ("resources:\n  pids: 8\n", 2, "resources.pids: 8 is not between 16 and 4096.", "16 to 4096"),
    ("resources:\n  pids: lots\n", 2, "resources.pids: 'lots' is not a whole number.", "256"),
    ("resources: 4\n", 1, "resources: 4 is not a mapping.", "`resources:`"),
    ("runtime: python main.py\n", 1, "runtime: 'python main.py' is not a mapping.", "`runtime:`"),
    (
        "runtime:\n  command: 'python \"x'\n",
        2,
        "runtime.command: 'python \"x' has a quote that is never closed.",
        "quote",
    ),
    ("runtime:\n  command: '  '\n", 2, "runtime.command: the command is empty.", "remove the key"),
    ("runtime:\n  command: [python, x]\n", 2, "runtime.command: ['python', 'x'] is not text.", "text"),
    ("name: My Agent\n", 1, "name: Agent name 'My Agent' is not valid.", "lower-case"),
    ("name: 7\n", 1, "name: 7 is not text.", "text"),
    ("entrypoint: main.rb\n", 1, "entrypoint: 'main.rb' is neither a .py nor a .js file.", "main.py"),
    (
        "entrypoint: /abs/main.py\n",
        1,
        "entrypoint: '/abs/main.py' is not a path inside the bundle.",
        "main.py",
    ),
    ("entrypoint: ../main.py\n", 1, "entrypoint: '../main.py' is not a path inside the bundle.", "main.py"),
    (
        "entrypoint: src\\main.py\n",
        1,
        "entrypoint: 'src\\\\main.py' is not a path inside the bundle.",
        "main.py",
    ),
    ("environment: Python ML\n", 1, "environment: Environment 'Python ML' is not valid.", "lower-case"),
    ("env:\n  OK: 1\n  bad-name: x\n", 3, "env.bad-name: 'bad-name' is not a variable name.", "letters"),
    ("env:\n  9LIVES: x\n", 2, "env.9LIVES: '9LIVES' is not a variable name.", "letters"),
    ("env:\n  ORCH_TOKEN: x\n", 2, "env.ORCH_TOKEN: ORCH_TOKEN starts with ORCH_", "another name"),
    ("env:\n  EMPTY:\n", 2, "env.EMPTY: has no value.", '""'),
    ("env:\n  LIST: [1, 2]\n", 2, "env.LIST: [1, 2] is not text or a number.", "quotes"),
    ("env: [A, B]\n", 1, "env: ['A', 'B'] is not a mapping.", "`env:`"),
    ("network: maybe\n", 1, "network: 'maybe' is not true or false.", "network: false"),
    ("run_command: ''\n", 1, "run_command: the command is empty.", "remove the key"),
    ("loop: yes\n", 1, "loop: true is not a mapping.", "`loop:`"),
    ("loop:\n  when: 2024-01-01\n", 1, "loop.when: unknown key.", "Known keys here: model, provider"),
    ("loop: &x {self: *x}\n", 1, "loop.self: unknown key.", "Known keys here: model, provider"),
    ("name: a\nname: b\n", 2, "name: the key is also on line 1.", "Keep one"),
    ("resources:\n  cpus: 1\n  cpus: 2\n", 3, "resources.cpus: the key is also on line 2.", "Keep one"),
    ("name: a\n  b: c\n", 2, "not valid YAML: mapping values are not allowed here.", "indentation"),
    ("name: [a\n", 2, "not valid YAML:", "indentation"),
    ("- name: a\n", 1, "the manifest is a list, not a mapping of keys.", "name: my-agent"),
    ("just words\n", 1, "the manifest is a single value, not a mapping of keys.", "entrypoint: main.py"),
    (
        "a: 1\n---\nb: 2\n",
        2,
        "expected a single document in the stream, but found another document.",
        "indentation",
    ),
    ("name: a\nx: \x07\n", 2, "character U+0007 is not allowed.", "control characters"),
]


@pytest.mark.parametrize(("text", "line", "message", "fix"), BAD)
def test_each_mistake_names_file_line_and_key(text: str, line: int, message: str, fix: str) -> None:
    error = refusal(text)
    assert error.message.startswith(f"orch.yaml line {line}: "), error.message
    assert message in error.message
    assert fix in error.fix


def test_exact_message_of_a_bad_size() -> None:
    error = refusal("name: a\nresources:\n  cpus: 1\n  memory: 12 bananas\n")
    assert error.message == "orch.yaml line 4: resources.memory: '12 bananas' is not a size."
    assert error.fix == "Use a size such as 512Mi or 1Gi."
    assert error.details["problems"] == [
        {"line": 4, "key": "resources.memory", "message": error.message, "fix": error.fix}
    ]


def test_several_mistakes_are_all_listed_in_line_order() -> None:
    error = refusal("network: 3\nname: x\nresources:\n  pids: 1\ncolour: red\n")
    assert error.message.splitlines() == [
        "orch.yaml line 1: network: 3 is not true or false.",
        "orch.yaml line 4: resources.pids: 1 is not between 16 and 4096.",
        "orch.yaml line 5: colour: unknown key.",
    ]
    assert "Write network: true" in error.fix and "16 to 4096" in error.fix


def test_filename_is_the_one_given() -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_manifest("colour: red", "orch.yml")
    assert caught.value.message == "orch.yml line 1: colour: unknown key."


def test_values_yaml_cannot_build_are_refused() -> None:
    impossible_date = refusal("name: a\nwhen: 2001-02-30\n")
    assert "a value can't be read" in impossible_date.message
    assert "Quote" in impossible_date.fix
    assert "nested too deeply" in refusal("[" * 10_000).message
    assert "could not determine a constructor" in refusal("x: !!python/object/apply:os.system [ls]\n").message


def test_huge_manifest_is_refused_before_parsing() -> None:
    error = refusal("# " + "x" * (1024 * 1024) + "\n")
    assert "a manifest is at most 1 MiB" in error.message


def test_python_code_builds_manifests_by_field_name() -> None:
    r = Resources(memory_bytes=64 * MiB, cpus=2)
    assert r.memory_bytes == 64 * MiB and r.cpus == 2.0
    with pytest.raises(ValueError, match="not a size"):
        Resources(memory_bytes="lots")


def test_isolation_is_runc_or_gvisor() -> None:
    assert parse_manifest("isolation: gvisor\n").isolation == "gvisor"
    assert parse_manifest("name: a\n").isolation is None  # the server's setting decides
    with pytest.raises(InvalidInput) as e:
        parse_manifest("isolation: kata\n")
    assert "line 1" in e.value.message and "'kata' is not an isolation runtime" in e.value.message
    assert "isolation: gvisor" in e.value.fix
