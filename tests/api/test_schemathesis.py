"""Bad input at scale: schemathesis against the app's own OpenAPI schema, in process.

Every operation in the schema gets requests schemathesis generates from it, both ones that fit
the schema and ones that break it (wrong types, missing fields, values out of range), sent with
a real workspace token to a workspace that holds one of each kind of thing, so that path
parameters sometimes name something that exists, and sometimes hold a hostile value (a NUL, an
overlong name, a number out of range). Every answer is checked: no 5xx, no traceback or
exception text in any body, and every 4xx carries the app's own error body (error, message, fix)
with a message that is a plain sentence, not a repr or a pydantic dump. Then requests that fit
the schema go out without a token and with a bad one: every operation but /healthz must answer
401 with that body.

Schemathesis only generates here (hypothesis, derandomized, a fixed number of examples per
operation); requests go through the same in-process transport as every other API test
(`tests/asgi.py`, via the `api` fixture). Schemathesis' own ASGI transport keeps one event loop
and the app's lifespan alive for the rest of the process, which outlives the test's platform.

The figures are printed and written to artifacts/trust/schemathesis.json, one entry per store.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import Case, GenerationMode
from schemathesis.core.failures import Failure, FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from orch.sandbox.held_fake import FakeHolder
from orch.sandbox.launcher import Isolation
from orch.services import reconcile
from orch.services.platform import Platform
from orch.workers import deploys
from tests.api.test_isolation import bundle
from tests.conftest import drain, drain_runs

ARTIFACT = Path(__file__).resolve().parents[2] / "artifacts" / "trust" / "schemathesis.json"
# Examples per operation, with a token and without: 32 operations, on SQLite and on PostgreSQL,
# about 30 s each on an idle 2-core machine.
EXAMPLES = 50
UNAUTHENTICATED_EXAMPLES = 6
# Long polls (`wait`) within their limits are cut to this, so a run stays bounded; values outside
# the limits still go out as generated.
MAX_WAIT = 0.05
DOCKERFILE = "FROM e2bdev/code-interpreter:latest\nRUN pip install six\n"
# The path parameters that name one of the seeded things (rather than a version or a new name).
NAMED_BY = [("environments", "ref"), ("agents", "ref"), ("runs", "run_id"), ("services", "ref")]
NAMED_BY += [("tokens", "token_id"), ("secrets", "name"), ("sandboxes", "sandbox_id")]
SANDBOX_FILE = "notes.txt"
SECRET_NAME = "SEED_API_KEY"
# Values that name nothing, next to the seeded ones: a NUL (which PostgreSQL refuses even in a
# lookup), an overlong name, path tricks, numbers out of any column's range.
HOSTILE: dict[str, list[Any]] = {"*": ["nul\x00", "x" * 300, "..", "%", "ü"], "version": [-1, 2**64]}
PUBLIC = {"GET /healthz"}  # answers without a token, by design

# The request bodies the schema declares as gzip'd tars are bytes on the wire.
schemathesis.serializer.alias("application/gzip", "application/octet-stream")

# Text that gives away a Python exception: a traceback, a frame, an exception's name or repr.
EXCEPTION_TEXT = re.compile(
    r"Traceback \(most recent call last\)|File \"[^\"]+\", line \d+"
    r"|\b(?:[A-Z][a-z0-9]+)+(?:Error|Exception)\b"
    r"|\bsqlalchemy\b|\bpsycopg\b|\bpydantic_core\b|\bobject at 0x[0-9a-f]+|<class '"
)
# Signs of a message that is a dump rather than a sentence: a pydantic error list, a dict's or
# list's repr, a pydantic link.
DUMP = re.compile(
    r"\{'\w+': |\[\{'|\[\('|'loc'|'msg'|input_value=|\[type=|errors\.pydantic\.dev|\bvalidation errors? for\b"
)


@dataclass
class Seeds:
    """The workspace's things, by the path parameter and noun that name them."""

    env: dict[str, Any]
    agent: dict[str, Any]
    run: dict[str, Any]
    service: dict[str, Any]
    token_id: str  # a second token of the workspace's (never the caller's own)
    bundle: bytes
    sandbox: dict[str, Any] = field(default_factory=dict)  # held open (on a fake holder)

    def path_values(self, noun: str, param: str) -> list[Any]:
        values: dict[tuple[str, str], list[Any]] = {
            ("environments", "ref"): [self.env["id"], self.env["name"], "python", "python-ml"],
            ("agents", "ref"): [self.agent["id"], self.agent["name"]],
            ("agents", "name"): [self.agent["name"]],
            ("agents", "version"): [1, 2],
            ("runs", "run_id"): [self.run["id"]],
            ("services", "ref"): [self.service["id"], self.service["name"]],
            ("services", "name"): [self.service["name"]],
            ("services", "version"): [1, 2],
            ("tokens", "token_id"): [self.token_id],
            ("secrets", "name"): [SECRET_NAME],
            ("sandboxes", "sandbox_id"): [self.sandbox["id"]],
            ("workspaces", "name"): ["team"],  # the caller's own: refused (409), never deleted
        }
        found = values.get((noun, param))
        if found is None:
            pytest.fail(
                f"No seeded value for {{{param}}} of a /{noun} route: "
                f"add one to Seeds.path_values in {__file__}."
            )
        return found

    def names(self) -> set[str]:
        """Every id and name the path values hold."""
        return {str(v) for noun, param in NAMED_BY for v in self.path_values(noun, param)}

    def query_values(self) -> dict[str, str]:
        """Query parameters that name a thing, by name."""
        return {"agent": self.agent["name"], "workspace": "team", "path": SANDBOX_FILE}

    def bodies(self, label: str) -> list[Any]:
        """Bodies that work, and some that name nothing, for the operations that create or point at
        things."""
        return {
            "POST /v1/environments": [{"name": "fuzz-env", "dockerfile": DOCKERFILE}],
            "PUT /v1/workspace/default-environment": [
                {"environment": self.env["name"]},
                {"environment": "python"},
                {"environment": "nul\x00"},
            ],
            "POST /v1/runs": [
                {"agent": self.agent["name"], "input": "{}", "env": {"A": "1"}, "timeout": 5},
                {"agent": self.agent["name"], "env": {"A": "nul\x00"}},
                {"agent": "nul\x00"},
            ],
            "POST /v1/agents/{name}/versions": [self.bundle],
            "POST /v1/services/{name}/deploy": [self.bundle],
            "POST /v1/tokens": [{"name": "fuzz"}, {"name": "fuzz", "workspace": "nul\x00"}],
            "POST /v1/workspaces": [{"name": "fuzz-ws"}],
            "PUT /v1/secrets/{name}": [{"value": "fuzz-value"}, {"value": ""}, {"value": "nul\x00"}],
            "POST /v1/sandboxes": [{}, {"memory": "256Mi", "timeout": 30}, {"environment": "nul\x00"}],
            "POST /v1/sandboxes/{sandbox_id}/exec": [
                {"command": ["echo", "hi"]},
                {"command": ["cat"], "stdin": "x", "env": {"A": "1"}, "workdir": "/tmp"},
                {"command": ["true"], "workdir": "nul\x00"},
            ],
            "PUT /v1/sandboxes/{sandbox_id}/files": [b"file bytes"],
        }.get(label, [])


