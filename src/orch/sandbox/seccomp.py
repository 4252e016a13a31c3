"""The default seccomp filter of a sandbox: the profile Podman uses (containers-common's
/usr/share/containers/seccomp.json), turned into the OCI form the way Podman turns it
(containers/common pkg/seccomp `setupSeccomp`), so a runc sandbox gets the same filter as a
`podman run` with the same capabilities. Three differences, all stricter: the native ABI only
(`native_only`), no new user namespaces (`no_user_namespaces`) and no kernel keyrings
(`no_keyrings`). The last two are made in Podman's own format (`hardened`), so that what Podman
starts for a workspace, its services' containers and its builds' steps, gets them too
(`podman_profile`, given as `--security-opt seccomp=`)."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from orch.errors import EngineError

PROFILE = Path("/usr/share/containers/seccomp.json")
_FIX = "Install Podman's common files (apt-get install golang-github-containers-common), then try again."

# The kernel's architecture name (uname -m) -> Go's name (which the profile's includes/excludes
# use) and libseccomp's (which its archMap uses).
_GO_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "s390x": "s390x", "ppc64le": "ppc64le"}
_SECCOMP_ARCH = {"amd64": "SCMP_ARCH_X86_64", "arm64": "SCMP_ARCH_AARCH64", "s390x": "SCMP_ARCH_S390X"}

CLONE_NEWUSER = 0x10000000
EPERM, ENOSYS = 1, 38
KEYRING_CALLS = frozenset({"keyctl", "add_key", "request_key"})
# Where Podman is given the hardened profile: one file per content, written once, never changed.
PODMAN_PROFILES = Path("/run/orch-seccomp")


def go_arch() -> str:
    machine = platform.machine()
    return _GO_ARCH.get(machine, machine)


def oci_seccomp(caps: Iterable[str], profile: Path | None = None, arch: str | None = None) -> dict[str, Any]:
    """The `linux.seccomp` section for a process whose bounding set is `caps` (CAP_* names):
    a rule gated on a capability is kept only when the capability is there, as in Podman; and
    only the machine's native ABI is allowed (`native_only`)."""
    key = (profile or PROFILE, tuple(sorted(set(caps))), arch or go_arch())
    return json.loads(_converted(*key))  # type: ignore[no-any-return]


@functools.cache
def _converted(profile: Path, caps: tuple[str, ...], arch: str) -> str:
    # Cached as text: every sandbox gets its own copy to put into its config.
    return json.dumps(native_only(convert(hardened(_source(profile), arch), caps, arch), arch))


def _source(profile: Path) -> dict[str, Any]:
    try:
        return json.loads(profile.read_text())  # type: ignore[no-any-return]
    except (OSError, ValueError) as e:
        raise EngineError(f"The seccomp profile {profile} cannot be read ({e}).", _FIX) from None


def hardened(source: dict[str, Any], arch: str) -> dict[str, Any]:
    """Podman's profile (its own format, or the OCI one: both have `syscalls` of `names` and
    `action`) without new user namespaces and without kernel keyrings."""
    return no_keyrings(no_user_namespaces(source, arch))


def podman_profile(profile: Path | None = None, arch: str | None = None) -> Path:
    """The hardened profile as a file for Podman's `--security-opt seccomp=` (`podman run`,
    `podman build`): named by its content, written when missing (a reboot empties /run)."""
    text = json.dumps(hardened(_source(profile or PROFILE), arch or go_arch()), indent=1)
    path = PODMAN_PROFILES / f"{hashlib.sha256(text.encode()).hexdigest()[:16]}.json"
    if not path.exists():
        PODMAN_PROFILES.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(text)
        tmp.chmod(0o644)
        tmp.replace(path)  # whole or not at all: another server may write the same one
    return path


def no_keyrings(profile: dict[str, Any]) -> dict[str, Any]:
    """Podman's profile allows `keyctl`. Every sandbox runs as the host's uid 1000, and the
    kernel's user keyring is the uid's across the machine, not a namespace's: with `keyctl` alone
    a run could link a keyring, whose name is up to 4 KiB of its own data, into it, and any
    later sandbox of any workspace read or remove it; or use up the uid's quota of keys (200) for
    every sandbox on the machine (found by a tester). No keyring call is allowed (the profile's
    default answer, ENOSYS, as for `add_key` already), as in Docker's profile. See
    docs/trust.md."""
    rules = []
    for rule in profile.get("syscalls", ()):
        if rule["action"] == "SCMP_ACT_ALLOW" and KEYRING_CALLS & set(rule["names"]):
            rule = {**rule, "names": [n for n in rule["names"] if n not in KEYRING_CALLS]}
            if not rule["names"]:
                continue
        rules.append(rule)
    return {**profile, "syscalls": rules}


