"""A run's dependency install on real Podman: a package of the bundle is installed for that bundle
(a changed one installs again), and an install's writes are bounded by its memory, never the
host's disk. The packages are built by an in-tree PEP 517 backend: nothing to download."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.conftest import Server

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# A backend that builds the wheel of `mylib` from the bundle's mylib/value.txt, after writing
# BALLAST bytes into what the install keeps (the tester's disk bomb, F6).
BACKEND = """\
import base64, hashlib, zipfile

BALLAST = {ballast}


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    if BALLAST:
        with open("/opt/orch/deps/python/ballast", "wb") as f:
            for _ in range(BALLAST // 2**20):
                f.write(b"\\0" * 2**20)
    value = open("value.txt").read().strip()
    files = {{
        "mylib/__init__.py": f"VALUE = {{value!r}}\\n",
        "mylib-0.1.dist-info/METADATA": "Metadata-Version: 2.1\\nName: mylib\\nVersion: 0.1\\n",
        "mylib-0.1.dist-info/WHEEL": "Wheel-Version: 1.0\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n",
    }}
    name, record = "mylib-0.1-py3-none-any.whl", []
    with zipfile.ZipFile(f"{{wheel_directory}}/{{name}}", "w") as wheel:
        for path, text in files.items():
            digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=")
            record.append(f"{{path}},sha256={{digest.decode()}},{{len(text.encode())}}")
            wheel.writestr(path, text)
        record.append("mylib-0.1.dist-info/RECORD,,")
        wheel.writestr("mylib-0.1.dist-info/RECORD", "\\n".join(record) + "\\n")
    return name
"""
PROJECT = '[build-system]\nrequires = []\nbuild-backend = "backend"\nbackend-path = ["."]\n'


def agent(root: Path, value: str, ballast: int = 0) -> str:
    files = {
        "main.py": "import mylib\nprint('mylib says', mylib.VALUE)\n",
        "requirements.txt": "mylib @ file:///opt/orch/bundle/mylib\n",
        "orch.yaml": "name: loc\n",
        "mylib/pyproject.toml": PROJECT,
        "mylib/backend.py": BACKEND.format(ballast=ballast),
        "mylib/value.txt": value,
    }
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return str(root)


def run_json(server: Server, name: str) -> dict:
    res = server.cli("run", name, "--json")
    assert res.returncode in (0, 1), res.stdout + res.stderr
    return dict(json.loads(res.stdout))


def disk_used(path: Path) -> int:
    return sum(p.lstat().st_size for p in path.rglob("*"))


def test_a_package_of_the_bundle_installs_again_when_it_changes_and_a_bomb_stays_bounded(
    make_server, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    server: Server = make_server()
    server.settings = {"ORCH_INSTALL_MEMORY": "256Mi"}
    server.start()
    assert server.cli("publish", agent(tmp_path / "v1", "v1")).returncode == 0
    first = run_json(server, "loc")
    assert (first["status"], first["deps"], first["stdout"]) == (
        "succeeded",
        "installed",
        "mylib says v1\n",
    ), first
    assert server.cli("publish", agent(tmp_path / "v2", "v2 CHANGED")).returncode == 0
    second = run_json(server, "loc")
    assert (second["deps"], second["stdout"]) == ("installed", "mylib says v2 CHANGED\n"), second
    log = server.get(f"/v1/runs/{second['id']}/logs")["log"]
    assert "it names files of the bundle: installed for this bundle alone" in log

    # 1 GiB written into what the install keeps: its tmpfs (256 MiB, the install's memory) ends it.
    before = disk_used(server.home / "deps")
    assert server.cli("publish", agent(tmp_path / "bomb", "bomb", ballast=2**30)).returncode == 0
    bombed = run_json(server, "loc")
    assert bombed["status"] == "failed" and "Installing requirements.txt" in bombed["reason"], bombed
    log = server.get(f"/v1/runs/{bombed['id']}/logs")["log"]
    assert "No space left on device" in log or "ran out of memory" in bombed["reason"], log
    assert disk_used(server.home / "deps") - before < 2**20  # nothing of it reached the disk
    assert [p.name for p in (server.home / "deps").iterdir() if ".tmp-" in p.name] == []


def setuptools_package(name: str, how: str) -> dict[str, str]:
    """A package built by setuptools (downloaded for the build), which writes its egg-info and
    build/ into its source tree: by setup.py, or by pyproject.toml."""
    if how == "setup.py":
        build = {
            "setup.py": "from setuptools import setup\n"
            f'setup(name="{name}", version="0.1", packages=["{name}"])\n'
        }
    else:
        build = {
            "pyproject.toml": '[build-system]\nrequires = ["setuptools>=61"]\n'
            'build-backend = "setuptools.build_meta"\n'
            f'[project]\nname = "{name}"\nversion = "0.1"\n'
        }
    return {
        **{f"{name}/{path}": text for path, text in build.items()},
        f"{name}/{name}/__init__.py": f"X = {name!r}\n",
    }


def test_local_packages_install_as_pip_does_in_the_agents_own_directory(
    server: Server, tmp_path: Path
) -> None:
    """tB#2: `-e ./pkg`, `./pkg` and `/opt/orch/bundle/pkg` (docs/agents.md, Dependencies) name the
    bundle's packages, relative paths from the bundle's directory, and setuptools can write beside
    them; the editable one is importable by the run (installed as a regular one)."""
    files = {
        "main.py": "import a, b, c\nprint(a.X, b.X, c.X)\n",
        "requirements.txt": "-e ./a\n./b\n/opt/orch/bundle/c\n",
        "orch.yaml": "name: local\n",
        **setuptools_package("a", "setup.py"),
        **setuptools_package("b", "pyproject.toml"),
        **setuptools_package("c", "setup.py"),
    }
    for rel, text in files.items():
        (tmp_path / "local" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "local" / rel).write_text(text)
    assert server.cli("publish", str(tmp_path / "local")).returncode == 0
    done = run_json(server, "local")
    log = server.get(f"/v1/runs/{done['id']}/logs")["log"]
    assert (done["status"], done["deps"], done["stdout"]) == ("succeeded", "installed", "a b c\n"), log
