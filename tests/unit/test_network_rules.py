"""The sandboxes' isolation rules, as data: what each bridge may and may not reach."""

from __future__ import annotations

from orch.engine.network import LINK_LOCAL, Bridge, Network, Subnets, rules, rules6, rules_tag

NETS = Subnets(
    sandbox=Bridge("10.89.0.0/24", "podman1"),
    service=Bridge("10.89.1.0/24", "podman2"),
    others=("10.88.0.0/16",),
)


def test_network_names() -> None:
    assert [n.podman_name for n in Network] == ["none", "orch-sandbox", "orch-services"]


def test_containers_reach_neither_the_host_nor_each_other() -> None:
    got = rules(NETS)
    for iface in ("podman1", "podman2"):
        mine = [r for r in got if r[:2] == ["-i", iface]]
        # Answers on allowed connections first, then the drops.
        assert mine[0][-2:] == ["-j", "RETURN"] and "ESTABLISHED,RELATED" in mine[0]
        assert [*("-i", iface), "-m", "addrtype", "--dst-type", "LOCAL", "-j", "DROP"] in mine
        dropped = {r[3] for r in mine if r[2] == "-d" and r[-1] == "DROP"}
        assert dropped == {"10.89.0.0/24", "10.89.1.0/24", "10.88.0.0/16", LINK_LOCAL}


def test_only_the_host_opens_connections_and_only_to_the_service_port() -> None:
    got = rules(NETS, service_port=8080)
    opens = [r for r in got if "NEW" in r and r[0] == "-d"]
    allow, *drops = opens
    assert allow[:6] == ["-d", "10.89.1.0/24", "-p", "tcp", "--dport", "8080"]
    assert "LOCAL" in allow and allow[-1] == "RETURN"
    assert [d[1] for d in drops] == ["10.89.0.0/24", "10.89.1.0/24"] and all(d[-1] == "DROP" for d in drops)
    # The exception comes before the drop it makes a hole in.
    assert got.index(allow) < got.index(drops[1])


def test_no_ipv6_in_out_or_across_either_bridge() -> None:
    assert rules6(NETS) == [
        ["-i", "podman1", "-j", "DROP"],
        ["-o", "podman1", "-j", "DROP"],
        ["-i", "podman2", "-j", "DROP"],
        ["-o", "podman2", "-j", "DROP"],
    ]


def test_tag_follows_the_rules() -> None:
    assert rules_tag(rules(NETS)) == rules_tag(rules(NETS))
    moved = Subnets(NETS.sandbox, Bridge("10.89.2.0/24", "podman3"), NETS.others)
    assert rules_tag(rules(moved)) != rules_tag(rules(NETS))
