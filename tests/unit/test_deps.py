"""A run's dependency install (sandbox/deps.py): which installs read the bundle and what keys
them, the sized tmpfs an install writes on and the copy of its result, the cache's eviction and
the sweep of what killed installs left. On the fake engine, whose "install" writes on the host
side of the install's mounts; as root, so the tmpfs is real."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from orch.engine.base import ContainerExit, ContainerSpec, Mount
from orch.engine.fake import FakeEngine
from orch.errors import InstallFailed
from orch.sandbox import deps, deps_cache, rootfs
from orch.sandbox.deps_scope import reads_bundle
from orch.sandbox.layout import BUNDLE, BUNDLE_SOURCE, DEPS, SCRATCH

MiB = 2**20
BASE = ContainerSpec(
    image="img", argv=[], name="orch-x-run_1", labels={"org.orch.instance": "i1"}, user="1000:1000"
)
LOCAL = b"/opt/orch/bundle/mylib\n"  # a requirement that names a package of the bundle
SIX = b"six\n"  # one of an index


@pytest.mark.parametrize(
    "requirements",
    [
        "six\n",
        "numpy==1.26.3\nrequests[security] >= 2.0 ; python_version >= '3.8'\n",
        "Django (>=3.0)  # the web part\n\n",
        "six==1.16.0 --hash=sha256:1e61 --hash sha256:8abb\n",
        "-i https://pypi.org/simple\n--extra-index-url=https://pkgs.example.com/simple\n--pre\nsix\n",
        "six \\\n  ==1.16.0\n",
    ],
)
def test_requirements_of_an_index_alone_do_not_read_the_bundle(requirements: str) -> None:
    assert not reads_bundle({"requirements.txt": requirements.encode()})


@pytest.mark.parametrize(
    "requirements",
    [
        "/opt/orch/bundle/mylib\n",
        "-e ./pkg\n",
        "./pkg\n",
        "mylib-0.1-py3-none-any.whl\n",
        "-r other.txt\n",
        "-c constraints.txt\nsix\n",
        "mylib @ file:///opt/orch/bundle/mylib\n",
        "git+https://github.com/x/y\n",
        "--find-links ./wheels\nsix\n",
        "-i file:///opt/orch/bundle/index\nsix\n",
        "six ; python_version > '3' -r other.txt\n",
        "six --config-settings=editable_mode=compat\n",
        "${HOME}/pkg\n",
        "six\\\n-r other.txt\n",
        "\udcff",
    ],
)
def test_requirements_that_name_anything_else_read_the_bundle(requirements: str) -> None:
    assert reads_bundle({"requirements.txt": requirements.encode(errors="surrogateescape")})


def test_which_package_json_reads_the_bundle() -> None:
    plain = b'{"dependencies": {"left-pad": "^1.3.0", "x": "latest"}, "scripts": {"start": "node ."}}'
    assert not reads_bundle({"package.json": plain, "package-lock.json": b"{}"})
    for package in (
        b'{"dependencies": {"a": "file:./a"}}',
        b'{"devDependencies": {"a": "user/repo"}}',
        b'{"dependencies": {"a": "npm:b@1"}}',
        b'{"scripts": {"postinstall": "node /opt/orch/bundle/setup.js"}}',
        b'{"workspaces": ["a"]}',
        b"[]",
        b"not json",
    ):
        assert reads_bundle({"package.json": package}), package


def test_a_key_covers_the_bundle_and_its_workspace_when_the_install_reads_the_bundle() -> None:
    def key(files: dict[str, bytes], workspace: str, bundle: str) -> str:
        return deps.cache_key(files, "img1", workspace_id=workspace, bundle_sha=bundle)

    plain = {"requirements.txt": b"six\n"}
    # Shared: the install sees the requirements alone, whoever's bundle they are in.
    assert key(plain, "ws_a", "b1") == key(plain, "ws_b", "b2")
    local = {"requirements.txt": LOCAL}
    assert key(local, "ws_a", "b1") == key(local, "ws_a", "b1")
    assert key(local, "ws_a", "b1") != key(local, "ws_a", "b2")  # the package changed
    assert key(local, "ws_a", "b1") != key(local, "ws_b", "b1")  # another workspace's


def mounted_at(spec: ContainerSpec, container: str) -> Mount:
    return next(m for m in spec.mounts if m.container == container)


@contextlib.contextmanager
def installing(
    tmp_path: Path,
    behaviour: Callable[[ContainerSpec], int],
    requirements: bytes = b"six\n",
    **kwargs: object,
) -> Iterator[Callable[..., deps.Deps]]:
    """An `ensure` of `requirements` whose install does `behaviour(spec)` (its exit code); the
    bundle is tmp_path/bundle, with the requirements and a package of its own."""
    bundle = tmp_path / "bundle"
    (bundle / "mylib").mkdir(parents=True, exist_ok=True)
    (bundle / "requirements.txt").write_bytes(requirements)
    (bundle / "mylib" / "secret.py").write_text("KEY = 'the bundle's own'\n")
    engine = FakeEngine()
    engine.behaviour = lambda spec, out, err: ContainerExit(behaviour(spec))
    held: list[deps.Deps] = []

    def ensure(**more: object) -> deps.Deps:
        found = deps.ensure(
            engine,
            cache_root=tmp_path / "cache",
            image="img",
            image_id="img1",
            bundle_dir=bundle,
            dep_files={"requirements.txt": requirements},
            base_spec=BASE,
            log=lambda line: None,
            timeout=30,
            **{"workspace_id": "ws_a", "bundle_sha": "b1", **kwargs, **more},  # type: ignore[arg-type]
        )
        held.append(found)
        return found

    try:
        yield ensure
    finally:
        for found in held:
            found.release()
        assert not list(rootfs.mounts_under(tmp_path)), "a tmpfs was left mounted"


def test_an_index_install_sees_its_dependency_files_alone(tmp_path: Path) -> None:
    seen: list[list[str]] = []

    def install(spec: ContainerSpec) -> int:
        seen.append(sorted(os.listdir(mounted_at(spec, BUNDLE_SOURCE).host)))
        return 0

    with installing(tmp_path, install) as ensure:
        assert ensure().status == "installed"
    assert seen == [["requirements.txt"]]  # no mylib/secret.py: nothing else of the bundle


def test_an_install_that_names_the_bundle_sees_it_and_is_its_alone(tmp_path: Path) -> None:
    """F5: a changed local package installs again, and another workspace's same files install
    for that workspace; an index install is shared."""
    bundles: list[str] = []

    def install(spec: ContainerSpec) -> int:
        bundles.append(mounted_at(spec, BUNDLE_SOURCE).host)
        return 0

    with installing(tmp_path, install, LOCAL) as ensure:
        assert ensure().status == "installed"
        assert bundles == [str(tmp_path / "bundle")]
        assert ensure().status == "cached"
        assert ensure(bundle_sha="b2").status == "installed"  # the package changed
        assert ensure(workspace_id="ws_b").status == "installed"  # same bytes, another workspace
    assert len(bundles) == 3


def test_an_install_runs_in_a_writable_copy_of_what_it_sees(tmp_path: Path) -> None:
    """tB#2: as `pip install -r requirements.txt` in the agent's directory: the install copies the
    bundle (read-only at BUNDLE_SOURCE) to a writable /opt/orch/bundle on its own tmpfs and runs
    there, so `./pkg` and `-e ./pkg` name the bundle's package and setuptools can write its
    egg-info next to it; an editable one is installed as a regular one. The copy is not kept."""
    checked: dict[str, object] = {}

    def install(spec: ContainerSpec) -> int:
        source, copy, written = (mounted_at(spec, path) for path in (BUNDLE_SOURCE, BUNDLE, DEPS))
        checked["source"] = (source.host, source.read_only)
        checked["copy"] = (
            copy.read_only,
            Path(copy.host).parent == Path(written.host),  # on the install's tmpfs, in its limits
            os.stat(copy.host).st_uid,
            os.listdir(copy.host),  # the sandbox makes the copy
        )
        script = spec.argv[2]
        steps = [f"cp -R {BUNDLE_SOURCE}/. {BUNDLE}/\n", f"cd {BUNDLE}\n", "UV_NO_EDITABLE=1 uv pip install"]
        at = [script.find(step) for step in steps]
        checked["steps"] = -1 not in at and at == sorted(at)
        checked["relative"] = (script.count("-r requirements.txt"), f"{BUNDLE}/requirements.txt" in script)
        (Path(copy.host) / "mylib" / "mylib.egg-info").mkdir(parents=True)  # as setuptools builds
        return 0

    with installing(tmp_path, install, b"-e ./mylib\n") as ensure:
        found = ensure()
    assert checked == {
        "source": (str(tmp_path / "bundle"), True),
        "copy": (False, True, 1000, []),
        "steps": True,
        "relative": (2, False),
    }
    assert found.status == "installed"
    kept = Path(found.mounts[0].host).parent
    assert sorted(p.name for p in kept.iterdir() if p.is_dir()) == ["node", "python"]


def tmpfs_size(path: str) -> int:
    vfs = os.statvfs(path)
    return vfs.f_blocks * vfs.f_frsize


def test_an_install_writes_on_a_tmpfs_sized_to_its_memory_then_its_result_is_copied(tmp_path: Path) -> None:
    """F6: what an install writes lies on a tmpfs of its own memory limit (its pages counted in
    it), never on the disk, until it ended well; the copy keeps links as links (never followed),
    hard links as links, the install's owner, modes and times, and leaves other kinds out."""
    checked: dict[str, object] = {}

    def install(spec: ContainerSpec) -> int:
        host = mounted_at(spec, DEPS).host
        assert not mounted_at(spec, DEPS).read_only
        checked["fs"] = dict(rootfs.mount_table()).get(host)
        checked["size"] = tmpfs_size(host)
        checked["limits"] = (spec.memory_bytes, spec.tmpfs[SCRATCH])
        package = Path(host) / "python" / "pk"
        package.mkdir()
        (package / "__init__.py").write_text("X = 1\n")
        os.utime(package / "__init__.py", ns=(1_000_000_000, 1_000_000_000))
        os.chown(package / "__init__.py", 1000, 1000)
        (package / "__init__.py").chmod(0o4640)  # a set-id bit is not kept
        os.link(package / "__init__.py", package / "same.py")
        (package / "passwd").symlink_to("/etc/passwd")
        os.mkfifo(package / "fifo")
        return 0

    with installing(tmp_path, install, memory=64 * MiB) as ensure:
        found = ensure()
    assert checked == {
        "fs": "tmpfs",
        "size": 64 * MiB,
        "limits": (64 * MiB, f"rw,exec,nosuid,nodev,size={64 * MiB},mode=1777"),
    }
    cached = Path(found.mounts[0].host) / "pk"
    st = os.stat(cached / "__init__.py")
    assert (cached / "__init__.py").read_text() == "X = 1\n"
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode), st.st_mtime_ns) == (1000, 1000, 0o640, 10**9)
    assert st.st_ino == os.stat(cached / "same.py").st_ino
    assert os.readlink(cached / "passwd") == "/etc/passwd"
    assert not (cached / "fifo").exists()
    assert [p.name for p in (tmp_path / "cache").iterdir() if deps_cache.TMP in p.name] == []


