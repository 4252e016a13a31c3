"""Attaching a network namespace to a CNI network by calling its plugins ourselves, the way
Podman (libcni) does: each plugin of the network's conflist in order for ADD, with the previous
plugin's result, and in reverse order for DEL, with the result ADD returned."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orch.errors import EngineError
from orch.sandbox.ipam import IPAM_DIR  # host-local's reservations: one file per address

CONF_DIR = Path("/etc/cni/net.d")
PLUGIN_DIRS = ("/usr/lib/cni", "/usr/libexec/cni", "/opt/cni/bin")
IFNAME = "eth0"
_FIX = "Start the server once (it creates the sandbox network), or run scripts/setup, then try again."


@dataclass(frozen=True)
class Network:
    name: str
    conflist: Mapping[str, Any]

    @property
    def cni_version(self) -> str:
        return str(self.conflist.get("cniVersion", "0.4.0"))

    @property
    def plugins(self) -> list[dict[str, Any]]:
        return list(self.conflist.get("plugins") or ())


def load(name: str, conf_dir: Path = CONF_DIR) -> Network:
    """The CNI network `name` as Podman wrote it (a conflist in /etc/cni/net.d)."""
    for path in sorted(conf_dir.glob("*.conflist")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if data.get("name") == name:
            return Network(name, data)
    raise EngineError(f"The CNI network {name} is not configured (no conflist in {conf_dir}).", _FIX)


def for_launcher(network: Network) -> Network:
    """The network as the runc launcher attaches to it: only the bridge plugin (the veth on the
    same bridge, an address from the same host-local range), without its per-sandbox NAT
    chain, and without the portmap (no ports are published), firewall and tuning plugins.

    Those each called iptables for every sandbox (about twenty iptables processes per start and
    end): the largest cost of a sandbox's start. Their effect for a whole subnet is one set of
    static rules instead (`orch.engine.network.ensure_forwarding`): masquerade what leaves the
    subnet, accept what is forwarded for it. The ORCH-ISOLATION rules, matched by the bridge
    interface, apply unchanged."""
    plugins = []
    for plugin in network.plugins:
        if plugin.get("type") == "bridge":
            plugins.append({**plugin, "ipMasq": False})
    if not plugins:
        raise EngineError(f"The CNI network {network.name} has no bridge plugin.", _FIX)
    return Network(network.name, {**network.conflist, "plugins": plugins})


def subnets(network: Network) -> list[str]:
    """The IPv4 subnets of the network's host-local ranges."""
    found = []
    for plugin in network.plugins:
        for ranges in (plugin.get("ipam") or {}).get("ranges") or ():
            found += [str(r["subnet"]) for r in ranges if "." in str(r.get("subnet", ""))]
    return found


def add(network: Network, container_id: str, netns: Path) -> dict[str, Any]:
    """Attach `netns` to the network; return the chain's result (interfaces, addresses). A
    failure part way is undone (DEL) before the error is raised."""
    result: dict[str, Any] | None = None
    for plugin in network.plugins:
        try:
            result = _exec(network, plugin, "ADD", container_id, netns, result)
        except EngineError:
            delete(network, container_id, netns, result)
            raise
    return result or {}


def delete(
    network: Network, container_id: str, netns: Path | None, result: Mapping[str, Any] | None
) -> list[str]:
    """Detach: every plugin's DEL in reverse order, each with ADD's result (so the firewall
    plugin finds its rules). Every plugin is tried; return the errors (empty when clean). A netns
    that is gone already is fine: the plugins then release what lives outside it."""
    errors = []
    for plugin in reversed(network.plugins):
        try:
            _exec(network, plugin, "DEL", container_id, netns, result)
        except EngineError as e:
            errors.append(e.message)
    return errors


def address(result: Mapping[str, Any]) -> str:
    """The first IPv4 address of a result, without its prefix length ("" if none)."""
    for ip in result.get("ips") or ():
        if str(ip.get("version", "4")) == "4" or "." in str(ip.get("address", "")):
            return str(ip["address"]).split("/")[0]
    return ""


def gateway(result: Mapping[str, Any]) -> str:
    for ip in result.get("ips") or ():
        if ip.get("gateway"):
            return str(ip["gateway"])
    return ""


def reservations(network: Network, id_prefix: str, ipam_dir: Path = IPAM_DIR) -> dict[str, str]:
    """host-local's address reservations whose container id starts with `id_prefix`:
    container id -> address. (Each file is named by the address; its first line is the id.)"""
    found = {}
    for path in (ipam_dir / network.name).glob("*"):
        if path.name.startswith(("last_reserved_ip", "lock")):
            continue
        try:
            owner = path.read_text().splitlines()[0].strip()
        except (OSError, IndexError):
            continue
        if owner.startswith(id_prefix):
            found[owner] = path.name
    return found


def _exec(
    network: Network,
    plugin: Mapping[str, Any],
    command: str,
    container_id: str,
    netns: Path | None,
    prev: Mapping[str, Any] | None,
) -> dict[str, Any]:
    conf = {**plugin, "name": network.name, "cniVersion": network.cni_version}
    if prev:
        conf["prevResult"] = prev
    binary = _find(str(plugin["type"]))
    env = {
        **os.environ,
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": container_id,
        "CNI_NETNS": str(netns) if netns and netns.exists() else "",
        "CNI_IFNAME": IFNAME,
        "CNI_ARGS": "IgnoreUnknown=1",
        "CNI_PATH": os.pathsep.join(PLUGIN_DIRS),
    }
    try:
        proc = subprocess.run(
            [binary], input=json.dumps(conf).encode(), env=env, capture_output=True, timeout=60, check=False
        )
    except subprocess.TimeoutExpired:
        why = f"The CNI plugin {plugin['type']} ({command}) did not finish in 60 s."
        raise EngineError(why, _FIX) from None
    out = proc.stdout.decode(errors="replace").strip()
    if proc.returncode != 0:
        try:
            why = json.loads(out).get("msg") or out
        except ValueError:
            why = out or proc.stderr.decode(errors="replace").strip()
        raise EngineError(f"The CNI plugin {plugin['type']} failed ({command}): {why}", _FIX)
    if command != "ADD" or not out:
        return dict(prev or {})
    return json.loads(out)  # type: ignore[no-any-return]


def _find(plugin_type: str) -> str:
    for directory in PLUGIN_DIRS:
        path = Path(directory) / plugin_type
        if os.access(path, os.X_OK):
            return str(path)
    raise EngineError(
        f"The CNI plugin {plugin_type} is not installed (looked in {', '.join(PLUGIN_DIRS)}).",
        "Install containernetworking-plugins (scripts/setup does), then try again.",
    )
