from __future__ import annotations

from pathlib import Path

import pytest

from orch import config
from orch.builder import base_images
from orch.engine.fake import FakeEngine


def test_tags_are_versioned_by_recipe() -> None:
    tags = {r.name: base_images.image_tag(r.name) for r in base_images.RECIPES}
    assert tags["python"].startswith("localhost/orch/python:")
    assert len(set(tags.values())) == len(tags)
    assert base_images.image_tag("python") == base_images.image_tag("python")


def test_changing_a_recipe_changes_it_and_its_children(monkeypatch: pytest.MonkeyPatch) -> None:
    before = {r.name: base_images.image_tag(r.name) for r in base_images.RECIPES}
    monkeypatch.setattr(base_images, "UV_VERSION", "0.0.1")
    recipes = tuple(
        base_images.Recipe(
            r.name,
            r.parent,
            r.steps.replace("uv==", "uv===") if r.name == "python" else r.steps,
            r.description,
        )
        for r in base_images.RECIPES
    )
    monkeypatch.setattr(base_images, "RECIPES", recipes)
    monkeypatch.setattr(base_images, "_BY_NAME", {r.name: r for r in recipes})
    after = {r.name: base_images.image_tag(r.name) for r in recipes}
    assert after["rootfs"] == before["rootfs"] and after["node"] == before["node"]
    for changed in ("python", "code-interpreter", "service-runner"):
        assert after[changed] != before[changed]


def test_ensure_builds_missing_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(base_images, "LOCK_PATH", tmp_path / "lock")
    engine = FakeEngine()
    for name in ("rootfs", "python"):
        engine.add_image(base_images.image_tag(name))
    cfg = config.load(tmp_path, environ={})
    lines: list[str] = []
    images = base_images.ensure(engine, cfg, lines.append, ["code-interpreter"])
    assert set(images) == {"rootfs", "python", "code-interpreter"}
    built = [b.tag for b in engine.builds]
    assert built == [base_images.image_tag("code-interpreter")]
    assert engine.builds[0].containerfile.startswith(f"FROM {base_images.image_tag('python')}\n")
    assert base_images.missing(engine) == ["node", "service-runner"]


def test_prune_removes_only_stale_base_images() -> None:
    engine = FakeEngine()
    for r in base_images.RECIPES:
        engine.add_image(base_images.image_tag(r.name), base_images.labels(r.name))
    engine.add_image("localhost/orch/python:000000000000", {"org.orch.base": "python"})
    # An environment image inherits its base's labels; it is never a base image to prune.
    engine.add_image("localhost/orch-env/abc:123", {"org.orch.instance": "abc", "org.orch.base": "python"})
    assert base_images.prune(engine) == ["localhost/orch/python:000000000000"]
    assert base_images.missing(engine) == []
    assert engine.inspect_image("localhost/orch-env/abc:123") is not None