@dataclass
class Figures:
    operations: set[str] = field(default_factory=set)
    requests: int = 0
    seeded: int = 0  # requests whose path named one of the seeded things
    seeded_2xx: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    server_errors: int = 0
    client_errors: int = 0
    client_error_bodies_checked: int = 0
    unclear: int = 0
    unauthenticated_requests: int = 0
    unauthenticated_401: int = 0
    conformance_checked: int = 0
    nonconforming: int = 0
    failures: list[str] = field(default_factory=list)

    def fail(self, what: str, sent: str, resp: httpx.Response) -> None:
        if len(self.failures) < 40:
            self.failures.append(f"{what}: {sent} -> {resp.status_code} {resp.text[:300]!r}")


def sent_texts(case: Case) -> list[str]:
    """The text of every value the request carries, as the server may quote it back, longest first."""
    found: set[str] = set()

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(k)
                walk(v)
        elif isinstance(value, list | tuple):
            for v in value:
                walk(v)
        if not isinstance(value, bytes):
            # A path parameter is generated percent-encoded (`a%2Bb`): the server quotes `a+b`.
            for text in {str(value), unquote(str(value))}:
                escaped = {json.dumps(text)[1:-1], json.dumps(text, ensure_ascii=False)[1:-1]}
                found.update({text, repr(text)[1:-1], *escaped})

    for part in (case.path_parameters, case.query, case.headers, case.body):
        walk(part or {})
    return sorted((t for t in found if len(t) >= 3), key=len, reverse=True)


def without(text: str, quoted: Sequence[str]) -> str:
    """`text` without what the request sent: quoting the caller's input is not a dump."""
    for q in quoted:
        text = text.replace(q, "")
    return text


