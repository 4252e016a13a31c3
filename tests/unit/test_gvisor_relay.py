"""A gVisor sandbox's command runs under the output relay (sandbox/relay.c), bound in read-only
between the init and the command, with room for it in the process limit; runc's runs without."""

from __future__ import annotations

from pathlib import Path

from orch.sandbox import oci, runc
from tests.unit.test_oci_config import by_destination, layout, profile, spec

__all__ = ["profile"]  # the seccomp profile's fixture, autouse here too

RELAY = Path("/run/orch-runc/relay-0123456789abcdef")


def test_the_relay_runs_between_the_init_and_the_command() -> None:
    config = oci.config(spec(), layout(relay=RELAY))
    args = config["process"]["args"]
    assert args[:3] == [oci.INIT, "--", oci.RELAY] and args[3:5] == ["/bin/sh", "-c"]
    mount = by_destination(config)[oci.RELAY]
    assert mount["source"] == str(RELAY) and {"ro", "nosuid", "nodev"} <= set(mount["options"])
    assert oci.config(spec(), layout(relay=RELAY, init=None))["process"]["args"][:2] == [oci.RELAY, "/bin/sh"]


def test_without_the_relay_nothing_changes() -> None:
    config = oci.config(spec(), layout())
    assert config["process"]["args"][:3] == [oci.INIT, "--", "/bin/sh"]
    assert oci.RELAY not in by_destination(config)


def test_the_relay_has_room_in_gvisors_process_limit() -> None:
    for relay, nproc in ((RELAY, 65), (None, 64)):
        config = oci.config(spec(), layout(relay=relay))
        runc._for_gvisor(config)
        limits = {r["type"]: r for r in config["process"]["rlimits"]}
        assert (limits["RLIMIT_NPROC"]["soft"], limits["RLIMIT_NPROC"]["hard"]) == (nproc, nproc)
        assert config["linux"]["resources"]["pids"]["limit"] == 64 + runc.GVISOR_THREADS
