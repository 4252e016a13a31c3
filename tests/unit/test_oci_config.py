"""The runc launcher's OCI config: the protections of a `podman run` of the same spec, as fields."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from orch.engine.base import ContainerSpec, Mount
from orch.errors import EngineError
from orch.sandbox import etc_files, oci, seccomp
from orch.sandbox.deps import Deps
from orch.sandbox.spec import Limits, run_spec

# What a service's run_command keeps (orch.sandbox service spec): caps a root process gets.
RUN_COMMAND_CAPS = ("CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "SETGID", "SETUID")

LIMITS = Limits(cpus=0.5, memory_bytes=128 * 1024 * 1024, pids=64, timeout=30)
CA = "/etc/ssl/certs/ca-certificates.crt"

# A few rules of containers-common's profile, in its own form (archMap, includes/excludes).
PROFILE = {
    "defaultAction": "SCMP_ACT_ERRNO",
    "defaultErrnoRet": 38,
    "archMap": [
        {"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"]},
        {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": ["SCMP_ARCH_ARM"]},
    ],
    "syscalls": [
        {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW", "args": [], "includes": {}, "excludes": {}},
        {"names": ["clone", "clone3", "keyctl", "unshare", "wait4"], "action": "SCMP_ACT_ALLOW"},
        {
            "names": ["personality"],
            "action": "SCMP_ACT_ALLOW",
            "args": [{"index": 0, "value": 0, "valueTwo": 0, "op": "SCMP_CMP_EQ"}],
            "includes": {},
            "excludes": {},
        },
        {"names": ["arch_prctl"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": ["amd64", "x32"]}},
        {"names": ["s390_runtime_instr"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": ["s390x"]}},
        {"names": ["chroot"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_CHROOT"]}},
        {
            "names": ["chroot"],
            "action": "SCMP_ACT_ERRNO",
            "errnoRet": 1,
            "errno": "EPERM",
            "excludes": {"caps": ["CAP_SYS_CHROOT"]},
        },
    ],
}


@pytest.fixture(autouse=True)
def profile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "seccomp.json"
    path.write_text(json.dumps(PROFILE))
    monkeypatch.setattr(seccomp, "PROFILE", path)
    monkeypatch.setattr(seccomp, "go_arch", lambda: "amd64")
    return path


def spec(network: bool = False) -> ContainerSpec:
    return run_spec(
        name="orch-x-run_1",
        image="localhost/orch/python:abc",
        command=["python", "main.py"],
        bundle_dir=Path("/data/bundle"),
        deps=Deps("none"),
        env={"A": "1"},
        stdin=b"{}",
        limits=LIMITS,
        network=network,
        labels={"org.orch.instance": "i1"},
        host_mounts=[Mount(CA, CA)],
    )


def layout(**kw: object) -> oci.Layout:
    base: dict[str, object] = {
        "root": Path("/run/orch-runc/sandboxes/orch-x-run_1/rootfs"),
        "hostname": "0123456789ab",
        "cgroups_path": "/orch_orch-x-run_1/orch-x-run_1",
        "uid": 1000,
        "gid": 1000,
        "init": Path("/usr/libexec/podman/catatonit"),
        "files": {"/etc/hosts": Path("/b/hosts"), "/etc/hostname": Path("/b/hostname")},
        "image_env": ("PATH=/opt/bin:/usr/bin", "LANG=C.UTF-8", "A=from-image"),
        "image_workdir": "/home/user",
    }
    return oci.Layout(**{**base, **kw})  # type: ignore[arg-type]


def by_destination(config: dict) -> dict[str, dict]:  # type: ignore[type-arg]
    return {m["destination"]: m for m in config["mounts"]}


def test_process_runs_as_1000_without_privileges_under_catatonit() -> None:
    config = oci.config(spec(), layout())
    process = config["process"]
    assert process["user"] == {"uid": 1000, "gid": 1000, "umask": 0o022, "additionalGids": [1000]}
    assert process["noNewPrivileges"] is True
    assert process["terminal"] is False
    assert process["args"][:2] == [oci.INIT, "--"]
    assert process["args"][2:4] == ["/bin/sh", "-c"] and process["args"][-2:] == ["python", "main.py"]
    assert process["cwd"] == "/home/user/work"
    assert by_destination(config)[oci.INIT]["source"] == "/usr/libexec/podman/catatonit"
    assert "ro" in by_destination(config)[oci.INIT]["options"]


def test_without_init_the_command_is_pid_1() -> None:
    config = oci.config(spec(), layout(init=None))
    assert config["process"]["args"][0] == "/bin/sh"
    assert oci.INIT not in by_destination(config)


def test_every_capability_is_dropped() -> None:
    caps = oci.config(spec(), layout())["process"]["capabilities"]
    assert caps == {s: [] for s in ("bounding", "effective", "inheritable", "permitted", "ambient")}


def test_cap_add_as_podman_gives_it_to_root_and_to_another_user() -> None:
    svc = ContainerSpec(image="i", argv=["x"], name="n", labels={}, user="0:0", cap_add=RUN_COMMAND_CAPS)
    as_root = oci.config(svc, layout(uid=0, gid=0))["process"]["capabilities"]
    wanted = [f"CAP_{c}" for c in RUN_COMMAND_CAPS]
    assert as_root == {
        "bounding": wanted,
        "effective": wanted,
        "permitted": wanted,
        "inheritable": [],
        "ambient": [],
    }
    as_user = oci.config(svc, layout())["process"]["capabilities"]
    assert all(v == wanted for v in as_user.values())


def test_limits_memory_with_equal_swap_pids_cpu_and_no_devices() -> None:
    res = oci.config(spec(), layout())["linux"]["resources"]
    assert res["memory"] == {"limit": LIMITS.memory_bytes, "swap": LIMITS.memory_bytes}
    assert res["pids"] == {"limit": 64}
    assert res["cpu"] == {"quota": 50_000, "period": 100_000}
    assert res["devices"] == [{"allow": False, "access": "rwm"}]


def test_a_cpu_share_too_small_for_the_kernel_is_its_least_quota_never_none() -> None:
    # round(1e-9 * 100_000) is 0, and runc writes a quota of 0 as "max": no limit at all.
    tiny = ContainerSpec(image="i", argv=["x"], name="n", labels={}, cpus=1e-9)
    assert oci.config(tiny, layout())["linux"]["resources"]["cpu"] == {"quota": 1000, "period": 100_000}


def test_no_limits_no_sections() -> None:
    bare = ContainerSpec(image="i", argv=["x"], name="n", labels={})
    assert oci.config(bare, layout())["linux"]["resources"] == {
        "devices": [{"allow": False, "access": "rwm"}]
    }


def test_rlimits_are_podmans() -> None:
    """containers.conf's, as `podman run` gets them (scripts/setup writes NOFILE 1024 and NPROC
    32,768, or the machine's hard limit when lower)."""
    rlimits = oci.config(spec(), layout())["process"]["rlimits"]
    podmans = oci.podman_rlimits()
    assert rlimits == [{"type": name, "hard": hard, "soft": soft} for name, soft, hard in podmans]
    assert [r["type"] for r in rlimits] == ["RLIMIT_NOFILE", "RLIMIT_NPROC"]
    assert rlimits[0]["soft"] == 1024


