"""ARGs before FROM (global ARGs): what FROM and the build stage see of them.

Docker expands a global ARG's default with the global ARGs before it and uses the result in
FROM; inside the stage a global ARG is unset, except that an ARG redeclared there without a
value takes the global value. Environments are built from one rendered stage whose FROM is
the platform's own image, so global ARGs are resolved here: FROM must come out as the base
image, and a redeclared ARG gets the global value written out, which then means the same to
Podman without any global ARG.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from orch.dockerfile.expand import expand
from orch.dockerfile.findings import Finding, error
from orch.dockerfile.instruction import Instruction
from orch.dockerfile.words import BACKSLASH, literal

# BuildKit sets these from the build machine, whatever the Dockerfile says before them.
AUTOMATIC = frozenset(
    {
        "BUILDPLATFORM",
        "BUILDOS",
        "BUILDARCH",
        "BUILDVARIANT",
        "TARGETPLATFORM",
        "TARGETOS",
        "TARGETARCH",
        "TARGETVARIANT",
    }
)


@dataclass
class GlobalArgs:
    """Each global ARG's value (None: it can't be worked out here) and the line that set it."""

    values: dict[str, str | None] = field(default_factory=lambda: dict.fromkeys(AUTOMATIC))
    lines: dict[str, int] = field(default_factory=dict)

    @classmethod
    def collect(cls, args: Iterable[Instruction]) -> GlobalArgs:
        """The values the ARG instructions before FROM give, in order, each seeing the earlier ones."""
        found = cls()
        for ins in args:
            for word in ins.args:
                name, has_value, raw = word.partition("=")
                # A declaration without a value leaves an earlier value as it was.
                if has_value:
                    found.values[name] = expand(raw, found.values, BACKSLASH)
                    found.lines[name] = ins.line
        return found

    def resolve(self, word: str, escape: str) -> str | None:
        """A FROM word as Docker expands it, or None when it can't be worked out."""
        return expand(word, self.values, escape)

    def redeclared(self, ins: Instruction) -> Instruction | Finding:
        """A stage ARG with the global value written into each name that has none of its own."""
        words = []
        for word in ins.args:
            name, has_value, _ = word.partition("=")
            if has_value or name not in self.lines:
                words.append(word)
                continue
            value = self.values[name]
            if value is None:
                return error(
                    ins.line,
                    "ARG",
                    f"ARG {name} takes its value from the ARG before FROM on line {self.lines[name]}, "
                    "whose default can't be worked out here.",
                    f"Give this ARG its own default: ARG {name}=value.",
                )
            words.append(f"{name}={literal(value)}")
        return replace(ins, args=tuple(words))
