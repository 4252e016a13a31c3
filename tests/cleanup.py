"""Remove images left by test platforms whose ORCH_HOME no longer exists (a killed test run).

Only images carrying orch's labels are touched, and only those of a platform that is gone.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path


def main() -> int:
    out = subprocess.run(
        ["podman", "images", "--format", "json", "--filter", "label=org.orch.instance"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    removed = 0
    for image in json.loads(out or "[]"):
        home = (image.get("Labels") or {}).get("org.orch.home", "")
        if home and not Path(home).exists():
            subprocess.run(["podman", "rmi", "-f", image["Id"]], capture_output=True, check=False)
            removed += 1
    return removed


if __name__ == "__main__":
    print(f"removed {main()} orphaned test images")
