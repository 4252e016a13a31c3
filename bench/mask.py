"""Masking benchmark: the secret masker (src/orch/secret/mask.py) against the one before it.

The masker runs on the server's CPU over every run's output. The one before looked again, for
each value, at every place in the last value's length of the output that began the value, and
copied the rest of the output from there: quadratic in a value's length (values reach 64 KiB),
so a run could make the server burn seconds of CPU for each 64 KiB it printed. Both maskers get
the same values and the same pieces, side by side in one process, and must give the same output;
printed per case: the CPU time of each (the least of a few tries) and their ratio, old / new (a
ratio below 1 is a case the new one is slower at).

The cases: the reported ones (a 64 KiB value and 64 KiB pieces that are all of it but its last
byte, with one value and with 15), ordinary ones (a few API keys in a log, in 4 KiB and in 16 B
pieces; 100 values of 10 KiB), and the ones where occurrences pile up (a value overlapping itself
printed over and over, a one-byte value in ordinary text, a value's beginning held while more of
it comes in small pieces).

Usage: .venv/bin/python bench/mask.py [--tries N] [--only TEXT]   (N defaults to 3)
"""

from __future__ import annotations

import argparse
import base64
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

from orch.secret.mask import Redactor

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the tests' reference masker
from tests.mask_reference import OldRedactor


def chunks(text: bytes, size: int) -> list[bytes]:
    return [text[i : i + size] for i in range(0, len(text), size)]


def log(rng: random.Random, size: int) -> bytes:
    """Text like a program's log."""
    words = [b"the", b"run", b"started", b"error", b"loading", b"module", b"value", b"key", b"ok", b"INFO"]
    out = bytearray()
    while len(out) < size:
        out += rng.choice(words) + (b"\n" if rng.random() < 0.1 else b" ")
    return bytes(out[:size])


def key(rng: random.Random, size: int) -> bytes:
    return base64.b64encode(rng.randbytes(size * 3 // 4))


def cases() -> dict[str, tuple[list[bytes], list[bytes]]]:
    rng = random.Random(1)
    x = b"x" * 65535
    keys = [key(rng, 40) for _ in range(5)]
    text = log(rng, 1 << 20)
    text = text[:1000] + keys[0] + text[1000:500000] + keys[1] * 2 + text[500000:]
    big = [key(rng, 10240) for _ in range(100)]
    longest = key(rng, 65536)
    return {
        "1 value of 64 KiB, 1 piece of 64 KiB all of it but its end": ([x + b"y"], [x + b"z"]),
        "15 such values, 7 such pieces": ([x + bytes([65 + i]) for i in range(15)], [x + b"z"] * 7),
        "5 keys of 40 B, 1 MiB of log in 4 KiB pieces": (keys, chunks(text, 4096)),
        "5 keys of 40 B, 256 KiB of log in 16 B pieces": (keys, chunks(text[: 1 << 18], 16)),
        "100 values of 10 KiB, 1 MiB of log in 64 KiB pieces": (big, chunks(text, 1 << 16)),
        "a 64 KiB key printed split, text after it": (
            [longest],
            [b"key=" + longest[:40000], longest[40000:] + text[:30000]],
        ),
        "a*1000, 1 MiB of a in 64 KiB pieces": ([b"a" * 1000], chunks(b"a" * (1 << 20), 1 << 16)),
        "'e' and 99 keys, 1 MiB of log in 64 KiB pieces": ([b"e", *keys, *big[:94]], chunks(text, 1 << 16)),
        "64 KiB value's beginning held, 1 MiB more in 4 KiB pieces": (
            [x + b"y"],
            chunks(b"x" * (1 << 20), 4096),
        ),
        "(xA)*32768 printed byte by byte, 20000 bytes": (
            [b"xA" * 32768],
            [b"xA" * 32768, *chunks(b"xA" * 10000, 1)],
        ),
    }


def cpu(
    make: Callable[[list[bytes]], Redactor | OldRedactor],
    values: list[bytes],
    pieces: list[bytes],
    tries: int,
) -> tuple[float, bytes]:
    """The least CPU time of `tries` passes (the first always; more while they add up to under
    10 s), and the output."""
    best, spent, out = float("inf"), 0.0, b""
    for n in range(tries):
        if n and spent > 10:
            break
        redactor = make(values)
        start = time.thread_time()
        out = b"".join([redactor.feed(p) for p in pieces]) + redactor.close()
        took = time.thread_time() - start
        best, spent = min(best, took), spent + took
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tries", type=int, default=3)
    parser.add_argument("--only", default="", help="only the cases whose name holds this text")
    args = parser.parse_args()
    print(f"{'case':64} {'old ms':>10} {'new ms':>9} {'old/new':>9}")
    for name, (values, pieces) in cases().items():
        if args.only not in name:
            continue
        new, new_out = cpu(Redactor, values, pieces, args.tries)
        old, old_out = cpu(OldRedactor, values, pieces, args.tries)
        assert new_out == old_out, f"{name}: the maskers disagree"
        print(f"{name:64} {old * 1e3:10.1f} {new * 1e3:9.2f} {old / max(new, 1e-9):9.1f}", flush=True)


if __name__ == "__main__":
    main()
