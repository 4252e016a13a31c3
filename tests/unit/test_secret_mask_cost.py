"""The masker's cost is linear in the output, and it masks exactly as the masker before it did.

Masking runs on the server's CPU for output an agent chooses; the masker before this one copied
the rest of the output from every place in a value's length of it that began the value, so a
64 KiB value cost a 64 KiB piece ~2 GiB of copying (0.3 s). Cost is counted here, not timed
(bench/mask.py times it): every search and comparison the masker makes goes through `_find` and
`_common`, which these tests count."""

from __future__ import annotations

import itertools
import sys
from collections.abc import Callable, Iterable, Iterator
from types import FrameType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orch.secret import mask
from orch.secret.mask import Redactor
from tests.mask_reference import OldRedactor


def outputs(redactor: Redactor | OldRedactor, pieces: list[bytes]) -> list[tuple[bytes, int]]:
    """What each piece gives and how much is held after it; then the close, and a second stream
    fed to the same redactor."""
    got = [(redactor.feed(p), redactor.held) for p in pieces]
    got.append((redactor.close(), redactor.held))
    got += [(redactor.feed(p), redactor.held) for p in pieces[:2]]
    got.append((redactor.close(), redactor.held))
    return got


def splits(text: bytes, cuts: Iterable[int]) -> list[bytes]:
    bounds = [0, *sorted(min(c, len(text)) for c in cuts), len(text)]
    return [text[a:b] for a, b in itertools.pairwise(bounds)]


AB = st.sampled_from([b"ab", b"abc"])


@st.composite
def cases(draw: st.DrawFn, longest: int = 40, size: int = 200) -> tuple[list[bytes], list[bytes]]:
    """Values over a two or three letter alphabet, many of them repeating (a period, maybe broken
    at its end): the values whose occurrences overlap and whose beginnings recur inside them; and
    output made of them, their beginnings, repetitions and noise, cut anywhere."""
    alphabet = draw(AB)
    letters = st.binary(min_size=1, max_size=longest).map(
        lambda b: bytes(alphabet[c % len(alphabet)] for c in b)
    )

    @st.composite
    def repeating(draw: st.DrawFn) -> bytes:
        unit = draw(letters)[: draw(st.integers(1, 4))]
        length = draw(st.integers(1, longest))
        text = (unit * length)[:length]
        if draw(st.booleans()):
            text = text[:-1] + draw(st.sampled_from([bytes([c]) for c in alphabet]))
        return text

    values = draw(st.lists(st.one_of(letters, repeating()), min_size=1, max_size=4))
    parts = st.one_of(
        st.sampled_from(values).flatmap(lambda v: st.integers(1, 3).map(lambda n: v * n)),
        st.sampled_from(values).flatmap(lambda v: st.integers(0, len(v)).map(lambda n: v[:n])),
        repeating(),
        letters,
    )
    text = b"".join(draw(st.lists(parts, max_size=12)))[:size]
    cuts = draw(st.one_of(st.lists(st.integers(0, size), max_size=12), st.just(list(range(len(text))))))
    return values, splits(text, cuts)


@settings(max_examples=300, deadline=None)
@given(case=cases())
def test_masks_every_piece_as_the_masker_before(case: tuple[list[bytes], list[bytes]]) -> None:
    values, pieces = case
    assert outputs(Redactor(values), pieces) == outputs(OldRedactor(values), pieces)


@settings(max_examples=50, deadline=None)
@given(case=cases(longest=300, size=1500))
def test_long_repeating_values_mask_as_before(case: tuple[list[bytes], list[bytes]]) -> None:
    values, pieces = case
    assert outputs(Redactor(values), pieces) == outputs(OldRedactor(values), pieces)


def borders(v: bytes, j: int) -> Iterator[int]:
    return (b for b in range(j + 1) if v[:b] == v[j - b : j])


@settings(max_examples=300, deadline=None)
@given(
    unit=st.binary(min_size=1, max_size=4).map(lambda b: bytes(97 + c % 2 for c in b)),
    length=st.integers(1, 120),
    flip=st.lists(st.integers(0, 119), max_size=2),
    data=st.data(),
)
def test_the_longest_border_at_most_a_length(
    unit: bytes, length: int, flip: list[int], data: st.DataObject
) -> None:
    """`shorter` steps over each period's run of borders at once: the same as walking them."""
    v = bytearray((unit * length)[:length])
    for at in flip:
        v[at % length] = ord("c")
    value = mask._Value(bytes(v))
    j = data.draw(st.integers(1, length))
    most = data.draw(st.integers(0, j))
    assert value.shorter(j, most) == max(b for b in borders(bytes(v), j) if b <= most)


