"""Helpers shared by the Dockerfile tests."""

from __future__ import annotations

from orch.dockerfile import Finding, Severity, Validation

BASE = "FROM e2bdev/code-interpreter:latest\n"


def errors(v: Validation) -> list[Finding]:
    return [f for f in v.findings if f.severity is Severity.ERROR]


def warnings(v: Validation) -> list[Finding]:
    return [f for f in v.findings if f.severity is Severity.WARNING]


def where(findings: list[Finding]) -> list[tuple[int, str]]:
    """(line, instruction) of each finding, the part of a finding users navigate by."""
    return [(f.line, f.instruction) for f in findings]


def keywords(v: Validation) -> list[str]:
    return [i.keyword for i in v.instructions]
