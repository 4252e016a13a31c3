"""The OCI runtime config (a bundle's config.json) of a sandbox, for runc and compatible runtimes.

It reproduces what Podman generates for the same `ContainerSpec` under `podman_run.run_args`
(compared field by field in docs/launcher-config.md): the same user, rlimits, no new privileges,
capabilities, seccomp filter, masked and read-only paths, device rules, limits and mounts. The
few differences are stricter (a cgroup namespace; nosuid/nodev on bind mounts), are about
where a thing comes from (a tmpfs /dev/shm instead of a host one bound in), or keep what the
image sets (its PYTHONPATH after the run's dependencies', see deps.search_path).
"""

from __future__ import annotations

import functools
import os
import resource
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orch.engine.base import ContainerSpec
from orch.errors import EngineError
from orch.sandbox.deps import search_path
from orch.sandbox.layout import SCRATCH
from orch.sandbox.seccomp import oci_seccomp

OCI_VERSION = "1.0.2-dev"
INIT = "/run/orch-init"  # where catatonit is bound in (Podman: /run/podman-init)
HANDOFF = "/run/orch-handoff"  # where a warm sandbox's helper is bound in (sandbox/handoff.c)
RELAY = "/run/orch-relay"  # where a gVisor sandbox's output relay is bound in (sandbox/relay.c)
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CPU_PERIOD = 100_000  # µs; Podman's --cpus uses the same period
SHM_BYTES = 64_000 * 1024  # Podman's default --shm-size (64000k)
# What scripts/setup writes into containers.conf (`default_ulimits`); read from there when set.
# NPROC counts every process of the sandboxes' host uid (1000) together, so it is set high; each
# sandbox's own bound is its pids cgroup, and the sum of those is kept below it (`run_pids`).
RLIMITS = (("RLIMIT_NOFILE", 1024, 1024), ("RLIMIT_NPROC", 32768, 32768))

# Podman 4.3's lists (libpod / runtime-tools defaults), unchanged: paths of the host's kernel
# that a container must not read (masked) or write (read-only).
MASKED_PATHS = (
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/fs/selinux",
    "/sys/dev/block",
)
READONLY_PATHS = ("/proc/asound", "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")
# containers.conf's default_sysctls: no unprivileged ICMP sockets (ping) in a sandbox.
SYSCTLS = {"net.ipv4.ping_group_range": "0 0"}
_NOEXEC = ("nosuid", "noexec", "nodev")
_CAP_SETS = ("bounding", "effective", "inheritable", "permitted", "ambient")
_DEVPTS = ("nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5")
_FIX = "Correct the sandbox's settings."


@dataclass(frozen=True)
class Layout:
    """What the launcher prepared on the host for one sandbox, and what the image says."""

    root: Path  # the sandbox's root file system
    hostname: str
    cgroups_path: str  # e.g. /orch_NAME/NAME: under our own parent, see podman_run.cgroup_parent
    uid: int = 0
    gid: int = 0
    netns: Path | None = None  # a prepared network namespace; None: a new, empty one
    files: Mapping[str, Path] = field(default_factory=dict)  # container path -> host file (read-only)
    init: Path | None = None  # catatonit on the host, run as PID 1; None: the command is PID 1
    image_env: Sequence[str] = ()  # KEY=VALUE
    image_workdir: str = ""
    rlimits: Sequence[tuple[str, int, int]] = RLIMITS
    handoff: Path | None = None  # the handoff helper on the host, for a warm sandbox to wait in
    # A warm sandbox's places for the run's own (late) mounts: container path -> an empty shared
    # mount point on the host, bound in as a slave, on which the run's source is attached later.
    late: Mapping[str, Path] = field(default_factory=dict)
    # The root's own /tmp directory on the host, bound onto /tmp (gVisor: see runc.Launcher.prepare).
    tmp: Path | None = None
    # The output relay on the host (gVisor: see sandbox/relay.py), run between the init and the
    # command; None: the command writes to the sandbox's stdout and stderr itself.
    relay: Path | None = None


def config(spec: ContainerSpec, layout: Layout) -> dict[str, Any]:
    caps = [f"CAP_{c.upper().removeprefix('CAP_')}" for c in spec.cap_add]
    return {
        "ociVersion": OCI_VERSION,
        "process": {
            "terminal": False,
            "user": {"uid": layout.uid, "gid": layout.gid, "umask": 0o022, "additionalGids": [layout.gid]},
            "args": arguments(spec.argv, layout),
            "env": environment(spec, layout),
            "cwd": spec.workdir or layout.image_workdir or "/",
            "capabilities": capabilities(caps, root=layout.uid == 0),
            "rlimits": [{"type": t, "hard": hard, "soft": soft} for t, soft, hard in layout.rlimits],
            "noNewPrivileges": True,
        },
        "root": {"path": str(layout.root), "readonly": spec.read_only},
        "hostname": layout.hostname,
        "mounts": mounts(spec, layout),
        "linux": {
            "sysctl": dict(SYSCTLS),
            "resources": resources(spec),
            "cgroupsPath": layout.cgroups_path,
            "namespaces": namespaces(layout.netns),
            "seccomp": oci_seccomp(caps),
            "maskedPaths": list(MASKED_PATHS),
            "readonlyPaths": list(READONLY_PATHS),
        },
    }


