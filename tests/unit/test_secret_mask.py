"""The streaming redactor: every occurrence of a value is masked, wherever the pieces split it."""

from __future__ import annotations

import itertools
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orch.secret.mask import MASK, Mask, Redactor, redact


def reference(text: bytes, values: list[bytes]) -> bytes:
    """The masking by its definition: each byte inside any occurrence of any value is covered;
    each run of covered bytes made of overlapping occurrences becomes one ***."""
    spans = sorted((i, i + len(v)) for v in values if v for i in range(len(text)) if text.startswith(v, i))
    merged: list[list[int]] = []
    for start, end in spans:
        if merged and start < merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    out, pos = bytearray(), 0
    for start, end in merged:
        out += text[pos:start] + MASK
        pos = end
    return bytes(out + text[pos:])


def fed(pieces: list[bytes], values: list[bytes]) -> tuple[bytes, int]:
    """The output of feeding `pieces` then closing, and the most bytes held back after a piece."""
    r = Redactor(values)
    out, most = b"", 0
    for piece in pieces:
        out += r.feed(piece)
        most = max(most, r.held)
    return out + r.close(), most


def splits(text: bytes, cuts: tuple[int, ...]) -> list[bytes]:
    bounds = [0, *cuts, len(text)]
    return [text[a:b] for a, b in itertools.pairwise(bounds)]


KEY = b"sk-live-51Hx"
TEXT = b"calling the API with " + KEY + b" now\nkey=" + KEY + KEY + b";done sk-live"


def test_one_value_masked_in_whole_output() -> None:
    assert redact(TEXT, [KEY]) == b"calling the API with *** now\nkey=******;done sk-live"
    assert reference(TEXT, [KEY]) == redact(TEXT, [KEY])


@pytest.mark.parametrize("cut", range(len(TEXT) + 1))
def test_a_split_at_every_position_masks_the_same(cut: int) -> None:
    out, most = fed(splits(TEXT, (cut,)), [KEY])
    assert out == redact(TEXT, [KEY])
    assert KEY not in out and most <= len(KEY) - 1


def test_every_pair_of_splits_masks_the_same() -> None:
    expected = redact(TEXT, [KEY])
    for a in range(len(TEXT) + 1):
        for b in range(a, len(TEXT) + 1):
            assert fed(splits(TEXT, (a, b)), [KEY])[0] == expected, (a, b)


def test_byte_by_byte_holds_back_less_than_the_longest_value() -> None:
    out, most = fed([bytes([c]) for c in TEXT], [KEY, b"Hx"])
    assert out == redact(TEXT, [KEY, b"Hx"]) and most == len(KEY) - 1


@pytest.mark.parametrize(
    ("text", "values", "expected"),
    [
        (b"aXaXa", [b"aXa"], b"***"),  # a value overlapping itself
        (b"abcd", [b"abc", b"bcd"], b"***"),  # two values overlapping
        (b"xabcdx", [b"bc", b"abcd"], b"x***x"),  # one inside another
        (b"abcd", [b"ab", b"abcd"], b"***"),  # the same start: the longest
        (b"secretsecret", [b"secret"], b"******"),  # touching: two
        (b"aaaaaaa", [b"aa"], b"***"),  # a long chain of overlaps
        (b"no match here", [b"zz"], b"no match here"),
        (b"", [b"x"], b""),
    ],
)
def test_overlapping_and_touching_values(text: bytes, values: list[bytes], expected: bytes) -> None:
    assert redact(text, values) == expected == reference(text, values)
    for cut in range(len(text) + 1):
        assert fed(splits(text, (cut,)), values)[0] == expected


def test_nothing_is_held_back_when_the_end_cannot_begin_a_value() -> None:
    r = Redactor([b"sk-123"])
    assert r.feed(b"working...\n") == b"working...\n" and r.held == 0
    assert r.feed(b"now s") == b"now " and r.held == 1  # "s" may begin the key
    assert r.feed(b"ome more") == b"some more" and r.held == 0
    assert r.close() == b""


def test_a_chain_of_overlaps_across_pieces_stays_bounded() -> None:
    r = Redactor([b"abab"])
    out = r.feed(b"ab")
    for _ in range(1000):
        out += r.feed(b"ab")
        assert r.held <= 3
    assert out + r.close() == b"***"


def test_values_in_utf8_and_empty_values() -> None:
    value = "clé-ü€".encode()
    text = "» ".encode() + value + b" \xff\xfe"
    assert redact(text, [value, b""]) == "» *** ".encode() + b"\xff\xfe"
    assert Redactor([]).feed(b"abc") == b"abc" and Redactor([b""]).close() == b""


ABC = st.binary(max_size=60).map(lambda b: bytes(c % 3 + 97 for c in b))  # over "abc": many hits
SHORT_ABC = st.binary(min_size=1, max_size=5).map(lambda b: bytes(c % 3 + 97 for c in b))


@settings(max_examples=400, deadline=None)
@given(text=ABC, values=st.lists(SHORT_ABC, max_size=3), cuts=st.lists(st.integers(0, 60), max_size=6))
def test_any_pieces_mask_as_the_whole_does(text: bytes, values: list[bytes], cuts: list[int]) -> None:
    pieces = splits(text, tuple(sorted(min(c, len(text)) for c in cuts)))
    out, most = fed(pieces, values)
    assert out == reference(text, values)
    assert most <= max((len(v) for v in values), default=1) - 1
    for v in values:
        assert v not in out.replace(MASK, b"|")


PEM = "-----BEGIN KEY-----\nMIIBOgIBAAJBAKj34GkxFhD9\n-----END KEY-----"
ODD = 'пароль-кл\\ючик"x'  # not ASCII, a backslash, a double quote


@pytest.mark.parametrize(
    "written",
    [
        PEM,
        ODD,
        json.dumps({"pem": PEM, "odd": ODD}),  # ensure_ascii: \n, \u043f, \\, \"
        json.dumps({"pem": PEM, "odd": ODD}, ensure_ascii=False),
        repr(PEM) + " " + repr(ODD),  # an uncaught KeyError, a `%r` log line
        ascii(ODD),
        repr(ODD.encode()),  # bytes' repr: \xd0\xbf
        "KeyError: " + repr(PEM.replace("KEY", "K'EY")).replace("\\'", "'"),
    ],
)
def test_a_runs_output_is_masked_for_every_form_a_value_is_written_in(written: str) -> None:
    """An agent's uncaught exception, a `%r` log line or `json.dumps` writes a multi-line, quoted
    or non-ASCII value escaped: stored output masked only the value as it is kept the escaped
    form whole (found by a tester: a PEM key in a KeyError)."""
    values = [PEM, ODD, PEM.replace("KEY", "K'EY")]
    mask = Mask(values)
    data = (written + "\n").encode()
    for cut in (len(data), 7):  # whole, and in pieces of 7 bytes
        r = mask.redactor()
        out = b"".join(r.feed(data[i : i + cut]) for i in range(0, len(data), cut)) + r.close()
        text = out.decode()
        assert "***" in text, text
        for piece in ("MIIBOgIBAAJBAKj34GkxFhD9", "\\u043f\\u0430", "пароль", "\\xd0\\xbf"):
            assert piece not in text, text
