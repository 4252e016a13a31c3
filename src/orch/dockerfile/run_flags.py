"""Flags on RUN: cache and tmpfs mounts only, since builds have no context, secrets or special network."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from orch.dockerfile import cache_mounts
from orch.dockerfile.expand import expand
from orch.dockerfile.findings import Finding, error
from orch.dockerfile.global_args import AUTOMATIC
from orch.dockerfile.instruction import Instruction
from orch.dockerfile.mount_options import ONLY, expanded_target_problem, read
from orch.dockerfile.words import BACKSLASH

# Buildah's predefined proxy ARGs: the platform may pass the host's values as build arguments,
# which win over an ARG's default.
_PROXIES = frozenset(
    {
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "FTP_PROXY",
        "NO_PROXY",
        "http_proxy",
        "https_proxy",
        "ftp_proxy",
        "no_proxy",
    }
)


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


def check_mount_targets(ins: Instruction, variables: StageVariables) -> list[Finding]:
    """One finding per mount of a RUN whose target, with the ARG and ENV values before it, is no
    directory (check_run_flags has looked at everything else, the written target included)."""
    if ins.keyword != "RUN":
        return []
    findings = []
    for flag in ins.flags:
        name, _, value = flag.partition("=")
        problem = expanded_target_problem(value, variables) if name == "--mount" else None
        if problem is not None:
            findings.append(error(ins.line, "RUN", *problem))
    return findings


class StageVariables(Mapping[str, str | None]):
    """What `$NAME` in a RUN flag means in the build stage, as Buildah expands it, for expand().

    Buildah expands a flag with the stage's ENV values, then its ARG values (ENV wins, as in
    Docker); each ARG or ENV instruction's words see the values before it. A name maps to its
    value, or to None when that can't be worked out here: a proxy build argument, an ARG of the
    build platform, a value that uses an unknown one, and any name the Dockerfile never set,
    which the base image's own ENV may set. A name declared only by ARG without a default is
    unset (not in the mapping), so it expands to nothing, as it does in the build. (The base
    image's ENV would win over an ARG too, but it sets only locale, certificate, pip and uv
    settings, never a name a Dockerfile declares for a directory.)
    """

    def __init__(self) -> None:
        self._env: dict[str, str | None] = {}
        self._args: dict[str, str | None] = {}
        self._unset: set[str] = set()
        self._lost = False  # an ENV or ARG name itself couldn't be worked out: nothing is known

    def __contains__(self, name: object) -> bool:
        """False only for a name that is unset; every other has a value or an unknown one."""
        return self._lost or name not in self._unset or name in self._env or name in self._args

    def __getitem__(self, name: str) -> str | None:
        if name not in self:
            raise KeyError(name)
        if self._lost:
            return None
        return self._env[name] if name in self._env else self._args.get(name)

    def __iter__(self) -> Iterator[str]:
        return iter({**self._args, **self._env})  # the names set here; every other is unknown or unset

    def __len__(self) -> int:
        return len({**self._args, **self._env})

    def take(self, ins: Instruction) -> None:
        """Note what an ENV or ARG of the stage sets; other instructions set nothing."""
        if ins.keyword == "ENV":
            pairs = [(key, True, value) for key, value in zip(ins.args[::2], ins.args[1::2], strict=False)]
        elif ins.keyword == "ARG":
            pairs = [(key, bool(eq), value) for key, eq, value in (w.partition("=") for w in ins.args)]
        else:
            return
        # All of the instruction's words are expanded first, with the values before it.
        found = [
            (self._expand(key), has_value, self._expand(value) if has_value else "")
            for key, has_value, value in pairs
        ]
        for name, has_value, value in found:
            if name is None:
                self._lost = True
            elif ins.keyword == "ENV":
                self._env[name] = value
            elif name in _PROXIES or (name in AUTOMATIC and not has_value):
                self._args[name] = None
            elif has_value:
                self._args[name] = value
            elif name not in self._args:
                self._unset.add(name)  # an earlier default stays; without one it expands to nothing

    def _expand(self, word: str) -> str | None:
        return expand(word, self, BACKSLASH)