def test_an_install_cannot_write_more_than_its_memory(tmp_path: Path) -> None:
    """A disk bomb in a build backend ends with ENOSPC, on the tmpfs: the disk gets nothing."""
    failed: list[int] = []

    def install(spec: ContainerSpec) -> int:
        with open(Path(mounted_at(spec, DEPS).host) / "python" / "ballast", "wb") as f:
            try:
                for _ in range(17):
                    f.write(b"\0" * MiB)
            except OSError as e:
                failed.append(e.errno)
                return 1
        return 0

    with installing(tmp_path, install, memory=16 * MiB) as ensure, pytest.raises(InstallFailed):
        ensure()
    assert failed == [errno.ENOSPC]
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [key(SIX) + ".lock"]  # nothing kept


def key(requirements: bytes) -> str:
    return deps.cache_key({"requirements.txt": requirements}, "img1", workspace_id="ws_a", bundle_sha="b1")


@pytest.mark.parametrize("plant", ["link python", "file node", "sparse", "complete link"])
def test_what_an_install_plants_is_never_followed_on_the_host(tmp_path: Path, plant: str) -> None:
    """The run's sandbox binds the entry's python and node/node_modules: they must be
    directories, not links to the host's; a sparse file may not claim more than the tmpfs; a
    `.complete` the install made is not written through."""
    victim = tmp_path / "victim"
    victim.write_text("untouched\n")

    def install(spec: ContainerSpec) -> int:
        host = Path(mounted_at(spec, DEPS).host)
        if plant == "link python":
            os.rmdir(host / "python")
            (host / "python").symlink_to("/etc")
        elif plant == "file node":
            (host / "node" / "node_modules").write_text("")
        elif plant == "sparse":
            with open(host / "python" / "sparse", "wb") as f:
                f.truncate(64 * MiB)
        else:
            (host / ".complete").symlink_to(victim)
        return 0

    with installing(tmp_path, install, memory=16 * MiB) as ensure:
        if plant == "complete link":
            assert ensure().status == "installed"
            assert ensure().status == "cached"
        else:
            with pytest.raises(InstallFailed):
                ensure()
            assert not (tmp_path / "cache" / key(SIX)).exists()
    assert victim.read_text() == "untouched\n"


