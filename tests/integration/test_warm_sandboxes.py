"""Warm sandboxes on the real machine (sandbox/warm.py, sandbox/handoff.c): a run handed to a
sandbox started ahead of need gets exactly what a cold start gives it (its own environment,
input, hostname, nothing of an earlier run), the same limits and ends (OOM, timeout, cancel),
the same config but for its command; waiting sandboxes go at close, and a killed owner's are
removed by the sweep. Under runc and under gVisor."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from orch.builder import base_images
from orch.engine.base import ContainerExit, ContainerSpec, Mount
from orch.engine.network import Network
from orch.sandbox import handoff, netns, oci
from orch.sandbox.deps import Deps
from orch.sandbox.runc import FOR, WARM_NICE, Launcher
from orch.sandbox.spec import Limits, run_spec
from tests.integration.test_runc_launcher import MiB, leftovers

pytestmark = pytest.mark.integration

PREFIX = f"orch-warmtest{os.getpid()}-"


@pytest.fixture(scope="module", params=["runc", "runsc"])
def launcher(request: pytest.FixtureRequest) -> Iterator[Launcher]:
    launched = Launcher(runtime=request.param, prefix=PREFIX, pool_size=0, warm=2)
    yield launched
    launched.close()
    assert leftovers(launched, PREFIX) == {}, "close() left waiting sandboxes behind"
    launched.sweep(PREFIX)


def spec(
    argv: list[str], *, stdin: bytes = b"", env: dict[str, str] | None = None, **kw: object
) -> ContainerSpec:
    settings: dict[str, object] = {
        "user": "1000:1000",
        "memory_bytes": 256 * MiB,
        "pids": 128,
        "tmpfs": {"/tmp": "rw,exec,nosuid,nodev,mode=1777,size=16m"},
        "read_only": False,
        "network": Network.NONE,
        **kw,
    }
    return ContainerSpec(
        image=base_images.image_tag("python"),
        argv=argv,
        name=f"{PREFIX}{uuid.uuid4().hex[:8]}",
        labels={},
        env=env or {},
        stdin=stdin,
        **settings,  # type: ignore[arg-type]
    )


def run(
    launcher: Launcher, s: ContainerSpec, timeout: float | None = 60, should_stop: object = None
) -> tuple[ContainerExit, str, str]:
    out: list[bytes] = []
    err: list[bytes] = []
    result = launcher.run_container(s, out.append, err.append, timeout, should_stop)  # type: ignore[arg-type]
    return result, b"".join(out).decode(), b"".join(err).decode()


def warmed(launcher: Launcher, **kw: object) -> int:
    """Have a sandbox of this shape waiting (a run of it wants one), and return how many runs
    have been handed a waiting sandbox so far."""
    assert run(launcher, spec(["true"], **kw))[0].exit_code == 0
    launcher.wait()
    assert launcher._warm is not None
    return launcher._warm.taken


SHOW = (
    'echo "$ORCH_X|$(hostname)|$(cat)|$(id -u):$(id -g)|$(pwd)|$(ls /tmp)|$(ls /proc | grep -c "^[0-9]")"; '
    "echo mark > /tmp/mark; echo mark > /home/user/mark; sleep 300 &"
)


def test_a_handed_run_gets_its_own_everything_and_nothing_of_the_one_before(launcher: Launcher) -> None:
    before = warmed(launcher, workdir="/home/user")
    seen = []
    for i in range(3):
        s = spec(
            ["sh", "-c", SHOW], stdin=f"input {i}".encode(), env={"ORCH_X": f"x{i}"}, workdir="/home/user"
        )
        result, out, err = run(launcher, s)
        assert result == ContainerExit(0), err
        seen.append(out.strip().split("|"))
    assert launcher._warm is not None and launcher._warm.taken == before + 3  # all three handed over
    for i, (x, _host, stdin, ids, cwd, tmp, procs) in enumerate(seen):
        assert (x, stdin, ids, cwd, tmp) == (f"x{i}", f"input {i}", "1000:1000", "/home/user", "")
        # Its own processes only: catatonit, sh and the command substitution's (no earlier run's
        # background sleep): under runc a handful, never the previous run's.
        assert int(procs) <= 6, seen
    assert len({s[1] for s in seen}) == 3  # a hostname each


def test_a_handed_run_has_the_environment_a_cold_one_has(launcher: Launcher) -> None:
    env = {"ORCH_X": "a value\nwith a newline", "PATH": "/usr/local/bin:/usr/bin:/bin", "EMPTY": ""}
    show = spec(["python3", "-c", "import json, os; print(json.dumps(dict(os.environ)))"], env=env)
    warmed(launcher)
    taken = launcher._warm.taken if launcher._warm else 0
    warm_env = json.loads(run(launcher, show)[1])
    assert launcher._warm is not None and launcher._warm.taken == taken + 1
    cold = Launcher(runtime=launcher.runtime, prefix=PREFIX, pool_size=0)
    try:
        cold_env = json.loads(run(cold, spec(show.argv, env=env))[1])
    finally:
        cold.close()
    assert warm_env.pop("HOSTNAME") != cold_env.pop("HOSTNAME")
    assert warm_env == cold_env and warm_env["ORCH_X"] == env["ORCH_X"]


def test_limits_and_ends_hold_in_a_handed_sandbox(launcher: Launcher) -> None:
    hog = "blocks = []\nwhile True:\n    blocks.append(bytearray(16 * 1024 * 1024))\n"
    taken = warmed(launcher, memory_bytes=128 * MiB)
    result, _, _ = run(launcher, spec(["python3", "-c", hog], memory_bytes=128 * MiB))
    assert launcher._warm is not None and launcher._warm.taken == taken + 1
    assert result.oom_killed and not result.timed_out

    launcher.wait()
    began = time.monotonic()
    result, _, _ = run(launcher, spec(["sleep", "600"], memory_bytes=128 * MiB), timeout=1)
    assert launcher._warm.taken == taken + 2
    assert result.timed_out and not result.oom_killed and time.monotonic() - began < 15

    launcher.wait()
    asked = time.monotonic() + 0.5
    s = spec(["sleep", "600"], memory_bytes=128 * MiB)
    result, _, _ = run(launcher, s, should_stop=lambda: time.monotonic() > asked)
    assert launcher._warm.taken == taken + 3 and result.cancelled

    launcher.wait()
    result, _, err = run(launcher, spec(["no-such-command"], memory_bytes=128 * MiB))
    assert launcher._warm.taken == taken + 4
    assert result.exit_code == 127 and "cannot run no-such-command" in err


def test_the_config_is_a_cold_ones_but_for_the_command(launcher: Launcher) -> None:
    s = spec(["python3", "-V"], env={"SECRET": "s3cret"}, network=Network.NONE)
    warmed(launcher)
    assert launcher._warm is not None
    waiting = launcher._warm._waiting[launcher._key(s)][0].item  # a sandbox of this shape, waiting
    warm_config = json.loads((waiting.bundle / "config.json").read_text())
    cold_bundle = launcher.state / "sandboxes" / s.name
    layout = launcher.prepare(s, cold_bundle, netns.EMPTY)
    try:
        cold_config = json.loads((cold_bundle / "config.json").read_text())
    finally:
        assert launcher.teardown(s.name) == ""
    assert "s3cret" not in json.dumps(warm_config)  # a run's environment is never on disk
    relayed = [oci.RELAY] if launcher.gvisor else []  # gVisor's output relay (sandbox/relay.py)
    assert warm_config["process"]["args"] == [oci.INIT, "--", *relayed, oci.HANDOFF]
    assert cold_config["process"]["args"] == [oci.INIT, "--", *relayed, "python3", "-V"]
    helper = [m for m in warm_config["mounts"] if m["destination"] == oci.HANDOFF]
    assert helper and helper[0]["options"] == ["bind", "ro", "rprivate", "nosuid", "nodev"]
    differ = {"args", "env"}

    def same(config: dict[str, object]) -> dict[str, object]:
        process = {k: v for k, v in config["process"].items() if k not in differ}  # type: ignore[attr-defined]
        mounts = [
            (m["destination"], m["type"], m["options"])
            for m in config["mounts"]  # type: ignore[attr-defined]
            if m["destination"] != oci.HANDOFF
        ]
        linux = {k: v for k, v in config["linux"].items() if k != "cgroupsPath"}  # type: ignore[attr-defined]
        return {"process": process, "mounts": mounts, "linux": linux, "readonly": config["root"]["readonly"]}  # type: ignore[index]

    assert same(warm_config) == same(cold_config)
    assert layout.handoff is None


def test_runs_of_other_agents_share_waiting_sandboxes_each_with_its_own_bundle(
    launcher: Launcher, tmp_path: Path
) -> None:
    """A run's bundle and dependencies are attached at the handover (runc): agents on the same
    environment and limits share a key; each sees its own files, read-only, nosuid, nodev."""
    bundles = []
    for name in ("first", "second", "third"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "main.txt").write_text(f"I am {name}\n")
        bundles.append(Mount(str(tmp_path / name), "/agent", late=True))
    show = (
        "cat /agent/main.txt; touch /agent/x 2>/dev/null && echo wrote || echo refused; "
        "grep ' /agent ' /proc/self/mountinfo"
    )
    taken = warmed(launcher, mounts=[bundles[0]])
    for i, bundle in enumerate(bundles):
        result, out, err = run(launcher, spec(["sh", "-c", show], mounts=[bundle]))
        assert result.exit_code == 0, err
        lines = out.splitlines()
        assert lines[:2] == [f"I am {('first', 'second', 'third')[i]}", "refused"], out
        options = set(lines[2].split()[5].split(","))
        assert {"ro", "nosuid", "nodev"} <= options if launcher.runtime == "runc" else "ro" in options, lines
        launcher.wait()
    assert launcher._warm is not None
    # Under runc all three were handed a waiting sandbox; under gVisor only the first (the same
    # bundle as the warming run's): there the bundle is part of the key.
    assert launcher._warm.taken - taken == (3 if launcher.runtime == "runc" else 1)
    assert not any(p.name == "x" for b in bundles for p in Path(b.host).iterdir())


LOOK = (
    "import json, os\n"
    "found = []\n"
    "for top, dirs, files in sorted(os.walk('.')):\n"
    "    for n in sorted(dirs + files):\n"
    "        p = os.path.join(top, n); st = os.lstat(p)\n"
    "        found.append([p, oct(st.st_mode), st.st_uid, st.st_gid, os.path.islink(p) and os.readlink(p)])\n"
    "print(json.dumps({'files': found, 'env': dict(os.environ), 'cwd': os.getcwd()}))\n"
)


def test_a_handed_run_finds_its_bundle_copied_as_a_cold_one_does(launcher: Launcher, tmp_path: Path) -> None:
    """A run's command copies its bundle into its working directory (`cp` in a cold sandbox,
    the helper in a handed one): the same files, modes, owners and links, the same environment."""
    bundle = tmp_path / "bundle"
    (bundle / "pkg").mkdir(parents=True)
    (bundle / "main.py").write_text(LOOK)
    (bundle / "tool.sh").write_text("#!/bin/sh\n")
    (bundle / "tool.sh").chmod(0o755)
    (bundle / "pkg" / "data.txt").write_text("data")
    (bundle / "pkg" / "link").symlink_to("data.txt")
    limits = Limits(cpus=1.0, memory_bytes=256 * MiB, pids=128, timeout=60)

    def a_run() -> ContainerSpec:
        return run_spec(
            name=f"{PREFIX}{uuid.uuid4().hex[:8]}",
            image=base_images.image_tag("python"),
            command=["python3", "main.py"],
            bundle_dir=bundle,
            deps=Deps("none"),
            env={"ORCH_X": "x"},
            stdin=b"",
            limits=limits,
            network=False,
            labels={},
        )

    assert run(launcher, a_run())[0].exit_code == 0  # a run of this shape: one waits after it
    launcher.wait()
    assert launcher._warm is not None
    taken = launcher._warm.taken
    result, out, err = run(launcher, a_run())
    assert result.exit_code == 0, err
    assert launcher._warm is not None and launcher._warm.taken == taken + 1, "not handed over"
    cold = Launcher(runtime=launcher.runtime, prefix=PREFIX, pool_size=0)
    try:
        cold_result, cold_out, cold_err = run(cold, a_run())
    finally:
        cold.close()
    assert cold_result.exit_code == 0, cold_err
    warm_seen, cold_seen = json.loads(out), json.loads(cold_out)
    assert warm_seen["env"].pop("HOSTNAME") != cold_seen["env"].pop("HOSTNAME")
    assert warm_seen == cold_seen
    assert ["./pkg/link", "0o120777", 1000, 1000, "data.txt"] in warm_seen["files"]
    assert ["./tool.sh", "0o100755", 1000, 1000, False] in warm_seen["files"]


def _nice_of_tree(pid: int) -> dict[str, set[int]]:
    """The priorities of the threads of `pid` and its descendants, by command name."""
    found: dict[str, set[int]] = {}
    todo = [pid]
    while todo:
        current = todo.pop()
        try:
            tasks = list(Path(f"/proc/{current}/task").iterdir())
        except OSError:
            continue  # it ended meanwhile
        for task in tasks:
            try:
                stat = (task / "stat").read_text()
                children = (task / "children").read_text().split()
            except OSError:
                continue  # a thread that ended meanwhile (gVisor's come and go)
            name = stat.split("(", 1)[1].rsplit(")", 1)[0]
            found.setdefault(name, set()).add(int(stat.rsplit(")", 1)[1].split()[16]))
            todo += [int(c) for c in children]
    return found


def test_a_waiting_sandbox_yields_the_cpu_and_a_handed_run_does_not(launcher: Launcher) -> None:
    warmed(launcher)
    assert launcher._warm is not None
    waiting = launcher._warm._waiting[launcher._key(spec(["true"]))][0].item
    # Started and waiting: under runc its helper runs; under gVisor the sandbox's kernel does.
    ready = "orch-handoff" if launcher.runtime == "runc" else "exe"
    deadline = time.monotonic() + 30
    while ready not in (tree := _nice_of_tree(waiting.proc.pid)):
        assert time.monotonic() < deadline, tree
        time.sleep(0.05)
    # The runtime and the sandbox's processes, every thread of them (gVisor's own threads may
    # lower their priority further).
    assert min(set().union(*tree.values())) == WARM_NICE, tree

    show = "cut -d' ' -f19 /proc/self/stat; python3 -c 'import os; print(os.nice(0))'; sleep 2"
    outcome: list[tuple[ContainerExit, str, str]] = []
    handed = threading.Thread(target=lambda: outcome.append(run(launcher, spec(["sh", "-c", show]))))
    handed.start()
    try:
        while not (waiting.bundle / FOR).exists():
            assert time.monotonic() < deadline, "the waiting sandbox was not handed the run"
            time.sleep(0.02)
        # Handed: every thread of it is given the normal priority back (one pass over its tree,
        # while the command runs for 2 s; on a busy machine it may have ended before a look,
        # and its own view, below, tells).
        while (tree := _nice_of_tree(waiting.proc.pid)) and max(set().union(*tree.values())) >= WARM_NICE:
            assert time.monotonic() < deadline, tree
            time.sleep(0.05)
    finally:
        handed.join(30)
    # The command itself started at the normal priority, as its own view of it says.
    assert [(o[0].exit_code, o[1].split()) for o in outcome] == [(0, ["0", "0"])], outcome


KILLED_OWNER = """
import sys, time
from orch.builder import base_images
from orch.engine.base import ContainerSpec
from orch.engine.network import Network
from orch.sandbox.runc import Launcher
launcher = Launcher(prefix=sys.argv[1], pool_size=1, warm=2)
spec = ContainerSpec(image=base_images.image_tag("python"), argv=["true"], name=sys.argv[1] + "first",
                     labels={}, user="1000:1000", memory_bytes=64 << 20, pids=16, read_only=False,
                     network=Network.SANDBOX)
