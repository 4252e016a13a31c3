"""The single build stage: exactly one FROM, first, on the code-interpreter base."""

from __future__ import annotations

from collections.abc import Sequence

from orch.dockerfile.base_image import BASE_IMAGE, is_base_image
from orch.dockerfile.findings import Finding, error
from orch.dockerfile.instruction import Instruction

_USE_BASE = f"Write FROM {BASE_IMAGE} and install what you need with RUN."


def check_stage(instructions: Sequence[Instruction]) -> list[Finding]:
    """Findings for a missing, wrong, flagged or repeated FROM."""
    froms = [i for i in instructions if i.keyword == "FROM"]
    if not froms:
        line = instructions[0].line if instructions else 1
        return [
            error(
                line,
                "FROM",
                f"There is no FROM instruction; every environment builds on {BASE_IMAGE}.",
                f"Add FROM {BASE_IMAGE} as the first instruction.",
            )
        ]
    findings = _check_from(froms[0])
    findings += [
        error(
            extra.line,
            "FROM",
            "A second FROM starts a multi-stage build, which is not supported.",
            "Build in one stage: remove this FROM and everything that depends on the earlier stage.",
        )
        for extra in froms[1:]
    ]
    return findings


def before_from(ins: Instruction) -> Finding:
    """The finding for an instruction placed before the FROM."""
    return error(
        ins.line,
        ins.keyword,
        f"{ins.keyword} comes before FROM, but the base image must be the first instruction.",
        "Move it after the FROM line.",
    )


def _check_from(ins: Instruction) -> list[Finding]:
    if ins.flags:
        name = ins.flags[0].partition("=")[0][:40]
        why = (
            "environments are built for this machine's platform"
            if name == "--platform"
            else "FROM takes no flags"
        )
        return [error(ins.line, "FROM", f"FROM {name} is not supported: {why}.", f"Remove the {name} flag.")]
    if not ins.args:
        return [error(ins.line, "FROM", "FROM names no image.", _USE_BASE)]
    image = ins.args[0]
    if not is_base_image(image):
        shown = image if len(image) <= 80 else image[:80] + "..."
        return [
            error(
                ins.line,
                "FROM",
                f"FROM {shown} is not supported: custom environments must build on {BASE_IMAGE}.",
                _USE_BASE,
            )
        ]
    named = len(ins.args) == 3 and ins.args[1].lower() == "as"
    if len(ins.args) != 1 and not named:
        return [
            error(
                ins.line,
                "FROM",
                "FROM takes an image and, optionally, AS and a stage name, and nothing else.",
                f"Write FROM {BASE_IMAGE} (optionally followed by AS name).",
            )
        ]
    return []
