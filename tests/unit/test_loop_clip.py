"""A tool's output within tool_output_limit (loop/clip.py): the run's secrets are masked before
the cut, so a cut through a value keeps none of it; the cut never splits a `***` nor a UTF-8
character; the marker counts what it left out, in words."""

from __future__ import annotations

import pytest

from orch.loop.clip import Clip, clip

SECRET = b"sk-from-stdin-XYZ"


@pytest.mark.parametrize("pad", [504, 509, 512, 520, 600])
def test_a_cut_through_a_secret_keeps_none_of_it(pad: int) -> None:
    """The tester's case (pad 504: 1 KiB kept, the value across the middle) and its neighbours."""
    data = b"A" * pad + SECRET + b"C" * pad
    for pieces in ([data], [data[: pad + 6], data[pad + 6 :]], [bytes([b]) for b in data]):
        kept = Clip(1024, [SECRET])
        for piece in pieces:
            kept(piece)
        text = kept.text()
        assert not any(SECRET[i : i + 4].decode() in text for i in range(len(SECRET) - 3)), text
        assert text.startswith("A" * 500) and text.endswith("C" * 500)
        if pad == 504:  # masked first, it fits: nothing is cut
            assert text == "A" * pad + "***" + "C" * pad


@pytest.mark.parametrize("at", range(-4, 5))
def test_the_cut_never_splits_a_mask(at: int) -> None:
    """A `***` across either side of the cut is kept whole or left out whole."""
    limit = 1024
    for where in (limit // 2 + at, 3000 - limit // 2 + at):  # across the head's end, the tail's start
        data = bytearray(b"." * 3000)
        data[where : where + len(SECRET)] = SECRET
        kept = Clip(limit, [SECRET])
        kept(bytes(data))
        head, _, tail = kept.text().partition("\n[... ")
        tail = tail.split(" cut ...]\n", 1)[1]
        for side in (head, tail):
            assert side.strip(".") in ("", "***"), (where, side)


@pytest.mark.parametrize("shift", range(4))
def test_the_cut_never_splits_a_character(shift: int) -> None:
    data = ("x" * shift + "é€😀" * 1000).encode()
    text = clip(data, 1024)
    assert "\ufffd" not in text
    head, _, rest = text.partition("\n[... ")
    cut, _, tail = rest.partition(" bytes cut ...]\n")
    assert len(head.encode()) + int(cut) + len(tail.encode()) == len(data)
    assert len(head.encode()) <= 512 and len(tail.encode()) <= 512


def test_the_marker_says_byte_or_bytes() -> None:
    assert clip(b"0123456789a", 10) == "01234\n[... 1 byte cut ...]\n6789a"
    assert clip(b"0123456789ab", 10) == "01234\n[... 2 bytes cut ...]\n789ab"


def test_output_within_the_limit_is_kept_whole_and_masked() -> None:
    kept = Clip(1024, [SECRET])
    kept(b"key=" + SECRET[:5])
    kept(SECRET[5:] + b"\n")
    assert kept.text() == "key=***\n" and not kept.cut
