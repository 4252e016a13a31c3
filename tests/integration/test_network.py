"""The sandboxes' networks and firewall rules on this machine's real Podman and iptables."""

from __future__ import annotations

import json
import socket
import subprocess
import time
import uuid

import pytest

from orch.builder import base_images
from orch.engine import network
from tests.host_listener import Listener

pytestmark = pytest.mark.integration


def iptables(*args: str, binary: str = "iptables") -> list[str]:
    out = subprocess.run([binary, "-w", "30", *args], capture_output=True, text=True, check=True)
    return out.stdout.splitlines()


def test_ensure_is_idempotent_and_keeps_our_chain_first() -> None:
    first = network.ensure()
    again = network.ensure()
    assert first == again
    chain = iptables("-S", network.CHAIN)
    # The chain itself, the tag, and the rules: once, however often ensure() ran.
    assert len(chain) == 2 + len(network.rules(first))
    assert network.rules_tag(network.rules(first)) in chain[1]
    six = iptables("-S", network.CHAIN, binary="ip6tables")
    assert len(six) == 2 + len(network.rules6(first)) and network.rules_tag(network.rules6(first)) in six[1]
    for binary in ("iptables", "ip6tables"):
        for builtin in ("INPUT", "FORWARD", "OUTPUT"):
            rules = [r for r in iptables("-S", builtin, binary=binary) if r.startswith("-A ")]
            assert rules[0] == f"-A {builtin} -j {network.CHAIN}", binary
            assert rules.count(f"-A {builtin} -j {network.CHAIN}") == 1


def test_a_rule_put_above_ours_is_put_back_below() -> None:
    """Something (a firewall reload, another tool) inserts an ACCEPT above our jump: the next
    start puts our chain first again, so the ACCEPT cannot let a sandbox through."""
    network.ensure()
    marker = ["-m", "comment", "--comment", "orch-test-above", "-j", "ACCEPT"]
    iptables("-I", "FORWARD", "1", *marker)
    try:
        network.ensure()
        rules = [r for r in iptables("-S", "FORWARD") if r.startswith("-A ")]
        assert rules[0] == f"-A FORWARD -j {network.CHAIN}"
        assert any("orch-test-above" in r for r in rules[1:])
    finally:
        iptables("-D", "FORWARD", *marker)


def test_both_networks_exist_without_podman_dns() -> None:
    nets = network.ensure()
    for net in (network.Network.SANDBOX, network.Network.SERVICE):
        out = subprocess.run(
            [
                "podman",
                "network",
                "inspect",
                "--format",
                "{{.DNSEnabled}} {{.NetworkInterface}}",
                net.podman_name,
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        assert out[0] == "false"
        assert out[1] in (nets.sandbox.interface, nets.service.interface)


# Connects to each "[address]:port" given on the command line over the container's eth0, and
# prints the ones that connected.
PROBE6 = """
import json, socket, sys
connected = []
for target in sys.argv[1:]:
    address, port = target.rsplit(":", 1)
    try:
        socket.create_connection((address + "%eth0", int(port)), timeout=3).close()
        connected.append(target)
    except OSError:
        pass
print(json.dumps(connected))
"""


def link_local(interface: str, netns: str = "") -> str:
    """The IPv6 link-local address of `interface` (in the namespace `netns`), "" when it has none."""
    where = ["-n", netns] if netns else []
    shown = subprocess.run(
        ["ip", *where, "-j", "-6", "addr", "show", "dev", interface], capture_output=True, text=True
    )
    found = [a["local"] for link in json.loads(shown.stdout or "[]") for a in link["addr_info"]]
    return found[0] if found else ""


def test_ipv6_link_local_reaches_neither_the_host_nor_a_neighbour() -> None:
    """The bridges carry no IPv6 network, but a container's interface still gets a link-local
    address, and so does the bridge on the host. A container started by Podman (a build step's, a
    service's) reaches over it neither a host service listening on the IPv6 wildcard nor a
    neighbour's: the ip6tables chain drops it (the runc launcher's sandboxes have no IPv6 at all,
    tests/integration/test_veth.py)."""
    nets = network.ensure()
    image = base_images.image_tag("python")
    label = f"org.orch.test=ipv6-{uuid.uuid4().hex[:8]}"
    run = ["podman", "run", "--label", label, f"--network={network.Network.SANDBOX.podman_name}"]
    listener = Listener("::")
    try:
        served = [*run, "-d", image, "python3", "-m", "http.server", "--bind", "::", "8081"]
        neighbour = subprocess.run(served, capture_output=True, text=True, check=True).stdout.strip()
        deadline = time.monotonic() + 10
        host, theirs = "", ""
        while not (host and theirs) and time.monotonic() < deadline:
            host, theirs = link_local(nets.sandbox.interface), container_link_local(neighbour)
            time.sleep(0.2)
        assert host and theirs, "no link-local addresses to try"
        # The control: the host reaches its listener over the bridge's link-local address.
        socket.create_connection((f"{host}%{nets.sandbox.interface}", listener.port), timeout=3).close()
        targets = [f"{host}:{listener.port}", f"{theirs}:8081"]
        probe = subprocess.run(
            [*run, "--rm", image, "python3", "-c", PROBE6, *targets],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert probe.returncode == 0, probe.stderr
        assert json.loads(probe.stdout) == []
        assert len(listener.peers) == 1  # the control's alone
    finally:
        listener.close()
        subprocess.run(["podman", "rm", "-f", "--filter", f"label={label}"], capture_output=True, check=False)


def container_link_local(container: str) -> str:
    """The link-local address of a Podman container's eth0, "" when it has none (yet)."""
    out = subprocess.run(
        ["podman", "exec", container, "cat", "/proc/net/if_inet6"],
        capture_output=True,
        text=True,
        check=False,
    )
    for line in out.stdout.splitlines():
        fields = line.split()
        if fields and fields[-1] == "eth0" and fields[0].startswith("fe80"):
            return ":".join(fields[0][i : i + 4] for i in range(0, 32, 4))
    return ""
