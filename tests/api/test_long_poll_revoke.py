"""A long poll (a run's logs or events, `wait`) begun before its token was revoked answers 401
once its wait ends, not what was written after the revoke. Found by a tester: a poll begun just
before the revoke answered up to 30 s of later output (a new request is refused at once)."""

from __future__ import annotations

import threading
from pathlib import Path

import httpx

from tests.api.test_agents_runs import bundle, publish

WAIT = 5  # seconds each poll waits: a queued run (no workers here) writes nothing meanwhile


def test_a_poll_waiting_as_its_token_is_revoked_answers_401(
    api: httpx.Client, served: tuple[str, str], tmp_path: Path
) -> None:
    made = api.post("/v1/tokens", json={"name": "follower"}).json()
    assert publish(api, "quiet", bundle(tmp_path, {"main.py": ""})).status_code == 201
    run_id = api.post("/v1/runs", json={"agent": "quiet"}).json()["id"]
    paths = [f"/v1/runs/{run_id}/logs?wait={WAIT}", f"/v1/runs/{run_id}/events?wait={WAIT}"]
    answers: dict[str, httpx.Response] = {}
    began = threading.Barrier(len(paths) + 1)

    def poll(path: str) -> None:
        with httpx.Client(base_url=served[0], headers={"Authorization": f"Bearer {made['token']}"}) as c:
            assert c.get(f"/v1/runs/{run_id}").status_code == 200  # the token works before
            began.wait(10)
            answers[path] = c.get(path, timeout=30)

    threads = [threading.Thread(target=poll, args=(path,)) for path in paths]
    for t in threads:
        t.start()
    began.wait(10)
    threading.Event().wait(1.5)  # both polls are under way (a poll begun after the revoke: 401 at once)
    assert api.delete(f"/v1/tokens/{made['id']}").status_code == 200
    for t in threads:
        t.join(30)
    for path in paths:
        said = answers[path]
        assert said.status_code == 401, (path, said.status_code, said.text)
        assert said.json()["error"] == "unauthorized"
        # It waited: it began before the revoke, which refuses a new request at once.
        assert said.elapsed.total_seconds() > 2, (path, said.elapsed)