def test_rlimits_are_read_from_containers_conf(tmp_path: Path) -> None:
    conf = tmp_path / "containers.conf"
    conf.write_text('[containers]\ndefault_ulimits = ["nofile=512:2048", "nproc=100"]\n')
    assert oci.podman_rlimits([str(conf)]) == (("RLIMIT_NOFILE", 512, 2048), ("RLIMIT_NPROC", 100, 100))
    assert oci.podman_rlimits([str(tmp_path / "absent")]) == oci.RLIMITS
    conf.write_text('[containers]\ndefault_ulimits = ["nofile=lots"]\n')
    with pytest.raises(EngineError, match="NAME=SOFT:HARD"):
        oci.podman_rlimits([str(conf)])


def test_root_and_namespaces() -> None:
    # A run's root is its own to change (an overlay bounded by the launcher); a spec that asks
    # for a read-only one gets it.
    config = oci.config(spec(), layout())
    assert config["root"] == {"path": "/run/orch-runc/sandboxes/orch-x-run_1/rootfs", "readonly": False}
    strict = oci.config(dataclasses.replace(spec(), read_only=True), layout())
    assert strict["root"]["readonly"] is True
    kinds = [n["type"] for n in config["linux"]["namespaces"]]
    assert sorted(kinds) == ["cgroup", "ipc", "mount", "network", "pid", "uts"]
    # No path: a new, empty network namespace (only lo).
    assert {"type": "network"} in config["linux"]["namespaces"]
    assert config["hostname"] == "0123456789ab"
    assert config["linux"]["cgroupsPath"] == "/orch_orch-x-run_1/orch-x-run_1"


