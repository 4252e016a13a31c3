"""`orch publish`'s packing: what is skipped, deterministic bytes, links, odd files and the size limit."""

from __future__ import annotations

import gzip
import io
import os
import shutil
import tarfile
import tempfile
from pathlib import Path

import pytest

from orch.bundle import pack_directory, read_bundle
from orch.errors import InvalidInput

MiB = 1024**2


def write(root: Path, *paths: str, content: bytes = b"x") -> None:
    for rel in paths:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)


def packed_paths(root: Path) -> list[str]:
    return [f.path for f in pack_directory(root).files]


def refusal(root: Path, **kwargs: int) -> InvalidInput:
    with pytest.raises(InvalidInput) as caught:
        pack_directory(root, **kwargs)
    return caught.value


def test_tool_and_dependency_directories_are_skipped(tmp_path: Path) -> None:
    write(
        tmp_path,
        "main.py",
        "pkg/mod.py",
        ".git/config",
        "node_modules/left-pad/index.js",
        "web/node_modules/x/index.js",
        "__pycache__/main.cpython-311.pyc",
        "pkg/__pycache__/mod.cpython-311.pyc",
        "pkg/stale.pyc",
        ".venv/lib/python3.11/site.py",
        "venv/bin/python",
        "env/bin/activate",
        "myenv/pyvenv.cfg",
        "myenv/lib/x.py",
        "settings/env/prod.json",
        "env2/pyvenv.cfg",
    )
    bundle = pack_directory(tmp_path)
    assert [f.path for f in bundle.files] == ["main.py", "pkg/mod.py", "settings/env/prod.json"]
    assert bundle.skipped == (
        ".git/",
        ".venv/",
        "__pycache__/",
        "env/",
        "env2/",
        "myenv/",
        "node_modules/",
        "pkg/__pycache__/",
        "pkg/stale.pyc",
        "venv/",
        "web/node_modules/",
    )


def test_env_directory_that_is_not_a_virtualenv_is_kept(tmp_path: Path) -> None:
    write(tmp_path, "main.py", "env/__init__.py", "env/settings.py")
    assert packed_paths(tmp_path) == ["env/__init__.py", "env/settings.py", "main.py"]


def test_git_file_of_a_worktree_is_skipped(tmp_path: Path) -> None:
    write(tmp_path, "main.py", ".git")
    assert packed_paths(tmp_path) == ["main.py"]


def test_orchignore_uses_gitignore_rules_and_is_kept(tmp_path: Path) -> None:
    write(tmp_path, "main.py", "data/big.csv", "notes/a.csv", "notes/keep.csv", "build", "src/build/out.js")
    write(tmp_path, "top.txt", "src/top.txt", "docs/readme.md")
    (tmp_path / ".orchignore").write_text(
        "# comment\ndata/\n*.csv\n!keep.csv\n/top.txt\nbuild\ndocs\n.orchignore\n"
    )
    assert packed_paths(tmp_path) == [".orchignore", "main.py", "notes/keep.csv", "src/top.txt"]
    assert pack_directory(tmp_path).skipped == (
        "build",
        "data/",
        "docs/",
        "notes/a.csv",
        "src/build/",
        "top.txt",
    )


def test_same_tree_gives_same_bytes(tmp_path: Path) -> None:
    write(tmp_path, "main.py", "b/two.py", "a/one.py")
    (tmp_path / "run").symlink_to("main.py")
    first = pack_directory(tmp_path)
    os.utime(tmp_path / "main.py", (1, 1))
    os.utime(tmp_path / "a", (2, 2))
    (tmp_path / "b/two.py").chmod(0o664)  # the group bit is not kept, so it changes nothing
    second = pack_directory(tmp_path)
    assert second.data == first.data and second.sha256 == first.sha256
    write(tmp_path, "main.py", content=b"y")
    assert pack_directory(tmp_path).sha256 != first.sha256


def test_same_tree_elsewhere_gives_same_bytes(tmp_path: Path) -> None:
    for where in ("one", "two"):
        write(tmp_path / where, "main.py", "lib/x.py")
    assert pack_directory(tmp_path / "one").sha256 == pack_directory(tmp_path / "two").sha256


def test_archive_has_no_times_owners_or_names(tmp_path: Path) -> None:
    write(tmp_path, "main.py", "lib/x.py")
    (tmp_path / "main.py").chmod(0o700)
    data = pack_directory(tmp_path).data
    assert gzip.decompress(data)  # a plain gzip stream
    assert data[4:8] == b"\0\0\0\0"  # gzip header mtime
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == ["lib", "lib/x.py", "main.py"]
    assert {(m.mtime, m.uid, m.gid, m.uname, m.gname) for m in members} == {(0, 0, 0, "", "")}
    assert [m.mode for m in members] == [0o755, 0o644, 0o755]


