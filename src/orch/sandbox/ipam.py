"""Addresses on a CNI network's host-local ranges, reserved as the host-local plugin reserves
them, so the launcher's sandboxes and Podman's containers share one pool without a plugin
process per sandbox.

host-local (containernetworking-plugins) keeps one file per reserved address in
`/var/lib/cni/networks/NETWORK/`, named by the address and holding `OWNER\\r\\nIFNAME`; it takes
an exclusive `flock` on the `lock` file of that directory around every change, and remembers the
last address it gave in `last_reserved_ip.N` (N: the range set's index) so the next search starts
after it. This module does the same under the same lock: the plugin (called by Podman) and the
launcher never give one address twice.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import ipaddress
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orch.errors import EngineError

IPAM_DIR = Path("/var/lib/cni/networks")
_LINE_BREAK = "\r\n"
_LAST = "last_reserved_ip.0"  # the first (and only) range set's
_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC  # a reservation: made once, or taken
_FIX = "Remove sandboxes no longer needed, or give the network a larger subnet, then try again."


@dataclass(frozen=True)
class Range:
    """One host-local range: addresses from `start` to `end` of `subnet`, except the gateway."""

    subnet: ipaddress.IPv4Network
    gateway: ipaddress.IPv4Address | None
    start: ipaddress.IPv4Address
    end: ipaddress.IPv4Address

    def __contains__(self, address: object) -> bool:
        return isinstance(address, ipaddress.IPv4Address) and self.start <= address <= self.end


def ranges(ipam: Mapping[str, Any]) -> list[Range] | None:
    """The ranges of a host-local IPAM config with one IPv4 range set, as host-local reads them
    (start: the subnet's first host, end: the last before broadcast, unless set); None for any
    other IPAM (another plugin, IPv6, several range sets): those are left to the plugin."""
    if ipam.get("type") != "host-local":
        return None
    sets: list[list[dict[str, Any]]] = list(ipam.get("ranges") or ())
    if len(sets) != 1 or not sets[0]:
        return None
    found = []
    for item in sets[0]:
        try:
            subnet = ipaddress.ip_network(str(item["subnet"]), strict=False)
            if not isinstance(subnet, ipaddress.IPv4Network) or subnet.num_addresses < 4:
                return None
            gateway = ipaddress.IPv4Address(item["gateway"]) if item.get("gateway") else subnet[1]
            start = ipaddress.IPv4Address(item["rangeStart"]) if item.get("rangeStart") else subnet[1]
            end = ipaddress.IPv4Address(item["rangeEnd"]) if item.get("rangeEnd") else subnet[-2]
        except (KeyError, TypeError, ValueError):
            return None
        found.append(Range(subnet, gateway, start, end))
    return found


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _candidates(rs: Sequence[Range], last: ipaddress.IPv4Address | None) -> Iterator[ipaddress.IPv4Address]:
    """Every address of the ranges once, in host-local's order: from the one after `last` (when it
    lies in a range) to the ranges' end, then round from the first; the gateways skipped."""
    spans = [(int(r.start), int(r.end)) for r in rs]
    skip = {int(r.gateway) for r in rs if r.gateway is not None}
    at = next((i for i, r in enumerate(rs) if last in r), None)
    after = int(last) + 1 if at is not None and last is not None else None
    first = at or 0

    def walk() -> Iterator[int]:
        a, b = spans[first]
        yield from range(after if after is not None else a, b + 1)
        for k in range(1, len(spans)):
            yield from range(spans[(first + k) % len(spans)][0], spans[(first + k) % len(spans)][1] + 1)
        if after is not None:
            yield from range(a, after)

    for n in walk():
        if n not in skip:
            yield ipaddress.IPv4Address(n)


def reserve(
    network: str, rs: Sequence[Range], owner: str, ifname: str, ipam_dir: Path | None = None
) -> Range:
    """Reserve the next free address of `rs` for `owner` (its interface `ifname`); return it as a
    one-address Range of its subnet (its `start`), with the range's gateway."""
    directory = (ipam_dir or IPAM_DIR) / network
    with _locked(directory):
        last: ipaddress.IPv4Address | None = None
        with contextlib.suppress(OSError, ValueError):
            last = ipaddress.IPv4Address((directory / _LAST).read_text().strip())
        for address in _candidates(rs, last):
            try:
                fd = os.open(directory / str(address), _NEW, 0o644)
            except FileExistsError:
                continue
            with os.fdopen(fd, "wb") as f:
                f.write((owner.strip() + _LINE_BREAK + ifname).encode())
            (directory / _LAST).write_text(str(address))
            r = next(r for r in rs if address in r)
            return Range(r.subnet, r.gateway, address, address)
    subnets = ", ".join(str(r.subnet) for r in rs)
    raise EngineError(f"No address is free on the network {network} ({subnets}).", _FIX)


def release(network: str, owner: str, ipam_dir: Path | None = None, known: str = "") -> list[str]:
    """Give back every address reserved for `owner`; return them. None reserved is fine. With
    `known`, the address `reserve` gave the owner (an owner has one): only that reservation is
    looked at, if it is still the owner's; otherwise every reservation is, as host-local does."""
    directory = (ipam_dir or IPAM_DIR) / network
    if not directory.is_dir():
        return []
    with _locked(directory):
        if known and _free(directory / known, owner):
            return [known]
        return [path.name for path in directory.iterdir() if _free(path, owner)]


def _free(path: Path, owner: str) -> bool:
    """Remove the reservation at `path` if it is `owner`'s; whether it was."""
    if path.name.startswith(("last_reserved_ip", "lock")):
        return False
    try:
        if path.read_bytes().split(_LINE_BREAK.encode())[0].decode(errors="replace").strip() != owner:
            return False
        path.unlink()
    except OSError as e:
        if e.errno != errno.ENOENT:
            raise
        return False
    return True
