"""Publishes with `docker=true` of one Dockerfile at once (found by a tester: of four publishes
of one agent, three were refused 409 "An environment named 'dk8-dockerfile' already exists…
Choose another name", a fix that does not apply to a publish; of agents with one Dockerfile,
each got an environment of its own, where docs/agents.md promises one per Dockerfile)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

from orch.services import environments as envs
from orch.services.platform import Platform
from tests.api.test_agents_runs import bundle, publish

DOCKERFILE = "FROM e2bdev/code-interpreter:latest\nRUN echo racing > /opt/m\n"


@pytest.mark.parametrize("second", ["same-agent", "other-agent"])
def test_two_publishes_of_one_dockerfile_at_once_share_one_environment(
    api: httpx.Client, platform: Platform, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, second: str
) -> None:
    data = bundle(tmp_path, {"main.py": "print(1)\n", "Dockerfile": DOCKERFILE})
    made = envs.create
    inside, answers = threading.Event(), {}

    def create(*args: Any, **kwargs: Any) -> Any:  # the first publish's, while the other runs
        if not inside.is_set():
            inside.set()
            other.join(2)  # the other publish's end, or as long as it waits for this one
        return made(*args, **kwargs)

    monkeypatch.setattr(envs, "create", create)
    name = "dk" if second == "same-agent" else "dk2"
    other = threading.Thread(
        target=lambda: inside.wait(10) and answers.update(b=publish(api, name, data, True))
    )
    other.start()
    answers["a"] = publish(api, "dk", data, docker=True)
    other.join(30)
    assert [answers[k].status_code for k in ("a", "b")] == [201, 201], {k: v.text for k, v in answers.items()}
    used = {answers[k].json()["version"]["dockerfile_environment"]["name"] for k in ("a", "b")}
    assert used == {"dk-dockerfile"}, used
    names = [e["name"] for e in api.get("/v1/environments").json()]
    assert names.count("dk-dockerfile") == 1 and not [n for n in names if n.startswith("dk2")], names
