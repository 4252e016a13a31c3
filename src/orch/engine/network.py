"""Where sandboxes sit on the network: two Podman bridges of their own, and firewall rules that
let them reach the outside world while nothing reaches them, and they reach neither the host
nor one another.

- ``orch-sandbox``: runs, dependency installs and build steps. Outbound only.
- ``orch-services``: services. Outbound only, except that the host itself (the server's proxy)
  may open connections to the service port.

The rules live in one iptables chain, ``ORCH-ISOLATION``, jumped to first from INPUT, FORWARD
and OUTPUT. They are shared by every platform on the machine, installed idempotently (a hash of
the rules is kept in a comment, so an unchanged set is left alone) under a file lock, and put
back by the next start after a reboot. Traffic between containers on one bridge is filtered
because the kernel passes bridged traffic to iptables (``bridge-nf-call-iptables``, which
Podman's netavark turns on).

IPv6: the bridges carry no IPv6 network, but every interface on them has a link-local address,
over which a container would reach the host's wildcard listeners and its neighbours. ip6tables
has a chain of the same name, jumped to first from the same three, that drops all IPv6 into,
out of and across both bridges (``rules6``). The runc launcher also turns IPv6 off on its
sandboxes' interfaces (sandbox/veth.py).
"""

from __future__ import annotations

import hashlib
import json
import shlex
import socket
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from orch.engine import programs
from orch.errors import EngineError
from orch.locking import file_lock

CHAIN = "ORCH-ISOLATION"
SERVICE_PORT = 8080  # what a service listens on inside its container; the only way in
LOCK = Path("/run/orch-network.lock")
LINK_LOCAL = "169.254.0.0/16"  # cloud metadata endpoints live here
_FIX = (
    "Run scripts/setup (it installs iptables), and run the server as root (rootful Podman), then try again."
)


class Network(StrEnum):
    """The network a container is attached to."""

    NONE = "none"  # loopback only
    SANDBOX = "sandbox"  # outbound only
    SERVICE = "service"  # outbound, and the host may connect to SERVICE_PORT

    @property
    def podman_name(self) -> str:
        return {"none": "none", "sandbox": "orch-sandbox", "service": "orch-services"}[self.value]


@dataclass(frozen=True)
class Bridge:
    subnet: str
    interface: str  # the bridge's device on the host: every packet from its containers comes in here


@dataclass(frozen=True)
class Subnets:
    sandbox: Bridge
    service: Bridge
    others: tuple[str, ...] = ()  # every other Podman network's subnet (the default one, for a start)