def test_bundle_lists_files_and_links(tmp_path: Path) -> None:
    write(tmp_path, "main.py", content=b"12345")
    (tmp_path / "alias.py").symlink_to("main.py")
    bundle = pack_directory(tmp_path)
    assert [(f.path, f.size, f.mode, f.link) for f in bundle.files] == [
        ("alias.py", 0, 0o777, "main.py"),
        ("main.py", 5, 0o644, None),
    ]


def test_links_inside_are_kept_as_relative_links(tmp_path: Path) -> None:
    write(tmp_path, "main.py", "lib/util.py")
    (tmp_path / "rel.py").symlink_to("lib/util.py")
    (tmp_path / "abs.py").symlink_to(tmp_path / "main.py")  # absolute, but inside
    (tmp_path / "lib/up.py").symlink_to("../main.py")
    (tmp_path / "libdir").symlink_to("lib", target_is_directory=True)
    (tmp_path / "dangling.py").symlink_to("gone.py")
    links = {f.path: f.link for f in pack_directory(tmp_path).files if f.link}
    assert links == {
        "abs.py": "main.py",
        "dangling.py": "gone.py",
        "lib/up.py": "../main.py",
        "libdir": "lib",
        "rel.py": "lib/util.py",
    }
    files = read_bundle(pack_directory(tmp_path).data)
    assert files["abs.py"] == files["rel.py"] == files["lib/up.py"] == b"x"
    assert "libdir/util.py" not in files  # a link to a directory is not walked into


@pytest.mark.parametrize("target", ["../outside.txt", "/etc/passwd"])
def test_links_outside_are_refused(tmp_path: Path, target: str) -> None:
    root = tmp_path / "agent"
    write(root, "main.py")
    write(tmp_path, "outside.txt")
    (root / "leak").symlink_to(target)
    error = refusal(root)
    assert error.message == f"leak is a link to {target}, which is outside {root}."
    assert ".orchignore" in error.fix


