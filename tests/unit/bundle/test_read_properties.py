"""Properties of the reader over damaged and random archives: refuse or accept, never escape."""

from __future__ import annotations

import gzip
import os
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orch.bundle import extract_bundle, read_bundle
from orch.errors import InvalidInput
from tests.unit.bundle.support import Entry, directory, file, link, tar_bytes

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

NAMES = st.sampled_from(["main.py", "a", "a/b", "./c", "../d", "/e", "f/../g", "h\\i", "", ".", "é.py", "j/"])
TARGETS = st.sampled_from(
    ["main.py", "a", "..", "../..", "/etc", ".", "a/..", "a/../..", "x/y", "../a", "a/b/../../.."]
)
ENTRIES = st.one_of(
    st.builds(file, NAMES, st.binary(max_size=600)),
    st.builds(directory, NAMES),
    st.builds(link, NAMES, TARGETS),
)
BASE = tar_bytes(
    [file("main.py", b"print('hello')\n" * 40), directory("lib"), file("lib/x.py"), link("l", "lib")]
)


def outcome(data: bytes) -> dict[str, bytes] | InvalidInput:
    try:
        return read_bundle(data)
    except InvalidInput as error:
        return error


def check(data: bytes) -> None:
    """Reading refuses with InvalidInput or gives safe paths; unpacking writes inside its directory only."""
    files = outcome(data)
    if isinstance(files, InvalidInput):
        assert files.message and files.fix
        return
    for path in files:
        assert path and not path.startswith("/") and ".." not in path.split("/") and "\\" not in path
    with tempfile.TemporaryDirectory() as tmp:
        dest = Path(tmp) / "out"
        extract_bundle(data, dest)
        top = os.path.realpath(dest)
        for here, dirs, names in os.walk(dest):
            for name in dirs + names:
                real = os.path.realpath(os.path.join(here, name))  # where a link leads, if anywhere
                assert real == top or real.startswith(top + os.sep)
        assert os.listdir(tmp) == ["out"]


@SETTINGS
@given(st.binary(max_size=2048))
def test_random_bytes(data: bytes) -> None:
    check(data)
    check(b"\x1f\x8b" + data)
    check(gzip.compress(data))


@SETTINGS
@given(
    st.lists(st.tuples(st.integers(min_value=0, max_value=len(BASE) - 1), st.integers(0, 255)), max_size=8)
)
def test_damaged_archives(flips: list[tuple[int, int]]) -> None:
    damaged = bytearray(BASE)
    for where, value in flips:
        damaged[where] = value
    check(gzip.compress(bytes(damaged)))


@SETTINGS
@given(st.lists(ENTRIES, max_size=6))
def test_archives_of_odd_entries(entries: list[Entry]) -> None:
    check(gzip.compress(tar_bytes(entries)))
