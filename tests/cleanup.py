"""Remove containers and images left by test platforms whose ORCH_HOME no longer exists (a killed
test run). Only what carries orch's labels is touched, and only that of a platform that is gone."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path


def _gone(labels: dict[str, str] | None) -> bool:
    home = (labels or {}).get("org.orch.home", "")
    return bool(home) and not Path(home).exists()


def _podman_json(*args: str) -> list[dict]:  # type: ignore[type-arg]
    out = subprocess.run(["podman", *args], capture_output=True, text=True, check=False).stdout
    return json.loads(out or "[]")  # type: ignore[no-any-return]


def _clusters() -> int:
    """Local clusters tests/integration/test_cluster.py started (scripts/cluster-up in /tmp/oc-*)
    and a killed run left up: scripts/cluster-down stops and removes each."""
    down = Path(__file__).resolve().parents[1] / "scripts" / "cluster-down"
    found = [d for d in Path("/tmp").glob("oc-*") if (d / "cluster.json").exists()]
    for where in found:
        subprocess.run([str(down), str(where)], capture_output=True, check=False, timeout=300)
    return len(found)


def main() -> int:
    removed = _clusters()
    for c in _podman_json("ps", "-a", "--format", "json", "--filter", "label=org.orch.instance"):
        if _gone(c.get("Labels")):
            subprocess.run(["podman", "rm", "-f", "-t", "0", c["Id"]], capture_output=True, check=False)
            removed += 1
    for image in _podman_json("images", "--format", "json", "--filter", "label=org.orch.instance"):
        if _gone(image.get("Labels")):
            subprocess.run(["podman", "rmi", "-f", image["Id"]], capture_output=True, check=False)
            removed += 1
    return removed


if __name__ == "__main__":
    print(f"removed {main()} orphaned test containers and images")