def test_a_link_outside_names_the_directory_as_an_absolute_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`orch publish .`: "outside .." read as the parent directory; the message names the
    directory itself."""
    root = tmp_path / "agent"
    write(root, "main.py")
    (root / "link").symlink_to("/etc/passwd")
    monkeypatch.chdir(root)
    assert refusal(Path(".")).message == f"link is a link to /etc/passwd, which is outside {root}."


def test_link_leading_out_through_another_link_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "agent"
    write(root, "main.py", "lib/deep/x.py")
    (root / "door").symlink_to("lib/deep")  # inside: lib/deep
    (root / "through").symlink_to("door/../../..")  # lexically `.`, really the parent of the root
    assert refusal(root).message == f"through is a link to door/../../.., which is outside {root}."


def test_ignored_link_outside_is_fine(tmp_path: Path) -> None:
    root = tmp_path / "agent"
    write(root, "main.py")
    (root / "leak").symlink_to("/etc")
    (root / ".orchignore").write_text("leak\n")
    assert packed_paths(root) == [".orchignore", "main.py"]


def test_named_pipe_is_refused_unless_ignored(tmp_path: Path) -> None:
    write(tmp_path, "main.py")
    os.mkfifo(tmp_path / "pipe")
    error = refusal(tmp_path)
    assert error.message == "pipe is a named pipe; a bundle holds files, directories and links only."
    assert ".orchignore" in error.fix
    (tmp_path / ".orchignore").write_text("pipe\n")
    assert packed_paths(tmp_path) == [".orchignore", "main.py"]


def _refusal_as_nobody(root: Path) -> str:
    """pack_directory's refusal message, computed in a child that dropped root (root reads any file)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        os.close(read_end)
        message = "no refusal"
        try:
            if os.geteuid() == 0:
                os.setgroups([])
                os.setgid(65534)
                os.setuid(65534)
            pack_directory(root)
        except InvalidInput as e:
            message = e.message
        except BaseException as e:
            message = f"unexpected {e!r}"
        os.write(write_end, message.encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as f:
        message = f.read().decode()
    os.waitpid(pid, 0)
    return message


def test_unreadable_file_and_directory() -> None:
    root = Path(tempfile.mkdtemp(prefix="orch-unreadable-"))
    try:
        root.chmod(0o755)
        write(root, "main.py", "secret.key", "private/x.py")
        for path in (root / "main.py", root / "private" / "x.py"):
            path.chmod(0o644)
        (root / "private").chmod(0o755)
        (root / "secret.key").chmod(0)
        assert _refusal_as_nobody(root) == "Can't read secret.key: Permission denied."
        (root / "secret.key").chmod(0o644)
        (root / "private").chmod(0)
        assert _refusal_as_nobody(root) == "Can't read private: Permission denied."
    finally:
        (root / "private").chmod(0o755)
        shutil.rmtree(root)


def test_names_the_server_would_refuse_are_refused_here(tmp_path: Path) -> None:
    write(tmp_path, "main.py", "back\\slash.py")
    error = refusal(tmp_path)
    assert error.message == "'back\\\\slash.py' has a backslash in its name."
    assert "Rename it" in error.fix


def test_size_limit_names_the_size_and_biggest_files(tmp_path: Path) -> None:
    write(tmp_path, "main.py")
    write(tmp_path, "data/model.bin", content=bytes(3 * MiB))
    write(tmp_path, "data/sample.csv", content=bytes(MiB))
    write(tmp_path, "video.mp4", content=bytes(2 * MiB))
    write(tmp_path, "small.txt", content=bytes(1000))
    error = refusal(tmp_path, max_bytes=5 * MiB)
    assert error.message == (
        f"{tmp_path} holds 6 MiB of files, over the 5 MiB limit. "
        "Biggest: data/model.bin (3 MiB), video.mp4 (2 MiB), data/sample.csv (1 MiB)."
    )
    assert ".orchignore" in error.fix
    (tmp_path / ".orchignore").write_text("data/\n")
    assert pack_directory(tmp_path, max_bytes=5 * MiB).files


def test_too_many_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("orch.bundle.pack.MAX_FILES", 3)
    write(tmp_path, "a.py", "b.py", "c.py")
    assert len(packed_paths(tmp_path)) == 3
    write(tmp_path, "d.py")
    error = refusal(tmp_path)
    assert error.message == f"{tmp_path} has more than 3 files and directories to publish."


@pytest.mark.parametrize("setup", ["missing", "file"])
def test_root_must_be_a_directory(tmp_path: Path, setup: str) -> None:
    root = tmp_path / "agent"
    if setup == "file":
        root.write_text("x")
    error = refusal(root)
    assert error.message == f"{root} {'does not exist' if setup == 'missing' else 'is not a directory'}."


def test_directory_with_nothing_to_publish(tmp_path: Path) -> None:
    write(tmp_path, "node_modules/x.js", "__pycache__/a.pyc")
    (tmp_path / "empty").mkdir()
    assert refusal(tmp_path).message == f"{tmp_path} has no files to publish."


def test_root_given_through_a_link(tmp_path: Path) -> None:
    write(tmp_path / "real", "main.py", "lib/x.py")
    (tmp_path / "real/self").symlink_to(tmp_path / "real")
    (tmp_path / "alias").symlink_to(tmp_path / "real")
    bundle = pack_directory(tmp_path / "alias")
    assert {f.path: f.link for f in bundle.files} == {"lib/x.py": None, "main.py": None, "self": "."}


def test_unreadable_paths_as_any_user(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The same refusals as above, with the permission error simulated so that root runs them too.
    write(tmp_path, "main.py", "secret.key", "private/x.py")
    real_open, real_scandir = os.open, os.scandir

    def deny_open(path: os.PathLike[str], flags: int, *args: int, **kwargs: int) -> int:
        if Path(path).name == "secret.key":
            raise PermissionError(13, "Permission denied")
        return real_open(path, flags, *args, **kwargs)

    def deny_scandir(path: os.PathLike[str]) -> object:
        if Path(path).name == "private":
            raise PermissionError(13, "Permission denied")
        return real_scandir(path)

    monkeypatch.setattr("orch.bundle.pack.os.open", deny_open)
    assert refusal(tmp_path).message == "Can't read secret.key: Permission denied."
    monkeypatch.setattr("orch.bundle.walk.os.scandir", deny_scandir)
    error = refusal(tmp_path)
    assert error.message == "Can't read private: Permission denied."
    assert "Fix its permissions" in error.fix


def test_a_long_path_is_quoted_by_its_start_and_end(tmp_path: Path) -> None:
    deep = "/".join(["d" * 200] * 6)
    write(tmp_path, "main.py", f"{deep}/x.py")
    error = refusal(tmp_path)
    # The directory is the first path over the bound.
    assert error.message == f"'{deep[:60]}…{deep[-60:]}' has a path longer than 1024 bytes."
