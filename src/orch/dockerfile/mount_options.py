"""RUN --mount: read as Docker reads it, written as Podman 4.3.1 (Buildah 1.28) reads it.

Docker and Buildah read a mount's options differently, and Buildah refuses at build time what it
does not know (`size: invalid mount option`). Docker (BuildKit) reads the value as CSV, keys in
any case, `ro`/`rw` with an optional true/false, tmpfs `size=` with units (`512m`, `1GiB`).
Buildah splits it at every comma, knows keys only in lower case, takes `ro=false` for `ro`,
and calls the tmpfs size `tmpfs-size=` (the kernel's syntax). So a mount is read here as Docker
reads it; `read` refuses, with a sentence and a fix, what no build could run, and writes the
rest out as Buildah's equivalent (`Mount.buildah`), which the rendered Containerfile carries.

Accepted (all checked against `podman build` 4.3.1):
  cache   target (dst, destination), id, sharing=shared|locked, source (src), mode, uid, gid,
          ro (readonly) and rw (readwrite), with or without =true/false
  tmpfs   target (dst, destination), size, ro and rw
  both    Podman's own nosuid, nodev, noexec; on cache also z and Z; on tmpfs also
          tmpfs-size, tmpfs-mode and tmpcopyup
Refused: anything else (Docker's `required`, a cache's `size`, a tmpfs's `id` ...),
`sharing=private` (Buildah has no private caches), a relative target (Buildah wants absolute
paths), quotes in the value (Buildah splits a quoted comma too), and `$` in any value but a
target's, id's or source's (those Buildah expands as Docker does; the others are translated or
checked here, which needs the value itself). A target with a variable is checked once more with
the values ARG and ENV give it (`expanded_target_problem`): one that comes out empty, relative
or at the root fails the build as the written value would.

Numbers are read as Buildah reads them and refused when out of its range rather than called
something else: a mode is octal up to 37777777777 (Go's ParseUint(value, 8, 32), the kernel's
u32 for a tmpfs), and a uid or gid up to 4294967294. Buildah takes any int64 for an id and its
chown keeps the low 32 bits, so 4294967296 would make root the owner; 4294967295 is the
kernel's "-1", which leaves the owner as it was; Docker refuses anything past 4294967295.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass

from orch.dockerfile.expand import expand

ONLY = "only --mount=type=cache and --mount=type=tmpfs are available"
_SOURCES = frozenset({"bind", "secret", "ssh"})
_ALIASES = {"dst": "target", "destination": "target", "src": "source", "readonly": "ro", "readwrite": "rw"}
_DOCKER = {
    "cache": ("target", "id", "sharing", "source", "mode", "uid", "gid", "ro", "rw"),
    "tmpfs": ("target", "size", "ro", "rw"),
}
_PODMAN = {
    "cache": ("z", "Z", "nosuid", "nodev", "noexec"),
    "tmpfs": ("tmpfs-size", "tmpfs-mode", "tmpcopyup", "nosuid", "nodev", "noexec"),
}
_BARE = frozenset({"z", "Z", "nosuid", "nodev", "noexec", "tmpcopyup"})  # Podman's, never with a value
_VARIABLES_OK = frozenset({"target", "id", "source"})
_KERNELS = frozenset({"proc", "sys", "dev"})  # a target under these fails in the runtime
_BOOLEANS = {"1": True, "t": True, "true": True, "0": False, "f": False, "false": False}  # Go's ParseBool
_OCTAL, _DECIMAL = re.compile(r"[0-7]+"), re.compile(r"[0-9]+")
# go-units' RAMInBytes (Docker's size=): a number, an optional blank, then b, or k/m/g/t/p with
# an optional b or ib, in any case; powers of 1024.
_DOCKER_SIZE = re.compile(r"(\d+(?:\.\d*)?|\.\d+) ?(?:(b)|([kmgtp])(?:i?b)?)?", re.IGNORECASE)
_KERNEL_SIZE = re.compile(r"[0-9]+[kKmMgGtTpPeE%]?")  # tmpfs's size= (memparse, or a % of memory)
_MAX_MODE = 2**32 - 1  # 0o37777777777
_MAX_ID = 2**32 - 2  # 2**32 - 1 is the kernel's -1: "leave the owner as it is"
_MAX_SIZE = 2**63  # go-units' sizes are int64s: a size must be below 8 EiB
_NAME = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)")


@dataclass(frozen=True)
class Mount:
    """A --mount flag's value as read: why no build can use it, or Buildah's spelling of it."""

    problem: tuple[str, str] | None  # (message, fix)
    buildah: str = ""  # the value for Podman's Containerfile, when there is no problem
    locked: bool = False  # a cache mount with sharing=locked
    targets: tuple[str, ...] = ()  # each target option as written (dst=$D): Buildah checks each


def for_buildah(spec: str) -> str:
    """A --mount value as Buildah should read it; one that validation refuses comes back unchanged."""
    mount = read(spec)
    return spec if mount.problem else mount.buildah


def read(spec: str) -> Mount:
    """Read a --mount value (what follows `--mount=`) as Docker does."""
    fields = [_field(f) for f in spec.split(",")]
    kind = next((value.lower() for key, _, value in reversed(fields) if key == "type"), "bind")
    if kind in _SOURCES:
        return _refuse(
            f"RUN --mount=type={kind} is not supported: builds have no build context, secrets or SSH agent.",
            f"Remove the mount; {ONLY}.",
        )
    if kind not in _DOCKER:
        return _refuse(
            f"RUN --mount=type={kind[:40]} is not a known mount type.", f"Use a mount that works: {ONLY}."
        )
    if '"' in spec:
        return _refuse(
            "RUN --mount's options can't hold a double quote: Podman splits them at every comma, "
            "quoted or not.",
            "Remove the quotes (a path with a comma can't be mounted).",
        )
    out: dict[str, str | None] = {"type": kind}
    readonly = False
    for key, has_value, value in fields:
        if key == "type":
            continue
        if key == "from":
            return _refuse(
                "RUN --mount with from= is not supported: there are no other images or stages to mount from.",
                "Remove the from= option.",
            )
        if key not in _DOCKER[kind] + _PODMAN[kind]:
            return _refuse(*_unknown(kind, key))
        problem = _value_problem(kind, key, has_value, value)
        if problem is not None:
            return _refuse(*problem)
        if key in ("ro", "rw"):
            readonly = (key == "ro") == (not has_value or _BOOLEANS[value.lower()])
        elif key == "size":
            out["tmpfs-size"] = str(int(_docker_size(value) or 0))  # checked: below 8 EiB
        elif key == "sharing":
            out[key] = value.lower()
        elif key == "id" and not value:
            out.pop("id", None)  # Docker's empty id is no id: the target names the cache
        else:
            out[key] = None if key in _BARE else value
    if not out.get("target"):
        return _refuse(
            "RUN --mount needs a target directory.",
            "Add one, for example --mount=type=cache,target=/root/.cache/pip.",
        )
    if readonly:
        out["ro"] = None
    written = ",".join(key if value is None else f"{key}={value}" for key, value in out.items())
    targets = tuple(raw for raw, (key, _, _) in zip(spec.split(","), fields, strict=True) if key == "target")
    return Mount(None, written, out.get("sharing") == "locked", targets)


def expanded_target_problem(spec: str, variables: Mapping[str, str | None]) -> tuple[str, str] | None:
    """(message, fix) when a mount's target, expanded with `variables`, is no directory to mount.

    Buildah expands the target with the ARG and ENV values before the RUN (`variables`, as
    expand() takes them: run_flags.StageVariables); a value that can't be worked out here is
    left to it, since it may well be a directory. A mount `read` refuses, and a target without
    a variable, is not looked at again.
    A target holding a quote or a backslash is left alone too: the rendered flag quotes it, and
    inside those quotes Buildah reads them otherwise than a bare word.
    """
    mount = read(spec)
    if mount.problem is not None:
        return None
    for written in mount.targets:
        key, _, value = written.partition("=")
        if "$" not in value or "'" in value or "\\" in value:
            continue
        expanded = expand(value, variables)
        if expanded is None:
            continue
        if not expanded:
            name = _NAME.search(value)
            give = f"{name.group(1)} a value (ARG {name.group(1)}=/root/.cache/pip)" if name else "it a value"
            return (
                f"RUN --mount {written[:40]} expands to nothing, so the mount has no target directory.",
                f"Give {give}, or write the directory itself, e.g. {key}=/root/.cache/pip.",
            )
        problem = _target_problem(f"{written[:40]} (that is, {expanded[:40]})", expanded)
        if problem is not None:
            return problem
    return None


def _field(field: str) -> tuple[str, bool, str]:
    """(key as Docker names it, whether it has a value, value) of one option."""
    key, eq, value = field.partition("=")
    if key != "Z":  # Podman's Z (a private SELinux label) is not its z
        key = key.lower()
    return _ALIASES.get(key, key), bool(eq), value


def _refuse(message: str, fix: str) -> Mount:
    return Mount((message, fix))


def _unknown(kind: str, key: str) -> tuple[str, str]:
    takes = ", ".join(_DOCKER[kind][:-1]) + " and " + _DOCKER[kind][-1]
    fix = f"Remove it; a {kind} mount takes {takes}."
    if not key:
        return (
            "RUN --mount has an empty option (two commas in a row, or one at the end).",
            "Remove the extra comma.",
        )
    shown = key[:40] if key.strip() == key else f'"{key[:40]}"'
    if key == "size":
        fix = "Remove it; only a tmpfs mount has a size (ORCH_CACHE_MOUNTS_SIZE bounds the caches)."
    return f"A {kind} mount (RUN --mount=type={kind}) has no option {shown}.", fix


def _value_problem(kind: str, key: str, has_value: bool, value: str) -> tuple[str, str] | None:
    """(message, fix) when an option's value can't be built, or None."""
    if key in _BARE:
        if has_value:
            return f"RUN --mount option {key} takes no value.", f"Write it alone: ,{key},"
        return None
    if not has_value:
        if key in ("ro", "rw"):
            return None
        return f"RUN --mount option {key} needs a value.", f"Write it as {key}={_EXAMPLES[key]}."
    if "$" in value and key not in _VARIABLES_OK:
        return (
            f"RUN --mount option {key}={value[:40]} can't use a variable: only a target, id or source may.",
            f"Write the value itself, e.g. {key}={_EXAMPLES[key]}.",
        )
    if key == "target":
        if not value:
            return "RUN --mount needs a target directory.", "Add one, for example target=/root/.cache/pip."
        if not value.startswith("$"):  # one with a variable is checked expanded, when it can be
            return _target_problem(f"target={value[:40]}", value)
    elif key in ("ro", "rw"):
        if value.lower() not in _BOOLEANS:
            return (
                f"RUN --mount option {key}={value[:40]} is not true or false.",
                f"Write {key} alone, or {key}=false.",
            )
    elif key == "sharing":
        if value.lower() == "private":
            return (
                "RUN --mount sharing=private is not available: Podman has no private cache mounts.",
                "Use sharing=locked (one build step at a time uses the cache) or leave sharing out (shared).",
            )
        if value.lower() not in ("shared", "locked"):
            return (
                f"RUN --mount sharing={value[:40]} is not a sharing mode.",
                "Use sharing=shared or sharing=locked.",
            )
    elif key in ("mode", "tmpfs-mode"):
        if not _OCTAL.fullmatch(value):
            return f"RUN --mount {key}={value[:40]} is not an octal file mode.", f"Write it like {key}=0755."
        if int(value, 8) > _MAX_MODE:
            return (
                f"RUN --mount {key}={value[:40]} is out of range: a mode is an octal number from 0 "
                "to 37777777777.",
                f"Write a file mode, e.g. {key}=0755.",
            )
    elif key in ("uid", "gid"):
        if not _DECIMAL.fullmatch(value):
            return f"RUN --mount {key}={value[:40]} is not a numeric id.", f"Write a number, e.g. {key}=1000."
        digits = value.lstrip("0")  # a length check first: Python won't convert 4,300 digits
        if len(digits) > len(str(_MAX_ID)) or int(digits or "0") > _MAX_ID:
            return (
                f"RUN --mount {key}={value[:40]} is out of range: an id is a number from 0 to {_MAX_ID}.",
                f"Write an id in that range, e.g. {key}=1000.",
            )
    elif key == "size":
        size = _docker_size(value)
        if size is None:
            return f"RUN --mount size={value[:40]} is not a size.", "Write one like size=512m or size=2g."
        if size >= _MAX_SIZE:
            return (
                f"RUN --mount size={value[:40]} is out of range: a size must be below 8 EiB (8192p).",
                "Write a smaller one, e.g. size=512m or size=2g.",
            )
    elif key == "tmpfs-size" and not _KERNEL_SIZE.fullmatch(value):
        return (
            f"RUN --mount tmpfs-size={value[:40]} is not a size Podman reads.",
            "Write a whole number with an optional k, m or g (tmpfs-size=512m), or use Docker's size=1.5g.",
        )
    return None


def _target_problem(shown: str, value: str) -> tuple[str, str] | None:
    """(message, fix) when Podman can't mount at `value` (a target's value as Buildah gets it)."""
    if not value.startswith("/"):
        return (
            f"RUN --mount {shown} is not an absolute path, which Podman requires.",
            f"Write the whole path, e.g. target=/{value[:40].lstrip('./')}.",
        )
    # As the runtime resolves it: `/.`, `/a/..` are the root, `/./proc` is /proc.
    top = posixpath.normpath(value).strip("/").split("/", 1)[0]
    if not top or top in _KERNELS:
        # The root itself, or the kernel's own file systems the runtime mounts: no build runs.
        return (
            f"RUN --mount {shown} can't be a mount's: the step's root and /proc, /sys and /dev are "
            "the runtime's.",
            "Mount it at a directory of its own, e.g. target=/root/.cache/pip.",
        )
    return None


def _docker_size(value: str) -> float | None:
    """Bytes of a Docker size (`512m`, `1.5GiB`, `100 MB`), or None when it isn't one.

    A float, as go-units works it out: past 1.8e308 it is infinite (Docker refuses that too).
    """
    match = _DOCKER_SIZE.fullmatch(value)
    if match is None:
        return None
    unit = (match.group(3) or "").lower()
    return float(match.group(1)) * 1024.0 ** ("kmgtp".index(unit) + 1 if unit else 0)


_EXAMPLES = {
    "target": "/root/.cache/pip",
    "id": "pip",
    "source": "sub/dir",
    "sharing": "locked",
    "mode": "0755",
    "uid": "1000",
    "gid": "1000",
    "size": "512m",
    "tmpfs-size": "512m",
    "tmpfs-mode": "1777",
    "ro": "true",
    "rw": "true",
}
