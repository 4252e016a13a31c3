"""The Ray cluster's token (cluster/ray_node.py `auth`, cluster/ray_start.py): derived from the
cluster's ORCH_SECRET_KEY, the same wherever that key is, another for another key, and given to
every Ray process a node or a head starts. The real refusal of a call without it is checked on
the local cluster (tests/integration/test_cluster.py)."""

from __future__ import annotations

import pytest

from orch.cluster import ray_node, ray_start


def test_the_token_comes_from_the_cluster_s_key() -> None:
    one = ray_node.auth("key-of-cluster-one")
    assert one == ray_node.auth("key-of-cluster-one") and one["RAY_AUTH_MODE"] == "token"
    assert one["RAY_AUTH_TOKEN"] != ray_node.auth("key-of-cluster-two")["RAY_AUTH_TOKEN"]
    assert "key-of-cluster-one" not in one["RAY_AUTH_TOKEN"] and len(one["RAY_AUTH_TOKEN"]) == 64


def test_a_node_s_ray_processes_get_the_token_and_loopback_mode() -> None:
    env = ray_node.ray_env("127.0.0.1", "k", base={"PATH": "/usr/bin"})
    assert env["RAY_AUTH_TOKEN"] == ray_node.auth("k")["RAY_AUTH_TOKEN"]
    assert env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0" and env["PATH"] == "/usr/bin"
    assert "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER" not in ray_node.ray_env("10.0.0.5", "k", base={})


@pytest.mark.parametrize(
    ("argv", "address"),
    [
        (["start", "--head", "--node-ip-address=127.0.0.1"], "127.0.0.1"),
        (["start", "--node-ip-address", "10.0.0.5", "--address=h:1"], "10.0.0.5"),
        (["start", "--head"], None),
    ],
)
def test_ray_start_reads_the_node_s_address(argv: list[str], address: str | None) -> None:
    assert ray_start._address(argv) == address
