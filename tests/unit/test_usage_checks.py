"""Deleting an environment that an agent uses is refused whatever was imported before: the usage
checks are listed in one place, not registered as a side effect of importing agents.py."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from orch.bundle import pack_directory
from orch.services import agents, usage
from orch.services import environments as envs
from orch.services.platform import Platform

# Only environments (and what it imports itself) is imported: never orch.services.agents.
SCRIPT = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    from orch import config
    from orch.engine.fake import FakeEngine
    from orch.errors import Conflict
    from orch.models import new_id
    from orch.services import environments as envs
    from orch.services.platform import Platform
    from orch.store import Store
    from orch.store.schema import AgentRow, AgentVersionRow, WorkspaceRow

    home = Path(sys.argv[1])
    cfg = config.load(home, environ={})
    platform = Platform(cfg, Store(cfg.database_url), FakeEngine())
    platform.store.migrate()
    envs.seed_builtins(platform)
    with platform.store.session() as s:
        s.add(WorkspaceRow(id="ws_1", name="team"))
    envs.create(platform, "ws_1", "mine", "FROM e2bdev/code-interpreter:latest\\nRUN true\\n")
    with platform.store.session() as s:
        s.add(AgentRow(id="agt_1", workspace_id="ws_1", name="crawler", latest_version=1, last_published=1))
        s.flush()
        s.add(AgentVersionRow(
            id=new_id("ver"), agent_id="agt_1", version=1, bundle_sha256="0" * 64, bundle_size=1,
            entrypoint="main.py", language="python", command="[]", manifest="{}",
            pinned_environment="mine", deps_files="[]",
        ))
    assert "orch.services.agents" not in sys.modules, "the test must not import agents"
    try:
        envs.delete(platform, "ws_1", "mine")
    except Conflict as e:
        print("refused:", e.message)
    else:
        print("deleted")
    """
)


def test_delete_refuses_with_only_environments_imported(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "home")], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "refused: mine is used by 1 agent (crawler)."


def test_the_checks_are_listed_in_one_place() -> None:
    assert usage.agents_using in usage.CHECKS


def test_users_by_environment_as_the_ui_lists_them(
    platform: Platform, workspace: tuple[str, str], tmp_path: Path
) -> None:
    ws_id = workspace[0]
    envs.set_default(platform, ws_id, "python")
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "main.py").write_text("")
    (tmp_path / "a" / "orch.yaml").write_text("environment: node\n")
    agents.publish(platform, ws_id, "crawler", pack_directory(tmp_path / "a").data, docker=False)
    used = usage.users_by_environment(platform, ws_id)
    assert used["env_python"] == ["the workspace default"]
    assert used["env_node"] == ["agent crawler"]
    assert used["env_python_ml"] == []
