"""The files Podman generates for each container, generated the same way for the runc launcher:
/etc/hostname, /etc/hosts, /etc/resolv.conf (with a network), /run/.containerenv, and
/etc/passwd and /etc/group with an entry for a uid (gid) the image does not know, so that
`whoami`, `id` and tools that look the user up work."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from pathlib import Path

HOST_HOSTS = Path("/etc/hosts")
HOST_RESOLV = Path("/etc/resolv.conf")
# Podman's fallback when the host's resolvers are all on loopback (unreachable from a sandbox).
FALLBACK_DNS = ("8.8.8.8", "8.8.4.4")


def write(
    directory: Path,
    *,
    hostname: str,
    name: str,
    address: str = "",
    gateway: str = "",
    network: bool = False,
    uid: int = 0,
    gid: int = 0,
    home: str = "/",
    passwd: str | None = None,
    group: str | None = None,
) -> dict[str, Path]:
    """Write the files into `directory`; return container path -> host file, to bind read-only."""
    files = {
        "/etc/hostname": f"{hostname}\n",
        "/etc/hosts": hosts(hostname, name, address, gateway),
        "/run/.containerenv": "",
    }
    if network:
        files["/etc/resolv.conf"] = resolv_conf()
    if passwd is not None and not _has(passwd, 2, uid):
        files["/etc/passwd"] = _append(passwd, f"{uid}:*:{uid}:{gid}:container user:{home}:/bin/sh")
    if group is not None and not _has(group, 2, gid):
        files["/etc/group"] = _append(group, f"{gid}:x:{gid}:{uid}")
    out = {}
    for dest, text in files.items():
        path = directory / dest.rsplit("/", 1)[1].lstrip(".")
        path.write_text(text)
        path.chmod(0o644)
        out[dest] = path
    return out


def hosts(hostname: str, name: str, address: str, gateway: str, base: Path = HOST_HOSTS) -> str:
    """The host's /etc/hosts (as Podman's base_hosts_file default), the host's name on the
    bridge (unreachable from a sandbox, as on Podman), and the sandbox's own names."""
    try:
        text = base.read_text()
    except OSError:
        text = "127.0.0.1\tlocalhost\n::1\tlocalhost\n"
    lines = [text.rstrip("\n")]
    if gateway:
        lines.append(f"{gateway}\thost.containers.internal")
    lines.append(f"{address or '127.0.0.1'}\t{hostname} {name}")
    return "\n".join(lines) + "\n"


def resolv_conf(base: Path = HOST_RESOLV, fallback: Sequence[str] = FALLBACK_DNS) -> str:
    """The host's resolv.conf without loopback resolvers (as Podman filters it)."""
    try:
        text = base.read_text()
    except OSError:
        text = ""
    kept, servers = [], 0
    for line in text.splitlines():
        fields = line.split()
        if fields[:1] == ["nameserver"] and len(fields) > 1:
            if _loopback(fields[1]):
                continue
            servers += 1
        kept.append(line)
    if not servers:
        kept += [f"nameserver {s}" for s in fallback]
    return "\n".join(kept) + "\n"


def _loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address.split("%")[0]).is_loopback
    except ValueError:
        return False


def _has(table: str, column: int, number: int) -> bool:
    for line in table.splitlines():
        fields = line.split(":")
        if len(fields) > column and fields[column] == str(number):
            return True
    return False


def _append(table: str, line: str) -> str:
    return (table if table.endswith("\n") or not table else table + "\n") + line + "\n"
