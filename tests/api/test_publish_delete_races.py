"""A publish racing a delete (in-process API, both stores), made deterministic: the delete is run
exactly inside the publish, at a point between its check and its write.

- Deleting the agent while a version of it is being stored: the publish answers 201 (the agent
  made afresh, or the delete waits for it) or Gone's 409, never a 500 (a tester's
  StaleDataError on SQLite, where a FOR UPDATE holds nothing).
- Deleting the environment the new version pins: either the publish is refused (400) or the
  delete is (409), never both made (a version pinning an environment that is gone).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import delete, select

from orch.errors import OrchError
from orch.services import agent_deletes, agents, bundles
from orch.services import environments as envs
from orch.services.platform import Platform
from orch.store.db import Gone
from orch.store.schema import AgentRow
from tests.api.test_agents_runs import bundle, publish

GONE = Gone().message
DOCKERFILE = "FROM e2bdev/code-interpreter:latest\nRUN pip install six\n"
WAIT = 1.0  # seconds a delete run inside the publish is given before the publish goes on


class During:
    """`owner.name` made to run `act` once, on its first call, before doing what it does.
    `in_thread`: `act` runs in a thread of its own, given WAIT seconds (it may wait for the
    publish's transaction), and the publish goes on; else in the caller's thread, first."""

    def __init__(
        self, mp: pytest.MonkeyPatch, owner: Any, name: str, act: Callable[[], object], in_thread: bool
    ) -> None:
        self.outcome: list[object] = []  # what `act` returned, or the OrchError it raised
        self.thread: threading.Thread | None = None
        original = getattr(owner, name)

        def run() -> None:
            try:
                self.outcome.append(act())
            except OrchError as e:
                self.outcome.append(e)

        def patched(*args: Any, **kwargs: Any) -> Any:
            if self.thread is None:
                self.thread = threading.Thread(target=run)
                if in_thread:
                    self.thread.start()
                    self.thread.join(WAIT)
                else:
                    self.thread.run()
            return original(*args, **kwargs)

        mp.setattr(owner, name, patched)

    def result(self) -> object:
        """What `act` ended with, once it has."""
        assert self.thread is not None, "the delete never ran inside the publish"
        if self.thread.ident is not None:
            self.thread.join(30)
            assert not self.thread.is_alive()
        (result,) = self.outcome
        return result


def test_deleting_the_agent_while_a_version_is_stored_is_never_a_500(
    api: httpx.Client, platform: Platform, tmp_path: Path, workspace: tuple[str, str]
) -> None:
    data = bundle(tmp_path, {"main.py": "print(1)\n"})
    assert publish(api, "hello", data).status_code == 201
    # Between reading the agent and writing its new version (the same bundle: stored already,
    # so nothing is written before).
    with pytest.MonkeyPatch.context() as mp:
        race = During(
            mp,
            agents,
            "_version_row",
            lambda: agent_deletes.delete_agent(platform, workspace[0], "hello"),
            in_thread=True,
        )
        resp = publish(api, "hello", data)
        deleted = race.result()
    # The publish holds the agent from before it reads it: the delete waits for the new version,
    # then deletes it with the rest (had the delete gone first, the agent would be made afresh).
    assert resp.status_code == 201, resp.text
    assert resp.json()["version"]["version"] == 2
    assert isinstance(deleted, agent_deletes.AgentDeleted) and deleted.deleted_versions == [1, 2]
    assert api.get("/v1/agents/hello").status_code == 404
    assert publish(api, "hello", data).json()["version"]["version"] == 1  # made afresh


@pytest.mark.parametrize("where", ["before_storing", "while_storing"])
def test_deleting_a_pinned_environment_while_publishing_refuses_one_of_them(
    api: httpx.Client, platform: Platform, tmp_path: Path, workspace: tuple[str, str], where: str
) -> None:
    assert api.post("/v1/environments", json={"name": "dy0", "dockerfile": DOCKERFILE}).status_code == 201
    pinning = bundle(tmp_path, {"main.py": "print(1)\n", "orch.yaml": "environment: dy0\n"})
    # The pin is checked first; then, before the version is stored, or while it is being
    # stored (before its bundle is kept), the environment is deleted.
    owner, name = (agents, "_store_version") if where == "before_storing" else (bundles, "keep")
    with pytest.MonkeyPatch.context() as mp:
        race = During(
            mp,
            owner,
            name,
            lambda: envs.delete(platform, workspace[0], "dy0"),
            in_thread=where == "while_storing",
        )
        resp = publish(api, "pinner", pinning)
        deleted = race.result()
    env_left = api.get("/v1/environments/dy0").status_code == 200
    if where == "while_storing":  # the delete waits for the version, sees it, and refuses
        assert resp.status_code == 201, resp.text
        assert isinstance(deleted, OrchError) and deleted.message == "dy0 is used by 1 agent (pinner)."
        assert env_left
    else:  # the publish checks the pin again as it stores the version, and refuses
        assert resp.status_code == 400, resp.text
        assert resp.json()["message"] == (
            "orch.yaml pins environment 'dy0', which does not exist in this workspace."
        )
        assert not isinstance(deleted, OrchError) and not env_left
        assert api.get("/v1/agents/pinner").status_code == 404


def test_a_change_of_a_row_deleted_meanwhile_is_gone_not_a_server_error(
    api: httpx.Client, platform: Platform, tmp_path: Path, workspace: tuple[str, str]
) -> None:
    assert publish(api, "hello", bundle(tmp_path, {"main.py": "print(1)\n"})).status_code == 201
    named = (AgentRow.workspace_id == workspace[0]) & (AgentRow.name == "hello")

    def change_after_delete() -> None:
        with platform.store.session() as s:
            agent = s.scalars(select(AgentRow).where(named)).one()
            with platform.store.session() as other:  # another request, committed in between
                other.execute(delete(AgentRow).where(named))
            agent.last_published += 1  # its UPDATE, at the commit, finds no row

    with pytest.raises(Gone):
        change_after_delete()