def problem_with_error_body(resp: httpx.Response, quoted: Sequence[str] = ()) -> str | None:
    """Why a 4xx's body is not the app's own error body with a plain message, or None if it is."""
    try:
        data = resp.json()
    except ValueError:
        return "the body is not JSON"
    if not isinstance(data, dict):
        return "the body is not a JSON object"
    error, message, fix = data.get("error"), data.get("message"), data.get("fix")
    if not isinstance(error, str) or not re.fullmatch(r"[a-z_]+", error):
        return "no error code"
    if not isinstance(message, str) or not message.strip():
        return "no message"
    if not isinstance(fix, str) or not fix.strip():
        return "no fix"
    for text in (message, fix):
        if DUMP.search(without(text, quoted)) or EXCEPTION_TEXT.search(without(text, quoted)):
            return f"not plain: {text[:200]!r}"
        if not text.rstrip().endswith((".", "?", "!", ".)", '."', ".'", ".`")) or " " not in text.strip():
            return f"not a sentence: {text[:200]!r}"
    if len(message) > 1200:
        return f"the message is {len(message)} characters long"
    return None


def request_kwargs(case: Case, token: str | None) -> dict[str, Any]:
    """httpx keywords for what schemathesis would send, with `token` (or none) as the credentials."""
    kw = case.as_transport_kwargs(base_url="http://testserver")
    headers = {k: v for k, v in kw.get("headers", {}).items() if k.lower() != "authorization"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    if kw.get("cookies"):
        headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in kw["cookies"].items())
    params = dict(kw.get("params") or {})
    wait = params.get("wait")
    if isinstance(wait, int | float) and not isinstance(wait, bool) and 0 < wait <= 30:
        params["wait"] = min(wait, MAX_WAIT)
    out: dict[str, Any] = {"method": kw["method"], "url": kw["url"], "headers": headers, "params": params}
    if "json" in kw:
        out["content"] = json.dumps(kw["json"]).encode()
    elif kw.get("data") is not None:
        data = kw["data"]
        out["content"] = data.encode() if isinstance(data, str) else data
    if kw.get("files"):
        pytest.fail(f"{case.operation.label} takes multipart files: teach request_kwargs to send them.")
    return out


def send(api: httpx.Client, kw: dict[str, Any], drop_auth: bool) -> httpx.Response:
    request = api.build_request(**kw)
    if drop_auth:  # the client's own token too
        del request.headers["Authorization"]
    try:
        return api.send(request)
    except Exception as e:  # the in-process transport re-raises what the app's 500 handler answered
        body = {"error": "internal", "message": f"The app raised {type(e).__name__}: {e}", "fix": ""}
        return httpx.Response(500, json=body, request=request)


# Every answer, 2xx or not, must be one the schema declares, with the content type and the body
# it declares: a client generated from /openapi.json relies on them.
CONFORMANCE = [status_code_conformance, content_type_conformance, response_schema_conformance]


def nonconformance(case: Case, resp: httpx.Response) -> str | None:
    """How `resp` departs from what the schema declares for `case`'s operation, or None."""
    try:
        case.validate_response(resp, checks=CONFORMANCE)
    except Failure as e:
        return " ".join(str(e).split())[:400]
    except FailureGroup as group:
        return "; ".join(" ".join(str(f).split())[:400] for f in group.exceptions)
    return None


def describe(kw: dict[str, Any]) -> str:
    body = kw.get("content")
    shown = "" if body is None else f" body={body[:120]!r}"
    return f"{kw['method']} {kw['url']} params={kw['params']}{shown}"