def rules(subnets: Subnets, service_port: int = SERVICE_PORT) -> list[list[str]]:
    """The chain's rules, in order, as iptables arguments after ``-A CHAIN``. What comes from a
    container is matched by the bridge it comes in on, not by its source address: the host's own
    address on a bridge lies in that bridge's subnet, and a source address can be forged."""
    ours = (subnets.sandbox, subnets.service)
    out: list[list[str]] = []
    for bridge in ours:
        came_in = ["-i", bridge.interface]
        # Answers on connections that were allowed to open (their own outbound ones, and the
        # proxy's to a service) go on; everything below is about new connections.
        out.append([*came_in, "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "RETURN"])
        # Not the host, on any of its addresses (the bridge gateway, host.containers.internal, ...).
        out.append([*came_in, "-m", "addrtype", "--dst-type", "LOCAL", "-j", "DROP"])
        # Not another sandbox or service, nor any other container, nor the metadata address.
        for dest in [*(b.subnet for b in ours), *subnets.others, LINK_LOCAL]:
            out.append([*came_in, "-d", dest, "-j", "DROP"])
    # Nothing opens a connection to a sandbox; the host may reach a service on its port only.
    from_host = ["-m", "addrtype", "--src-type", "LOCAL", "-m", "conntrack", "--ctstate", "NEW"]
    port = ["-p", "tcp", "--dport", str(service_port)]
    out.append(["-d", subnets.service.subnet, *port, *from_host, "-j", "RETURN"])
    for bridge in ours:
        out.append(["-d", bridge.subnet, "-m", "conntrack", "--ctstate", "NEW", "-j", "DROP"])
    return out


def rules6(subnets: Subnets) -> list[list[str]]:
    """The IPv6 chain's rules (ip6tables arguments after ``-A CHAIN``): nothing in or out on
    either bridge, the host's own traffic to it included. Bridged traffic passes ip6tables too
    (``bridge-nf-call-ip6tables``)."""
    return [
        [flag, b.interface, "-j", "DROP"] for b in (subnets.sandbox, subnets.service) for flag in ("-i", "-o")
    ]


def rules_tag(rule_list: Sequence[Sequence[str]]) -> str:
    return "orch-rules-" + hashlib.sha256(json.dumps(rule_list).encode()).hexdigest()[:16]


def _run(args: Sequence[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    try:
        proc = subprocess.run(list(args), capture_output=True, text=True, timeout=60, check=False)
    except FileNotFoundError:
        if where := programs.off_path(args[0]):
            raise EngineError(*programs.not_on_path(args[0], where)) from None
        raise EngineError(f"{args[0]} is not installed, so sandboxes cannot be isolated.", _FIX) from None
    if check and proc.returncode != 0:
        why = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise EngineError(f"Could not set up the sandboxes' network ({' '.join(args[:3])}): {why[0]}", _FIX)
    return proc


def _iptables(*args: str, check: bool = True, binary: str = "iptables") -> subprocess.CompletedProcess[str]:
    return _run([binary, "-w", "30", *args], check=check)


IPV6 = Path("/proc/sys/net/ipv6")  # absent: a kernel without IPv6 (ipv6.disable=1), nothing to guard
BRIDGED_IPV6 = Path("/proc/sys/net/bridge/bridge-nf-call-ip6tables")


def _bridge(podman: str, name: str) -> Bridge | None:
    proc = _run([podman, "network", "inspect", name], check=False)
    if proc.returncode != 0:
        return None
    data = json.loads(proc.stdout or "[]")
    nets = (data[0].get("subnets") or []) if data else []
    if not nets:
        return None
    return Bridge(str(nets[0]["subnet"]), str(data[0].get("network_interface") or ""))


def _ensure_network(podman: str, network: Network) -> Bridge:
    name = network.podman_name
    bridge = _bridge(podman, name)
    if bridge is None:
        # No DNS server of Podman's on the gateway: the host is out of reach, so it would not
        # answer anyway; containers use the host's resolvers instead.
        label = f"org.orch.network={network.value}"
        _run([podman, "network", "create", "--disable-dns", "--label", label, name])
        bridge = _bridge(podman, name)
    if bridge is None or not bridge.interface:
        raise EngineError(f"The Podman network {name} has no subnet or no bridge device.", _FIX)
    return bridge


def _other_subnets(podman: str, ours: set[str]) -> tuple[str, ...]:
    proc = _run([podman, "network", "ls", "--format", "{{.Name}}"], check=False)
    found: list[str] = []
    for name in proc.stdout.split():
        if name not in ours and (bridge := _bridge(podman, name)):
            found.append(bridge.subnet)
    return tuple(sorted(set(found)))


def _ensure_jump(builtin: str, binary: str = "iptables") -> None:
    """Our chain must be the first thing INPUT/FORWARD/OUTPUT do: netavark's own FORWARD rules
    accept a bridge's traffic, and would otherwise win."""
    listed = _iptables("-S", builtin, binary=binary).stdout.splitlines()
    first = next((line for line in listed if line.startswith("-A ")), "")
    if first == f"-A {builtin} -j {CHAIN}":
        return
    while _iptables("-C", builtin, "-j", CHAIN, check=False, binary=binary).returncode == 0:
        _iptables("-D", builtin, "-j", CHAIN, binary=binary)
    _iptables("-I", builtin, "1", "-j", CHAIN, binary=binary)


def _ensure_chain(wanted: list[list[str]], binary: str) -> None:
    """ORCH-ISOLATION holds exactly `wanted` (left alone when its tag says so), jumped to first."""
    tag = rules_tag(wanted)
    if _iptables("-S", CHAIN, check=False, binary=binary).returncode != 0:
        _iptables("-N", CHAIN, binary=binary)
    if tag not in _iptables("-S", CHAIN, binary=binary).stdout:
        _iptables("-F", CHAIN, binary=binary)
        _iptables("-A", CHAIN, "-m", "comment", "--comment", tag, binary=binary)
        for rule in wanted:
            _iptables("-A", CHAIN, *rule, binary=binary)
    for builtin in ("INPUT", "FORWARD", "OUTPUT"):
        _ensure_jump(builtin, binary)


def ensure(podman: str = "podman") -> Subnets:
    """Create both networks and install the rules, unless they are in place already."""
    # Several servers may start at once on one machine; one of them sets things up at a time.
    with file_lock(LOCK):
        names = {Network.SANDBOX.podman_name, Network.SERVICE.podman_name}
        subnets = Subnets(
            sandbox=_ensure_network(podman, Network.SANDBOX),
            service=_ensure_network(podman, Network.SERVICE),
            others=_other_subnets(podman, names),
        )
        _ensure_chain(rules(subnets), "iptables")
        if IPV6.is_dir():
            _ensure_chain(rules6(subnets), "ip6tables")
            if BRIDGED_IPV6.exists() and BRIDGED_IPV6.read_text().strip() != "1":
                BRIDGED_IPV6.write_text("1")  # else IPv6 between two containers on a bridge passes
        return subnets


FORWARD_CHAIN = "ORCH-FORWARD"  # filter: what the CNI firewall plugin accepted, per subnet
NAT_CHAIN = "ORCH-MASQUERADE"  # nat: what the bridge plugin's ipMasq did, per subnet


def forwarding_rules(subnet: str) -> tuple[list[list[str]], list[list[str]]]:
    """For sandboxes attached without per-sandbox rules (the runc launcher's, sandbox/cni.py):
    the filter rules that accept what is forwarded for the subnet (as the CNI firewall plugin
    does per address; ORCH-ISOLATION, jumped to before, has dropped what must not pass), and
    the NAT rule that masquerades what leaves it (as the bridge plugin's ipMasq does)."""
    accept = [
        ["-d", subnet, "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT"],
        ["-s", subnet, "-j", "ACCEPT"],
    ]
    masquerade = [["-s", subnet, "!", "-d", subnet, "-j", "MASQUERADE"]]
    return accept, masquerade


def ensure_forwarding(subnet: str) -> None:
    """Install `forwarding_rules(subnet)` unless they are in place: each in its own chain, kept
    with a tag like ORCH-ISOLATION's, jumped to from FORWARD (after ORCH-ISOLATION) and from
    POSTROUTING. Idempotent, under the same file lock as `ensure`."""
    accept, masquerade = forwarding_rules(subnet)
    with file_lock(LOCK):
        for table, chain, builtin, rule_list in (
            ("filter", FORWARD_CHAIN, "FORWARD", accept),
            ("nat", NAT_CHAIN, "POSTROUTING", masquerade),
        ):
            ipt = ("-t", table)
            tag = rules_tag(rule_list)
            if _iptables(*ipt, "-S", chain, check=False).returncode != 0:
                _iptables(*ipt, "-N", chain)
            if tag not in _iptables(*ipt, "-S", chain).stdout:
                # Rules of other subnets stay (one chain serves every launcher network).
                _iptables(*ipt, "-A", chain, "-m", "comment", "--comment", tag)
                for rule in rule_list:
                    _iptables(*ipt, "-A", chain, *rule)
            if _iptables(*ipt, "-C", builtin, "-j", chain, check=False).returncode != 0:
                _iptables(*ipt, "-A", builtin, "-j", chain)


def remove_masquerade(container_ids: set[str]) -> int:
    """Remove the NAT the bridge plugin made for these CNI containers (a POSTROUTING rule with
    the container's id in its comment, jumping to a chain of its own), which its DEL cannot
    when the container's network namespace is gone. Return how many were removed."""
    removed = 0
    for line in _iptables("-t", "nat", "-S", "POSTROUTING").stdout.splitlines():
        words = shlex.split(line)
        comment = words[words.index("--comment") + 1] if "--comment" in words else ""
        if words[:1] != ["-A"] or not any(f'id: "{cid}"' in comment for cid in container_ids):
            continue
        _iptables("-t", "nat", "-D", *words[1:], check=False)
        chain = words[words.index("-j") + 1] if "-j" in words else ""
        if chain.startswith("CNI-"):
            _iptables("-t", "nat", "-F", chain, check=False)
            _iptables("-t", "nat", "-X", chain, check=False)
        removed += 1
    return removed


def answers_tcp(address: str, port: int, timeout: float = 1.0) -> bool:
    """Whether something accepts TCP connections at address:port (a service that came up)."""
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return True
    except OSError:
        return False
