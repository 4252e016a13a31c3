"""The bytecode of a bundle's own modules, compiled where it is extracted (orch.bundle.bytecode):
checked-hash caches Python uses from a copy of the bundle, and edits still win."""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from orch.bundle import bytecode


def tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def cache(root: Path, rel: str) -> Path:
    return Path(importlib.util.cache_from_source(str(root / rel)))


def flags(pyc: Path) -> int:
    """PEP 552's flags word: 3 for a checked-hash cache, 0 for a timestamp one."""
    return int.from_bytes(pyc.read_bytes()[4:8], "little")


def imports(where: Path, module: str) -> subprocess.CompletedProcess[str]:
    """`import module` from `where` in a new Python, verbose: its stderr says where code came from."""
    return subprocess.run(
        [sys.executable, "-E", "-s", "-S", "-v", "-c", f"import {module}; print({module}.VALUE)"],
        cwd=where,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )


def test_a_copy_of_the_bundle_imports_its_modules_compiled_and_an_edit_still_wins(tmp_path: Path) -> None:
    root = tree(tmp_path / "b", {"main.py": "import helper\n", "helper.py": "VALUE = 'first'\n"})
    assert bytecode.compile_modules(root) == 2
    assert flags(cache(root, "helper.py")) == 3 and flags(cache(root, "main.py")) == 3
    # The sandbox copies the bundle: new modification times, the same bytes.
    copy = tmp_path / "work"
    shutil.copytree(root, copy)
    (copy / "helper.py").touch()
    first = imports(copy, "helper")
    assert first.stdout == "first\n"
    assert f"{cache(copy, 'helper.py')} matches {copy / 'helper.py'}" in first.stderr
    # The agent edits its module: the hash no longer matches, and Python compiles the edit.
    (copy / "helper.py").write_text("VALUE = 'edited'\n")
    edited = imports(copy, "helper")
    assert edited.stdout == "edited\n"
    assert f"{cache(copy, 'helper.py')} matches" not in edited.stderr
    assert f"code object from {copy / 'helper.py'}" in edited.stderr


def test_packages_are_compiled_and_a_syntax_error_stops_only_its_own_file(tmp_path: Path) -> None:
    root = tree(
        tmp_path / "b",
        {
            "main.py": "import pkg.mod\n",
            "pkg/__init__.py": "",
            "pkg/mod.py": "VALUE = 1\n",
            "pkg/bad.py": "def (\n",
        },
    )
    assert bytecode.compile_modules(root) == 4
    assert cache(root, "pkg/mod.py").is_file()
    # An empty module takes no page and its cache one: it keeps none (compiling it costs nothing).
    assert not cache(root, "pkg/__init__.py").exists()
    assert not cache(root, "pkg/bad.py").exists()


def test_the_caches_are_readable_by_all_whatever_the_servers_umask(tmp_path: Path) -> None:
    root = tree(tmp_path / "b", {"main.py": "import helper\n", "helper.py": "VALUE = 1\n"})
    old = os.umask(0o077)
    try:
        assert bytecode.compile_modules(root) == 2
    finally:
        os.umask(old)
    assert stat.S_IMODE((root / "__pycache__").stat().st_mode) == 0o755
    assert stat.S_IMODE(cache(root, "helper.py").stat().st_mode) == 0o644


def test_a_single_module_is_left_alone(tmp_path: Path) -> None:
    root = tree(tmp_path / "b", {"main.py": "print('hi')\n", "notes.txt": "x\n"})
    assert bytecode.compile_modules(root) == 0
    assert not (root / "__pycache__").exists()


def test_links_and_a_bundles_own_cache_directory_are_never_compiled_through(tmp_path: Path) -> None:
    outside = tree(tmp_path / "host", {"secret.py": "VALUE = 'host'\n", "pkgdir/x.py": "VALUE = 2\n"})
    root = tree(
        tmp_path / "b",
        {"main.py": "x = 1\n", "helper.py": "y = 2\n", "own/n.py": "z = 3\n", "own/m.py": "w = 4\n"},
    )
    (root / "secret.py").symlink_to(outside / "secret.py")  # a file of the host, by a link
    (root / "linked").symlink_to(outside / "pkgdir")  # a directory of the host, by a link
    (root / "own" / "__pycache__").symlink_to(outside)  # a cache directory that leads out
    assert bytecode.modules(root) == ["helper.py", "main.py"]
    assert bytecode.compile_modules(root) == 2
    assert sorted(p.name for p in (root / "__pycache__").iterdir()) == [
        cache(root, "helper.py").name,
        cache(root, "main.py").name,
    ]
    assert sorted(p.name for p in outside.rglob("*")) == ["pkgdir", "secret.py", "x.py"]  # nothing written


def test_a_compiler_that_cannot_start_costs_only_the_gain(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    root = tree(tmp_path / "b", {"main.py": "import helper\n", "helper.py": "VALUE = 1\n"})
    monkeypatch.setattr(bytecode.sys, "executable", str(tmp_path / "no-python"))
    with caplog.at_level(logging.WARNING, logger="orch.bundle.bytecode"):
        assert bytecode.compile_modules(root) == 2
    assert "the bytecode of b was not compiled" in caplog.text
    assert not (root / "__pycache__").exists()


def test_a_compiler_that_runs_out_of_time_is_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    root = tree(tmp_path / "b", {"main.py": "import helper\n", "helper.py": "VALUE = 1\n"})
    monkeypatch.setattr(bytecode, "TIMEOUT", 0.001)
    with caplog.at_level(logging.WARNING, logger="orch.bundle.bytecode"):
        assert bytecode.compile_modules(root) == 2
    assert "timed out" in caplog.text


def test_a_cache_larger_than_its_module_is_not_kept(tmp_path: Path) -> None:
    """Terse code compiles to several times its size; a run's copy of the bundle, on a tmpfs
    sized by its memory limit, must never hold more than twice its modules' pages (what publish
    counts with): such a module keeps no cache, and the others keep theirs."""
    terse = "f(x, y)\n" * 20_000  # 160,000 bytes: 40 pages, its bytecode about five times that
    root = tree(tmp_path / "b", {"main.py": "import terse\n", "terse.py": terse, "small.py": "VALUE = 1\n"})
    assert bytecode.compile_modules(root) == 3
    assert not cache(root, "terse.py").exists()
    assert cache(root, "small.py").is_file() and cache(root, "main.py").is_file()
    assert not any(cache(root, "terse.py").parent.glob("*.tmp*"))