def strategy(op: Any, seeds: Seeds, modes: list[GenerationMode]) -> st.SearchStrategy[Case]:
    """Generated cases for `op` in `modes`; as often, with its path naming a seeded thing (or
    holding a hostile value), its query doing the same, or a body from `Seeds.bodies`."""
    noun = op.path.split("/")[2] if op.path.startswith("/v1/") else ""
    names = [p.name for p in op.path_parameters]
    seeded: list[dict[str, Any]] = [{}]
    mixed: list[dict[str, Any]] = [{}]
    for name in names:
        values = seeds.path_values(noun, name)
        seeded = [{**c, name: v} for c in seeded for v in values]
        mixed = [{**c, name: v} for c in mixed for v in values + HOSTILE.get(name, HOSTILE["*"])]
    hostile = [c for c in mixed if c not in seeded]
    queries = {k: v for k, v in seeds.query_values().items() if any(p.name == k for p in op.query)}
    branches: list[st.SearchStrategy[Case]] = []
    for mode in modes:
        branches.append(op.as_strategy(generation_mode=mode))
        for combos in (seeded, hostile) if names else ():
            branches.append(
                st.sampled_from(combos).flatmap(
                    lambda pp, m=mode: op.as_strategy(generation_mode=m, path_parameters=pp)
                )
            )
        if queries:
            branches.append(op.as_strategy(generation_mode=mode, query=queries))
            nul = {k: HOSTILE["*"][0] for k in queries}
            branches.append(op.as_strategy(generation_mode=mode, query=nul))
    # Integers with no upper limit (byte offsets), past what a file offset or a column can hold.
    schemas = {q.name: q.definition["schema"] for q in op.query}
    big = {k: 2**64 for k, v in schemas.items() if v.get("type") == "integer" and "maximum" not in v}
    if big:
        branches.append(
            st.sampled_from(seeded).flatmap(
                lambda pp: op.as_strategy(
                    generation_mode=GenerationMode.POSITIVE, path_parameters=pp, query=big
                )
            )
        )
    for body in seeds.bodies(op.label):
        branches.append(
            st.sampled_from(seeded).flatmap(
                lambda pp, b=body: op.as_strategy(
                    generation_mode=GenerationMode.POSITIVE, path_parameters=pp, body=b
                )
            )
        )
    return st.one_of(branches)


def each_case(strat: st.SearchStrategy[Case], examples: int, check: Callable[[Case], None]) -> None:
    """Call `check` on `examples` cases, the same ones every time; `check` records, never raises."""

    @settings(
        max_examples=examples,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
        print_blob=False,
    )
    @given(strat)
    def run(case: Case) -> None:
        check(case)

    run()