def arguments(argv: Sequence[str], layout: Layout) -> list[str]:
    """The process's command line: the init, then the relay, then `argv`, each when there is one."""
    return [*([INIT, "--"] if layout.init else []), *([RELAY] if layout.relay else []), *argv]


def environment(spec: ContainerSpec, layout: Layout) -> list[str]:
    """Podman's order of precedence: its defaults, then the image's, then the spec's; but the
    run's dependencies' search path comes before the image's own (deps.search_path)."""
    image = dict(item.partition("=")[::2] for item in layout.image_env)
    env = {"PATH": DEFAULT_PATH, "TERM": "xterm", **image, "container": "oci", "HOSTNAME": layout.hostname}
    env |= {key: search_path(key, value, image.get(key)) for key, value in spec.env.items()}
    return [f"{k}={v}" for k, v in env.items()]


def capabilities(caps: Sequence[str], root: bool) -> dict[str, list[str]]:
    """All dropped but `caps`. As in Podman: root gets them bounding, effective and permitted;
    another user gets them in every set (ambient too), or a non-root process would not have them."""
    given = ("bounding", "effective", "permitted") if root else _CAP_SETS
    return {s: list(caps) if s in given else [] for s in _CAP_SETS}


def namespaces(netns: Path | None) -> list[dict[str, str]]:
    # A cgroup namespace, which Podman leaves out on cgroup v1: the sandbox then sees its own
    # cgroup as "/" and learns nothing of the host's names.
    network = {"type": "network", **({"path": str(netns)} if netns else {})}
    return [{"type": "pid"}, network, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}, {"type": "cgroup"}]


def resources(spec: ContainerSpec) -> dict[str, Any]:
    out: dict[str, Any] = {"devices": [{"allow": False, "access": "rwm"}]}
    if spec.memory_bytes:
        # Swap equal to memory: the limit is a real limit, not a slow path to the disk.
        out["memory"] = {"limit": spec.memory_bytes, "swap": spec.memory_bytes}
    if spec.cpus:
        # Never 0 (runc reads a quota of 0 as none): at least the kernel's least, 1 ms a period.
        out["cpu"] = {"quota": max(1000, round(spec.cpus * CPU_PERIOD)), "period": CPU_PERIOD}
    if spec.pids:
        out["pids"] = {"limit": spec.pids}
    return out


def mounts(spec: ContainerSpec, layout: Layout) -> list[dict[str, Any]]:
    """The kernel's file systems as Podman mounts them, the init, the generated /etc files, then
    the spec's own tmpfs and bind mounts, parents before children (as Podman sorts them)."""
    system: list[dict[str, Any]] = [
        _m("/proc", "proc", "proc", _NOEXEC),
        _m("/dev", "tmpfs", "tmpfs", ("nosuid", "noexec", "strictatime", "mode=755", "size=65536k")),
        _m("/dev/pts", "devpts", "devpts", _DEVPTS),
        _m("/dev/shm", "tmpfs", "shm", (*_NOEXEC, "mode=1777", f"size={SHM_BYTES}")),  # noqa: S108
        _m("/dev/mqueue", "mqueue", "mqueue", _NOEXEC),
        _m("/sys", "sysfs", "sysfs", (*_NOEXEC, "ro")),
        _m("/sys/fs/cgroup", "cgroup", "cgroup", ("rprivate", *_NOEXEC, "relatime", "ro")),
    ]
    if layout.init:
        system.append(_m(INIT, "bind", str(layout.init), ("bind", "ro", "rprivate", "nosuid", "nodev")))
    if layout.handoff:
        system.append(_m(HANDOFF, "bind", str(layout.handoff), ("bind", "ro", "rprivate", "nosuid", "nodev")))
    if layout.relay:
        system.append(_m(RELAY, "bind", str(layout.relay), ("bind", "ro", "rprivate", "nosuid", "nodev")))
    own = {m.container for m in spec.mounts} | set(spec.tmpfs)
    for dest, host in sorted(layout.files.items()):
        if dest not in own:  # the spec's own mount of the same path wins, as in Podman
            system.append(_m(dest, "bind", str(host), ("bind", "rprivate", "ro", *_NOEXEC)))
    user: list[dict[str, Any]] = []
    for path, options in spec.tmpfs.items():
        opts = [o for o in options.split(",") if o]
        user.append(_m(path, "tmpfs", "tmpfs", (*opts, "rprivate", "tmpcopyup")))
    for m in spec.mounts:
        if not os.path.isabs(m.container):
            raise EngineError(f"The mount point {m.container} is not an absolute path.", _FIX)
        mode = "ro" if m.read_only else "rw"
        if m.container in layout.late:  # what is attached there later shows inside (rslave)
            user.append(
                _m(
                    m.container,
                    "bind",
                    str(layout.late[m.container]),
                    ("rbind", "ro", "rslave", "nosuid", "nodev"),
                )
            )
            continue
        user.append(_m(m.container, "bind", m.host, ("rbind", mode, "rprivate", "nosuid", "nodev")))
    if layout.tmp and SCRATCH not in own:
        mode = "ro" if spec.read_only else "rw"  # the root's own directory, as the root is
        user.append(_m(SCRATCH, "bind", str(layout.tmp), ("bind", mode, "rprivate", "nosuid", "nodev")))
    user.sort(key=lambda m: len(Path(m["destination"]).parts))
    return system + user


