"""Dockerfile validation benchmark: orch's checker against BuildKit's own parser, side by side.

Every Dockerfile orch takes (`orch env create`, an agent's bundle, `POST /v1/environments`,
`orch env validate`) goes through `orch.dockerfile.validate`: orch's own reading of the text
(directives, spans, heredocs, the checks), then BuildKit's parser (Go, through the `dockerfile`
package), in a worker process bounded by a time limit. The tests count the work a defect would
multiply (tests/unit/dockerfile/test_bounded.py) and time nothing; this prints the times.

Per case, the median of N tries (CPU-bound, one process; the three take turns at each try, so
the machine's noise falls on all alike):

    parser     dockerfile.parse_string(text): BuildKit's parser alone, the baseline
    check      orch.dockerfile.validate.check(text): orch's whole checker, in this process
    validate   orch.dockerfile.validate(text): the server's path, a worker process of the pool

and the ratios check / parser (orch's own reading on top of the parser's; below 1 where orch
hands the parser a compacted text, see src/orch/dockerfile/compact.py) and validate / check (the
exchange with the worker). The growth rows give check's time on a text four times as long as
the one before: about 4 for a checker linear in its text, 16 for a quadratic one.

Cases: a Dockerfile of the usual shape (ARG, ENV, apt and pip installs, a heredoc), the
same repeated up to the 256 KiB limit, and at the limit the shapes that took BuildKit's parser
seconds (a RUN of continued lines, a long heredoc); "parser" is left out (-) where the parser
alone would take more than a few seconds.

Usage: .venv/bin/python bench/validate.py [N]   (N defaults to 7)
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import dockerfile

from orch.dockerfile import validate
from orch.dockerfile.bounded import MAX_TEXT
from orch.dockerfile.validate import check

USUAL = """\
FROM e2bdev/code-interpreter:latest
ARG APP_VERSION=1.0
ENV PYTHONDONTWRITEBYTECODE=1 \\
    PIP_NO_CACHE_DIR=1
RUN apt-get update && apt-get install -y --no-install-recommends \\
        git curl ca-certificates build-essential \\
    && rm -rf /var/lib/apt/lists/*
WORKDIR /home/user/app
RUN pip install numpy pandas "httpx>=0.27"
RUN <<EOF
set -e
mkdir -p /home/user/app/data
echo "version ${APP_VERSION}" > /home/user/app/VERSION
EOF
LABEL org.opencontainers.image.title="app"
USER 1000
"""


def repeated(limit: int) -> str:
    """The usual file's body repeated (its FROM line once) up to `limit` characters."""
    head, body = "".join(USUAL.splitlines(True)[:1]), "".join(USUAL.splitlines(True)[1:])
    return head + body * ((limit - len(head)) // len(body))


def continued(limit: int) -> str:
    line = "    package-name-0123 \\\n"
    start = "FROM e2bdev/code-interpreter:latest\nRUN pip install \\\n"
    return start + line * ((limit - len(start) - 9) // len(line)) + "    last\n"


def heredoc(limit: int) -> str:
    line = "echo 'a line of a longish setup script' >> /tmp/log\n"
    start, end = "FROM e2bdev/code-interpreter:latest\nRUN <<EOF\n", "EOF\nENV DONE=1\n"
    return start + line * ((limit - len(start) - len(end)) // len(line)) + end


# (name, text, whether BuildKit's parser alone is timed on it)
CASES: list[tuple[str, str, bool]] = [
    ("usual (16 lines)", USUAL, True),
    ("usual x64 KiB", repeated(64 * 1024), True),
    ("usual x256 KiB", repeated(MAX_TEXT), True),
    ("continued RUN 64 KiB", continued(64 * 1024), True),
    ("continued RUN 256 KiB", continued(MAX_TEXT), False),
    ("heredoc 64 KiB", heredoc(64 * 1024), True),
    ("heredoc 256 KiB", heredoc(MAX_TEXT), False),
]
GROWTH = [  # check's time at 16 KiB, 64 KiB, 256 KiB of each shape
    ("usual", repeated),
    ("continued RUN", continued),
    ("heredoc", heredoc),
]


def medians(doers: list[Callable[[str], object]], text: str, tries: int) -> list[float]:
    """The median time of each of `doers` on `text`, the doers taking turns at each try."""
    times: list[list[float]] = [[] for _ in doers]
    for _ in range(tries):
        for do, took in zip(doers, times, strict=True):
            start = time.perf_counter()
            do(text)
            took.append(time.perf_counter() - start)
    return [statistics.median(took) for took in times]


def ms(seconds: float | None) -> str:
    return f"{'-':>9}" if seconds is None else f"{seconds * 1000:9.2f}"


def ratio(a: float | None, b: float | None) -> str:
    return "-" if a is None or b is None or b == 0 else f"{a / b:6.2f}x"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("tries", nargs="?", type=int, default=7)
    tries = parser.parse_args().tries
    for _, text, _ in CASES:  # the worker pool started, the modules warm
        assert validate(text).ok, validate(text).findings
    print(f"median of {tries} tries, ms")
    print(
        f"{'case':24} {'parser':>9} {'check':>9} {'validate':>9} {'check/parser':>13} {'validate/check':>15}"
    )
    for name, text, raw in CASES:
        doers: list[Callable[[str], object]] = [check, validate]
        c, v, *rest = medians([*doers, dockerfile.parse_string] if raw else doers, text, tries)
        p = rest[0] if rest else None
        print(f"{name:24} {ms(p)} {ms(c)} {ms(v)} {ratio(c, p):>13} {ratio(v, c):>15}")
    print()
    print(f"{'growth of check':24} {'16 KiB':>9} {'64 KiB':>9} {'256 KiB':>9} {'64/16':>8} {'256/64':>8}")
    for name, make in GROWTH:
        texts = [make(size) for size in (16 * 1024, 64 * 1024, MAX_TEXT)]
        t = [medians([check], text, tries)[0] for text in texts]
        print(f"{name:24} {ms(t[0])} {ms(t[1])} {ms(t[2])} {ratio(t[1], t[0]):>8} {ratio(t[2], t[1]):>8}")


if __name__ == "__main__":
    main()
