"""Flags on RUN: cache and tmpfs mounts only, since builds have no context, secrets or special network."""

from __future__ import annotations

from orch.dockerfile import cache_mounts
from orch.dockerfile.findings import Finding, error
from orch.dockerfile.instruction import Instruction
from orch.dockerfile.mount_options import ONLY, read


def check_run_flags(ins: Instruction) -> list[Finding]:
    """One finding per RUN flag that builds can't honour."""
    findings = []
    locked: list[str] = []
    for flag in ins.flags:
        name, _, value = flag.partition("=")
        if name == "--mount":
            mount = read(value)
            if mount.problem is not None:
                findings.append(error(ins.line, "RUN", *mount.problem))
            elif mount.locked:
                locked.append(cache_mounts.named(flag))
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
            findings.append(error(ins.line, "RUN", f"RUN has no {name[:40]} flag.", f"Remove it; {ONLY}."))
    twice = next((name for name in locked if locked.count(name) > 1), None)
    if twice is not None:
        findings.append(
            error(
                ins.line,
                "RUN",
                f"Two cache mounts of this RUN lock the same cache ({twice[:40]}) with sharing=locked, "
                "so the step would wait for itself until the build times out.",
                "Mount that cache once, or give one of the two sharing=shared.",
            )
        )
    return findings
