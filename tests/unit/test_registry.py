"""Images through an OCI registry, on the fake engine: remote names, pushes that return and record
a digest, pulls by digest only where the image is missing, and the settings' plain errors."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from orch import config
from orch.builder import base_images, registry
from orch.config import Config
from orch.engine.base import repository_of
from orch.engine.fake import FakeEngine
from orch.errors import EngineError, InvalidInput
from orch.models import BuildStatus
from orch.services import base_digests
from orch.services import environments as envs
from orch.services.platform import Platform
from orch.store import Store
from orch.store.schema import BuildRow, EnvironmentRow
from tests.conftest import build_log, drain

REGISTRY = "127.0.0.1:5000"
DOCKERFILE = "FROM e2bdev/code-interpreter:latest\nRUN echo one\n"
DIGEST = re.compile(r"127\.0\.0\.1:5000/orch-env/[0-9a-f]{12}@sha256:[0-9a-f]{64}")


def settings(tmp_path: Path, **values: object) -> Config:
    return config.load(tmp_path, environ={}).with_values(**values)


@pytest.fixture
def with_registry(platform: Platform) -> Platform:
    platform.config = platform.config.with_values(registry=REGISTRY, registry_tls_verify=False)
    return platform


# ---- names and settings -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("registry_setting", "image", "remote"),
    [
        (REGISTRY, "localhost/orch-env/abc:key", "127.0.0.1:5000/orch-env/abc:key"),
        (
            "registry.example.com/team",
            "localhost/orch/python:3f9a",
            "registry.example.com/team/orch/python:3f9a",
        ),
        ("registry.example.com/team/", "localhost:5000/orch/x:1", "registry.example.com/team/orch/x:1"),
        (REGISTRY, "docker.io/library/debian:12", "127.0.0.1:5000/library/debian:12"),
        (REGISTRY, "orch/x:1", "127.0.0.1:5000/orch/x:1"),  # no registry part: all of it is path
    ],
)
def test_remote_name_keeps_path_and_tag_under_the_registry(
    registry_setting: str, image: str, remote: str
) -> None:
    assert registry.remote_name(registry_setting, image) == remote


def test_repository_drops_tag_and_digest_not_the_port() -> None:
    assert repository_of("127.0.0.1:5000/orch/x:1") == "127.0.0.1:5000/orch/x"
    assert repository_of("127.0.0.1:5000/orch/x@sha256:ab") == "127.0.0.1:5000/orch/x"
    assert repository_of("127.0.0.1:5000/orch/x") == "127.0.0.1:5000/orch/x"


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ("", ""),
        ("127.0.0.1:5000", "127.0.0.1:5000"),
        (" registry.example.com/team/ ", "registry.example.com/team"),
        ("localhost:5000", "localhost:5000"),
        ("[::1]:5000", "[::1]:5000"),
    ],
)
def test_registry_setting_accepts_a_host_and_path(tmp_path: Path, raw: str, value: str) -> None:
    assert config.load(tmp_path, environ={"ORCH_REGISTRY": raw}).registry == value


@pytest.mark.parametrize(
    "raw",
    [
        "https://registry.example.com",  # a scheme
        "registry.example.com/Team",  # uppercase in a path
        "registry.example.com/team:latest",  # a tag
        "registry.example.com:port",
        "myregistry",  # would be read as a path on Docker Hub
        "registry.example.com//team",
    ],
)
def test_a_bad_registry_setting_is_a_plain_error(tmp_path: Path, raw: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        config.load(tmp_path, environ={"ORCH_REGISTRY": raw})
    message = str(caught.value)
    assert f"Setting registry = {raw!r} (from ORCH_REGISTRY) is not valid." in message
    assert "HOST[:PORT][/PATH] with no scheme" in message  # the fix
    assert "Traceback" not in message


def test_tls_verify_is_a_strict_yes_or_no(tmp_path: Path) -> None:
    assert config.load(tmp_path, environ={}).registry_tls_verify is True
    assert config.load(tmp_path, environ={"ORCH_REGISTRY_TLS_VERIFY": "false"}).registry_tls_verify is False
    assert config.load(tmp_path, environ={"ORCH_REGISTRY_TLS_VERIFY": "yes"}).registry_tls_verify is True
    # A typo must not turn the certificate check off.
    with pytest.raises(InvalidInput, match="ORCH_REGISTRY_TLS_VERIFY"):
        config.load(tmp_path, environ={"ORCH_REGISTRY_TLS_VERIFY": "flase"})


# ---- push and ensure_image --------------------------------------------------------------------


def test_no_registry_pushes_nothing(tmp_path: Path) -> None:
    engine = FakeEngine()
    engine.add_image("localhost/orch-env/abc:key")
    assert registry.push(engine, settings(tmp_path), "localhost/orch-env/abc:key") is None
    assert engine.pushed == []


def test_push_returns_the_digest_reference(tmp_path: Path) -> None:
    engine = FakeEngine()
    engine.add_image("localhost/orch-env/abc:key")
    cfg = settings(tmp_path, registry=REGISTRY, registry_tls_verify=False)
    digest = registry.push(engine, cfg, "localhost/orch-env/abc:key")
    assert digest is not None and re.fullmatch(r"127\.0\.0\.1:5000/orch-env/abc@sha256:[0-9a-f]{64}", digest)
    assert engine.pushed == [("localhost/orch-env/abc:key", "127.0.0.1:5000/orch-env/abc:key", False)]
    assert digest in engine.registry


def test_ensure_image_pulls_only_what_is_missing(tmp_path: Path) -> None:
    engine = FakeEngine()
    cfg = settings(tmp_path, registry=REGISTRY)
    engine.add_image("localhost/orch-env/abc:key")
    digest = registry.push(engine, cfg, "localhost/orch-env/abc:key")
    # Present: nothing is pulled.
    assert registry.ensure_image(engine, cfg, "localhost/orch-env/abc:key", digest).tags
    assert engine.pulled == []
    # Gone from this machine (another machine, as far as the image is concerned): pulled by its
    # digest, and known by its local tag again.
    engine.remove_image("localhost/orch-env/abc:key")
    info = registry.ensure_image(engine, cfg, "localhost/orch-env/abc:key", digest)
    assert engine.pulled == [(digest, "localhost/orch-env/abc:key")]
    assert info.tags == ("localhost/orch-env/abc:key",)
    assert engine.inspect_image("localhost/orch-env/abc:key") is not None


def test_ensure_image_without_image_or_digest_is_a_plain_error(tmp_path: Path) -> None:
    engine = FakeEngine()
    with pytest.raises(EngineError) as caught:
        registry.ensure_image(engine, settings(tmp_path), "localhost/orch-env/abc:key", None)
    assert caught.value.message == (
        "The image localhost/orch-env/abc:key is not on this machine, and no registry copy of it is recorded."
    )
    assert "ORCH_REGISTRY" in caught.value.fix
    assert engine.pulled == []


def test_a_failed_pull_is_an_engine_error(tmp_path: Path) -> None:
    engine = FakeEngine()
    engine.registry_error = "connection refused"
    with pytest.raises(EngineError, match="connection refused"):
        registry.ensure_image(engine, settings(tmp_path), "localhost/x/y:1", "127.0.0.1:5000/x/y@sha256:00")


# ---- builds record the digest ---------------------------------------------------------------


def rows(platform: Platform, env_id: str) -> tuple[EnvironmentRow, BuildRow]:
    with platform.store.session() as s:
        env = s.get(EnvironmentRow, env_id)
        assert env is not None and env.build_id
        build = s.get(BuildRow, env.build_id)
        assert build is not None
        return env, build


def test_a_build_without_a_registry_records_no_digest(
    platform: Platform, workspace: tuple[str, str], fake_engine: FakeEngine
) -> None:
    created = envs.create(platform, workspace[0], "one", DOCKERFILE)
    drain(platform)
    env, build = rows(platform, created.id)
    assert build.status == BuildStatus.READY and build.image_digest is None and env.image_digest is None
    assert fake_engine.pushed == []


def test_a_build_pushes_and_records_the_digest(
    with_registry: Platform, workspace: tuple[str, str], fake_engine: FakeEngine
) -> None:
    platform = with_registry
    created = envs.create(platform, workspace[0], "one", DOCKERFILE)
    drain(platform)
    env, build = rows(platform, created.id)
    assert build.status == BuildStatus.READY, build.error
    assert build.image_digest is not None and DIGEST.fullmatch(build.image_digest), build.image_digest
    assert env.image_digest == build.image_digest and env.image == build.image
    ((pushed, destination, tls_verify),) = fake_engine.pushed
    assert pushed == build.image and destination == registry.remote_name(REGISTRY, build.image or "")
    assert tls_verify is False
    assert fake_engine.registry[build.image_digest].id == fake_engine.images_by_tag[pushed].id
    # The API shows it, on the environment and on its build.
    shown = envs.show(platform, workspace[0], "one")
    assert shown.image_digest == build.image_digest
    assert shown.build is not None and shown.build.image_digest == build.image_digest
    log = build_log(platform, build.id)
    assert f"Pushed {build.image_digest}" in log

    # Another environment of the same Dockerfile: a cache hit, with the same digest, no push.
    again = envs.create(platform, workspace[0], "two", DOCKERFILE)
    assert again.cache == "hit" and again.image_digest == build.image_digest
    assert len(fake_engine.pushed) == 1


def test_a_failed_push_fails_the_build_with_the_reason(
    with_registry: Platform, workspace: tuple[str, str], fake_engine: FakeEngine
) -> None:
    platform = with_registry
    fake_engine.registry_error = "connection refused"
    created = envs.create(platform, workspace[0], "one", DOCKERFILE)
    drain(platform)
    env, build = rows(platform, created.id)
    assert build.status == BuildStatus.FAILED
    assert build.error is not None
    assert build.error.startswith(
        "The image was built but not pushed to the registry, so other machines cannot use it: "
    )
    assert "connection refused" in build.error
    assert env.image is None and env.image_digest is None
    log = build_log(platform, build.id)
    assert "error: The image was built but not pushed to the registry" in log
    assert "Traceback" not in log
    # Every step succeeded: none is the failed one, and the fix is the registry's, then a build.
    assert build.failed_step is None and "during step" not in build.error
    assert build.error.endswith(
        "connection refused. Then `orch env build one` pushes it again (its steps are cached, "
        "only the push runs again)."
    )
    fake_engine.registry_error = None
    envs.build(platform, workspace[0], "one")
    drain(platform)
    env, build = rows(platform, created.id)
    assert build.status == BuildStatus.READY and env.image_digest


def test_an_image_never_pushed_is_built_again_once_a_registry_is_set(
    platform: Platform, workspace: tuple[str, str], fake_engine: FakeEngine
) -> None:
    envs.create(platform, workspace[0], "one", DOCKERFILE)
    drain(platform)
    platform.config = platform.config.with_values(registry=REGISTRY)
    again = envs.create(platform, workspace[0], "two", DOCKERFILE)
    assert again.cache == "miss" and again.cache_reason == "the cached image is not in the registry yet"
    drain(platform)
    env, build = rows(platform, again.id)
    assert build.status == BuildStatus.READY and env.image_digest and DIGEST.fullmatch(env.image_digest)


# ---- base images ------------------------------------------------------------------------------


def test_base_images_are_pushed_once_per_registry_and_recorded(
    with_registry: Platform, fake_engine: FakeEngine
) -> None:
    platform = with_registry
    tags = {r.name: base_images.image_tag(r.name) for r in base_images.RECIPES}
    first = base_digests.push(fake_engine, platform.config, platform.store, tags)
    assert set(first) == set(tags) and len(fake_engine.pushed) == len(tags)
    assert base_digests.known(platform.store) == {tags[name]: digest for name, digest in first.items()}
    # Recorded for this registry: not pushed again.
    assert base_digests.push(fake_engine, platform.config, platform.store, tags) == first
    assert len(fake_engine.pushed) == len(tags)
    # The setting names another registry: pushed there, and that digest recorded.
    elsewhere = platform.config.with_values(registry="registry.example.com/team")
    moved = base_digests.push(fake_engine, elsewhere, platform.store, {"python": tags["python"]})
    assert moved["python"].startswith("registry.example.com/team/orch/python@sha256:")
    assert base_digests.known(platform.store)[tags["python"]] == moved["python"]


def test_no_registry_pushes_no_base_image(platform: Platform, fake_engine: FakeEngine) -> None:
    tags = {"python": base_images.image_tag("python")}
    assert base_digests.push(fake_engine, platform.config, platform.store, tags) == {}
    assert fake_engine.pushed == [] and base_digests.known(platform.store) == {}


def test_a_missing_base_image_is_pulled_when_its_digest_is_known(tmp_path: Path) -> None:
    cfg = settings(tmp_path, registry=REGISTRY)
    engine = FakeEngine()
    for r in base_images.RECIPES:
        engine.add_image(base_images.image_tag(r.name), base_images.labels(r.name))
    tag = base_images.image_tag("python")
    digest = registry.push(engine, cfg, tag)
    assert digest is not None
    engine.remove_image(tag)
    said: list[str] = []
    found = base_images.ensure(engine, cfg, said.append, ["python"], digests={tag: digest})
    assert engine.pulled == [(digest, tag)] and engine.builds == []
    assert found["python"].tags == (tag,)
    assert said == [f"Pulling base image python as {tag} from {digest}"]


def test_a_failed_base_pull_builds_it_here(tmp_path: Path) -> None:
    cfg = settings(tmp_path, registry=REGISTRY)
    engine = FakeEngine()
    engine.add_image(base_images.image_tag("rootfs"), base_images.labels("rootfs"))
    engine.registry_error = "connection refused"
    tag = base_images.image_tag("python")
    said: list[str] = []
    base_images.ensure(engine, cfg, said.append, ["python"], digests={tag: "127.0.0.1:5000/x@sha256:00"})
    assert [b.tag for b in engine.builds] == [tag]
    assert any("connection refused" in line and "Building it here instead." in line for line in said)


def test_store_is_shared_by_machines(tmp_path: Path) -> None:
    """What one machine's build-images records, another machine's store reads."""
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    one, two = Store(url), Store(url)
    one.migrate()
    engine = FakeEngine()
    engine.add_image(base_images.image_tag("python"))
    cfg = settings(tmp_path, registry=REGISTRY)
    pushed = base_digests.push(engine, cfg, one, {"python": base_images.image_tag("python")})
    assert base_digests.known(two) == {base_images.image_tag("python"): pushed["python"]}
    one.dispose()
    two.dispose()


def test_admin_build_images_pushes_and_records_the_base_images(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    import orch.engine
    from orch.cli.main import app

    engine = FakeEngine()
    for r in base_images.RECIPES:
        engine.add_image(base_images.image_tag(r.name), base_images.labels(r.name))
    monkeypatch.setattr(orch.engine, "PodmanEngine", lambda: engine)
    monkeypatch.setattr(base_images, "LOCK_PATH", tmp_path / "base-images.lock")
    monkeypatch.setenv("ORCH_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ORCH_REGISTRY", REGISTRY)
    monkeypatch.setenv("ORCH_REGISTRY_TLS_VERIFY", "false")
    monkeypatch.setenv("COLUMNS", "250")
    res = CliRunner().invoke(app, ["admin", "build-images"])
    assert res.exit_code == 0, res.output
    assert len(engine.pushed) == len(base_images.RECIPES)
    store = Store(config.load(tmp_path / "home", environ={}).database_url)
    recorded = base_digests.known(store)
    store.dispose()
    assert set(recorded) == {base_images.image_tag(r.name) for r in base_images.RECIPES}
    for tag, digest in recorded.items():
        assert f"{tag}  {digest}" in res.output
    # Once more: every digest is known for this registry, nothing is pushed again.
    assert CliRunner().invoke(app, ["admin", "build-images"]).exit_code == 0
    assert len(engine.pushed) == len(base_images.RECIPES)
