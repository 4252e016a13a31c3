"""Unpacking on the server: modes masked, links made last and never followed, nothing left on refusal."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from orch.bundle import extract, extract_bundle, pack_directory, read_bundle
from orch.errors import InvalidInput
from tests.unit.bundle.support import bundle, directory, file, link


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_files_directories_and_links_are_written(tmp_path: Path) -> None:
    data = bundle(
        file("main.py", b"print('hi')", mode=0o777),
        file("src/lib.py", b"x = 1", mode=0o600),
        file("run.sh", b"#!/bin/sh", mode=0o4755),  # setuid is dropped
        directory("empty"),
        link("lib", "src"),
        link("src/again.py", "../main.py"),
    )
    dest = tmp_path / "out"
    written = extract_bundle(data, dest)
    assert written == ["lib", "main.py", "run.sh", "src/again.py", "src/lib.py"]
    assert (dest / "main.py").read_bytes() == b"print('hi')"
    assert (mode(dest / "main.py"), mode(dest / "src/lib.py"), mode(dest / "run.sh")) == (0o755, 0o644, 0o755)
    assert mode(dest / "src") == 0o755 and mode(dest / "empty") == 0o755
    assert os.readlink(dest / "lib") == "src" and os.readlink(dest / "src/again.py") == "../main.py"
    assert (dest / "lib/lib.py").read_bytes() == b"x = 1"
    assert (dest / "src/again.py").read_bytes() == b"print('hi')"


def test_directory_modes_ignore_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        extract_bundle(bundle(file("a/b/c.py")), tmp_path / "out")
    finally:
        os.umask(old)
    assert mode(tmp_path / "out/a") == 0o755 and mode(tmp_path / "out/a/b/c.py") == 0o644


def test_refused_bundle_writes_nothing(tmp_path: Path) -> None:
    dest = tmp_path / "out"
    data = bundle(file("main.py"), file("lib/ok.py"), link("etc", "/etc"))
    with pytest.raises(InvalidInput, match="outside the bundle"):
        extract_bundle(data, dest)
    assert not dest.exists()


def test_file_through_a_link_is_refused_before_any_write(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "out"
    # Even with a target inside the bundle, a file may not be written through a link.
    data = bundle(directory("real"), link("escape", "real"), file("escape/x.py", b"owned"))
    with pytest.raises(InvalidInput, match="inside escape, which is a link"):
        extract_bundle(data, dest)
    assert not dest.exists() and list(outside.iterdir()) == []


def test_dest_that_is_not_empty_is_refused(tmp_path: Path) -> None:
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "keep").write_text("mine")
    with pytest.raises(InvalidInput) as caught:
        extract_bundle(bundle(file("main.py")), dest)
    assert caught.value.message == f"Can't unpack the bundle into {dest}: it is not empty."
    assert [p.name for p in dest.iterdir()] == ["keep"]


def test_writing_never_follows_a_link(tmp_path: Path) -> None:
    # Defence in depth below the checks: a link met on the way (a parent, or the file itself)
    # makes the write fail rather than land outside.
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "sub").symlink_to(outside)
    (dest / "file.py").symlink_to(outside / "file.py")
    top = os.open(dest, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with pytest.raises(OSError, match=r"Not a directory|Too many levels"):
            extract._directory(top, ["sub"])
        with pytest.raises(FileExistsError):
            extract._write(top, "file.py", b"owned", 0o644)
    finally:
        os.close(top)
    assert list(outside.iterdir()) == []


def test_empty_existing_dest_is_used(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    assert extract_bundle(bundle(file("main.py")), tmp_path / "out") == ["main.py"]


def test_pack_then_extract_gives_the_same_tree(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "pkg/sub").mkdir(parents=True)
    (src / "main.py").write_text("import pkg")
    (src / "pkg/__init__.py").write_text("")
    (src / "pkg/sub/data.json").write_text("{}")
    (src / "tool.sh").write_text("#!/bin/sh\n")
    (src / "tool.sh").chmod(0o750)
    (src / "entry.py").symlink_to("main.py")
    (src / "pkg/up").symlink_to("../pkg/sub")
    packed = pack_directory(src)
    out = tmp_path / "out"
    written = extract_bundle(packed.data, out)
    assert written == sorted(f.path for f in packed.files)
    assert read_bundle(packed.data) == {
        "entry.py": b"import pkg",
        "main.py": b"import pkg",
        "pkg/__init__.py": b"",
        "pkg/sub/data.json": b"{}",
        "tool.sh": b"#!/bin/sh\n",
    }
    assert mode(out / "tool.sh") == 0o755
    assert os.readlink(out / "entry.py") == "main.py"
    assert os.readlink(out / "pkg/up") == "sub"  # stored as the shortest path to the real target
    assert (out / "pkg/up/data.json").read_text() == "{}"
