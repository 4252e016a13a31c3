"""The single build stage: exactly one FROM, preceded by nothing but ARGs, on the code-interpreter base."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from orch.dockerfile.base_image import BASE_IMAGE, REPOSITORY, is_base_image, on_docker_hub
from orch.dockerfile.findings import Finding, error
from orch.dockerfile.instruction import Instruction

_USE_BASE = f"Write FROM {BASE_IMAGE} and install what you need with RUN."
# What the base holds (docs/environments.md, Base images): most lines written for another
# base (pip, npm, apt-get installs) work on it unchanged.
_HOLDS = "Python 3.11 with pip and uv, Node.js 20 with npm, git and curl"
_SHOWN = 80

Resolve = Callable[[str], str | None]


def check_stage(instructions: Sequence[Instruction], resolve: Resolve) -> list[Finding]:
    """Findings for a missing, wrong, flagged or repeated FROM.

    `resolve` expands the image reference with the ARGs before FROM (None: it can't be).
    """
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
    findings = _check_from(froms[0], resolve)
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
        f"{ins.keyword} comes before FROM, where only ARG is allowed.",
        "Move it after the FROM line.",
    )


def _check_from(ins: Instruction, resolve: Resolve) -> list[Finding]:
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
    shown = image if len(image) <= _SHOWN else image[:_SHOWN] + "..."
    resolved = resolve(image)
    if resolved is None:
        return [
            error(
                ins.line,
                "FROM",
                f"FROM {shown} uses a variable whose value can't be worked out here.",
                f"Write FROM {BASE_IMAGE}.",
            )
        ]
    if not is_base_image(resolved):
        if not resolved:
            shown += " (which expands to nothing)"
        elif resolved != image:
            shown += f" (that is, {resolved if len(resolved) <= _SHOWN else resolved[:_SHOWN] + '...'})"
        return [_foreign(ins.line, shown, resolved)]
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


def _foreign(line: int, shown: str, image: str) -> Finding:
    if on_docker_hub(image).startswith((REPOSITORY + ":", REPOSITORY + "@")):
        return error(
            line,
            "FROM",
            f"FROM {shown} is not supported: only {BASE_IMAGE} is available, built by the platform itself.",
            f"Write FROM {BASE_IMAGE}.",
        )
    return error(
        line,
        "FROM",
        f"FROM {shown} is not supported: environments build on {BASE_IMAGE}, which already has {_HOLDS}.",
        f"Write FROM {BASE_IMAGE}; the RUN steps that install with pip, npm or apt-get can stay.",
    )