launcher.run_container(spec, print, print)
launcher.wait()
print("waiting", flush=True)
time.sleep(600)
"""


def test_a_killed_owners_waiting_sandbox_ends_and_the_sweep_removes_the_rest() -> None:
    prefix = f"{PREFIX}killed-"
    owner = subprocess.Popen(
        [sys.executable, "-c", KILLED_OWNER, prefix],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    sweeper = Launcher(prefix=prefix, pool_size=0)
    try:
        assert owner.stdout is not None
        assert owner.stdout.readline().strip() == "waiting"
        deadline = time.monotonic() + 30
        # Both of the lone key's (a first and a second) wait. The owner printed after both
        # runtimes were started, which list their containers a moment later.
        while len(names := sweeper.containers(prefix)) < 2:
            assert time.monotonic() < deadline and owner.poll() is None, f"not two waiting: {names}"
            time.sleep(0.05)
        assert len(names) == 2 and all(n.startswith(f"{prefix}warm-") for n in names), names
        owner.kill()
        owner.wait()
        # Its helper read the end of its input: it ended by itself, its runtime with it.
        deadline = time.monotonic() + 30
        while sweeper.containers(prefix) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert sweeper.containers(prefix) == []
        assert leftovers(sweeper, prefix)  # its bundle, root mounts, cgroups, namespace...
        assert sweeper.sweep(prefix) >= 1
        assert leftovers(sweeper, prefix) == {}  # ...which the sweep removes
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait()
        owner.stdout.close()  # type: ignore[union-attr]
        sweeper.sweep(prefix)


def test_a_handed_sandbox_names_the_run_it_serves(launcher: Launcher) -> None:
    warmed(launcher)
    s = spec(["sleep", "30"])
    stop = threading.Event()
    done = threading.Thread(target=run, args=(launcher, s), kwargs={"should_stop": stop.is_set})
    done.start()
    try:
        deadline = time.monotonic() + 30
        found: list[str] = []
        while not found and time.monotonic() < deadline:
            bundles = (launcher.state / "sandboxes").glob(f"{PREFIX}warm-*")
            found = [b.name for b in bundles if (b / FOR).exists() and (b / FOR).read_text() == s.name]
            time.sleep(0.05)
        assert found, "no sandbox says it serves the run"
    finally:
        stop.set()
        done.join(30)


HELPER_CASES = [
    # (what is handed over, then the input: exit code, stdout, stderr)
    (
        handoff.message(["sh", "-c", 'printf "%s|%s" "$A" "$(cat)"'], ["PATH=/usr/bin:/bin", "A=1\n2"])
        + b"in",
        0,
        "1\n2|in",
        "",
    ),
    (b"", 0, "", ""),  # closed unused: a discarded sandbox ends quietly
    (
        handoff.message(["no-such-command"], ["PATH=/bin"]),
        127,
        "",
        "orch-handoff: cannot run no-such-command",
    ),
    (b"orch\0\0\0\x05abc", 125, "", "orch-handoff: the handed-over run is malformed: it ended early"),
    (b"nope\0\0\0\x02a\0", 125, "", "orch-handoff: no run was handed over"),
    (b"orch\0\0\0\x04x\0y\0", 125, "", "orch-handoff: the handed-over run is malformed: too few fields"),
    (
        b"orch\0\0\0\x06\0\0x\0y\0",
        125,
        "",
        "orch-handoff: the handed-over run is malformed: its argument count",
    ),
    (
        handoff.message(["true"], [], copy=("/no/such/bundle", "/tmp")),
        1,
        "",
        "orch-handoff: cannot copy /no/such/bundle: No such file or directory",
    ),
]


@pytest.mark.parametrize(
    ("given", "code", "out", "err"),
    HELPER_CASES,
    ids=["run", "closed", "missing", "short", "magic", "fields", "count", "copy-fails"],
)
def test_the_helper_on_the_host(given: bytes, code: int, out: str, err: str, tmp_path: Path) -> None:
    helper = handoff.binary(tmp_path)  # built by the machine's compiler, as a launcher does
    assert helper.name.startswith("handoff-") and handoff.binary(tmp_path) == helper  # once per source
    res = subprocess.run([str(helper)], input=given, capture_output=True, check=False)
    assert (res.returncode, res.stdout.decode()) == (code, out)
    assert res.stderr.decode().startswith(err) and (err or not res.stderr)


def listing(top: Path) -> list[tuple[str, str, int, str]]:
    """Each entry under `top`: (path, kind, permission bits, content or link target)."""
    found = []
    for path in sorted(top.rglob("*")):
        st = path.lstat()
        if path.is_symlink():
            found.append((str(path.relative_to(top)), "link", 0, os.readlink(path)))
        elif path.is_dir():
            found.append((str(path.relative_to(top)), "dir", st.st_mode & 0o7777, ""))
        else:
            found.append((str(path.relative_to(top)), "file", st.st_mode & 0o7777, path.read_text()))
    return found


def test_the_helper_copies_a_bundle_as_cp_does(tmp_path: Path) -> None:
    helper = handoff.binary(tmp_path)
    tmp_path = Path(tempfile.mkdtemp(prefix="orch-copytest-"))  # the sandbox user may enter it
    tmp_path.chmod(0o755)
    try:
        _copies_as_cp(helper, tmp_path)
    finally:
        shutil.rmtree(tmp_path)


def _copies_as_cp(helper: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    (bundle / "src" / "deep").mkdir(parents=True)
    (bundle / "main.py").write_text("print(1)\n")
    (bundle / "run.sh").write_text("#!/bin/sh\n")
    (bundle / "run.sh").chmod(0o755)
    (bundle / "src" / "deep" / "data.txt").write_text("x" * 200_000)
    (bundle / "src" / "readonly.txt").write_text("r")
    (bundle / "src" / "readonly.txt").chmod(0o444)
    (bundle / "src" / "setid").write_text("s")
    (bundle / "src" / "setid").chmod(0o4755)
    (bundle / "src" / "closed").mkdir()
    (bundle / "src" / "closed").chmod(0o555)  # its copy too, once filled
    (bundle / "link").symlink_to("src/deep/data.txt")
    (bundle / "dangling").symlink_to("/nowhere")
    by_cp, by_helper = tmp_path / "cp", tmp_path / "helper"
    by_cp.mkdir()
    by_helper.mkdir()
    # As the sandbox user, as both run in a sandbox (root would keep the set-id bits).
    user = {"user": 1000, "group": 1000, "extra_groups": [], "umask": 0o022}
    os.chown(by_cp, 1000, 1000)
    os.chown(by_helper, 1000, 1000)
    subprocess.run(["cp", "-R", f"{bundle}/.", f"{by_cp}/"], check=True, **user)  # type: ignore[call-overload]
    given = handoff.message(["true"], [], copy=(str(bundle), str(by_helper)))
    res = subprocess.run(
        [str(handoff.binary(tmp_path))],
        input=given,
        capture_output=True,
        check=False,
        **user,  # type: ignore[call-overload]
    )
    assert (res.returncode, res.stderr) == (0, b"")
    assert listing(by_helper) == listing(by_cp)
    assert {p.lstat().st_uid for p in by_helper.rglob("*")} == {1000}


def test_without_a_c_compiler_runs_start_cold_and_the_server_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """scripts/setup installs gcc for the helper; a machine without one still runs everything,
    cold, and its log says what to install."""
    which = shutil.which
    monkeypatch.setattr(
        shutil, "which", lambda name, *a, **k: None if name in ("cc", "gcc") else which(name, *a, **k)
    )
    cold = Launcher(runtime="runc", prefix=PREFIX, pool_size=0, warm=2, state=tmp_path / "state")
    try:
        with caplog.at_level("WARNING", logger="orch.sandbox.runc"):
            for i in range(2):
                result, out, err = run(cold, spec(["/bin/echo", f"cold {i}"]))
                assert (result.exit_code, result.warm, out) == (0, False, f"cold {i}\n"), err
        assert cold._warm is None and cold.warm == 0
        warned = [r.getMessage() for r in caplog.records if "start cold" in r.getMessage()]
        assert len(warned) == 1 and "no C compiler" in warned[0] and "gcc" in warned[0], warned
        assert not list((tmp_path / "state").glob("handoff-*"))
    finally:
        cold.close()
        cold.sweep(PREFIX)
