"""What Podman's OCI runtime still holds of containers that Podman itself let go of.

Podman keeps its own record of each container and drives runc, which keeps a state directory
per container under its root (/run/runc, a rootful Podman's). A Podman cut short can leave the
two disagreeing, and then runc's side stays for good, unseen by `podman ps`:

- a service container whose `podman stop` (or `rm -t`) was killed half-way (a server killed
  during a service's 10 s stop) is `stopping` to Podman, and a `podman rm -f` of it drops the
  record but leaves the container running (Podman 4.3): engine/podman.py stops such a container
  before it removes it, and ends here whatever outlived the removal all the same;
- a `podman build` killed during a RUN step leaves the step's container (`buildah-buildahN`,
  engine/build_steps.py) in runc's state, stopped once its processes are killed.

    in_cgroups(parents)  ids of runc's containers whose cgroups lie under the parent cgroups named
    delete(id)           kill it (SIGKILL) if it runs, remove its state and its cgroups
"""

from __future__ import annotations

import contextlib
import json
import subprocess
from pathlib import Path

ROOT = Path("/run/runc")  # runc's default root, which a rootful Podman (and its builds) uses
RUNTIME = "runc"


def exists(container_id: str, root: Path = ROOT) -> bool:
    """Whether runc has a container `container_id` (any state)."""
    return (root / container_id).is_dir()


def in_cgroups(parents: set[str], root: Path = ROOT) -> dict[str, list[str]]:
    """For each of `parents` (names of cgroups right below a hierarchy's root, as
    engine/podman_run.py's `cgroup_parent` makes them) that holds any, the ids of runc's
    containers whose cgroups lie under it. Each container's state is read once."""
    found: dict[str, list[str]] = {}
    if not parents:
        return found
    for state in root.glob("*/state.json"):
        try:
            paths = json.loads(state.read_text()).get("cgroup_paths") or {}
        except (OSError, ValueError):  # deleted meanwhile, or being written
            continue
        under = {part for path in paths.values() for part in Path(str(path)).parts} & parents
        for parent in under:
            found.setdefault(parent, []).append(state.parent.name)
    return found


def delete(container_id: str, root: Path = ROOT) -> bool:
    """`runc delete --force`: the container is killed (SIGKILL) if it runs, its state and
    cgroups removed. Return whether runc has none of it any more."""
    with contextlib.suppress(FileNotFoundError, subprocess.TimeoutExpired):
        subprocess.run(
            [RUNTIME, "--root", str(root), "delete", "--force", container_id],
            capture_output=True,
            check=False,
            timeout=30,
        )
    return not exists(container_id, root)