def test_an_install_runs_within_its_admission(tmp_path: Path) -> None:
    """F10: the install's memory is asked of the caller's budget (admit) and held while it runs;
    one cancelled while it waits installs nothing."""
    held: list[str] = []

    @contextlib.contextmanager
    def admit(need: int) -> Iterator[bool]:
        held.append(f"take {need}")
        yield True
        held.append(f"give {need}")

    def install(spec: ContainerSpec) -> int:
        held.append("install")
        return 0

    with installing(tmp_path, install, memory=32 * MiB, admit=admit) as ensure:
        ensure()
        assert held == [f"take {32 * MiB}", "install", f"give {32 * MiB}"]

    @contextlib.contextmanager
    def refused(need: int) -> Iterator[bool]:
        yield False

    with installing(tmp_path / "2", install, admit=refused) as ensure, pytest.raises(deps.Cancelled):
        ensure()


def entry(root: Path, key: str, size: int, used_at: float) -> Path:
    path = root / key
    (path / "python").mkdir(parents=True)
    deps_cache.mark_complete(path, "requirements.txt", size)
    os.utime(path / deps_cache.COMPLETE, (used_at, used_at))
    return path


def test_the_cache_drops_its_least_recently_used_entries_beyond_its_size(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    for i, name in enumerate(["old", "used", "installing", "new"]):
        entry(root, f"{i}{name}", 100 * MiB, 1000 + i)
    in_use = deps_cache.Use(root, "1used")
    with deps_cache.install_lock(root, "2installing"):
        assert deps_cache.evict(root, 300 * MiB) == ["0old"]  # then it fits
    in_use.release()
    assert sorted(p.name for p in root.iterdir() if "." not in p.name) == ["1used", "2installing", "3new"]
    # Beyond the size, an entry in use (or being installed) stays: the next one goes instead.
    in_use = deps_cache.Use(root, "1used")
    assert deps_cache.evict(root, 150 * MiB) == ["2installing", "3new"]
    in_use.release()
    assert deps_cache.evict(root, 150 * MiB) == []
    assert deps_cache.evict(root, 50 * MiB) == ["1used"]


def test_a_cached_lookup_marks_its_entry_used(tmp_path: Path) -> None:
    with installing(tmp_path, lambda spec: 0, cache_size=10**12) as ensure:
        ensure()
        marker = tmp_path / "cache" / key(SIX) / deps_cache.COMPLETE
        os.utime(marker, (1000, 1000))
        ensure()
        assert marker.stat().st_mtime > 1000


def test_sweep_removes_what_killed_installs_left_and_nothing_under_way(tmp_path: Path) -> None:
    """F7: a KEY.tmp-PID-NS (its tmpfs still mounted) whose install lock nobody holds was left
    by a killed server; one whose lock is held is an install under way."""
    root = tmp_path / "cache"
    left = root / "aaa.tmp-123-456"
    (left / "deps").mkdir(parents=True)
    rootfs.mount("tmpfs", left / "deps", "tmpfs", 0, "size=1m")
    try:
        (left / "out" / "python").mkdir(parents=True)
        (root / "aaa.lock").touch()
        going = root / "bbb.tmp-1-2"
        going.mkdir()
        kept = entry(root, "ccc", 1, 1000)
        (root / "ccc.lock").touch()
        # An entry an older server made (keyed without the bundle, however its install read it).
        (root / "ddd" / "python").mkdir(parents=True)
        (root / "ddd" / deps_cache.COMPLETE).write_text("requirements.txt\n")
        with deps_cache.install_lock(root, "bbb"):
            assert deps_cache.sweep(root) == 2
            assert going.exists()
        assert not left.exists() and not list(rootfs.mounts_under(root))
        assert not (root / "aaa.lock").exists()  # its entry is gone: its lock file too
        assert kept.exists() and (root / "ccc.lock").exists()
        assert not (root / "ddd").exists()
    finally:
        for point in rootfs.mounts_under(tmp_path):
            rootfs.umount(point)


def test_a_lock_file_swept_under_a_waiting_lookup_is_not_held_by_it(tmp_path: Path) -> None:
    """A lookup waiting on KEY.lock while the sweep removes it takes the lock file at that path
    afterwards, not the removed one (which nobody else would ever wait on)."""
    root = tmp_path / "cache"
    root.mkdir()
    taken = threading.Event()
    done = threading.Event()

    def lookup() -> None:
        with deps_cache.install_lock(root, "k"):
            taken.set()
            done.wait(10)

    with (root / "k.lock").open("a") as first:
        fcntl.flock(first, fcntl.LOCK_EX)
        waiting = threading.Thread(target=lookup)
        waiting.start()
        time.sleep(0.2)
        (root / "k.lock").unlink()  # as the sweep does while it holds it
    assert taken.wait(10)
    with (root / "k.lock").open("a") as second, pytest.raises(BlockingIOError):
        fcntl.flock(second, fcntl.LOCK_EX | fcntl.LOCK_NB)
    done.set()
    waiting.join(10)