class Reads:
    """The bytes the masker's searches and comparisons read (an upper bound: a search reads the
    value, and the output up to what it finds or to its end; a comparison at most twice what
    matched, and a chunk, or the two first bytes when they differ), their number, and the KMP
    table entries it computes."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.bytes = self.steps = self.table = 0
        find, common, grow = mask._find, mask._common, mask._Value.grow

        def counted_find(haystack: bytes, needle: bytes | int, start: int, end: int | None = None) -> int:
            found = find(haystack, needle, start, end)
            stop = len(haystack) if end is None else end
            self.steps += 1
            self.bytes += (1 if isinstance(needle, int) else len(needle)) + max(
                0, (found if found >= 0 else stop) - start
            )
            return found

        def counted_common(a: bytes, i: int, b: memoryview, j: int, most: int) -> int:
            same = common(a, i, b, j, most)
            self.steps += 1
            # Its first bytes differ: it compared those two and read no chunk.
            self.bytes += min(most, 2 * same + 17) if same else min(most, 2)
            return same

        def counted_grow(value: mask._Value, upto: int) -> None:
            before = len(value.border) + len(value.strong)
            grow(value, upto)
            self.table += len(value.border) + len(value.strong) - before

        monkeypatch.setattr(mask, "_find", counted_find)
        monkeypatch.setattr(mask, "_common", counted_common)
        monkeypatch.setattr(mask._Value, "grow", counted_grow)


X = b"x" * 65535


def chunks(text: bytes, size: int) -> list[bytes]:
    return [text[i : i + size] for i in range(0, len(text), size)]


def lines_run(call: Callable[[], object]) -> int:
    """How many lines of orch/secret/mask.py run during `call()`: the masker's Python steps."""
    count = 0

    def line(frame: FrameType, event: str, arg: object) -> Callable[..., object] | None:
        nonlocal count
        count += event == "line"
        return line

    def call_event(frame: FrameType, event: str, arg: object) -> Callable[..., object] | None:
        return line if frame.f_code.co_filename == mask.__file__ else None

    before = sys.gettrace()
    sys.settrace(call_event)
    try:
        call()
    finally:
        sys.settrace(before)
    return count


def test_the_reported_case_takes_a_few_steps() -> None:
    """Tested on any masker: the one before looked again at each of the 65535 places that began
    the value, copying the rest of the piece each time (a step per place)."""
    redactor = Redactor([X + b"y"])
    assert lines_run(lambda: redactor.feed(X + b"z")) < 300
    assert lines_run(lambda: [redactor.feed(X + b"z") for _ in range(7)]) < 7 * 300


def test_the_reported_case_reads_each_byte_a_few_times(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 64 KiB value fed 64 KiB pieces that are all of it but its last byte: each piece was
    ~2 GiB of copying; now each byte is read about four times, in a few dozen searches."""
    reads = Reads(monkeypatch)
    redactor = Redactor([X + b"y"])
    for _ in range(8):
        assert redactor.feed(X + b"z") == X + b"z" and redactor.held == 0
    assert reads.bytes <= 5 * 8 * 65536
    assert reads.steps <= 8 * 8 and reads.table <= 2


CASES = {
    "the reported case": ([X + b"y"], [X + b"z"] * 4),
    "fifteen such values": ([X + bytes([65 + i]) for i in range(15)], [X + b"z"] * 2),
    "a value overlapping itself, printed over and over": ([b"a" * 4096], chunks(b"a" * (1 << 19), 1 << 16)),
    "a value's beginning held, then small pieces": ([X + b"y"], chunks(b"x" * (1 << 19), 4096)),
    "a value's beginning held, then byte by byte": ([X + b"y"], [X, *chunks(b"x" * 3000, 1)]),
    "a repeating value printed byte by byte": ([b"xA" * 32768], chunks(b"xA" * 34000, 1)),
    "a repeating value printed 7 bytes at a time": ([b"xA" * 32768], chunks(b"xA" * 40000, 7)),
    "its beginning over and over, but not it": ([b"ab" * 30000 + b"c"], chunks(b"ab" * (1 << 18), 1 << 16)),
    "values inside one another": ([b"a", b"aa", b"ab" * 100], chunks(b"ab" * 20000, 13)),
}


@pytest.mark.parametrize("name", CASES)
def test_a_piece_costs_its_length_and_what_is_held(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """For each value, a piece reads in proportion to its length plus what was held back, and
    loops in Python in proportion to its length; a value's tables are computed once."""
    values, pieces = CASES[name]
    reads = Reads(monkeypatch)
    redactor = Redactor(values)
    for piece in pieces:
        held, read, steps = redactor.held, reads.bytes, reads.steps
        redactor.feed(piece)
        assert reads.bytes - read <= len(values) * (8 * (len(piece) + held) + 64), name
        assert reads.steps - steps <= len(values) * (4 * len(piece) + 16), name
    redactor.close()
    assert reads.table <= 2 * sum(map(len, values))


@settings(max_examples=100, deadline=None)
@given(case=cases(longest=120, size=1200))
def test_any_piece_costs_its_length_and_what_is_held(case: tuple[list[bytes], list[bytes]]) -> None:
    values, pieces = case
    with pytest.MonkeyPatch.context() as monkeypatch:
        reads = Reads(monkeypatch)
        redactor = Redactor(values)
        for piece in pieces:
            held, read = redactor.held, reads.bytes
            redactor.feed(piece)
            assert reads.bytes - read <= len(values) * (8 * (len(piece) + held) + 64)
