"""What a build's log says to the user: steps numbered as in their Dockerfile, and the excerpt of a
failure that holds its decisive lines.

Podman numbers the steps of the Containerfile orch renders (docs/environments.md, "Building"),
which has none of the user's SHELL or ignored instructions and ends with a LABEL step for each
label orch adds; its `STEP 2/6` is not the user's second instruction of six. Each `STEP` line is
rewritten as it is streamed to the log, so the log, the progress and the error use one numbering:
the position of the instruction in the user's Dockerfile. The progress and the error quote the
user's instruction as they wrote it; the log's line keeps the text Podman ran (the rendered
instruction: a heredoc as a plain RUN, a cache mount with its rewritten `id`).
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from orch.builder.cache import parse_step
from orch.dockerfile import Instruction
from orch.dockerfile.parse import parse
from orch.services.platform import HOME_LABEL

# Podman's steps that are not the user's: the labels orch adds, and a base image's recipe.
ORCH_STEP = "STEP (orch): "
BASE_STEP = "STEP (orch, base image): "

# A failure's decisive line is seldom the last: pip, npm and git print a summary after it
# ("See above for output"), and Podman its own "Error: building at STEP ...". These patterns
# mark the lines worth showing; the excerpt keeps them along with the last lines.
_DECISIVE = re.compile(
    r"\b(?:error|ERROR|Error)\b|\bfatal:|\bFATAL\b|npm ERR!|^\s*E: |Traceback \(most recent call last\)"
    r"|^\s*[\w.]*(?:Error|Exception): |: not found$|command not found|No such file or directory"
    r"|Permission denied"
)
EXCERPT_MATCHES = 12  # the decisive lines of the failing step kept: its first 6 and its last 6
EXCERPT_LAST = 8  # and the log's last lines, whatever they say
EXCERPT_WIDTH = 1000  # characters kept of each line (a line may be 64 KiB)


def decisive(line: str) -> bool:
    """Whether a line of build output is one a failure's reader needs (an error, a fatal, ...)."""
    return _DECISIVE.search(line) is not None


def is_step(line: str) -> bool:
    return line.startswith("STEP ")


