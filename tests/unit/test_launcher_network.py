"""The runc launcher's CNI chain and the static rules that replace its per-sandbox ones."""

from __future__ import annotations

import pytest

from orch.engine import network
from orch.errors import EngineError
from orch.sandbox import cni

PODMAN_CONFLIST = {
    "cniVersion": "0.4.0",
    "name": "orch-sandbox",
    "plugins": [
        {
            "type": "bridge",
            "bridge": "cni-podman1",
            "isGateway": True,
            "ipMasq": True,
            "hairpinMode": True,
            "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.89.0.0/24", "gateway": "10.89.0.1"}]]},
        },
        {"type": "portmap", "capabilities": {"portMappings": True}},
        {"type": "firewall", "backend": ""},
        {"type": "tuning"},
    ],
}


def test_the_launcher_calls_only_the_bridge_plugin_without_its_nat() -> None:
    podman = cni.Network("orch-sandbox", PODMAN_CONFLIST)
    ours = cni.for_launcher(podman)
    assert [p["type"] for p in ours.plugins] == ["bridge"]
    bridge = ours.plugins[0]
    assert bridge["ipMasq"] is False
    # The same bridge and the same address range as Podman's containers on that network.
    assert {k: v for k, v in bridge.items() if k != "ipMasq"} == {
        k: v for k, v in PODMAN_CONFLIST["plugins"][0].items() if k != "ipMasq"
    }
    assert ours.cni_version == "0.4.0" and podman.plugins[0]["ipMasq"] is True  # not changed
    assert cni.subnets(ours) == ["10.89.0.0/24"]


def test_a_network_without_a_bridge_is_refused() -> None:
    with pytest.raises(EngineError, match="no bridge plugin"):
        cni.for_launcher(cni.Network("odd", {"plugins": [{"type": "macvlan"}]}))


def test_static_rules_accept_and_masquerade_the_whole_subnet() -> None:
    accept, masquerade = network.forwarding_rules("10.89.0.0/24")
    assert ["-s", "10.89.0.0/24", "-j", "ACCEPT"] in accept
    answers = ["-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT"]
    assert ["-d", "10.89.0.0/24", *answers] in accept
    # Nothing NEW towards the subnet is accepted here: ORCH-ISOLATION decides that, before.
    assert not any("-d" in r and "NEW" in r for r in accept)
    assert masquerade == [["-s", "10.89.0.0/24", "!", "-d", "10.89.0.0/24", "-j", "MASQUERADE"]]
