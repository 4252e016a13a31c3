"""Addresses reserved as host-local reserves them (sandbox/ipam.py): its files, its order, its lock."""

from __future__ import annotations

import threading
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest

from orch.errors import EngineError
from orch.sandbox import ipam

ONE = {"type": "host-local", "ranges": [[{"subnet": "10.89.0.0/24", "gateway": "10.89.0.1"}]]}


def test_ranges_read_as_host_local_reads_them() -> None:
    (r,) = ipam.ranges(ONE) or []
    assert (r.subnet, r.gateway, r.start, r.end) == (
        IPv4Network("10.89.0.0/24"),
        IPv4Address("10.89.0.1"),
        IPv4Address("10.89.0.1"),
        IPv4Address("10.89.0.254"),
    )
    bounded = {
        "type": "host-local",
        "ranges": [[{"subnet": "10.0.0.0/16", "rangeStart": "10.0.5.10", "rangeEnd": "10.0.5.20"}]],
    }
    (r,) = ipam.ranges(bounded) or []
    assert (r.gateway, r.start, r.end) == (
        IPv4Address("10.0.0.1"),
        IPv4Address("10.0.5.10"),
        IPv4Address("10.0.5.20"),
    )


@pytest.mark.parametrize(
    "conf",
    [
        {"type": "dhcp"},
        {"type": "host-local", "ranges": [[{"subnet": "fd00::/64"}]]},
        {"type": "host-local", "ranges": [[{"subnet": "10.1.0.0/24"}], [{"subnet": "10.2.0.0/24"}]]},
        {"type": "host-local", "ranges": []},
        {"type": "host-local", "ranges": [[{"gateway": "10.1.0.1"}]]},
    ],
)
def test_other_ipam_is_left_to_the_plugin(conf: dict[str, object]) -> None:
    assert ipam.ranges(conf) is None


def test_reserve_goes_round_after_the_last_skipping_the_gateway_and_taken(tmp_path: Path) -> None:
    rs = ipam.ranges({"type": "host-local", "ranges": [[{"subnet": "10.9.0.0/29", "gateway": "10.9.0.1"}]]})
    assert rs is not None
    net = tmp_path / "net"
    net.mkdir()
    (net / "10.9.0.3").write_bytes(b"podman-container\r\neth0")  # Podman's, through the plugin
    got = [str(ipam.reserve("net", rs, f"orch-{i}", "eth0", tmp_path).start) for i in range(4)]
    assert got == ["10.9.0.2", "10.9.0.4", "10.9.0.5", "10.9.0.6"]
    assert (net / "10.9.0.5").read_bytes() == b"orch-2\r\neth0"  # host-local's own format
    assert (net / "last_reserved_ip.0").read_text() == "10.9.0.6"
    with pytest.raises(EngineError, match="No address is free on the network net"):
        ipam.reserve("net", rs, "orch-full", "eth0", tmp_path)
    assert ipam.release("net", "orch-1", tmp_path) == ["10.9.0.4"]
    assert ipam.release("net", "orch-1", tmp_path) == []
    # The search starts after the last reserved (10.9.0.6) and wraps round: .4 is free again.
    assert str(ipam.reserve("net", rs, "orch-again", "eth0", tmp_path).start) == "10.9.0.4"
    assert (net / "10.9.0.3").exists()  # nobody else's reservation is touched


def test_release_reads_only_the_owner_line(tmp_path: Path) -> None:
    net = tmp_path / "net"
    net.mkdir()
    (net / "10.9.0.2").write_bytes(b"orch-a\r\neth0")
    (net / "10.9.0.3").write_bytes(b"orch-a")  # an older host-local wrote the id alone
    (net / "10.9.0.4").write_bytes(b"orch-ab\r\neth0")
    assert sorted(ipam.release("net", "orch-a", tmp_path)) == ["10.9.0.2", "10.9.0.3"]
    assert sorted(p.name for p in net.iterdir()) == ["10.9.0.4", "lock"]
    assert ipam.release("missing", "orch-a", tmp_path) == []


def test_concurrent_reservations_never_share_an_address(tmp_path: Path) -> None:
    rs = ipam.ranges(ONE)
    assert rs is not None
    got: list[str] = []
    lock = threading.Lock()

    def take(worker: int) -> None:
        for i in range(40):
            address = str(ipam.reserve("net", rs, f"w{worker}-{i}", "eth0", tmp_path).start)
            with lock:
                got.append(address)

    threads = [threading.Thread(target=take, args=(w,)) for w in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 200 and len(set(got)) == 200 and "10.89.0.1" not in got


def test_release_of_a_known_address_reads_only_that_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    net = tmp_path / "net"
    net.mkdir()
    (net / "10.9.0.2").write_bytes(b"orch-a\r\neth0")
    (net / "10.9.0.3").write_bytes(b"orch-b\r\neth0")
    (net / "10.9.0.4").write_bytes(b"orch-c\r\neth0")
    looked: list[str] = []
    real = ipam._free
    monkeypatch.setattr(ipam, "_free", lambda path, owner: looked.append(path.name) or real(path, owner))
    assert ipam.release("net", "orch-b", tmp_path, known="10.9.0.3") == ["10.9.0.3"]
    assert looked == ["10.9.0.3"]
    assert sorted(p.name for p in net.iterdir()) == ["10.9.0.2", "10.9.0.4", "lock"]
    # A known address that is no longer the owner's (given back, then someone else's): the
    # owner's reservations are looked for among them all, and nobody else's is touched.
    assert ipam.release("net", "orch-a", tmp_path, known="10.9.0.4") == ["10.9.0.2"]
    assert ipam.release("net", "orch-a", tmp_path, known="10.9.0.9") == []
    assert sorted(p.name for p in net.iterdir()) == ["10.9.0.4", "lock"]