class Excerpt:
    """The lines of a build's output that explain its failure, collected as they stream by.

    Memory stays bounded whatever the output's length: the failing step's line, the first and
    last of its decisive lines, and the last lines of all. Only the current step counts, since
    an earlier step succeeded whatever its output said.
    """

    def __init__(self, matches: int = EXCERPT_MATCHES, last: int = EXCERPT_LAST) -> None:
        self._seen = 0
        self._half = matches - matches // 2
        self._step: tuple[int, str] | None = None
        self._first: list[tuple[int, str]] = []
        self._recent: deque[tuple[int, str]] = deque(maxlen=matches // 2)
        self._last: deque[tuple[int, str]] = deque(maxlen=last)

    def add(self, line: str) -> None:
        n, self._seen = self._seen, self._seen + 1
        kept = (n, line if len(line) <= EXCERPT_WIDTH else line[:EXCERPT_WIDTH] + "…")
        if is_step(line):  # a new step: what the steps before it printed is left out
            self._step, self._first = kept, []
            self._recent.clear()
            self._last.clear()
        elif decisive(line):
            if len(self._first) < self._half:
                self._first.append(kept)
            else:
                self._recent.append(kept)
        self._last.append(kept)

    def lines(self) -> list[str]:
        """The kept lines in log order, with a note where lines are left out between them."""
        picked = dict([*([self._step] if self._step else []), *self._first, *self._recent, *self._last])
        out: list[str] = []
        previous = None
        for n in sorted(picked):
            if previous is not None and n > previous + 1:
                gap = n - previous - 1
                out.append(f"… {gap} line{'s' if gap != 1 else ''} not shown …")
            out.append(picked[n])
            previous = n
        return out


def excerpt(lines: Iterable[str]) -> list[str]:
    """The excerpt of a failed build's output (see Excerpt)."""
    collected = Excerpt()
    for line in lines:
        collected.add(line)
    return collected.lines()


@dataclass(frozen=True)
class StepNumbers:
    """The user's number and text of each step Podman runs for one Dockerfile.

    `numbers[k - 1]` is the position, in the user's Dockerfile, of the instruction that is
    Podman's step k, `lines[k - 1]` the line it starts on there, and `texts[k - 1]` that
    instruction as the user wrote it (its lines joined, as Podman joins them; a heredoc's body
    left out); `total` is how many instructions the Dockerfile has (SHELL and ignored ones
    included, so that step n is the n-th instruction the user wrote).
    """

    numbers: tuple[int, ...]
    texts: tuple[str, ...]
    total: int
    lines: tuple[int, ...]

    @classmethod
    def of(cls, text: str, built: Sequence[Instruction]) -> StepNumbers:
        """The numbering for `text`, whose validated instructions are `built`."""
        written = {ins.line: (n, ins.original) for n, ins in enumerate(parse(text).instructions, 1)}
        # render_containerfile writes each built instruction on a line of its own, except SHELL
        # (Podman ignores it; later RUN steps name their shell instead).
        stepped = [ins.line for ins in built if ins.keyword != "SHELL"]
        steps = [written[line] for line in stepped]
        return cls(
            tuple(n for n, _ in steps),
            tuple(original.partition("\n")[0].strip() for _, original in steps),
            len(written),
            tuple(stepped),
        )

    def unread(self, output: Sequence[str], containerfile: str) -> tuple[int, str, str] | None:
        """(its line in the user's Dockerfile, its text, Podman's reason) of the instruction
        Podman could not read, when `output` (the build's last lines) says it stopped on one:
        `Error: resolving step {... StartLine:3 EndLine:3}: Unsupported modifier (?) in
        substitution: ...`, StartLine a line of the rendered `containerfile`. No command ran
        then, and Podman's last STEP line is the step before it."""
        for line in reversed(output):
            found = _UNREAD.search(line)
            if found is None:
                continue
            k = _step_at(containerfile, int(found[1]))
            if k is None or not 1 <= k <= len(self.lines):
                return None
            return self.lines[k - 1], self.texts[k - 1], found[2].strip()
        return None

    def rewrite(self, line: str) -> tuple[str, tuple[int, str] | None]:
        """A line of Podman's output as the user sees it (its number the user's, its text what
        Podman ran), and (number, the user's text of the instruction) if it starts one of the
        user's steps."""
        step = parse_step(line)
        if step is None:
            return line, None
        k, _, text = step
        if 1 <= k <= len(self.numbers):
            number = self.numbers[k - 1]
            return f"STEP {number}/{self.total}: {text}", (number, self.texts[k - 1])
        return ORCH_STEP + _without_host_path(text), None


# Podman prints the step it could not read as its parser's node: `{Value:env ... Original:ENV
# A=... Flags:[] StartLine:3 EndLine:3}`; the first such end is taken, as only the Original
# (the user's own text) could hold another before it.
_UNREAD = re.compile(r"\bresolving step \{.*?\bStartLine:(\d+) EndLine:\d+\}: (.*)")


def _step_at(containerfile: str, line: int) -> int | None:
    """Which of the rendered Containerfile's instructions (1 for its FROM) starts on `line`;
    render_containerfile folds a long one with continuation lines, each ending in a backslash."""
    k, continued = 0, False
    for n, text in enumerate(containerfile.split("\n"), 1):
        if not continued:
            k += 1
        if n == line:
            return None if continued else k
        continued = text.endswith("\\")
    return None


_HOME_LABEL = f'LABEL "{HOME_LABEL}"='


def _without_host_path(text: str) -> str:
    """One of orch's own steps as a workspace's users see it: the label naming the server's data
    directory keeps its name, not the value (a path on the server's machine is not theirs)."""
    return _HOME_LABEL + '"…"' if text.startswith(_HOME_LABEL) else text


def without_host_path(line: str) -> str:
    """A line of a build's output without the server's data directory (`_without_host_path`),
    its step's number kept: for the builds whose steps are orch's own, a service deployment's
    (workers/deploys.py); an environment's steps are rewritten whole (`StepNumbers.rewrite`)."""
    step = parse_step(line)
    if step is None or not step[2].startswith(_HOME_LABEL):
        return line
    return line[: line.index(": ") + 2] + _without_host_path(step[2])  # "STEP 6/10: " kept


def base_step(line: str) -> str:
    """A line of a base image's build, with its steps marked as orch's, not the user's."""
    step = parse_step(line)
    return BASE_STEP + step[2] if step else line
