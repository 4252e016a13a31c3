"""The Ray cluster's token (cluster/ray_node.py `auth`, cluster/ray_start.py): derived from the
cluster's ORCH_SECRET_KEY, the same wherever that key is, another for another key, and given to
every Ray process a node or a head starts. The real refusal of a call without it is checked on
the local cluster (tests/integration/test_cluster.py)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import pytest

from orch.cluster import ray_node, ray_start
from orch.errors import InvalidInput


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


# What Ray wrote when a tester's `orch node start` and `orch node stop` had another key than the
# cluster's (Ray 2.60): the C++ side's retries, then Python's last words.
RAY_WRONG_TOKEN = (
    "[2026-12-06 12:15:03,874 W 11415 11415] gcs_client.cc:210: Failed to get cluster ID from GCS "
    "server: Unauthenticated: RPC error: InvalidAuthToken: Authentication token is missing or incorrect\n"
)
RAY_START_INFO = (
    "2026-12-06 12:11:52,136\tINFO scripts.py:1234 -- "
    "\x1b[37mLocal node IP\x1b[39m: \x1b[1m127.0.0.1\x1b[22m\n"
)


def test_a_token_the_cluster_refuses_is_said_to_be_the_key() -> None:
    for output in (RAY_WRONG_TOKEN * 20, RAY_START_INFO + RAY_WRONG_TOKEN):
        error = ray_node.refused("127.0.0.1:6379", output, "could not join")
        assert error.message == (
            "This machine could not join the Ray cluster at 127.0.0.1:6379: the cluster refused its "
            "token, so ORCH_SECRET_KEY here is not the cluster's key."
        )
        assert "Set ORCH_SECRET_KEY to the key the cluster's server and nodes use" in error.fix


def test_another_refusal_quotes_rays_error_line_without_its_colours_or_log_prefix() -> None:
    """It quoted Ray's first INFO line, escape codes and all ("[37mLocal node IP[39m: ...")."""
    output = RAY_START_INFO + "2026-12-06 12:11:53,000\tERROR scripts.py:99 -- Failed to connect to GCS.\n"
    error = ray_node.refused("127.0.0.1:6379", output, "could not join")
    assert (
        error.message
        == "This machine could not join the Ray cluster at 127.0.0.1:6379: Failed to connect to GCS."
    )
    assert "\x1b" not in ray_node.refused("h:1", RAY_START_INFO, "could not join").message


def test_a_connect_the_cluster_refuses_keeps_rays_noise_off_the_terminal(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """`orch node stop` with another key printed ~20 lines of Ray's C++ warnings, then "orch
    failed unexpectedly (ConnectionError ...) This is a bug", exit 1."""
    import os
    import sys
    import types

    def init(**_: object) -> None:
        os.write(2, RAY_WRONG_TOKEN.encode() * 20)  # as Ray's C++ side writes: to descriptor 2
        raise ConnectionError("Failed to connect to Ray cluster at 127.0.0.1:6379")

    monkeypatch.setitem(sys.modules, "ray", types.SimpleNamespace(init=init))
    monkeypatch.setattr(ray_node, "reach", lambda cluster: None)
    monkeypatch.setattr(ray_node, "check_token", lambda *a: None)  # the head took it: Ray refuses
    monkeypatch.setattr(os, "environ", dict(os.environ))  # what _connect sets for Ray goes with the test
    with pytest.raises(InvalidInput) as caught:
        ray_node._connect("127.0.0.1:6379", "another-key")
    assert (
        "the cluster refused its token, so ORCH_SECRET_KEY here is not the cluster's key"
        in caught.value.message
    )
    assert capfd.readouterr().err == ""


KEY = "the-cluster-s-key"


@pytest.fixture(scope="module")
def gcs() -> Iterator[str]:
    """A head's GCS as Ray 2.60's answers its first call (GetClusterId, over real gRPC): with
    the token derived from KEY, and refused (UNAUTHENTICATED, InvalidAuthToken) without it."""
    grpc = pytest.importorskip("grpc")
    token = ray_node.auth(KEY)["RAY_AUTH_TOKEN"]

    def cluster_id(request: bytes, context: Any) -> bytes:
        if dict(context.invocation_metadata()).get("authorization") != f"Bearer {token}":
            context.abort(
                grpc.StatusCode.UNAUTHENTICATED,
                "InvalidAuthToken: Authentication token is missing or incorrect",
            )
        return b"\x12\x1ccluster"

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    handler = grpc.unary_unary_rpc_method_handler(cluster_id)
    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler("ray.rpc.NodeInfoGcsService", {"GetClusterId": handler})]
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(grace=None)


def test_the_head_refusing_the_token_is_found_by_one_call(gcs: str) -> None:
    """Not after Ray's own ~20 s of retries: `orch node stop` took 24 s."""
    with pytest.raises(InvalidInput) as caught:
        ray_node.check_token(gcs, "wrongkey", "could not reach")
    assert caught.value.message == (
        f"This machine could not reach the Ray cluster at {gcs}: the cluster refused its token, so "
        "ORCH_SECRET_KEY here is not the cluster's key."
    )
    assert caught.value.fix.startswith("Set ORCH_SECRET_KEY to the key the cluster's server and nodes use")
    ray_node.check_token(gcs, KEY, "could not reach")  # the cluster's key: taken


def test_a_head_that_is_not_a_ray_gcs_is_left_to_ray() -> None:
    """Only a refused token is said here; anything else (here an HTTP server) is Ray's to say."""
    import http.server
    import threading

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        ray_node.check_token(f"127.0.0.1:{server.server_address[1]}", KEY, "could not reach")
    finally:
        server.shutdown()
        server.server_close()


def test_a_stop_with_another_key_never_starts_ray_s_client(
    gcs: str, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    import os
    import sys
    import types

    def init(**_: object) -> None:
        raise AssertionError("Ray's client was started: its C++ side retries for ~20 s")

    monkeypatch.setitem(sys.modules, "ray", types.SimpleNamespace(init=init))
    monkeypatch.setattr(os, "environ", dict(os.environ))
    with pytest.raises(InvalidInput) as caught:
        ray_node.stop_agent(gcs, "a", "wrongkey")
    assert "ORCH_SECRET_KEY here is not the cluster's key" in caught.value.message
    assert capfd.readouterr().err == ""


def test_a_join_with_another_key_never_runs_ray_start(gcs: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """`orch node start` with another key waited ~25 s for `ray start` to give up."""
    ran: list[Any] = []
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: ran.append(a))
    with pytest.raises(InvalidInput) as caught:
        ray_node.join(gcs, "127.0.0.1", "a", 1, "wrongkey")
    assert caught.value.message == (
        f"This machine could not join the Ray cluster at {gcs}: the cluster refused its token, so "
        "ORCH_SECRET_KEY here is not the cluster's key."
    )
    assert ran == []
