"""Validate a Dockerfile against what environment builds support (SPEC §2.3)."""

from __future__ import annotations

from dataclasses import dataclass

from orch.dockerfile.arguments import check_arguments
from orch.dockerfile.directives import Directives
from orch.dockerfile.findings import Finding, Severity, warning
from orch.dockerfile.instruction import Instruction
from orch.dockerfile.parse import parse
from orch.dockerfile.stage import before_from, check_stage
from orch.dockerfile.verdicts import verdict


@dataclass(frozen=True)
class Validation:
    """The findings, and the instructions to build (FROM first; empty unless ok)."""

    findings: tuple[Finding, ...]
    instructions: tuple[Instruction, ...]

    @property
    def ok(self) -> bool:
        """True when no finding is an error."""
        return not any(f.severity is Severity.ERROR for f in self.findings)

    def to_dict(self) -> dict[str, object]:
        """The JSON shape of `orch env validate --json`."""
        return {"ok": self.ok, "findings": [f.to_dict() for f in self.findings]}


def validate(text: str) -> Validation:
    """Check a Dockerfile's text; never raises, whatever the text."""
    parsed = parse(text)
    findings = _directive_findings(parsed.directives)
    if parsed.failure is not None:
        return _result([*findings, parsed.failure], [])
    instructions = parsed.instructions
    findings += check_stage(instructions)
    froms = [n for n, ins in enumerate(instructions) if ins.keyword == "FROM"]
    first_from = froms[0] if froms else -1
    built: list[Instruction] = []
    for n, ins in enumerate(instructions):
        if ins.keyword == "FROM":
            if n == first_from:
                built.append(ins)
            continue
        found = verdict(ins)
        if n < first_from and (found is None or found.severity is Severity.WARNING):
            findings.append(before_from(ins))
        elif found is not None:
            findings.append(found)
        else:
            findings += check_arguments(ins)
            built.append(ins)
    return _result(findings, built)


def _result(findings: list[Finding], built: list[Instruction]) -> Validation:
    ordered = tuple(sorted(findings, key=lambda f: f.line))
    ok = not any(f.severity is Severity.ERROR for f in ordered)
    return Validation(ordered, tuple(built) if ok else ())


def _directive_findings(directives: Directives) -> list[Finding]:
    return [
        warning(
            d.line,
            "",
            "The # syntax directive is ignored: environments are built with the platform's own parser.",
            "Remove the # syntax= line.",
        )
        for d in directives.found
        if d.name == "syntax"
    ]
