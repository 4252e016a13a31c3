"""The logic of held sandboxes without a runtime: the process-tree kill, the runtime's messages,
paths, limits and the output cap (the stream pump: test_pump.py)."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from orch.engine.base import ContainerSpec
from orch.errors import ClientGone, InvalidInput
from orch.sandbox import held, runc
from orch.services import sandboxes


def test_kill_tree_takes_the_group_and_the_tree_but_not_the_ones_that_left(tmp_path: Path) -> None:
    marker = tmp_path / "left"
    proc = subprocess.Popen(
        [
            "sh",
            "-c",
            f"sleep 300 & (sleep 301 &) & (setsid sh -c 'echo $$ > {marker}; exec sleep 302' &); sleep 303",
        ],
        start_new_session=True,
    )
    deadline = time.monotonic() + 5
    while not marker.exists() or not marker.read_text().strip():
        assert time.monotonic() < deadline
        time.sleep(0.02)
    time.sleep(0.2)
    left = int(marker.read_text())
    group = [p for p, (_parent, pgid) in held._host_processes().items() if pgid == proc.pid]
    assert len(group) >= 3  # the shell, sleep 300, the orphaned sleep 301 (sleep 303 too)
    killed = held.kill_tree(proc.pid, held._namespace(os.getpid()))
    proc.wait(5)
    assert killed >= 3
    deadline = time.monotonic() + 5
    while [p for p, (_parent, pgid) in held._host_processes().items() if pgid == proc.pid]:
        assert time.monotonic() < deadline, "the group outlived the kill"
        time.sleep(0.05)
    assert left in held._host_processes()  # a new session of its own, orphaned: left running
    os.kill(left, 9)


def test_kill_tree_touches_nothing_of_another_namespace() -> None:
    proc = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        assert held.kill_tree(proc.pid, "pid:[1]") == 0
        assert proc.poll() is None
    finally:
        proc.kill()
        proc.wait()


def test_below_walks_children() -> None:
    parents = {2: 1, 3: 2, 4: 3, 5: 1, 6: 99}
    assert held._below(2, parents) == {2, 3, 4}


def test_runtime_messages_lose_their_log_prefix() -> None:
    line = 'time="2026-12-02T00:46:54Z" level=error msg="exec failed: chdir to cwd (\\"/x\\") failed"'
    assert held._runtime_message(line) == 'exec failed: chdir to cwd ("/x") failed'
    assert held._runtime_message("plain words") == "plain words"


@pytest.mark.parametrize(
    ("given", "found"),
    [
        ("a.txt", "/home/user/a.txt"),
        ("dir/a", "/home/user/dir/a"),
        ("/etc/hosts", "/etc/hosts"),
        ("../x", "/home/user/../x"),
    ],
)
def test_paths_are_absolute_or_under_home(given: str, found: str) -> None:
    assert sandboxes.path_in_sandbox(given) == found


@pytest.mark.parametrize(
    ("given", "said"),
    [("", "The path is empty."), ("a\x00b", "NUL"), ("a" * 4097, "longer than 4096 bytes")],
)
def test_bad_paths(given: str, said: str) -> None:
    with pytest.raises(InvalidInput, match=said):
        sandboxes.path_in_sandbox(given)


def test_limits_are_read_as_the_manifest_reads_them() -> None:
    default = sandboxes.limits(None, None)
    assert (default.memory_bytes, default.cpus, default.pids) == (512 * 2**20, 1.0, 256)
    assert sandboxes.limits("1Gi", 2).memory_bytes == 2**30
    with pytest.raises(
        InvalidInput, match=r"^memory: '65Gi' is more than the maximum of 64 GiB\. Use at most 64Gi\.$"
    ):
        sandboxes.limits("65Gi", None)
    with pytest.raises(InvalidInput, match=r"^cpus: 'many' is not a number of CPUs\."):
        sandboxes.limits(None, "many")  # type: ignore[arg-type]


def test_the_output_cap_counts_what_it_drops(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sandboxes, "MAX_OUTPUT", 4)
    cap = sandboxes.Capped()
    cap(b"ab")
    cap(b"cdef")
    assert (cap.text(), cap.size, cap.cut) == ("abcd", 6, True)


def test_file_errors_are_sentences() -> None:
    e = held.file_error("read", "/x", "cat: /x: No such file or directory", 1)
    assert (type(e).__name__, e.message) == ("NotFound", "No file /x in the sandbox.")
    e = held.file_error("write", "/etc/x", "/bin/sh: 1: cannot create /etc/x: Permission denied", 2)
    assert e.message == "Could not write /etc/x in the sandbox: Permission denied."
    assert "can write under /home/user and /tmp" in e.fix
    e = held.file_error("read", "/x", "orch: cat: command not found", 127)
    assert e.message == "The sandbox's image has no cat to read files with."
    e = held.file_error("write", "/d/", "orch: /d: No such directory", 1)
    assert (type(e).__name__, e.message) == ("NotFound", "No directory /d in the sandbox.")


@pytest.mark.parametrize(
    ("said", "fix"),
    [
        ("cat: /root/x: Permission denied", "The sandbox user (uid 1000) may not read it"),
        ("cat: /tmp: Is a directory", "Give the path of one file"),
        ("cat: /x: Input/output error", "files are read as the sandbox user"),
    ],
)
def test_a_read_s_fix_is_about_reading(said: str, fix: str) -> None:
    e = held.file_error("read", "/x", said, 1)
    assert e.fix.startswith(fix) or fix in e.fix
    assert "write" not in e.fix


@pytest.mark.parametrize(
    ("given", "found"),
    [
        ("/tmp", ("/tmp", False)),
        ("/tmp/", ("/tmp", True)),
        ("/home/user/.", ("/home/user", True)),
        ("/home/user/a/./", ("/home/user/a", True)),
        ("/", ("/", False)),
        ("/.", ("/", True)),
        ("/home/user/..", ("/home/user/..", False)),
        ("/home/user/x.", ("/home/user/x.", False)),
    ],
)
def test_the_directory_form_of_a_path(given: str, found: tuple[str, bool]) -> None:
    assert held.directory_form(given) == found


def _write(root: Path, path: str, name: str = "") -> subprocess.CompletedProcess[str]:
    """held's write script, run by this machine's /bin/sh (the images' is dash or busybox)."""
    where, marked = held.directory_form(str(root / path.lstrip("/")) + ("/" if path.endswith("/") else ""))
    argv = ["/bin/sh", "-c", held._WRITE, "orch-write", where, name, "1" if marked else ""]
    return subprocess.run(argv, input="data", capture_output=True, text=True, check=False)


def test_the_write_script_puts_a_file_in_a_directory_under_its_own_name(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    done = _write(tmp_path, "d", "notes.txt")
    assert (done.returncode, done.stdout) == (0, f"{tmp_path}/d/notes.txt")
    assert (tmp_path / "d" / "notes.txt").read_text() == "data"
    assert _write(tmp_path, "d/", "more.txt").stdout == f"{tmp_path}/d/more.txt"
    done = _write(tmp_path, "new/deep/file", "ignored")  # a file's path: parents made, no name used
    assert (done.returncode, done.stdout) == (0, f"{tmp_path}/new/deep/file")
    before = sorted(p.name for p in tmp_path.rglob("*"))
    done = _write(tmp_path, "sub/dir/", "x")  # must be a directory and is none: nothing made
    assert done.returncode == 1 and done.stderr.strip().endswith(": No such directory")
    done = _write(tmp_path, "d")  # a directory without a name to write under
    assert done.returncode == 1 and done.stderr.strip().endswith(": Is a directory")
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


@pytest.mark.parametrize(
    ("command", "code", "said"),
    [
        ("/etc/passwd", 126, "orch: /etc/passwd: Permission denied\n"),
        ("/tmp", 126, "orch: /tmp: Is a directory\n"),
        ("no-such-program", 127, "orch: no-such-program: command not found\n"),
        ("/no/such/file", 127, "orch: /no/such/file: command not found\n"),
    ],
)
def test_a_command_that_cannot_run_is_said_as_orch_s(command: str, code: int, said: str) -> None:
    """The handover shell, run as runc runs it (fds 3-5 the command's streams), says what a
    shell would, as orch: never its own internal name."""
    argv = ["/bin/sh", "-c", 'exec "$@" 3<&0 4>&1 5>&2 0</dev/null', "x", *held._HANDOVER, command]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert (done.returncode, done.stderr) == (code, said)
    assert subprocess.run([*argv[:4], *held._HANDOVER, "true"], check=False).returncode == 0


def _read(path: Path) -> subprocess.CompletedProcess[bytes]:
    """held's read script, run by this machine's /bin/sh, as the sandbox's would run it."""
    argv = ["/bin/sh", "-c", held._READ, "orch-read", str(path)]
    return subprocess.run(argv, capture_output=True, timeout=10, check=False)


def test_a_file_call_refuses_what_is_no_regular_file_before_opening_it(tmp_path: Path) -> None:
    """`cat` of a pipe nobody writes blocked forever (and `cat >` of one nobody reads): the scripts
    refuse a pipe, a device or a socket at once, whatever a symlink points them to."""
    fifo, regular = tmp_path / "fifo", tmp_path / "file"
    os.mkfifo(fifo)
    regular.write_bytes(b"\x00bytes")
    (tmp_path / "to-fifo").symlink_to(fifo)
    (tmp_path / "to-file").symlink_to(regular)
    for special in (fifo, tmp_path / "to-fifo", Path("/dev/zero"), Path("/dev/null")):
        done = _read(special)  # within the timeout: before, the pipe's never ended
        assert (done.returncode, done.stdout) == (1, b"")
        assert done.stderr.decode().strip() == f"orch: {special}: Not a regular file"
        e = held.file_error("read", str(special), done.stderr.decode(), done.returncode)
        assert e.message == f"Could not read {special} in the sandbox: Not a regular file."
        assert "regular files only" in e.fix and "head -c 1000 PATH" in e.fix
    assert _read(regular).stdout == _read(tmp_path / "to-file").stdout == b"6\n\x00bytes"  # its size first
    assert _read(tmp_path / "missing").stderr.decode().strip().endswith("No such file or directory")
    assert _read(tmp_path).stderr.decode().strip().endswith("Is a directory")
    done = _write(tmp_path, "fifo")
    assert (done.returncode, done.stderr.strip()) == (1, f"orch: {fifo}: Not a regular file")
    e = held.file_error("write", str(fifo), done.stderr, done.returncode)
    assert "cat > PATH" in e.fix
    (tmp_path / "d").mkdir()
    os.mkfifo(tmp_path / "d" / "named")
    assert _write(tmp_path, "d", "named").stderr.strip().endswith("named: Not a regular file")
    assert _write(tmp_path, "file").returncode == 0 and regular.read_text() == "data"


def test_a_file_call_that_did_not_end_by_itself_is_said() -> None:
    with pytest.raises(InvalidInput) as raised:
        held.file_ended("read", "/x", held.ExecResult(124, 20.0, timed_out=True), 20.0)
    assert raised.value.message == "Reading /x in the sandbox took more than 20 s; it was stopped."
    with pytest.raises(ClientGone):
        held.file_ended("write", "/x", held.ExecResult(137, 1.0, cancelled=True), 20.0)
    held.file_ended("read", "/x", held.ExecResult(1, 1.0), 20.0)  # its own end: file_error's to say


def test_places_are_checked_and_counted_in_one_step() -> None:
    places, go, taken = held.Places(), threading.Barrier(40), []

    def claim() -> None:
        go.wait()
        taken.append(places.claim(16))

    threads = [threading.Thread(target=claim) for _ in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert taken.count(True) == 16 and places.taken == 16
    places.release()
    assert places.claim(16) and not places.claim(16)


@pytest.mark.parametrize(("listed", "warned"), [([], False), (["orch-x-sb-sbx_a"], True)])
def test_a_runsc_delete_that_failed_on_what_was_gone_already_says_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, listed: list[str], warned: bool
) -> None:
    """After a killed server, runsc's delete fails on the filestore file its sandbox took with
    it, having removed the container: nothing is left, so no "was not cleaned up fully"."""
    launcher = runc.Launcher(runtime="runsc", prefix="orch-x-", state=tmp_path, pool_size=0)
    launcher.runtime_root.mkdir(parents=True)
    said = (
        'destroying container: failed to delete filestore file "/run/x/rootfs/.gvisor.filestore.x": '
        "remove /run/x/rootfs/.gvisor.filestore.x: no such file or directory"
    )

    def runtime(*args: str, **_kw: object) -> subprocess.CompletedProcess[str]:
        if args[0] == "delete":
            return subprocess.CompletedProcess(list(args), 128, "", said)
        assert args[0] == "list"
        return subprocess.CompletedProcess(list(args), 0, json.dumps([{"id": n} for n in listed]), "")

    monkeypatch.setattr(launcher, "_runtime", runtime)
    monkeypatch.setattr(runc, "remove_cgroup_parent", lambda *_a, **_kw: None)
    problems = launcher.teardown("orch-x-sb-sbx_a")
    assert bool(problems) == warned
    if warned:
        assert "failed to delete filestore file" in problems


def test_a_read_keeps_only_what_it_was_given_room_for() -> None:
    """Each part read asks for room first (the server's bound on file bytes it holds); once
    refused, nothing more is kept and the read may stop."""
    room = [10]

    def take(size: int) -> bool:
        if size > room[0]:
            return False
        room[0] -= size
        return True

    out = held._Collected(100, take)
    out(b"abcd")
    out(b"efgh")
    assert not out.ended() and out.data() == b"abcdefgh"
    out(b"ijkl")
    out(b"mn")  # room for it, but the read was refused already
    assert out.refused and out.ended() and out.data() == b"abcdefgh" and room == [2]
    unbounded = held._Collected(4)
    unbounded(b"abcde")
    assert unbounded.full() and unbounded.ended() and not unbounded.refused


def test_a_removal_finishes_while_the_commands_remove_their_own_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The tester's removal of a sandbox whose streamed commands were being killed: each killed
    command unlinks its own exec-*.pid and exec-*.json in the bundle while the teardown removes
    the bundle. A file gone under rmtree stopped it half-way ("was not cleaned up fully: [Errno 2]
    ... exec-....pid"), leaving the bundle until the next start. Here a command's cleanup takes
    its files between the teardown's listing of the directory and its unlink, every time."""
    launcher = runc.Launcher(runtime="runc", prefix="orch-x-", state=tmp_path, pool_size=0)
    name = "orch-x-sb-sbx_a"
    bundle = tmp_path / "sandboxes" / name
    bundle.mkdir(parents=True)
    for file in ("config.json", "hosts", "pid", "exec-1.pid", "exec-1.json", "exec-2.pid"):
        (bundle / file).write_text("x")
    monkeypatch.setattr(runc, "remove_cgroup_parent", lambda *_a, **_kw: None)
    real_unlink = os.unlink
    raced: list[str] = []

    def unlink(path: str | Path, *, dir_fd: int | None = None) -> None:
        if str(path).startswith("exec-"):  # the command's own cleanup comes first
            real_unlink(path, dir_fd=dir_fd)
            raced.append(str(path))
        real_unlink(path, dir_fd=dir_fd)

    monkeypatch.setattr(os, "unlink", unlink)
    assert launcher.teardown(name) == ""
    monkeypatch.undo()
    assert sorted(raced) == ["exec-1.json", "exec-1.pid", "exec-2.pid"]
    assert not bundle.exists()


def test_a_bundle_that_got_a_file_meanwhile_is_removed_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A command starting as its sandbox goes writes its exec-*.json after the listing: the
    directory is not empty at its rmdir, and the removal goes round again."""
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "config.json").write_text("x")
    real_rmdir = os.rmdir
    made: list[bool] = []

    def rmdir(path: str | Path, *, dir_fd: int | None = None) -> None:
        if not made:
            made.append(True)
            (bundle / "exec-3.json").write_text("x")
        real_rmdir(path, dir_fd=dir_fd)

    monkeypatch.setattr(os, "rmdir", rmdir)
    runc.remove_tree(bundle)
    monkeypatch.undo()
    assert made and not bundle.exists()


def test_kill_tree_looks_only_at_the_sandbox_s_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Told the processes of the sandbox's cgroup, it reads those alone, never every host
    process: 320 commands killed at once, each reading all of /proc a few times, held the GIL
    (and with it the server's event loop, /healthz) for up to 14 s."""
    proc = subprocess.Popen(["sh", "-c", "sleep 300 & sleep 301 & wait"], start_new_session=True)
    try:
        deadline = time.monotonic() + 5
        while len(members := held._below(proc.pid, {p: v[0] for p, v in held._host_processes().items()})) < 3:
            assert time.monotonic() < deadline, "the shell never started its sleeps"
            time.sleep(0.02)
        looked: list[int] = []

        def only_these(among: object = None) -> dict[int, tuple[int, int]]:
            assert among is not None, "it looked at every host process"
            listed = list(among)  # type: ignore[call-overload]
            looked.extend(listed)
            return found(listed)

        found = held._host_processes
        monkeypatch.setattr(held, "_host_processes", only_these)
        assert held.kill_tree(proc.pid, held._namespace(os.getpid()), members=lambda: set(members)) == 3
        assert set(looked) == members
        proc.wait(5)
    finally:
        proc.kill()
        proc.wait()


class _Here(held.RuncSandbox):
    """A held sandbox whose commands run on this machine (its /bin/sh and coreutils), with `PATH`
    as given: what `write_file` and `read_file` do around their scripts, without a runtime."""

    def __init__(self, path: str = os.environ.get("PATH", "")) -> None:
        self.path = path
        self.spec = ContainerSpec(image="x", argv=[], name="x", labels={}, memory_bytes=32 * 2**20)
        self.commands: list[list[str]] = []

    def exec(  # type: ignore[override]
        self,
        argv: list[str],
        *,
        stdin: bytes = b"",
        on_stdout: held.Output = held._ignore,
        on_stderr: held.Output = held._ignore,
        **_: object,
    ) -> held.ExecResult:
        self.commands.append(list(argv))
        env = {"PATH": self.path, "LC_ALL": "C"}
        done = subprocess.run(argv, input=stdin, capture_output=True, env=env, timeout=10, check=False)
        on_stdout(done.stdout)
        on_stderr(done.stderr)
        return held.ExecResult(done.returncode, 0.0)


def test_a_write_that_fills_the_disk_leaves_no_part_and_says_why(tmp_path: Path) -> None:
    """A write past the sandbox's disk (its tmpfs, half its memory limit) left the part written
    and blamed the path; now nothing of it is left, the file it would replace is as it was, and
    the sentence says the disk is full and how to get more."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    full = bin_dir / "cat"  # a cat that writes a little, then meets a full disk
    full.write_text("#!/bin/sh\nhead -c 5\necho 'cat: write error: No space left on device' >&2\nexit 1\n")
    full.chmod(0o755)
    box = _Here(f"{bin_dir}:{os.environ['PATH']}")
    work = tmp_path / "work"
    work.mkdir()
    (work / "kept").write_text("as it was")
    for target in ("big", "kept"):
        with pytest.raises(InvalidInput) as raised:
            box.write_file(f"{work}/{target}", b"x" * 100)
        assert raised.value.message == (
            f"Could not write {work}/{target} in the sandbox: its disk is full (No space left on device)."
        )
        assert "16 MiB" in raised.value.fix and "--memory" in raised.value.fix
        assert "check the path" not in raised.value.fix
    assert sorted(p.name for p in work.iterdir()) == ["kept"]
    assert (work / "kept").read_text() == "as it was"


def test_a_write_s_path_is_read_as_words_and_named_so(tmp_path: Path) -> None:
    """`a/../../x` wrote x but answered the path as given, and made `a` on the way."""
    box = _Here()
    (tmp_path / "d").mkdir()
    written = box.write_file(f"{tmp_path}/a/../b/./../d/../t", b"data")
    assert written == f"{tmp_path}/t" and (tmp_path / "t").read_bytes() == b"data"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d", "t"]  # no a, no b
    assert box.write_file(f"{tmp_path}//d/x/../", b"in", "named") == f"{tmp_path}/d/named"
    assert held.lexical("/home/user/a/../../../../tmp/t") == "/tmp/t"
    assert held.lexical("//x/./y/") == "/x/y/"
    assert held.lexical("/..") == "/"


def test_a_write_replaces_a_file_as_a_whole_and_keeps_what_it_had(tmp_path: Path) -> None:
    """Written beside it, then renamed into place: its mode is kept, a symlink still leads to
    the file it names, and nothing is left beside it."""
    box = _Here()
    script = tmp_path / "run.sh"
    script.write_text("old")
    script.chmod(0o750)
    (tmp_path / "link").symlink_to(script)
    box.write_file(f"{tmp_path}/link", b"new")
    assert (tmp_path / "link").is_symlink() and script.read_text() == "new"
    assert script.stat().st_mode & 0o777 == 0o750
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "run.sh"]


def test_a_killed_write_s_part_is_removed(tmp_path: Path) -> None:
    class Killed(_Here):
        def exec(self, argv: list[str], **kwargs: object) -> held.ExecResult:  # type: ignore[override]
            if argv[3] == "orch-write":  # it began, then was stopped
                (tmp_path / f".orch-write-{argv[7]}").write_text("part")
                self.commands.append(list(argv))
                return held.ExecResult(124, 20.0, timed_out=True)
            return super().exec(argv, **kwargs)  # type: ignore[arg-type]

    with pytest.raises(InvalidInput, match="took more than 20 s"):
        Killed().write_file(f"{tmp_path}/big", b"x", timeout=20)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("said", "message"),
    [
        (
            "mkdir: cannot create directory \u2018/home/user/link\u2019: File exists",
            "Could not write /home/user/link/x in the sandbox: /home/user/link is not a directory "
            "(a file, or a symlink to a directory that does not exist).",
        ),
        (
            "sh: 1: cannot create /home/user/link/x: Directory nonexistent",
            "Could not write /home/user/link/x in the sandbox: there is no such file, and none can "
            "be made there (the file system there holds no files of the sandbox's own).",
        ),
    ],
)
def test_a_write_s_refusal_says_what_is_true(said: str, message: str) -> None:
    e = held.file_error("write", "/home/user/link/x", said, 1)
    assert e.message == message


def test_a_dangling_symlink_on_the_way_is_said(tmp_path: Path) -> None:
    (tmp_path / "link").symlink_to(tmp_path / "nowhere")
    with pytest.raises(InvalidInput) as raised:
        _Here().write_file(f"{tmp_path}/link/x", b"x")
    assert raised.value.message.endswith(
        f"{tmp_path}/link is not a directory (a file, or a symlink to a directory that does not exist)."
    )


def test_a_write_where_no_file_can_be_made_is_said_so() -> None:
    """/proc makes no files (a masked one, such as /proc/sysrq-trigger, is not there): dash said
    "Directory nonexistent" of a directory that exists, and the temporary file's failed
    redirection on `:` ended the script with nothing said at all."""
    with pytest.raises(InvalidInput) as raised:
        _Here().write_file("/proc/orch-no-such-file", b"x")
    assert raised.value.message == (
        "Could not write /proc/orch-no-such-file in the sandbox: there is no such file, and none "
        "can be made there (the file system there holds no files of the sandbox's own)."
    )
