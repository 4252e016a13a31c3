"""A namespace attached to a bridge network in-process (sandbox/nsfs.py, veth.py, netlink.py), on a
bridge and address range of this test's own, so nothing of the platform's network is touched."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from orch.sandbox import cni, ipam, netns, nsfs, veth

pytestmark = [pytest.mark.integration]

SUBNET, GATEWAY = "10.252.{}.0/24", "10.252.{}.1"


def ip(*args: str) -> str:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=True).stdout


@pytest.fixture
def network(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[cni.Network]:
    suffix = uuid.uuid4().hex[:6]
    octet = int(suffix, 16) % 200 + 20
    bridge = f"orch-tb-{suffix}"
    monkeypatch.setattr(ipam, "IPAM_DIR", tmp_path / "ipam")
    ip("link", "add", bridge, "type", "bridge")
    try:
        ip("addr", "add", f"{GATEWAY.format(octet)}/24", "dev", bridge)
        # A hardware address of its own, as the plugin gives its bridges: else the bridge takes
        # its ports' and changes it (flushing its neighbours) whenever a port comes or goes.
        ip("link", "set", bridge, "address", f"02:42:0a:fc:{octet:02x}:01")
        ip("link", "set", bridge, "up")
        conf = {
            "type": "bridge",
            "bridge": bridge,
            "isGateway": True,
            "ipMasq": False,
            "hairpinMode": True,
            "ipam": {
                "type": "host-local",
                "routes": [{"dst": "0.0.0.0/0"}],
                "ranges": [[{"subnet": SUBNET.format(octet), "gateway": GATEWAY.format(octet)}]],
            },
        }
        yield cni.Network(f"orch-test-{suffix}", {"cniVersion": "0.4.0", "plugins": [conf]})
    finally:
        subprocess.run(["ip", "link", "del", bridge], capture_output=True, check=False)


@pytest.fixture
def namespaces(tmp_path: Path) -> Iterator[list[str]]:
    made: list[str] = []
    yield made
    for name in made:
        nsfs.delete(name)
    assert not [name for name in made if (nsfs.NETNS_DIR / name).exists()]


def assert_no_ipv6(name: str) -> None:
    """IPv6 is off on eth0 (no link-local address to reach the bridge's other ends with); lo
    keeps ::1."""
    inside = {link["ifname"]: link for link in json.loads(ip("-n", name, "-j", "addr"))}
    assert [a for a in inside["eth0"]["addr_info"] if a["family"] == "inet6"] == []
    off = ip("netns", "exec", name, "cat", "/proc/sys/net/ipv6/conf/eth0/disable_ipv6")
    assert off.strip() == "1"


def listen(path: Path) -> socket.socket:
    """A listening socket inside the namespace at `path` (made there: it belongs to it). The
    kernel completes a connection into its backlog: nobody needs to accept it."""
    with nsfs.entered(path):
        return socket.create_server(("0.0.0.0", 0))


def test_attach_configures_the_namespace_as_the_bridge_plugin_does(
    network: cni.Network, namespaces: list[str]
) -> None:
    name = f"orch-tv-{uuid.uuid4().hex[:6]}"
    namespaces.append(name)
    path = nsfs.add(name)
    assert path.exists() and os.stat(path).st_ino != os.stat("/proc/self/ns/net").st_ino
    result = veth.attach(network, name, path)
    address, gateway = result["ips"][0]["address"], result["ips"][0]["gateway"]
    inside = {link["ifname"]: link for link in json.loads(ip("-n", name, "-j", "addr"))}
    assert set(inside) == {"lo", "eth0"}
    assert "UP" in inside["lo"]["flags"] and "UP" in inside["eth0"]["flags"]
    v4 = [f"{a['local']}/{a['prefixlen']}" for a in inside["eth0"]["addr_info"] if a["family"] == "inet"]
    assert v4 == [address] and address.endswith(".2/24")
    assert_no_ipv6(name)
    routes = json.loads(ip("-n", name, "-j", "route"))
    assert {"dst": "default", "gateway": gateway, "dev": "eth0"}.items() <= routes[0].items()
    host_end = result["interfaces"][1]["name"]
    details = json.loads(ip("-d", "-j", "link", "show", host_end))[0]
    assert details["master"] == network.plugins[0]["bridge"] and "UP" in details["flags"]
    assert Path(f"/sys/class/net/{host_end}/brport/hairpin_mode").read_text().strip() == "1"
    # The reservation is host-local's: its file, its owner line.
    reserved = ipam.IPAM_DIR / network.name / address.split("/")[0]
    assert reserved.read_bytes() == f"{name}\r\neth0".encode()
    # The host reaches it.
    server = listen(path)
    socket.create_connection((address.split("/")[0], server.getsockname()[1]), timeout=5).close()
    server.close()

    assert veth.detach(network.name, name, result) == []
    assert not Path(f"/sys/class/net/{host_end}").exists() and not reserved.exists()
    assert veth.detach(network.name, name, result) == []  # twice is fine
    nsfs.delete(name)
    assert not path.exists()


def test_an_address_given_again_is_reached_at_once(network: cni.Network, namespaces: list[str]) -> None:
    """The host remembers the hardware address of whoever had an address last; the next holder
    must not wait for that entry to expire (the plugin sends a gratuitous ARP; we forget it)."""
    first, second = (f"orch-tv-{uuid.uuid4().hex[:6]}" for _ in range(2))
    namespaces += [first, second]
    result = veth.attach(network, first, nsfs.add(first))
    address = result["ips"][0]["address"].split("/")[0]
    server = listen(nsfs.NETNS_DIR / first)
    socket.create_connection((address, server.getsockname()[1]), timeout=5).close()
    server.close()
    assert veth.detach(network.name, first, result) == []
    nsfs.delete(first)

    before = address.rsplit(".", 1)[0] + "." + str(int(address.rsplit(".", 1)[1]) - 1)
    (ipam.IPAM_DIR / network.name / "last_reserved_ip.0").write_text(before)
    again = veth.attach(network, second, nsfs.add(second))
    assert again["ips"][0]["address"].split("/")[0] == address
    server = listen(nsfs.NETNS_DIR / second)
    socket.create_connection((address, server.getsockname()[1]), timeout=3).close()
    server.close()
    assert veth.detach(network.name, second, again) == []


def test_a_bridge_not_made_yet_is_left_to_the_plugin(network: cni.Network, namespaces: list[str]) -> None:
    conf = {**network.plugins[0], "bridge": "orch-tb-none"}
    name = f"orch-tv-{uuid.uuid4().hex[:6]}"
    namespaces.append(name)
    with pytest.raises(veth.Unsupported):
        veth.attach(cni.Network(network.name, {"plugins": [conf]}), name, nsfs.add(name))
    assert not (ipam.IPAM_DIR / network.name).exists() or not list(
        p for p in (ipam.IPAM_DIR / network.name).iterdir() if p.name != "lock"
    )


def test_the_first_namespace_on_a_new_bridge_goes_through_the_plugin_the_next_ones_not(
    tmp_path: Path,
) -> None:
    """A network whose bridge does not exist yet (a fresh machine's first networked sandbox): the
    CNI bridge plugin attaches it, making the bridge; the next namespace is attached in-process
    beside it, from the same host-local reservations. Both are reached; nothing is left."""
    suffix = uuid.uuid4().hex[:6]
    octet = int(suffix, 16) % 200 + 20
    bridge, name = f"orch-tf-{suffix}", f"orch-test-plugin-{suffix}"
    conf = {
        "type": "bridge",
        "bridge": bridge,
        "isGateway": True,
        "ipMasq": True,
        "hairpinMode": True,
        "ipam": {
            "type": "host-local",
            "routes": [{"dst": "0.0.0.0/0"}],
            "ranges": [[{"subnet": f"10.253.{octet}.0/24", "gateway": f"10.253.{octet}.1"}]],
        },
    }
    network = cni.for_launcher(cni.Network(name, {"cniVersion": "0.4.0", "name": name, "plugins": [conf]}))
    state = tmp_path / "state"
    made: list[netns.Netns] = []
    try:
        assert not Path(f"/sys/class/net/{bridge}").exists()
        for i in range(2):
            made.append(netns.create(network, f"orch-tf-{suffix}-{i}", state))
        first, second = made
        assert Path(f"/sys/class/net/{bridge}").exists()  # the plugin made it
        # The plugin's result names the bridge with its hardware address; ours does not.
        plugin_made = json.loads((state / f"{first.name}.json").read_text())["result"]
        ours = json.loads((state / f"{second.name}.json").read_text())["result"]
        assert plugin_made["interfaces"][0].get("mac") and not ours["interfaces"][0].get("mac")
        assert first.address != second.address and first.gateway == second.gateway
        owners = {p.read_bytes().split(b"\r\n")[0].decode() for p in (ipam.IPAM_DIR / name).glob("10.*")}
        assert owners == {first.name, second.name}
        for ns in made:
            assert ns.path is not None
            assert_no_ipv6(ns.name)  # the plugin's too: its link-local address taken away
            with nsfs.entered(ns.path):
                server = socket.create_server(("0.0.0.0", 0))
            socket.create_connection((ns.address, server.getsockname()[1]), timeout=5).close()
            server.close()
    finally:
        for ns in made:
            assert netns.destroy(ns.name, state) == []
        leftover = (
            [p.name for p in (ipam.IPAM_DIR / name).glob("10.*")] if (ipam.IPAM_DIR / name).exists() else []
        )
        subprocess.run(["ip", "link", "del", bridge], capture_output=True, check=False)
        shutil.rmtree(ipam.IPAM_DIR / name, ignore_errors=True)
    assert leftover == [] and not [ns for ns in made if ns.path and ns.path.exists()]
