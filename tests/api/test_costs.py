"""What a use case costs: no engine call inside a store transaction, one look at the engine per
base image (not per listing), and a runs list whose queries do not grow with its rows."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import event

from orch.builder import base_images
from orch.bundle import pack_directory
from orch.engine.base import ImageInfo
from orch.engine.fake import FakeEngine
from orch.errors import NotFound
from orch.sandbox.launcher import Isolation
from orch.services import agents, runs
from orch.services import environments as envs
from orch.services.platform import Platform
from tests.conftest import drain, drain_runs

DOCKERFILE = "FROM e2bdev/code-interpreter:latest\nRUN pip install six\n"


@contextmanager
def open_transactions(platform: Platform) -> Iterator[Callable[[], int]]:
    """While inside: how many store transactions are open now (this test's thread only)."""
    opened = [0]

    def begin(_conn: object) -> None:
        opened[0] += 1

    def end(_conn: object) -> None:
        opened[0] -= 1

    hooks = [("begin", begin), ("commit", end), ("rollback", end)]
    for name, hook in hooks:
        event.listen(platform.store.db, name, hook)
    try:
        yield lambda: opened[0]
    finally:
        for name, hook in hooks:
            event.remove(platform.store.db, name, hook)


@contextmanager
def statements(platform: Platform) -> Iterator[list[str]]:
    """The SQL statements sent while inside."""
    sent: list[str] = []

    def record(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        sent.append(statement)

    event.listen(platform.store.db, "before_cursor_execute", record)
    try:
        yield sent
    finally:
        event.remove(platform.store.db, "before_cursor_execute", record)


def test_create_asks_the_engine_outside_its_transaction(
    platform: Platform, workspace: tuple[str, str], fake_engine: FakeEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws_id = workspace[0]
    envs.create(platform, ws_id, "first", DOCKERFILE)
    drain(platform)  # now a ready image of this Dockerfile exists: the next create is a cache hit
    with open_transactions(platform) as opened:
        during: list[int] = []
        real = fake_engine.inspect_image

        def inspect_image(ref: str) -> ImageInfo | None:
            during.append(opened())
            return real(ref)

        monkeypatch.setattr(fake_engine, "inspect_image", inspect_image)
        created = envs.create(platform, ws_id, "second", DOCKERFILE)
        rebuilt = envs.build(platform, ws_id, "first", no_cache=True)
    assert created.status == "ready" and created.cache == "hit"
    assert rebuilt.status == "queued"
    assert during and set(during) == {0}, "the engine was asked inside a store transaction"


def test_listing_environments_asks_the_engine_once_per_base_image(
    platform: Platform, workspace: tuple[str, str], fake_engine: FakeEngine
) -> None:
    fake_engine.inspected.clear()
    first = envs.list_environments(platform, workspace[0])
    asked = len(fake_engine.inspected)
    again = envs.list_environments(platform, workspace[0])
    assert [e.status for e in again] == [e.status for e in first]
    assert asked == len([e for e in first if e.kind == "base"]) and len(fake_engine.inspected) == asked


def test_a_missing_base_image_is_asked_for_again(
    platform: Platform, workspace: tuple[str, str], fake_engine: FakeEngine
) -> None:
    """Only an image the engine has is remembered: one built later shows as ready at once."""
    python = next(t for t in fake_engine.images_by_tag if "/orch/python:" in t)
    info = fake_engine.images_by_tag.pop(python)
    assert envs.show(platform, workspace[0], "python").status == "not-built"
    fake_engine.images_by_tag[python] = info
    assert envs.show(platform, workspace[0], "python").status == "ready"


def test_the_runs_list_makes_the_same_queries_for_one_run_or_many(
    platform: Platform, workspace: tuple[str, str], tmp_path: Path
) -> None:
    ws_id = workspace[0]
    (tmp_path / "hello").mkdir()
    (tmp_path / "hello" / "main.py").write_text("print('hi')\n")
    agents.publish(platform, ws_id, "hello", pack_directory(tmp_path / "hello").data, docker=False)
    counts = []
    for n in (1, 6):
        while len(runs.list_runs(platform, ws_id)) < n:
            runs.create(platform, ws_id, "hello")
        with statements(platform) as sent:
            listed = runs.list_runs(platform, ws_id)
        assert len(listed) == n and {r.agent for r in listed} == {"hello"}
        counts.append(len(sent))
    assert counts[0] == counts[1], counts


def test_a_status_look_is_one_transaction_of_two_queries_after_the_tokens_one(
    platform: Platform, workspace: tuple[str, str], tmp_path: Path
) -> None:
    """GET /v1/runs/RUN, the API's commonest call: the caller (token and workspace, one query),
    then the run with its agent and version (one query) and its model usage (one), together."""
    from orch.services import workspaces

    ws_id, token = workspace
    (tmp_path / "hello").mkdir()
    (tmp_path / "hello" / "main.py").write_text("print('hi')\n")
    agents.publish(platform, ws_id, "hello", pack_directory(tmp_path / "hello").data, docker=False)
    run_id = runs.create(platform, ws_id, "hello").id
    with statements(platform) as sent:
        assert workspaces.caller(platform, token).workspace.id == ws_id
    assert len(sent) == 1, sent
    with open_transactions(platform) as now, statements(platform) as sent:
        seen = runs.show(platform, ws_id, run_id)
        assert now() == 0
    assert seen.id == run_id and seen.agent == "hello"
    assert len(sent) == 2, sent
    with pytest.raises(NotFound):
        runs.show(platform, "ws_other", run_id)  # another workspace's run is not there


def test_a_run_with_dependencies_takes_the_image_id_from_its_launcher(
    platform: Platform, workspace: tuple[str, str], fake_engine: FakeEngine, tmp_path: Path
) -> None:
    """The dependency cache is keyed by the image's id: the launcher's image cache answers it
    (it mounts that image anyway), so a run costs no `podman image inspect`."""
    asked: list[str] = []

    class Launcher:
        """The fake engine's sandboxes, behind the launcher's interface."""

        run_container = staticmethod(fake_engine.run_container)

        def image_id(self, ref: str) -> str:
            asked.append(ref)
            info = fake_engine.images_by_tag[ref]
            return info.id

        def kill(self, prefix: str) -> list[str]:
            return []

        def sweep(self, prefix: str) -> int:
            return 0

        def close(self) -> None:
            pass

        def let_go(self) -> None:
            pass

    platform.launchers[Isolation.RUNC] = Launcher()
    (tmp_path / "deps").mkdir()
    (tmp_path / "deps" / "main.py").write_text("import six\n")
    (tmp_path / "deps" / "requirements.txt").write_text("six\n")
    agents.publish(platform, workspace[0], "deps", pack_directory(tmp_path / "deps").data, docker=False)
    ids = []
    for _ in range(2):  # the first also checks (once per process) that the base image exists
        fake_engine.inspected.clear()
        ids.append(runs.create(platform, workspace[0], "deps").id)
        drain_runs(platform)
    shown = [runs.show(platform, workspace[0], i) for i in ids]
    assert [(r.status, r.deps) for r in shown] == [("succeeded", "installed"), ("succeeded", "cached")]
    image = base_images.image_tag("python")
    # The dependency key of each run; and, from the second on, that the image is still there
    # (it may have been removed since: workers/runs._still_here). The engine is never asked.
    assert asked == [image, image, image] and fake_engine.inspected == []
