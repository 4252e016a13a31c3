"""Properties over generated text: parse_manifest returns a Manifest or raises InvalidInput, nothing else."""

from __future__ import annotations

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orch.bundle import Manifest, parse_manifest, parse_size
from orch.errors import InvalidInput

SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# Generating and dumping documents costs more per example than the parse being tested.
DOCUMENT_SETTINGS = settings(SETTINGS, max_examples=200)

KEYS = ["name", "entrypoint", "runtime", "command", "environment", "resources", "cpus", "memory", "timeout"]
KEYS += ["pids", "env", "network", "run_command", "loop", "LOG_LEVEL", "ORCH_X", "x-y", "<<"]
YAML_ALPHABET = st.sampled_from(list(":-{}[],&*!|>'\"#%@`?\\ \n\t.0123456789abcxyzMiGi") + KEYS)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=20)
    | st.sampled_from(["512Mi", "1Gi", "5m", "python-ml", "main.py", "app.js", "x.rb", "2024-01-01", "-1"])
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8), inner)
    ),
    max_leaves=20,
)
DOCUMENTS = st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=10), VALUES, max_size=8)


def outcome(text: str) -> Manifest | InvalidInput:
    try:
        return parse_manifest(text)
    except InvalidInput as error:
        return error


def check(text: str) -> None:
    manifest = outcome(text)
    if isinstance(manifest, InvalidInput):
        assert manifest.message.startswith("orch.yaml")
        assert manifest.fix
        return
    # What was accepted is stored as JSON and read back by the run worker.
    assert Manifest.model_validate_json(manifest.model_dump_json()) == manifest


@SETTINGS
@given(st.text())
def test_any_text(text: str) -> None:
    check(text)


@SETTINGS
@given(st.lists(YAML_ALPHABET, max_size=60).map("".join))
def test_yaml_shaped_text(text: str) -> None:
    check(text)


@DOCUMENT_SETTINGS
@given(DOCUMENTS)
def test_yaml_documents_of_near_manifest_keys(document: dict[str, object]) -> None:
    check(yaml.safe_dump(document))


@DOCUMENT_SETTINGS
@given(DOCUMENTS, st.integers(min_value=0), st.text(min_size=1, max_size=3))
def test_damaged_yaml_documents(document: dict[str, object], where: int, noise: str) -> None:
    text = yaml.safe_dump(document, default_flow_style=False)
    cut = where % (len(text) + 1)
    check(text[:cut] + noise + text[cut:])


@given(st.integers(min_value=0, max_value=2**62))
def test_plain_byte_counts_are_sizes(n: int) -> None:
    assert parse_size(str(n)) == n
    assert parse_size(f"{n}Ki") == n * 1024
