"""A sandbox's namespace attached to its CNI bridge network with netlink (`netlink.py`), in the
server's own process: what the network's bridge plugin does with host-local, without starting
those two plugins (Go programs) for each attach and again for each detach, which cost a
networked run ~30 ms of CPU (docs/benchmarks.md).

Attach, as the bridge plugin (containernetworking-plugins 1.1) does for the launcher's networks
(`cni.for_launcher`: no per-sandbox NAT):
- the next free address of the network's host-local range, reserved under host-local's own lock
  and in its own files (`ipam.py`), so Podman's containers on the same network never get it;
- a veth pair: `eth0` in the namespace, `vethXXXXXXXX` on the host, enslaved to the network's
  bridge (where the ORCH-ISOLATION rules match it), in hairpin mode as configured, up; what the
  host remembered of the address's previous holder (its neighbour entry) forgotten;
- in the namespace: `lo` up, `eth0` given the address and up, the IPAM config's routes through
  the gateway.
The result has the plugin's shape (interfaces, ips, routes): it goes in the namespace's state
file as the plugin's did, and `detach` reads it.

Detach removes the host end (its pair goes with it) and gives the address back.

Only for a bridge that exists, with one host-local IPv4 range set: anything else raises
`Unsupported`, and the caller runs the plugin instead (the plugin also creates the bridge the
first time a network is used).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import secrets
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from orch.errors import EngineError
from orch.sandbox import cni, ipam, nsfs
from orch.sandbox.netlink import NetlinkError, Socket

_FIX = "Run the server as root with the sandbox network set up (scripts/setup), then try again."


class Unsupported(Exception):
    """This network is attached by its plugin, not here."""


def attach(network: cni.Network, container_id: str, path: Path) -> dict[str, Any]:
    """Attach the namespace at `path` to `network` (see the module's doc); return the result."""
    bridge_conf = next((p for p in network.plugins if p.get("type") == "bridge"), None)
    if bridge_conf is None or len(network.plugins) != 1:
        raise Unsupported(f"{network.name}: a chain of plugins")
    ipam_conf = bridge_conf.get("ipam") or {}
    ranges = ipam.ranges(ipam_conf)
    if ranges is None:
        raise Unsupported(f"{network.name}: not one host-local IPv4 range set")
    bridge = str(bridge_conf.get("bridge") or "cni0")
    try:
        master = socket.if_nametoindex(bridge)
    except OSError:
        raise Unsupported(f"{network.name}: its bridge {bridge} does not exist yet") from None
    host_name = f"veth{secrets.token_hex(4)}"
    reserved = ipam.reserve(network.name, ranges, container_id, cni.IFNAME)
    try:
        with Socket() as host:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                host.add_veth(host_name, cni.IFNAME, fd, master)
            finally:
                os.close(fd)
            # The address may have been another sandbox's a moment ago: the host would send it
            # to that one's hardware address until its neighbour entry expires. (The plugin sends
            # a gratuitous ARP from the new interface for the same reason.)
            host.forget_neighbour(master, reserved.start)
        if bridge_conf.get("hairpinMode"):
            Path(f"/sys/class/net/{host_name}/brport/hairpin_mode").write_text("1")
        with nsfs.entered(path), Socket() as inside:
            inside.up(socket.if_nametoindex("lo"))
            no_ipv6(cni.IFNAME)
            eth = socket.if_nametoindex(cni.IFNAME)
            inside.add_address(eth, reserved.start, reserved.subnet.prefixlen)
            inside.up(eth)
            for route in ipam_conf.get("routes") or ():
                via = route.get("gw") or reserved.gateway
                if via is not None:
                    inside.add_route(ipaddress.IPv4Network(route["dst"]), ipaddress.IPv4Address(via))
    except BaseException as e:
        with contextlib.suppress(OSError):  # the cause is what is raised; the sweep finds the rest
            _drop_link(host_name)
        ipam.release(network.name, container_id)
        if isinstance(e, (OSError, ValueError)):
            raise EngineError(
                f"Could not attach {path.name} to the network {network.name}: {e}.", _FIX
            ) from None
        raise
    ip: dict[str, Any] = {
        "version": "4",
        "interface": 2,
        "address": f"{reserved.start}/{reserved.subnet.prefixlen}",
    }
    if reserved.gateway is not None:
        ip["gateway"] = str(reserved.gateway)
    return {
        "cniVersion": network.cni_version,
        "interfaces": [{"name": bridge}, {"name": host_name}, {"name": cni.IFNAME, "sandbox": str(path)}],
        "ips": [ip],
        "routes": list(ipam_conf.get("routes") or ()),
        "dns": {},
    }


def detach(network_name: str, container_id: str, result: Mapping[str, Any] | None) -> list[str]:
    """Undo an attach (this module's or the plugin's): the host end of the veth removed, the
    address given back. Return what could not be undone (empty when clean); gone is fine."""
    errors = []
    for interface in (result or {}).get("interfaces") or ():
        name = str(interface.get("name", ""))
        if name.startswith("veth") and not interface.get("sandbox"):
            try:
                _drop_link(name)
            except NetlinkError as e:
                errors.append(f"Could not remove the interface {name}: {e.strerror}.")
    # The address attach gave: the reservation is found without reading every other one.
    ips = (result or {}).get("ips") or [{}]
    known = str(ips[0].get("address", "")).split("/")[0]
    try:
        ipam.release(network_name, container_id, known=known)
    except OSError as e:
        errors.append(f"Could not give back the address of {container_id}: {e}.")
    return errors


def no_ipv6(interface: str) -> None:
    """Turn IPv6 off on `interface` of the network namespace this thread is in, before it is up:
    the network has no IPv6, and a link-local address would reach the bridge's other ends (the
    host's wildcard listeners, the neighbours). A kernel without IPv6 has nothing to turn off."""
    with contextlib.suppress(FileNotFoundError):
        Path(f"/proc/sys/net/ipv6/conf/{interface}/disable_ipv6").write_text("1")


def loopback_up(path: Path) -> None:
    """`lo` up in the namespace at `path` (what `ip link set lo up` does there)."""
    try:
        with nsfs.entered(path), Socket() as inside:
            inside.up(socket.if_nametoindex("lo"))
    except OSError as e:
        raise EngineError(f"Could not set lo up in {path.name}: {e}.", _FIX) from None


def _drop_link(name: str) -> None:
    with Socket() as host:
        host.delete(name)
