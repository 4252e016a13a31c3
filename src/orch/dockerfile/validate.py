"""Check a Dockerfile against what environment builds support (docs/environments.md, Validation)."""

from __future__ import annotations

from dataclasses import dataclass

from orch.dockerfile import spaced_heredoc
from orch.dockerfile.arguments import check_arguments
from orch.dockerfile.builder_flags import GarbledFlag
from orch.dockerfile.copy_hints import copy_finding, next_installs
from orch.dockerfile.directives import Directives
from orch.dockerfile.findings import Finding, Severity, error, warning
from orch.dockerfile.global_args import GlobalArgs
from orch.dockerfile.instruction import Instruction
from orch.dockerfile.parse import parse
from orch.dockerfile.run_flags import StageVariables, check_mount_targets
from orch.dockerfile.stage import before_from, check_stage
from orch.dockerfile.substitutions import check_substitutions
from orch.dockerfile.verdicts import BUILT, verdict


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


def check(text: str) -> Validation:
    """Check a Dockerfile's text, here and without a time limit (bounded.validate is both).

    Never raises, whatever the text.
    """
    parsed = parse(text)
    findings = _directive_findings(parsed.directives)
    if parsed.failure is not None:
        return _result(spaced_heredoc.apply(parsed.spaced, [*findings, parsed.failure]), [])
    instructions = parsed.instructions
    froms = [n for n, ins in enumerate(instructions) if ins.keyword == "FROM"]
    first_from = froms[0] if froms else -1
    # ARGs before FROM are global: FROM may use them, and stage ARGs may take their values.
    global_args = GlobalArgs.collect(i for i in instructions[: max(first_from, 0)] if i.keyword == "ARG")
    findings += check_stage(instructions, lambda word: global_args.resolve(word, parsed.directives.escape))
    installs = next_installs(instructions)
    variables = StageVariables()  # what a RUN flag's $NAME means, from the stage's ARGs and ENVs
    built: list[Instruction] = []
    for n, ins in enumerate(instructions):
        if ins.keyword == "FROM":
            if n == first_from:
                built.append(ins)
            continue
        garbled = parsed.garbled.get(ins.line)
        if garbled is not None and ins.keyword in BUILT:
            findings.append(_garbled(ins, garbled))
            continue
        found = copy_finding(ins, installs[n]) or verdict(ins)
        if n < first_from:
            if ins.keyword == "ARG":
                findings += check_arguments(ins)
            else:
                findings.append(
                    before_from(ins) if found is None or found.severity is Severity.WARNING else found
                )
        elif found is not None:
            findings.append(found)
        else:
            stage_ins = global_args.redeclared(ins) if ins.keyword == "ARG" else ins
            if isinstance(stage_ins, Finding):
                findings.append(stage_ins)
                continue
            # Only a stage instruction's words reach Podman (global ARGs are expanded here), and
            # a word left open is said once, by check_arguments.
            findings += check_arguments(stage_ins) or check_substitutions(stage_ins)
            findings += check_mount_targets(stage_ins, variables)
            variables.take(stage_ins)
            built.append(stage_ins)
    return _result(spaced_heredoc.apply(parsed.spaced, findings), built)


def _garbled(ins: Instruction, flag: GarbledFlag) -> Finding:
    return error(
        ins.line,
        ins.keyword,
        f"{ins.keyword} {flag.name} holds a non-ASCII character ({flag.char}), which BuildKit's flag "
        "parser reads byte by byte, so Docker would garble the flag.",
        "Use only ASCII characters in flags, e.g. a cache target such as /root/.cache/app.",
    )


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
