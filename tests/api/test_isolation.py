"""Workspace isolation on every route, generated from the app's route table.

Workspace B gets one of each kind of thing (an environment, an agent with a version, a run, a
service, tokens); then every API route under /v1 and the services' proxy is called, for every
method, with A's token and B's ids and names in its path (and in its body or query where it
takes a reference). A must get 404 (403 where only an admin or only B itself may ask) and never
a byte of B's data. A route whose parameters the walker cannot fill fails the test: a new route
is covered as soon as it exists, or the test says what to add.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from sqlalchemy import select

from orch.bundle import pack_directory
from orch.engine.base import ContainerExit
from orch.engine.fake import FakeEngine
from orch.sandbox.held_fake import FakeHolder
from orch.sandbox.launcher import Isolation
from orch.secret import box
from orch.server import proxy
from orch.server.app import create_app
from orch.server.main import by_port
from orch.services import reconcile
from orch.services.platform import Platform
from orch.store.schema import (
    AgentRow,
    AgentVersionRow,
    BuildRow,
    EnvironmentRow,
    RunRow,
    SandboxRow,
    SecretRow,
    ServiceDeploymentRow,
    ServiceRow,
    TokenRow,
)
from orch.workers import deploys
from tests.asgi import in_process
from tests.conftest import drain, drain_runs

SECRET = "b-secret-q8z3"
DOCKERFILE = f"FROM e2bdev/code-interpreter:latest\nRUN pip install six\nENV MARK={SECRET}\n"
PARAM = re.compile(r"\{(\w+)(?::\w+)?\}")

# Routes whose path names a thing in the caller's own namespace (publishing or deploying under
# a name creates the caller's own agent or service, setting a secret the caller's own secret):
# given B's name, A makes its own (answered with this status), and must still see nothing of
# B's. Every other path parameter addresses an existing thing.
OWN_NAMESPACE = {
    ("POST", "/v1/agents/{name}/versions"): "201",
    ("POST", "/v1/services/{name}/deploy"): "201",
    ("PUT", "/v1/secrets/{name}"): "200",
}
SECRET_NAME, SECRET_VALUE = "B_API_KEY", "b-secret-value-77x"
# Body and query fields that refer to an existing thing, by what they refer to.
REFERENCES = {"agent": "agent", "environment": "environment", "workspace": "workspace"}


@dataclass
class B:
    token: str
    workspace: str
    env: dict[str, Any]
    agent: dict[str, Any]
    run: dict[str, Any]
    service: dict[str, Any]
    token_ids: list[str]
    secrets: list[str] = field(default_factory=list)
    caller_workspace: str = "a-corp"  # A's name, made by the test
    sandbox: dict[str, Any] = field(default_factory=dict)  # held open, a file of SECRET in it

    def path_values(self, noun: str, param: str) -> list[str]:
        """B's ids and names for `param` of a route under /v1/NOUN (or the proxy, noun 'services')."""
        values = {
            ("environments", "ref"): [self.env["id"], self.env["name"]],
            ("agents", "ref"): [self.agent["id"], self.agent["name"]],
            ("agents", "name"): [self.agent["name"]],
            ("agents", "version"): ["1"],
            ("runs", "run_id"): [self.run["id"]],
            ("services", "ref"): [self.service["id"], self.service["name"]],
            ("services", "name"): [self.service["name"]],
            ("services", "version"): ["1"],
            # B's workspace, and A's own: neither must reach B's service.
            ("services", "workspace"): [self.workspace, self.caller_workspace],
            ("services", "path"): ["", "some/page"],
            ("tokens", "token_id"): self.token_ids,
            ("sandboxes", "sandbox_id"): [self.sandbox["id"]],
            ("secrets", "name"): [SECRET_NAME],
            ("workspaces", "name"): [self.workspace, self.caller_workspace],  # admin only: 403
        }.get((noun, param))
        if values is None:
            pytest.fail(
                f"The isolation walker cannot fill {{{param}}} of a /{noun} route: add B's value for "
                f"({noun!r}, {param!r}) to B.path_values in {__file__}."
            )
        return values

    def reference(self, kind: str) -> str:
        return {"agent": self.agent["name"], "environment": self.env["id"], "workspace": self.workspace}[kind]