def test_a_prepared_network_namespace_is_joined_by_path() -> None:
    config = oci.config(spec(network=True), layout(netns=Path("/run/netns/orch-x-net-1")))
    assert {"type": "network", "path": "/run/netns/orch-x-net-1"} in config["linux"]["namespaces"]


def test_writable_root_when_the_spec_says_so() -> None:
    svc = ContainerSpec(image="i", argv=["x"], name="n", labels={}, read_only=False)
    assert oci.config(svc, layout())["root"]["readonly"] is False


def test_masked_and_read_only_kernel_paths() -> None:
    linux = oci.config(spec(), layout())["linux"]
    for path in ("/proc/kcore", "/proc/keys", "/proc/timer_list", "/sys/firmware", "/proc/scsi"):
        assert path in linux["maskedPaths"]
    for path in ("/proc/sys", "/proc/sysrq-trigger", "/proc/irq", "/proc/bus"):
        assert path in linux["readonlyPaths"]
    assert linux["sysctl"] == {"net.ipv4.ping_group_range": "0 0"}


def test_kernel_file_systems_are_mounted_as_podman_mounts_them() -> None:
    mounts = by_destination(oci.config(spec(), layout()))
    assert mounts["/proc"]["type"] == "proc" and set(mounts["/proc"]["options"]) >= {
        "nosuid",
        "noexec",
        "nodev",
    }
    assert mounts["/sys"]["type"] == "sysfs" and "ro" in mounts["/sys"]["options"]
    assert mounts["/sys/fs/cgroup"]["type"] == "cgroup" and "ro" in mounts["/sys/fs/cgroup"]["options"]
    assert mounts["/dev"]["type"] == "tmpfs" and "noexec" in mounts["/dev"]["options"]
    assert mounts["/dev/pts"]["type"] == "devpts" and "newinstance" in mounts["/dev/pts"]["options"]
    assert mounts["/dev/mqueue"]["type"] == "mqueue"
    shm = mounts["/dev/shm"]
    assert shm["type"] == "tmpfs" and {"noexec", "nosuid", "nodev", f"size={oci.SHM_BYTES}"} <= set(
        shm["options"]
    )


def test_the_specs_mounts_bind_read_only_and_tmpfs_keep_their_size() -> None:
    config = oci.config(spec(), layout())
    mounts = by_destination(config)
    for dest in (CA, "/opt/orch/bundle"):
        assert mounts[dest]["type"] == "bind"
        assert {"rbind", "ro", "nosuid", "nodev"} <= set(mounts[dest]["options"])
        assert "rw" not in mounts[dest]["options"]
    work = mounts["/home/user/work"]
    assert work["type"] == "tmpfs"
    assert f"size={LIMITS.work_bytes}" in work["options"] and "nosuid" in work["options"]


def test_a_writable_bind_mount_stays_writable_and_children_follow_parents() -> None:
    deps = Mount("/cache/node_modules", "/home/user/work/node_modules")
    s = ContainerSpec(
        image="i",
        argv=["x"],
        name="n",
        labels={},
        mounts=[deps, Mount("/cache/out", "/out", read_only=False)],
        tmpfs={"/home/user/work": "rw,size=1m"},
    )
    config = oci.config(s, layout())
    order = [m["destination"] for m in config["mounts"]]
    assert order.index("/home/user/work") < order.index("/home/user/work/node_modules")
    assert "rw" in by_destination(config)["/out"]["options"]


def test_generated_files_are_bound_read_only_unless_the_spec_mounts_the_path() -> None:
    s = ContainerSpec(image="i", argv=["x"], name="n", labels={}, mounts=[Mount("/mine/hosts", "/etc/hosts")])
    mounts = by_destination(oci.config(s, layout()))
    assert mounts["/etc/hosts"]["source"] == "/mine/hosts"
    assert mounts["/etc/hostname"]["source"] == "/b/hostname"
    assert {"ro", "nosuid", "noexec", "nodev"} <= set(mounts["/etc/hostname"]["options"])


def test_relative_mount_points_are_refused() -> None:
    s = ContainerSpec(image="i", argv=["x"], name="n", labels={}, mounts=[Mount("/a", "relative")])
    with pytest.raises(EngineError, match="absolute"):
        oci.config(s, layout())


