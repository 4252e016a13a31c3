"""The environment made from a bundle's Dockerfile (`orch publish --docker`, a service's deploy)
has a valid name whatever the agent's or service's valid name (docs/agents.md, services.md):
a long name is cut short to fit 63 characters, and `env_` at its start is written `env-`."""

from __future__ import annotations

from pathlib import Path

import httpx

from orch.bundle import pack_directory
from orch.models import check_name

DOCKERFILE = "FROM e2bdev/code-interpreter:latest\nRUN echo {n} > /opt/marker\n"


def bundle(tmp_path: Path, name: str, n: int) -> bytes:
    root = tmp_path / name
    root.mkdir(parents=True, exist_ok=True)
    (root / "main.py").write_text("print(1)\n")
    (root / "Dockerfile").write_text(DOCKERFILE.format(n=n))  # a new Dockerfile each time
    return pack_directory(root).data


def post(api: httpx.Client, path: str, data: bytes, **params: object) -> httpx.Response:
    return api.post(path, params=params, content=data, headers={"Content-Type": "application/gzip"})


def environment_of_publish(api: httpx.Client, tmp_path: Path, agent: str, n: int) -> str:
    resp = post(api, f"/v1/agents/{agent}/versions", bundle(tmp_path, f"a{n}", n), docker=True)
    assert resp.status_code == 201, resp.text
    name = resp.json()["version"]["dockerfile_environment"]["name"]
    assert check_name(name, id_prefix="env_") == name
    return name


def test_an_agent_of_any_valid_name_publishes_with_its_dockerfile(api: httpx.Client, tmp_path: Path) -> None:
    assert environment_of_publish(api, tmp_path, "b" * 63, 1) == "b" * 52 + "-dockerfile"
    assert environment_of_publish(api, tmp_path, "c" * 53, 2) == "c" * 52 + "-dockerfile"
    # Up to 52 characters the agent's name is whole, as before.
    assert environment_of_publish(api, tmp_path, "d" * 52, 3) == "d" * 52 + "-dockerfile"
    assert environment_of_publish(api, tmp_path, "env_agent2", 4) == "env-agent2-dockerfile"
    # Cut short, two agents' names may meet: the next one gets the next free suffix, cut to fit.
    assert environment_of_publish(api, tmp_path, "b" * 62, 5) == "b" * 50 + "-dockerfile-2"
    listed = {e["name"] for e in api.get("/v1/environments").json()}
    assert {"b" * 52 + "-dockerfile", "b" * 50 + "-dockerfile-2", "env-agent2-dockerfile"} <= listed


def test_a_service_of_a_long_name_deploys_with_its_dockerfile(api: httpx.Client, tmp_path: Path) -> None:
    name = "s" * 60
    resp = post(api, f"/v1/services/{name}/deploy", bundle(tmp_path, "svc", 6))
    assert resp.status_code == 201, resp.text
    assert "s" * 52 + "-dockerfile" in {e["name"] for e in api.get("/v1/environments").json()}
