"""The sandboxes' networks and firewall rules on this machine's real Podman and iptables."""

from __future__ import annotations

import subprocess

import pytest

from orch.engine import network

pytestmark = pytest.mark.integration


def iptables(*args: str) -> list[str]:
    out = subprocess.run(["iptables", "-w", "30", *args], capture_output=True, text=True, check=True)
    return out.stdout.splitlines()


def test_ensure_is_idempotent_and_keeps_our_chain_first() -> None:
    first = network.ensure()
    again = network.ensure()
    assert first == again
    chain = iptables("-S", network.CHAIN)
    # The chain itself, the tag, and the rules: once, however often ensure() ran.
    assert len(chain) == 2 + len(network.rules(first))
    assert network.rules_tag(network.rules(first)) in chain[1]
    for builtin in ("INPUT", "FORWARD", "OUTPUT"):
        rules = [r for r in iptables("-S", builtin) if r.startswith("-A ")]
        assert rules[0] == f"-A {builtin} -j {network.CHAIN}"
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