@pytest.fixture
def seeds(api: httpx.Client, platform: Platform, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Seeds:
    """The caller's workspace with an environment (its default), an agent with a version, a finished
    run, a running service, a second token, and a secret."""
    env = api.post("/v1/environments", json={"name": "seed-env", "dockerfile": DOCKERFILE})
    assert env.status_code == 201, env.text
    drain(platform)
    assert api.put("/v1/workspace/default-environment", json={"environment": "seed-env"}).status_code == 200
    data = bundle(tmp_path, "agent", {"main.py": "print('hi')\n"})
    gz = {"Content-Type": "application/gzip"}
    resp = api.post("/v1/agents/seed-agent/versions", content=data, headers=gz)
    assert resp.status_code == 201, resp.text
    run = api.post("/v1/runs", json={"agent": "seed-agent", "input": "{}"})
    assert run.status_code == 201, run.text
    drain_runs(platform)
    monkeypatch.setattr(platform, "probe", lambda address, port: True)
    resp = api.post("/v1/services/seed-svc/deploy", content=data, headers=gz)
    assert resp.status_code == 201, resp.text
    while (dep := deploys.claim(platform)) is not None:
        deploys.execute(platform, dep)
    reconcile.reconcile(platform)
    token = api.post("/v1/tokens", json={"name": "seed-ci"})
    assert token.status_code == 201, token.text
    assert api.put(f"/v1/secrets/{SECRET_NAME}", json={"value": "seed-value"}).status_code == 200
    found = Seeds(
        env=api.get("/v1/environments/seed-env").json(),
        agent=api.get("/v1/agents/seed-agent").json(),
        run=api.get(f"/v1/runs/{run.json()['id']}").json(),
        service=api.get("/v1/services/seed-svc").json(),
        token_id=token.json()["id"],
        bundle=data,
    )
    assert found.env["status"] == "ready" and found.run["status"] == "succeeded"
    assert found.service["state"] == "running"
    platform.held.holders.update({Isolation.RUNC: FakeHolder(), Isolation.GVISOR: FakeHolder()})
    found.sandbox = api.post("/v1/sandboxes", json={}).json()
    put = api.put(f"/v1/sandboxes/{found.sandbox['id']}/files", params={"path": SANDBOX_FILE}, content=b"hi")
    assert put.status_code == 200, put.text
    return found


def test_schemathesis_finds_no_5xx_and_no_unclear_4xx(
    api: httpx.Client, seeds: Seeds, workspace: tuple[str, str], database_url: str
) -> None:
    store = "sqlite" if database_url.startswith("sqlite") else "postgresql"
    started = time.monotonic()
    spec = api.get("/openapi.json").json()
    schema = schemathesis.openapi.from_dict(spec)
    operations = [result.ok() for result in schema.get_all_operations()]
    # Deleting comes last, so the other operations find the seeded things still there.
    operations.sort(key=lambda op: op.method.upper() == "DELETE")
    assert len(operations) >= 30, [op.label for op in operations]
    figures = Figures()
    token = workspace[1]

    def check(case: Case) -> None:
        kw = request_kwargs(case, token)
        resp = send(api, kw, drop_auth=False)
        figures.operations.add(case.operation.label)
        figures.requests += 1
        figures.statuses[resp.status_code] += 1
        sent = describe(kw)
        if set(map(str, (case.path_parameters or {}).values())) & seeds.names():
            figures.seeded += 1
            figures.seeded_2xx += resp.status_code < 300
        if resp.status_code >= 500:
            figures.server_errors += 1
            figures.fail("5xx", sent, resp)
        quoted = sent_texts(case)
        if EXCEPTION_TEXT.search(without(resp.text, quoted)):
            figures.fail("exception text in the answer", sent, resp)
        figures.conformance_checked += 1
        if why_not := nonconformance(case, resp):
            figures.nonconforming += 1
            figures.fail(f"not as the schema declares ({why_not})", sent, resp)
        if 400 <= resp.status_code < 500:
            figures.client_errors += 1
            figures.client_error_bodies_checked += 1
            why = problem_with_error_body(resp, quoted)
            if why:
                figures.unclear += 1
                figures.fail(f"unclear 4xx ({why})", sent, resp)

    def check_unauthenticated(case: Case) -> None:
        # Alternately no credentials at all and a token that does not exist.
        bad = None if figures.unauthenticated_requests % 2 == 0 else "orch_not-a-token"
        kw = request_kwargs(case, bad)
        resp = send(api, kw, drop_auth=bad is None)
        figures.unauthenticated_requests += 1
        sent = describe(kw) + (" (no token)" if bad is None else " (bad token)")
        conforms = nonconformance(case, resp) is None
        if resp.status_code == 401 and problem_with_error_body(resp) is None and conforms:
            figures.unauthenticated_401 += 1
        else:
            figures.fail("not a plain 401 without a valid token", sent, resp)

    modes = [GenerationMode.POSITIVE, GenerationMode.NEGATIVE]
    for op in operations:
        each_case(strategy(op, seeds, modes), EXAMPLES, check)
    for op in operations:
        if op.label not in PUBLIC:
            positive = strategy(op, seeds, [GenerationMode.POSITIVE])
            each_case(positive, UNAUTHENTICATED_EXAMPLES, check_unauthenticated)

    took = time.monotonic() - started
    result = {
        "operations": len(operations),
        "operations_covered": len(figures.operations),
        "requests": figures.requests,
        "server_errors": figures.server_errors,
        "client_errors": figures.client_errors,
        "client_error_bodies_checked": figures.client_error_bodies_checked,
        "unclear_client_errors": figures.unclear,
        "requests_naming_seeded_things": figures.seeded,
        "of_which_2xx": figures.seeded_2xx,
        "statuses": {str(k): v for k, v in sorted(figures.statuses.items())},
        "answers_checked_against_schema": figures.conformance_checked,
        "answers_not_as_declared": figures.nonconforming,
        "unauthenticated_requests": figures.unauthenticated_requests,
        "unauthenticated_401": figures.unauthenticated_401,
        "examples_per_operation": EXAMPLES,
        "seconds": round(took, 1),
        "schemathesis": schemathesis.__version__,
    }
    result["measured_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    ARTIFACT.parent.mkdir(parents=True, exist_ok=True)
    stores = json.loads(ARTIFACT.read_text()) if ARTIFACT.exists() else {}
    stores = {k: v for k, v in stores.items() if k in ("sqlite", "postgresql")}  # older layouts go
    ARTIFACT.write_text(json.dumps({**stores, store: result}, indent=2, sort_keys=True) + "\n")
    print(
        f"\nschemathesis [{store}]: {len(figures.operations)}/{len(operations)} operations, "
        f"{figures.requests} requests "
        f"({figures.seeded} naming seeded things, {figures.seeded_2xx} of them 2xx), "
        f"{figures.server_errors} 5xx, {figures.client_errors} 4xx, {figures.client_error_bodies_checked} "
        f"4xx bodies checked ({figures.unclear} unclear), {figures.conformance_checked} answers checked "
        f"against the schema ({figures.nonconforming} not as declared), {figures.unauthenticated_401}/"
        f"{figures.unauthenticated_requests} without a valid token answered 401, {took:.1f} s"
    )
    assert len(figures.operations) == len(operations) and figures.seeded_2xx > 0
    assert not figures.failures, "\n".join(figures.failures)
    assert figures.server_errors == 0 and figures.unclear == 0 and figures.nonconforming == 0
    assert figures.unauthenticated_401 == figures.unauthenticated_requests
