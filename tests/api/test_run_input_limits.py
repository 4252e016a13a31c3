"""A run's input and variables are refused at once when a sandbox could not be given them (one
environment string holds 128 KiB; all of them together are kept within 1 MiB)."""

from __future__ import annotations

from pathlib import Path

import httpx

from orch.services.runs import MAX_INPUT, MAX_VARIABLE
from tests.api.test_agents_runs import bundle, publish


def test_input_and_variables_beyond_what_an_environment_holds_are_refused(
    api: httpx.Client, tmp_path: Path
) -> None:
    assert publish(api, "hello", bundle(tmp_path, {"main.py": "print('hi')\n"})).status_code == 201
    for body, said in [
        ({"input": "a" * (MAX_INPUT + 1)}, "The input is 131,061 bytes; the limit is 131,060 (128 KiB"),
        ({"env": {"BIG": "b" * (MAX_VARIABLE - 3)}}, "The environment variable BIG is 131,068 bytes"),
        ({"env": {f"V{n}": "v" * 120_000 for n in range(9)}}, "more than 1 MiB together"),
        # a long name shown by its start and length, not whole (found by a tester: a 60 KB answer)
        ({"env": {"-" + "A" * 4999: "x"}}, f"variable name '-{'A' * 59}… (5000 characters)' is not usable."),
        ({"env": {"A" * 5000: "x\x00"}}, f"variable {'A' * 60}… (5000 characters) holds a NUL"),
    ]:
        resp = api.post("/v1/runs", json={"agent": "hello", **body})
        assert resp.status_code == 400 and said in resp.json()["message"], resp.text
        assert resp.json()["fix"]
    assert api.get("/v1/runs").json() == []
    assert api.post("/v1/runs", json={"agent": "hello", "input": "a" * MAX_INPUT}).status_code == 201
