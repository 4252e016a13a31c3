"""Build benchmark: orch's first build of python-ml against `podman build` with plain pip.

Measured side by side in one run on this machine (noisy machines: read the ratios):
  1. `orch env build python-ml --no-cache` (uv, the platform's builder);
  2. `podman build --no-cache` of the same packages installed with plain pip, same base;
  3. `orch env create` of the same Dockerfile again: a cache hit (seconds, and ratio to 1).

Usage: .venv/bin/python bench/build.py   (needs scripts/setup; takes a few minutes)
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from local_platform import ORCH, start_server

from orch.builder import base_images
from orch.builder.host import ca_mounts
from orch.builder.predefined import PREDEFINED
from orch.config import load

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = "numpy pandas scikit-learn matplotlib seaborn"


def timed(argv: list[str], env: dict[str, str] | None = None) -> float:
    start = time.perf_counter()
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    took = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"{' '.join(argv[:4])} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return took


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="orch-bench-") as tmp:
        home = Path(tmp) / "home"
        env = {**os.environ, "ORCH_HOME": str(home)}
        server = start_server(home)
        tag = "localhost/orch-bench/pip-ml:latest"
        try:
            orch_first = timed([ORCH, "env", "build", "python-ml", "--no-cache"], env)

            base = base_images.image_tag("code-interpreter")
            containerfile = Path(tmp) / "Containerfile"
            containerfile.write_text(f"FROM {base}\nRUN pip install --no-cache-dir {PACKAGES}\n")
            mounts = [a for h, c in ca_mounts(load(home)).items() for a in ("-v", f"{h}:{c}:ro")]
            pip_build = timed(
                [
                    "podman",
                    "build",
                    "--no-cache",
                    "--pull=never",
                    *mounts,
                    "-f",
                    str(containerfile),
                    "-t",
                    tag,
                    tmp,
                ]
            )

            dockerfile = Path(tmp) / "Dockerfile"
            dockerfile.write_text(next(p.dockerfile for p in PREDEFINED if p.name == "python-ml"))
            hit = timed([ORCH, "env", "create", "-f", str(dockerfile), "-n", "ml-copy"], env)
        finally:
            server.terminate()
            server.wait(30)
            subprocess.run(["podman", "rmi", "-f", tag], capture_output=True, check=False)
            instance = __import__("hashlib").sha256(str(home.resolve()).encode()).hexdigest()[:12]
            subprocess.run(
                [
                    "sh",
                    "-c",
                    f"podman images -q --filter label=org.orch.instance={instance} | xargs -r podman rmi -f",
                ],
                capture_output=True,
                check=False,
            )
    print(f"python-ml first build, orch (uv):        {orch_first:7.1f} s")
    print(f"python-ml, podman build with plain pip:  {pip_build:7.1f} s")
    print(f"ratio orch / pip:                        {orch_first / pip_build:7.2f}")
    print(f"cache-hit create:                        {hit:7.2f} s")
    print(f"ratio cache hit / first build:           {hit / orch_first:7.3f}")


if __name__ == "__main__":
    main()
