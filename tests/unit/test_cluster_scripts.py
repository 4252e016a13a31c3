"""scripts/cluster-up and scripts/cluster-down on what they are given (docs/scale.md), found by a
tester: a DIR that already holds files is refused before anything is touched (a failed start ran
cluster-down, which removed all of DIR); cluster-down removes only what cluster-up made, and
only in a DIR with its mark; both answer --help and refuse unknown options. None of these paths
starts PostgreSQL, the registry or Ray."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UP, DOWN = ROOT / "scripts" / "cluster-up", ROOT / "scripts" / "cluster-down"


def run(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=120, cwd=cwd)


def tree(where: Path) -> dict[str, str]:
    """Every file and directory under `where`, with a file's content."""
    return {
        str(p.relative_to(where)): p.read_text() if p.is_file() else "/" for p in sorted(where.rglob("*"))
    }


def users(where: Path) -> Path:
    """A directory with files of a user's in it."""
    (where / "mydata").mkdir(parents=True)
    (where / "mydata" / "notes.txt").write_text("important\n")
    (where / "pg").write_text("mine too\n")  # what made cluster-up fail at once, after it wrote into DIR
    return where


@pytest.mark.parametrize("script", [UP, DOWN])
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_says_the_usage(script: Path, flag: str) -> None:
    shown = run(script, flag)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith(f"Usage: scripts/{script.name} ") and shown.stderr == ""


@pytest.mark.parametrize("script", [UP, DOWN])
def test_an_unknown_option_is_refused(script: Path, tmp_path: Path) -> None:
    refused = run(script, "--bogus", tmp_path / "c")
    assert refused.returncode == 2, refused
    assert refused.stderr == f"scripts/{script.name}: no option --bogus: see scripts/{script.name} --help.\n"
    assert not (tmp_path / "c").exists()


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--port", "99999"], "--port '99999' is not a port"),
        (["--services-port", "x"], "--services-port 'x' is not a port"),
        (["--port"], "--port needs a port"),
        (["--port", "5000", "--services-port", "5000"], "both 5000"),
        (["a", "b"], "one DIR at most"),
    ],
)
def test_cluster_up_refuses_bad_arguments(args: list[str], said: str, tmp_path: Path) -> None:
    refused = run(UP, *args, cwd=tmp_path)
    assert refused.returncode == 2 and said in refused.stderr, refused
    assert list(tmp_path.iterdir()) == []


def test_cluster_up_refuses_a_dir_that_holds_files_and_touches_nothing(tmp_path: Path) -> None:
    where = users(tmp_path / "c")
    before = tree(where)
    refused = run(UP, where)
    assert refused.returncode == 2, refused
    assert refused.stderr == (
        f"scripts/cluster-up: {where} already holds files, and a failed start or scripts/cluster-down "
        "would remove what is in it: pass a new or empty directory as DIR.\n"
    )
    assert tree(where) == before
    # `.` is where it is run from, not the repository (the script works from there).
    here = run(UP, ".", cwd=where)
    assert here.returncode == 2 and f"{where} already holds files" in here.stderr, here
    assert tree(where) == before


def test_cluster_up_refuses_a_file_as_dir(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("mine\n")
    refused = run(UP, tmp_path / "f")
    assert refused.returncode == 2 and "is not a directory" in refused.stderr, refused
    assert (tmp_path / "f").read_text() == "mine\n"


def test_cluster_down_refuses_a_dir_without_cluster_up_s_mark(tmp_path: Path) -> None:
    where = users(tmp_path / "c")
    (where / "cluster.json").write_text("{}\n")  # a file of that name is not the mark
    before = tree(where)
    refused = run(DOWN, where)
    assert refused.returncode == 2, refused
    assert f"{where} holds no cluster of scripts/cluster-up" in refused.stderr
    assert "nothing in it is removed" in refused.stderr
    assert tree(where) == before


def made(where: Path, made_dir: int) -> None:
    """What scripts/cluster-up leaves in DIR (no process of it runs here, no node's storage)."""
    where.mkdir(exist_ok=True)
    (where / ".orch-cluster-up").write_text(f"made_dir={made_dir}\n")
    (where / "cluster.json").write_text("{}\n")
    (where / "env").write_text("export ORCH_SECRET_KEY=k\n")
    (where / "ray-head.log").write_text("")
    for name in ("pg", "registry", "server", "ray"):
        (where / name).mkdir()
        (where / name / "log").write_text("")


def test_cluster_down_removes_only_what_cluster_up_made(tmp_path: Path) -> None:
    # DIR was the user's (empty then): it stays, with the files the user put in it since.
    where = users(tmp_path / "given")
    (where / "pg").unlink()
    before = tree(where)
    made(where, 0)
    down = run(DOWN, where)
    assert down.returncode == 0, down
    assert tree(where) == before
    # DIR was made by cluster-up: removed, unless the user put files of theirs in it.
    where = tmp_path / "new"
    made(where, 1)
    (where / "mine.txt").write_text("mine\n")
    down = run(DOWN, where)
    assert down.returncode == 0, down
    assert tree(where) == {"mine.txt": "mine\n"}
    assert f"left {where}: it holds files the cluster did not make" in down.stderr
    where = tmp_path / "all"
    made(where, 1)
    down = run(DOWN, where)
    assert down.returncode == 0 and not where.exists(), down
    assert run(DOWN, where).returncode == 0  # twice: nothing to do