def _m(destination: str, kind: str, source: str, options: Sequence[str]) -> dict[str, Any]:
    return {"destination": destination, "type": kind, "source": source, "options": list(options)}


def podman_rlimits(paths: Sequence[str | None] = ()) -> tuple[tuple[str, int, int], ...]:
    """`default_ulimits` of Podman's containers.conf (CONTAINERS_CONF, else the system one), as
    (RLIMIT_NAME, soft, hard): the rlimits a `podman run` gets here. RLIMITS when unset."""
    candidates = paths or (os.environ.get("CONTAINERS_CONF"), "/etc/containers/containers.conf")
    for path in filter(None, candidates):
        try:
            st = os.stat(path)
        except OSError:
            continue
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        ulimits = _default_ulimits(path, stamp)
        if ulimits is not None:
            return ulimits
    return RLIMITS


def sandbox_nproc() -> int:
    """The RLIMIT_NPROC sandboxes get (soft): containers.conf's, else the server's own, which
    runc passes on (a large number when unlimited)."""
    for name, soft, _hard in podman_rlimits():
        if name == "RLIMIT_NPROC":
            return soft
    soft = resource.getrlimit(resource.RLIMIT_NPROC)[0]
    return soft if soft != resource.RLIM_INFINITY else 2**22


@functools.lru_cache(maxsize=8)
def _default_ulimits(path: str, _stamp: tuple[int, int, int]) -> tuple[tuple[str, int, int], ...] | None:
    """A containers.conf's default_ulimits (None: unreadable or unset); read again when the
    file changes (its mtime, size and inode are part of the key), not at every sandbox."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError):
        return None
    ulimits = (data.get("containers") or {}).get("default_ulimits")
    return tuple(_ulimit(u) for u in ulimits) if ulimits else None


def _ulimit(text: str) -> tuple[str, int, int]:
    name, _, values = text.partition("=")
    soft, _, hard = values.partition(":")
    try:
        return f"RLIMIT_{name.strip().upper()}", int(soft), int(hard or soft)
    except ValueError:
        raise EngineError(
            f"containers.conf has a default_ulimits entry that is not NAME=SOFT:HARD: {text!r}.",
            "Correct it (scripts/setup writes nofile=1024:1024 and nproc=32768:32768).",
        ) from None


def parse_user(text: str, passwd: str | None = None, group: str | None = None) -> tuple[int, int]:
    """uid and gid of USER[:GROUP], either numeric or a name in the image's passwd/group files
    (their contents). A uid without a group takes the primary group passwd gives it, else its own
    number."""
    name, _, grp = (text or "0").partition(":")
    users = _table(passwd)
    if name.isdigit():
        uid = int(name)
        primary = next((int(f[3]) for f in users.values() if f[2] == name and f[3].isdigit()), uid)
    elif name in users and users[name][2].isdigit():
        uid, primary = int(users[name][2]), int(users[name][3] or users[name][2])
    else:
        raise EngineError(f"The user {name!r} is not in the image's /etc/passwd.", "Give a numeric uid:gid.")
    if not grp:
        return uid, primary
    if grp.isdigit():
        return uid, int(grp)
    groups = _table(group)
    if grp in groups and groups[grp][2].isdigit():
        return uid, int(groups[grp][2])
    raise EngineError(f"The group {grp!r} is not in the image's /etc/group.", "Give a numeric uid:gid.")


def _table(text: str | None) -> dict[str, list[str]]:
    rows = (line.split(":") for line in (text or "").splitlines() if line and not line.startswith("#"))
    return {r[0]: r for r in rows if len(r) >= 4}