@dataclass(frozen=True)
class Call:
    method: str
    route: str
    url: str
    json: dict[str, Any] | None
    content: bytes | None
    params: dict[str, str]
    expect: str  # "404", "403", or "open" (any answer below 500, none of B's data either way)

    def __str__(self) -> str:
        return f"{self.method} {self.url} params={self.params} json={self.json} (route {self.route})"


def bundle(tmp_path: Path, name: str, files: dict[str, str]) -> bytes:
    root = tmp_path / "bundles" / name
    root.mkdir(parents=True)
    for rel, text in files.items():
        (root / rel).write_text(text)
    return pack_directory(root).data


@pytest.fixture
def app(platform: Platform) -> FastAPI:
    return create_app(platform, workers=False)


SERVICES_ORIGIN = "http://localhost:8751"  # the services' default address, as the server serves it


@pytest.fixture
def transport(app: FastAPI) -> Iterator[httpx.BaseTransport]:
    """Both of the server's origins (the API's, and the services' on their port)."""
    with in_process(by_port(app, app.state.services_app, 8751)) as t:
        yield t


def client(transport: httpx.BaseTransport, token: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(transport=transport, base_url="http://testserver", headers=headers)


@pytest.fixture
def admin(platform: Platform, transport: httpx.BaseTransport, workspace: tuple[str, str]) -> httpx.Client:
    return client(transport, workspace[1])


def new_workspace(admin: httpx.Client, name: str) -> str:
    resp = admin.post("/v1/workspaces", json={"name": name})
    assert resp.status_code == 201, resp.text
    return str(resp.json()["token"])


@pytest.fixture
def b(
    admin: httpx.Client,
    transport: httpx.BaseTransport,
    platform: Platform,
    fake_engine: FakeEngine,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> B:
    """Workspace B with one of each kind of thing, each carrying SECRET where it holds data."""
    token = new_workspace(admin, "b-corp")
    api = client(transport, token)
    env = api.post("/v1/environments", json={"name": "b-env", "dockerfile": DOCKERFILE})
    assert env.status_code == 201, env.text
    drain(platform)
    assert api.put("/v1/workspace/default-environment", json={"environment": "b-env"}).status_code == 200
    code = f"print('{SECRET}')\n"
    resp = api.post(
        "/v1/agents/b-agent/versions",
        content=bundle(tmp_path, "agent", {"main.py": code}),
        headers={"Content-Type": "application/gzip"},
    )
    assert resp.status_code == 201, resp.text

    def behave(spec: object, out: Any, err: Any) -> ContainerExit:
        out(f"{SECRET} stdout\n".encode())
        err(f"{SECRET} stderr\n".encode())
        return ContainerExit(0)

    fake_engine.behaviour = behave
    run = api.post("/v1/runs", json={"agent": "b-agent", "input": f'{{"k": "{SECRET}"}}'})
    assert run.status_code == 201, run.text
    drain_runs(platform)
    monkeypatch.setattr(platform, "probe", lambda address, port: True)
    resp = api.post(
        "/v1/services/b-svc/deploy",
        content=bundle(tmp_path, "svc", {"main.py": code}),
        headers={"Content-Type": "application/gzip"},
    )
    assert resp.status_code == 201, resp.text
    while (dep := deploys.claim(platform)) is not None:
        deploys.execute(platform, dep)
    reconcile.reconcile(platform)
    second = api.post("/v1/tokens", json={"name": "b-ci"})
    assert second.status_code == 201
    assert api.put(f"/v1/secrets/{SECRET_NAME}", json={"value": SECRET_VALUE}).status_code == 200
    things = B(
        token=token,
        workspace="b-corp",
        env=api.get("/v1/environments/b-env").json(),
        agent=api.get("/v1/agents/b-agent").json(),
        run=api.get(f"/v1/runs/{run.json()['id']}").json(),
        service=api.get("/v1/services/b-svc").json(),
        token_ids=[t["id"] for t in api.get("/v1/tokens").json()],
    )
    assert things.env["status"] == "ready" and things.run["status"] == "succeeded"
    assert things.service["state"] == "running"
    things.secrets = [SECRET, token, second.json()["token"], SECRET_NAME, SECRET_VALUE]
    platform.held.holders.update({Isolation.RUNC: FakeHolder(), Isolation.GVISOR: FakeHolder()})
    things.sandbox = api.post("/v1/sandboxes", json={"environment": "b-env"}).json()
    put = api.put(
        f"/v1/sandboxes/{things.sandbox['id']}/files", params={"path": SANDBOX_FILE}, content=SECRET
    )
    assert put.status_code == 200, put.text
    things.secrets += _ids_of(platform, api)
    return things


def _ids_of(platform: Platform, api: httpx.Client) -> list[str]:
    """Every id of B's rows, read from the store: any of them in an answer to A is a leak."""
    ws_id = next(w["id"] for w in api.get("/v1/workspaces").json())
    with platform.store.session() as s:
        envs = list(s.scalars(select(EnvironmentRow).where(EnvironmentRow.scope == ws_id)))
        agents = list(s.scalars(select(AgentRow).where(AgentRow.workspace_id == ws_id)))
        services = list(s.scalars(select(ServiceRow).where(ServiceRow.workspace_id == ws_id)))
        ids = [ws_id, *(e.id for e in envs), *(a.id for a in agents), *(x.id for x in services)]
        ids += [
            b.id for b in s.scalars(select(BuildRow).where(BuildRow.environment_id.in_([e.id for e in envs])))
        ]
        ids += [
            v.id
            for v in s.scalars(
                select(AgentVersionRow).where(AgentVersionRow.agent_id.in_([a.id for a in agents]))
            )
        ]
        ids += [r.id for r in s.scalars(select(RunRow).where(RunRow.workspace_id == ws_id))]
        ids += [
            d.id
            for d in s.scalars(
                select(ServiceDeploymentRow).where(
                    ServiceDeploymentRow.service_id.in_([x.id for x in services])
                )
            )
        ]
        ids += [t.id for t in s.scalars(select(TokenRow).where(TokenRow.workspace_id == ws_id))]
        ids += [x.id for x in s.scalars(select(SandboxRow).where(SandboxRow.workspace_id == ws_id))]
    return ids


def _routes(app: FastAPI) -> list[tuple[str, str]]:
    """(method, path) of every API route under /v1 and of the services' proxy."""
    try:  # FastAPI >= 0.160 keeps included routers whole: walk them through their contexts
        from fastapi.routing import iter_route_contexts
    except ImportError:  # older ones flatten them into app.routes
        contexts: list[Any] = list(app.routes)
    else:
        contexts = list(iter_route_contexts(app.routes))
    found = []
    for ctx in contexts:
        original = getattr(ctx, "original_route", ctx)
        path = ctx.path
        if not isinstance(original, APIRoute) or not path.startswith("/v1/"):
            continue
        found += [(method, path) for method in sorted(ctx.methods)]
    # The services' proxy, on the services' origin, is ASGI middleware (server/proxy.py).
    found += [(method, path) for path in proxy.PATHS for method in proxy.METHODS]
    return found


def _body_and_query(
    operation: dict[str, Any], schemas: dict[str, Any], b: B, what: str, bundle_data: bytes
) -> tuple[list[tuple[dict[str, Any] | None, bytes | None, dict[str, str], str | None]], bool]:
    """The bodies and queries to try: (json, content, params, the reference kind they carry).
    Returns also whether the operation takes a reference at all."""
    body: dict[str, Any] | None = None
    content: bytes | None = None
    optional_refs: dict[str, str] = {}
    required_ref: str | None = None
    request_body = operation.get("requestBody")
    if request_body:
        media = request_body["content"]
        if "application/gzip" in media:
            content = bundle_data
        elif "application/octet-stream" in media:
            content = b"a's own bytes"
        elif request_body.get("required"):
            schema = media["application/json"]["schema"]
            schema = schemas[schema["$ref"].rsplit("/", 1)[1]] if "$ref" in schema else schema
            body = {}
            for name in schema.get("required", []):
                if name in REFERENCES:
                    body[name] = b.reference(REFERENCES[name])
                    required_ref = REFERENCES[name]
                elif name in FIELD_VALUES:
                    body[name] = FIELD_VALUES[name]
                else:
                    pytest.fail(f"The isolation walker cannot fill the body field {name!r} of {what}.")
            for name in schema.get("properties", {}):
                if name not in body and name in REFERENCES:
                    optional_refs[name] = REFERENCES[name]
    query_refs = {}
    plain: dict[str, str] = {}  # required query parameters that name nothing (a file's path)
    for p in operation.get("parameters", []):
        if p["in"] != "query":
            continue
        if p["name"] in REFERENCES:
            query_refs[p["name"]] = REFERENCES[p["name"]]
        elif p.get("required") and p["name"] in FIELD_VALUES:
            plain[p["name"]] = FIELD_VALUES[p["name"]]
        elif p.get("required"):
            pytest.fail(f"The isolation walker cannot fill the query parameter {p['name']!r} of {what}.")
    variants: list[tuple[dict[str, Any] | None, bytes | None, dict[str, str], str | None]] = [
        (body, content, dict(plain), required_ref)
    ]
    for name, kind in optional_refs.items():
        variants.append(({**(body or {}), name: b.reference(kind)}, content, dict(plain), kind))
    for name, kind in query_refs.items():
        variants.append((body, content, {**plain, name: b.reference(kind)}, kind))
    return variants, bool(required_ref or optional_refs or query_refs)


# Values for plain body fields: names reuse B's so that a clash with B's names would show.
FIELD_VALUES: dict[str, Any] = {
    "name": "b-env",
    "dockerfile": "FROM e2bdev/code-interpreter:latest\n",
    "value": "a-value",
    "command": ["echo", "from-a"],
    "path": "notes.txt",  # B's sandbox holds SANDBOX_FILE: the same name
}
SANDBOX_FILE = "notes.txt"


def calls(app: FastAPI, b: B, bundle_data: bytes) -> list[Call]:
    spec = app.openapi()
    schemas = spec.get("components", {}).get("schemas", {})
    out: list[Call] = []
    for method, path in _routes(app):
        operation = spec["paths"].get(path, {}).get(method.lower(), {})
        admin_only = bool(operation.get("x-orch-admin"))
        noun = "services" if path.startswith("/services/") else path.split("/")[2]
        params = PARAM.findall(path)
        own = (method, path) in OWN_NAMESPACE
        values = [b.path_values(noun, p) for p in params]
        variants, _ = _body_and_query(operation, schemas, b, f"{method} {path}", bundle_data)
        for combo in itertools.product(*values):
            url = SERVICES_ORIGIN + path if path.startswith("/services/") else path
            for name, value in zip(params, combo, strict=True):
                url = re.sub(r"\{" + name + r"(?::\w+)?\}", value, url)
            for body, content, query, ref in variants:
                if admin_only:
                    expect = "403"
                elif own:
                    expect = OWN_NAMESPACE[(method, path)]  # A's own thing, under the same name as B's
                elif params:
                    expect = "404"
                elif ref == "workspace":
                    expect = "403"  # a plain token may not name another workspace, existing or not
                elif ref:
                    expect = "404"
                else:
                    expect = "open"
                out.append(Call(method, path, url, body, content, query, expect))
    # The open calls and creations in A's own namespace last: what A creates under B's
    # names must not turn a later 404 check into a call on A's own thing.
    return sorted(
        out, key=lambda c: (c.expect == "open" or (c.method, c.route) in OWN_NAMESPACE, c.method != "GET")
    )


def test_a_token_of_one_workspace_sees_nothing_of_another_on_any_route(
    app: FastAPI,
    transport: httpx.BaseTransport,
    admin: httpx.Client,
    b: B,
    tmp_path: Path,
    platform: Platform,
) -> None:
    a = client(transport, new_workspace(admin, b.caller_workspace))
    nobody = client(transport, None)
    todo = calls(app, b, bundle(tmp_path, "a-bundle", {"main.py": "print('a')\n"}))
    routes = {(c.method, c.route) for c in todo}
    assert len(routes) >= 30 and any(r.startswith("/services/") for _, r in routes)
    failures = []
    for call in todo:
        headers = {"Content-Type": "application/gzip"} if call.content is not None else {}
        kw: dict[str, Any] = {"params": call.params, "headers": headers}
        if call.json is not None:
            kw["json"] = call.json
        if call.content is not None:
            kw["content"] = call.content
        if nobody.request(call.method, call.url, **kw).status_code != 401:
            failures.append(f"{call}: answered without a token")
        resp = a.request(call.method, call.url, **kw)
        # An error may quote what A sent (an id A typed is not B's data); anything else of B's is.
        sent = f"{call.url} {call.params} {call.json}"
        leaked = [s for s in b.secrets if (s in resp.text or s in str(resp.headers)) and s not in sent]
        if leaked:
            failures.append(f"{call}: A's answer ({resp.status_code}) holds B's data {leaked[:3]}")
        if call.expect == "open":
            if resp.status_code >= 500:
                failures.append(f"{call}: {resp.status_code} {resp.text[:200]}")
        elif str(resp.status_code) != call.expect:
            failures.append(f"{call}: expected {call.expect}, got {resp.status_code} {resp.text[:200]}")
        elif resp.status_code >= 400 and call.method != "HEAD" and not resp.json().get("message"):
            failures.append(f"{call}: {resp.status_code} without a message")
    assert not failures, "\n".join(failures)

    # B's things are untouched and B still sees them all.
    api = client(transport, b.token)
    assert api.get(f"/v1/environments/{b.env['id']}").json()["status"] == "ready"
    assert api.get("/v1/workspace/default-environment").json()["default"]["name"] == "b-env"
    assert [v["version"] for v in api.get("/v1/agents/b-agent").json()["versions"]] == [1]
    run = api.get(f"/v1/runs/{b.run['id']}").json()
    assert run["status"] == "succeeded"
    assert SECRET in api.get(f"/v1/runs/{b.run['id']}/logs").json()["stdout"]
    svc = api.get("/v1/services/b-svc").json()
    assert (svc["state"], svc["version"], svc["latest_version"]) == ("running", 1, 1)
    assert [w["name"] for w in api.get("/v1/workspaces").json()] == ["b-corp"]
    assert {t["id"] for t in api.get("/v1/tokens").json()} == set(b.token_ids)
    assert {e["name"] for e in api.get("/v1/environments").json() if e["kind"] == "custom"} == {"b-env"}
    sandbox = api.get(f"/v1/sandboxes/{b.sandbox['id']}").json()
    assert (sandbox["status"], sandbox["environment"]["name"]) == ("running", "b-env")
    kept = api.get(f"/v1/sandboxes/{b.sandbox['id']}/files", params={"path": SANDBOX_FILE})
    assert kept.content == SECRET.encode()
    assert [s["id"] for s in api.get("/v1/sandboxes").json()] == [b.sandbox["id"]]
    assert [s["name"] for s in api.get("/v1/secrets").json()] == [SECRET_NAME]
    ws_id = api.get("/v1/workspaces").json()[0]["id"]
    with platform.store.session() as s:
        row = s.scalar(
            select(SecretRow).where(SecretRow.name == SECRET_NAME, SecretRow.workspace_id == ws_id)
        )
        assert row is not None
        assert box.load(platform.config).open(ws_id, SECRET_NAME, row.ciphertext) == SECRET_VALUE
