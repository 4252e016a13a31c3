"""`orch node` on bad names and with no node up (cli/node.py; docs/cli.md, docs/scale.md), found
by a tester: an empty name is refused like any bad one, not taken as the host name; the fix names
the argument the command has; `orch node list` says the work waits whenever no node is up, also
when the nodes it lists were stopped or lost."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import update
from typer.testing import CliRunner

from orch.cli.main import app
from orch.cluster import ray_node
from orch.services.platform import Platform
from orch.store.schema import NodeRow
from tests.api.test_cli import cli
from tests.api.test_node_lifecycle import head, node_env
from tests.api.test_nodes import node

__all__ = ["cli", "node_env"]  # the fixtures

WAITS = "No node is up: this server's runs, builds and services wait until one is."


@pytest.mark.parametrize(
    ("args", "said", "fix"),
    [
        (["start", "--name", ""], "'' is not a node name.", "Pass --name with lowercase letters"),
        (
            ["start", "--name", "BAD_Name"],
            "'BAD_Name' is not a node name.",
            "Pass --name with lowercase letters",
        ),
        (["stop", ""], "'' is not a node name.", "Pass a NAME with lowercase letters"),
        (["stop", "BAD_Name"], "'BAD_Name' is not a node name.", "Pass a NAME with lowercase letters"),
    ],
)
def test_a_bad_or_empty_node_name_is_refused_naming_the_argument(
    args: list[str], said: str, fix: str, node_env: list[tuple[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ray_node, "reach", lambda cluster: pytest.fail("reached the cluster"))
    with head() as listening:
        cluster = f"127.0.0.1:{listening.getsockname()[1]}"
        result = CliRunner().invoke(app, ["node", *args, "--cluster", cluster])
    assert result.exit_code == 2, result.output
    output = " ".join(result.output.split())
    assert said in output and fix in output and "Traceback" not in output, result.output
    if args[0] == "stop":
        assert "--name" not in output  # `node stop` has no such option
    assert node_env == []  # nothing joined, started or stopped


def test_orch_node_list_says_the_work_waits_when_its_nodes_are_stopped_or_lost(  # type: ignore[no-untyped-def]
    cli, api: httpx.Client, platform: Platform, database_url: str, tmp_path: Path
) -> None:
    own = platform.config
    platform.config = own.with_values(cluster="127.0.0.1:6379")
    try:
        with node(tmp_path, database_url, "a"), node(tmp_path, database_url, "b"):
            up = cli("node", "list")
            assert up.exit_code == 0 and WAITS not in " ".join(up.output.split()), up.output
            with platform.store.session() as s:
                s.execute(update(NodeRow).where(NodeRow.id == "a").values(state="stopped"))
            one_up = cli("node", "list")
            assert one_up.exit_code == 0 and WAITS not in " ".join(one_up.output.split()), one_up.output
            with platform.store.session() as s:
                s.execute(update(NodeRow).where(NodeRow.id == "b").values(state="lost"))
            none_up = cli("node", "list")
            assert none_up.exit_code == 0, none_up.output
            assert "stopped" in none_up.output and "lost" in none_up.output
            assert WAITS in " ".join(none_up.output.split()), none_up.output
    finally:
        platform.config = own
    # One machine's server runs its own work: its list never says it waits.
    assert WAITS not in " ".join(cli("node", "list").output.split())