def native_only(converted: dict[str, Any], arch: str) -> dict[str, Any]:
    """Podman's filter allows the native ABI and its 32-bit ones (x86_64: also x86 and x32).
    A sandbox allows the native one only: a 32-bit syscall (`int 0x80`) then hits the filter's
    bad-architecture action and the process is killed (SIGSYS). That is stricter than Podman,
    takes the kernel's 32-bit syscall entry out of reach, and costs less: libseccomp compiles
    the rules once, not three times, at every start (~20 ms of CPU here). 32-bit programs do not
    run in a sandbox, as under gVisor. See docs/launcher-config.md."""
    native = _SECCOMP_ARCH.get(arch)
    if native and native in converted.get("architectures", ()):
        return {**converted, "architectures": [native]}
    return converted


def no_user_namespaces(profile: dict[str, Any], arch: str) -> dict[str, Any]:
    """Podman's profile lets any process create a user namespace (`unshare`, `clone` with
    CLONE_NEWUSER), in which it holds every capability over new namespaces of its own: mounts,
    network interfaces, nf_tables. Nothing a sandbox runs needs that, and it is the first step of
    most kernel exploits that escape containers, so a sandbox is refused it (EPERM), as Docker's
    profile does: `unshare` and `clone` are allowed only without CLONE_NEWUSER, and `clone3`,
    whose flags a filter cannot read, answers ENOSYS, on which the C library falls back to
    `clone` (threads, fork and posix_spawn work as before). See docs/trust.md."""
    gated = {"unshare", "clone", "clone3"}
    rules = []
    for rule in profile.get("syscalls", ()):
        if rule["action"] == "SCMP_ACT_ALLOW" and gated & set(rule["names"]):
            names = [n for n in rule["names"] if n not in gated]
            if not names:
                continue
            rule = {**rule, "names": names}
        rules.append(rule)
    flags = 1 if arch == "s390x" else 0  # clone's flags: the second argument on s390x

    def on_newuser(
        name: str, index: int, action: str, value: int, errno: int | None = None
    ) -> dict[str, Any]:
        rule: dict[str, Any] = {"names": [name], "action": action}
        if errno is not None:
            rule["errnoRet"] = errno
        rule["args"] = [
            {"index": index, "value": CLONE_NEWUSER, "valueTwo": value, "op": "SCMP_CMP_MASKED_EQ"}
        ]
        return rule

    for name, index in (("unshare", 0), ("clone", flags)):
        rules.append(on_newuser(name, index, "SCMP_ACT_ALLOW", 0))
        rules.append(on_newuser(name, index, "SCMP_ACT_ERRNO", CLONE_NEWUSER, EPERM))
    rules.append({"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": ENOSYS})
    return {**profile, "syscalls": rules}


def convert(source: dict[str, Any], caps: Iterable[str], arch: str) -> dict[str, Any]:
    """Podman's conversion, step by step: the architectures of `archMap` for this machine, the
    default action and errno, and each syscall rule whose arch/caps includes and excludes match."""
    bounding = set(caps)
    out: dict[str, Any] = {"defaultAction": source["defaultAction"]}
    if source.get("defaultErrnoRet") is not None:
        out["defaultErrnoRet"] = source["defaultErrnoRet"]
    arches = list(source.get("architectures") or ())
    native = _SECCOMP_ARCH.get(arch)
    for entry in source.get("archMap") or ():
        if native and entry["architecture"] == native:
            arches += [entry["architecture"], *(entry.get("subArchitectures") or ())]
            break
    if arches:
        out["architectures"] = arches
    rules = []
    for call in source.get("syscalls") or ():
        includes, excludes = call.get("includes") or {}, call.get("excludes") or {}
        if arch in (excludes.get("arches") or ()):
            continue
        if any(c in bounding for c in excludes.get("caps") or ()):
            continue
        if includes.get("arches") and arch not in includes["arches"]:
            continue
        if any(c not in bounding for c in includes.get("caps") or ()):
            continue
        names = [call["name"]] if call.get("name") else list(call.get("names") or ())
        if names:
            rules.append(_rule(names, call))
    out["syscalls"] = rules
    return out


def _rule(names: list[str], call: dict[str, Any]) -> dict[str, Any]:
    # The OCI spec's JSON leaves out what Go leaves out: empty args, a zero valueTwo, no errnoRet.
    rule: dict[str, Any] = {"names": names, "action": call["action"]}
    if call.get("errnoRet") is not None:
        rule["errnoRet"] = call["errnoRet"]
    args = []
    for a in call.get("args") or ():
        arg = {"index": a["index"], "value": a["value"]}
        if a.get("valueTwo"):
            arg["valueTwo"] = a["valueTwo"]
        arg["op"] = a["op"]
        args.append(arg)
    if args:
        rule["args"] = args
    return rule