def test_environment_precedence_is_podmans() -> None:
    env = oci.config(spec(), layout())["process"]["env"]
    values = dict(e.split("=", 1) for e in env)
    assert values["PATH"] == "/opt/bin:/usr/bin"  # the image's beats the default
    assert values["A"] == "1"  # the spec's beats the image's
    assert values["HOME"] == "/home/user"  # the spec's
    assert values["TERM"] == "xterm" and values["HOSTNAME"] == "0123456789ab"
    assert values["LANG"] == "C.UTF-8"


def test_seccomp_is_podmans_conversion_of_the_profile_for_the_native_abi() -> None:
    sc = oci.config(spec(), layout())["linux"]["seccomp"]
    assert sc["defaultAction"] == "SCMP_ACT_ERRNO" and sc["defaultErrnoRet"] == 38
    # Podman's conversion allows the 32-bit ABIs too; a sandbox allows the native one only
    assert seccomp.convert(PROFILE, [], "amd64")["architectures"] == [
        "SCMP_ARCH_X86_64",
        "SCMP_ARCH_X86",
        "SCMP_ARCH_X32",
    ]
    assert sc["architectures"] == ["SCMP_ARCH_X86_64"]
    podmans = seccomp.convert(seccomp.hardened(PROFILE, "amd64"), [], "amd64")
    assert {k: v for k, v in sc.items() if k != "architectures"} == {
        k: v for k, v in podmans.items() if k != "architectures"
    }
    newuser = {"index": 0, "value": seccomp.CLONE_NEWUSER, "op": "SCMP_CMP_MASKED_EQ"}
    assert sc["syscalls"] == [
        {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"},
        # clone, clone3, unshare: below; keyctl: not at all (the default answer, ENOSYS)
        {"names": ["wait4"], "action": "SCMP_ACT_ALLOW"},
        {
            "names": ["personality"],
            "action": "SCMP_ACT_ALLOW",
            "args": [{"index": 0, "value": 0, "op": "SCMP_CMP_EQ"}],
        },
        {"names": ["arch_prctl"], "action": "SCMP_ACT_ALLOW"},
        # chroot: refused without CAP_SYS_CHROOT (the allow rule needs it)
        {"names": ["chroot"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1},
        # no new user namespace (stricter than Podman): EPERM with CLONE_NEWUSER, clone3 ENOSYS
        {"names": ["unshare"], "action": "SCMP_ACT_ALLOW", "args": [newuser]},  # valueTwo 0
        {
            "names": ["unshare"],
            "action": "SCMP_ACT_ERRNO",
            "errnoRet": 1,
            "args": [{**newuser, "valueTwo": seccomp.CLONE_NEWUSER}],
        },
        {"names": ["clone"], "action": "SCMP_ACT_ALLOW", "args": [newuser]},
        {
            "names": ["clone"],
            "action": "SCMP_ACT_ERRNO",
            "errnoRet": 1,
            "args": [{**newuser, "valueTwo": seccomp.CLONE_NEWUSER}],
        },
        {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38},
    ]
    # Podman's own conversion keeps them allowed
    assert {
        "names": ["clone", "clone3", "keyctl", "unshare", "wait4"],
        "action": "SCMP_ACT_ALLOW",
    } in seccomp.convert(PROFILE, [], "amd64")["syscalls"]


def test_seccomp_rules_follow_the_capabilities() -> None:
    with_chroot = seccomp.oci_seccomp(["CAP_SYS_CHROOT"])["syscalls"]
    assert {"names": ["chroot"], "action": "SCMP_ACT_ALLOW"} in with_chroot
    assert not any(r["names"] == ["chroot"] and r["action"] == "SCMP_ACT_ERRNO" for r in with_chroot)
    arm = seccomp.convert(PROFILE, [], "arm64")
    assert arm["architectures"] == ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]
    assert seccomp.native_only(arm, "arm64")["architectures"] == ["SCMP_ARCH_AARCH64"]
    unknown = seccomp.convert(PROFILE, [], "riscv64")  # no archMap entry: left as it is
    assert seccomp.native_only(unknown, "riscv64") == unknown
    assert not any(r["names"] == ["arch_prctl"] for r in arm["syscalls"])


@pytest.mark.skipif(not seccomp.PROFILE.exists(), reason="containers-common is not installed")
def test_the_real_profile_converts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.undo()
    sc = seccomp.oci_seccomp([])
    assert sc["defaultAction"] == "SCMP_ACT_ERRNO"
    allowed = {
        n for r in sc["syscalls"] if r["action"] == "SCMP_ACT_ALLOW" and "args" not in r for n in r["names"]
    }
    assert {"read", "execve", "fork", "vfork"} <= allowed
    assert not {"chroot", "bpf", "kexec_load", "init_module", "open_by_handle_at"} & allowed
    assert not {"clone", "clone3", "unshare"} & allowed  # only without CLONE_NEWUSER (clone3: never)
    assert {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38} in sc["syscalls"]
    everywhere = {n for r in sc["syscalls"] if r["action"] == "SCMP_ACT_ALLOW" for n in r["names"]}
    assert not seccomp.KEYRING_CALLS & everywhere  # by no rule, with or without arguments


@pytest.mark.skipif(not seccomp.PROFILE.exists(), reason="containers-common is not installed")
def test_podman_gets_the_same_rules_in_its_own_format(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Services' containers and builds' steps run a workspace's code under Podman: they get the
    launcher's rules as a profile file (`--security-opt seccomp=`), which Podman converts as the
    launcher does; written once per content, readable by all."""
    monkeypatch.undo()
    monkeypatch.setattr(seccomp, "PODMAN_PROFILES", tmp_path / "profiles")
    path = seccomp.podman_profile()
    assert path.parent == tmp_path / "profiles" and path.stat().st_mode & 0o777 == 0o644
    assert seccomp.podman_profile() == path and len(list(path.parent.iterdir())) == 1
    written = json.loads(path.read_text())
    converted = seccomp.native_only(seccomp.convert(written, [], seccomp.go_arch()), seccomp.go_arch())
    assert converted == seccomp.oci_seccomp([])
    source = json.loads(seccomp.PROFILE.read_text())
    allowed = {n for r in source["syscalls"] if r["action"] == "SCMP_ACT_ALLOW" for n in r["names"]}
    assert "keyctl" in allowed and "unshare" in allowed  # Podman's own default allows both
    path.unlink()  # a reboot empties /run: written again
    assert seccomp.podman_profile() == path and path.is_file()


def test_missing_profile_is_a_plain_error(tmp_path: Path) -> None:
    with pytest.raises(EngineError, match="seccomp profile"):
        seccomp.oci_seccomp([], profile=tmp_path / "absent.json")


def test_user_parsing() -> None:
    passwd = "root:x:0:0::/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\nsvc:x:998:50::/:/bin/sh\n"
    group = "root:x:0:\nstaff:x:50:\n"
    assert oci.parse_user("1000:1000") == (1000, 1000)
    assert oci.parse_user("user", passwd, group) == (1000, 1000)
    assert oci.parse_user("svc", passwd, group) == (998, 50)
    assert oci.parse_user("998", passwd, group) == (998, 50)
    assert oci.parse_user("1234") == (1234, 1234)
    assert oci.parse_user("user:staff", passwd, group) == (1000, 50)
    assert oci.parse_user("") == (0, 0)
    with pytest.raises(EngineError, match="not in the image"):
        oci.parse_user("nobody-here", passwd, group)


def test_etc_files(tmp_path: Path) -> None:
    hosts = tmp_path / "host-hosts"
    hosts.write_text("127.0.0.1 localhost\n")
    resolv = tmp_path / "host-resolv"
    resolv.write_text("nameserver 127.0.0.53\nsearch example\n")
    assert etc_files.resolv_conf(resolv) == "search example\nnameserver 8.8.8.8\nnameserver 8.8.4.4\n"
    resolv.write_text("nameserver 10.0.0.2\nnameserver ::1\n")
    assert etc_files.resolv_conf(resolv) == "nameserver 10.0.0.2\n"
    text = etc_files.hosts("abc", "orch-x", "10.89.0.5", "10.89.0.1", base=hosts)
    assert text == "127.0.0.1 localhost\n10.89.0.1\thost.containers.internal\n10.89.0.5\tabc orch-x\n"
    files = etc_files.write(
        tmp_path,
        hostname="abc",
        name="orch-x",
        uid=1000,
        gid=1000,
        passwd="root:x:0:0::/:/bin/sh\n",
        group="",
    )
    assert set(files) == {"/etc/hostname", "/etc/hosts", "/run/.containerenv", "/etc/passwd", "/etc/group"}
    assert files["/etc/passwd"].read_text().endswith("1000:*:1000:1000:container user:/:/bin/sh\n")
    known = etc_files.write(
        tmp_path,
        hostname="abc",
        name="orch-x",
        uid=0,
        gid=0,
        passwd="root:x:0:0::/:/bin/sh\n",
        group="root:x:0:\n",
    )
    assert "/etc/passwd" not in known and "/etc/group" not in known and "/etc/resolv.conf" not in known
