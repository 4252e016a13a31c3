"""Flags on RUN: cache and tmpfs mounts only, since builds have no context, secrets or special network."""

from __future__ import annotations

import csv

from orch.dockerfile.findings import Finding, error
from orch.dockerfile.instruction import Instruction

_ONLY = "only --mount=type=cache and --mount=type=tmpfs are available"
_SOURCES = frozenset({"bind", "secret", "ssh"})
_TARGET_KEYS = frozenset({"target", "dst", "destination"})


def check_run_flags(ins: Instruction) -> list[Finding]:
    """One finding per RUN flag that builds can't honour."""
    findings = []
    for flag in ins.flags:
        name, _, value = flag.partition("=")
        if name == "--mount":
            problem = _mount_problem(value)
            if problem is not None:
                findings.append(error(ins.line, "RUN", problem[0], problem[1]))
        elif name == "--network":
            findings.append(
                error(
                    ins.line,
                    "RUN",
                    "RUN --network is not supported: build steps always use the platform's network settings.",
                    "Remove the --network flag.",
                )
            )
        elif name == "--security":
            findings.append(
                error(
                    ins.line,
                    "RUN",
                    "RUN --security is not supported: build steps never run privileged.",
                    "Remove the --security flag.",
                )
            )
        else:
            findings.append(error(ins.line, "RUN", f"RUN has no {name[:40]} flag.", f"Remove it; {_ONLY}."))
    return findings


def _mount_problem(spec: str) -> tuple[str, str] | None:
    """(message, fix) for a --mount that can't be used, or None."""
    try:
        fields = next(csv.reader([spec]), [])
    except csv.Error:
        fields = []
    options: dict[str, str] = {}
    for field in fields:
        key, _, value = field.partition("=")
        options[key.strip().lower()] = value.strip()
    kind = options.get("type", "bind").lower()
    if kind in _SOURCES:
        return (
            f"RUN --mount=type={kind} is not supported: builds have no build context, secrets or SSH agent.",
            f"Remove the mount; {_ONLY}.",
        )
    if kind not in ("cache", "tmpfs"):
        return (
            f"RUN --mount=type={kind[:40]} is not a known mount type.",
            f"Use a mount that works: {_ONLY}.",
        )
    if "from" in options:
        return (
            "RUN --mount with from= is not supported: there are no other images or stages to mount from.",
            "Remove the from= option.",
        )
    if not _TARGET_KEYS & options.keys():
        return (
            "RUN --mount needs a target directory.",
            "Add one, for example --mount=type=cache,target=/root/.cache/pip.",
        )
    return None
