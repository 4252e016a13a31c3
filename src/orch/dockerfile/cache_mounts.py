"""RUN --mount=type=cache: each mount a directory of its owner's (a platform's workspace) alone.

Buildah keeps a cache mount's content between builds in a directory of the host named by the
mount's `id` (by default its target): `/var/tmp/buildah-cache/ID`, one directory for every
build on the machine that names the same id, whichever platform or workspace it is, and an id
such as `../../../etc` names a directory of the host itself. So the Containerfile never carries
the user's id: every cache mount gets `id=orch-OWNER-HASH`, where OWNER names the platform and
the workspace (see `owner`) and HASH is the SHA-256 of the user's id (or target), which keeps
what the user's ids share shared, within the owner only.

The value is first written as Buildah should read the user's Docker options
(mount_options.for_buildah), then read as Buildah reads it (split at every comma, whatever the
quotes), since Buildah decides which directory is mounted: each `id=` and `from=` it would see
goes, then the owner's id is added.

Those directories are kept within a size, least recently used first (builder/cache_dirs.py):
`ids` names the ones a build mounts, `prefix` all of a platform's.
"""

from __future__ import annotations

import hashlib
import posixpath
from collections.abc import Sequence

from orch.dockerfile.instruction import Instruction
from orch.dockerfile.mount_options import for_buildah

_TARGETS = ("target", "dst", "destination")


def owner(instance: str, scope: str) -> str:
    """The owner part of the cache ids of platform `instance`'s builds for `scope` (a workspace
    id, or the scope of shared environments)."""
    return f"{instance}-{hashlib.sha256(scope.encode()).hexdigest()[:12]}"


def uses_cache(instructions: Sequence[Instruction]) -> bool:
    """Whether any RUN mounts a cache (its image may then hold what earlier builds cached)."""
    return any(
        _is_cache(_mount_fields(flag)) for ins in instructions if ins.keyword == "RUN" for flag in ins.flags
    )


def prefix(instance: str) -> str:
    """How the cache ids (and Buildah's directories) of platform `instance`'s builds begin."""
    return f"orch-{instance}-"


def ids(instructions: Sequence[Instruction], cache_owner: str) -> list[str]:
    """The ids (Buildah's directories' names) of the cache mounts these instructions use, once
    rendered for `cache_owner`."""
    found = [
        _private_id(fields, cache_owner)
        for ins in instructions
        if ins.keyword == "RUN"
        for fields in map(_mount_fields, ins.flags)
        if _is_cache(fields)
    ]
    return list(dict.fromkeys(found))


def private(flag: str, cache_owner: str) -> str:
    """A RUN flag as Buildah gets it: a mount written in Buildah's options, and a cache mount's
    id replaced by `cache_owner`'s (other flags unchanged)."""
    fields = _mount_fields(flag)
    if not fields:
        return flag
    if not _is_cache(fields) and not any(_key(f) in ("id", "from") for f in fields):
        return "--mount=" + ",".join(fields)
    kept = [f for f in fields if _key(f) not in ("id", "from")]
    return "--mount=" + ",".join([*kept, f"id={_private_id(fields, cache_owner)}"])


def named(flag: str) -> str:
    """The cache a --mount flag names as its user wrote it: its id, else its target."""
    return _theirs(_mount_fields(flag))


def _private_id(fields: list[str], cache_owner: str) -> str:
    digest = hashlib.sha256(_theirs(fields).encode()).hexdigest()[:16]
    return f"orch-{cache_owner}-{digest}" if cache_owner else f"orch-{digest}"


def _theirs(fields: list[str]) -> str:
    # As Buildah names the directory: the last id, else the target (cleaned).
    ids = [_value(f) for f in fields if f.partition("=")[0] == "id"]
    targets = [_value(f) for f in fields if _key(f) in _TARGETS]
    return ids[-1] if ids else posixpath.normpath(targets[-1] if targets else "")


def _mount_fields(flag: str) -> list[str]:
    """The fields of a --mount flag's value, in Buildah's options and as Buildah splits them
    (none for other flags)."""
    name, _, value = flag.partition("=")
    return for_buildah(value).split(",") if name == "--mount" else []


def _key(field: str) -> str:
    return field.partition("=")[0].strip().lower()


def _value(field: str) -> str:
    return field.partition("=")[2]


def _is_cache(fields: list[str]) -> bool:
    return any(_key(f) == "type" and _value(f).strip().lower() == "cache" for f in fields)
