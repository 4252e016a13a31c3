"""constraints.txt pins what scripts/setup installs: every dependency orch names is pinned there at
a version its range allows, and the environment the tests run in was installed from it."""

from __future__ import annotations

import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]


def _pins() -> dict[str, str]:
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not NAME==VERSION"
            pins[canonicalize_name(name)] = version.strip()
    return pins


def _requirements() -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    named = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        named += extra
    return [Requirement(r) for r in named]


def test_every_dependency_is_pinned_within_its_range() -> None:
    pins = _pins()
    for req in _requirements():
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is not in constraints.txt: run scripts/lock"
        assert req.specifier.contains(pins[name], prereleases=True), (
            f"constraints.txt pins {req.name}=={pins[name]}, outside pyproject.toml's {req}: run scripts/lock"
        )


def test_this_environment_has_the_pinned_versions() -> None:
    """scripts/setup installed the pins, not what the registry holds newest (a setup that drops
    `-c constraints.txt` fails here whenever a newer release exists)."""
    installed = {canonicalize_name(d.metadata["Name"]): d.version for d in metadata.distributions()}
    differ = {
        name: (installed[name], pinned)
        for name, pinned in _pins().items()
        if name in installed and installed[name] != pinned
    }
    assert not differ, f"installed, pinned: {differ}; run scripts/setup --dev"
