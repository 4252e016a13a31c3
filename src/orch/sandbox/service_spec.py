"""What a service is on the engine: its image (the bundle and its dependencies, installed once at
deploy time) and its long-running container (the limits of a run, reachable on PORT)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from orch.engine.base import ContainerSpec, Mount
from orch.engine.network import SERVICE_PORT, Network
from orch.sandbox.layout import NODE_DEPS_FILES, PYTHON_DEPS, SANDBOX_USER, SCRATCH

APP = "/home/user/app"  # the bundle and its node_modules, baked into the service's image
PORT = SERVICE_PORT  # what the service listens on inside its container (given as $PORT)
# What `run_command` may need as root (apt-get: dpkg chowns files, apt drops to the _apt user),
# and KILL for the container's init (catatonit, root): it forwards `podman stop`'s SIGTERM to the
# command, a process of another uid, which takes CAP_KILL (without it the command never got the
# SIGTERM and was killed 10 s later). Every other capability stays dropped, and the command
# itself runs as SANDBOX_USER with none (setpriv's change from uid 0 clears them, and
# no-new-privileges keeps it from regaining any).
RUN_COMMAND_CAPS = ("CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID")

# The dependencies first on PYTHONPATH, then what the base image set there (an environment's
# Dockerfile's `ENV PYTHONPATH=/opt/lib`), as a run has it (deps.search_path): `${V:+word}` is
# one of the two modifiers Podman 4.3's imagebuilder expands (`-` and `+`).
_PYTHON_STEP = f"""\
COPY requirements.txt {APP}/
RUN uv pip install --no-cache --python "$(command -v python3)" --target {PYTHON_DEPS} -r requirements.txt
ENV PYTHONPATH={PYTHON_DEPS}${{PYTHONPATH:+:$PYTHONPATH}}
"""
_NODE_STEP = """\
RUN if [ -f package-lock.json ]; then echo "npm ci (package-lock.json)" \\
      && npm ci --no-audit --no-fund --no-update-notifier; \\
    else echo "npm install (no package-lock.json)" \\
      && npm install --no-audit --no-fund --no-update-notifier; fi \\
 && rm -rf /root/.npm
"""


def containerfile(base_image: str, dep_files: Sequence[str], own_dockerfile: bool = False) -> str:
    """The service image: FROM the service runner (or the image built from the bundle's own
    Dockerfile), its dependencies installed from their files alone, then the bundle (the build
    context) at APP. A start installs nothing, and a new version whose dependency files are
    unchanged reuses the layers that installed them (Podman's layer cache keys a COPY by the
    files' content)."""
    text = f"FROM {base_image}\n"
    if own_dockerfile:  # its USER may be anyone: these steps need root (the service never runs so)
        text += "USER root\nENV ORCH_RUNTIME=service\n"
    text += f"WORKDIR {APP}\n"
    if "requirements.txt" in dep_files:
        text += _PYTHON_STEP
    if "package.json" in dep_files:
        node_files = [f for f in NODE_DEPS_FILES if f in dep_files]
        text += f"COPY {' '.join(node_files)} {APP}/\n" + _NODE_STEP
    # Readable by the service's user (a bundle may hold files only their owner reads); not
    # node_modules, which npm made readable and a chmod would copy into one more layer.
    readable = f"RUN find {APP} -path {APP}/node_modules -prune -o -exec chmod a+rX {{}} +\n"
    return text + f"COPY . {APP}\n{readable}ENV PORT={PORT}\n"


@dataclass(frozen=True)
class ServiceLimits:
    cpus: float
    memory_bytes: int
    pids: int


def container_spec(
    *,
    name: str,
    image: str,
    command: Sequence[str],
    run_command: str | None,
    env: Mapping[str, str],
    limits: ServiceLimits,
    labels: Mapping[str, str],
    host_mounts: Sequence[Mount] = (),
) -> ContainerSpec:
    """The service's container. Without a run_command it is hardened like a run (read-only root,
    user 1000, no capabilities). With one, it starts as root with a writable root file system and
    only RUN_COMMAND_CAPS, runs run_command, then drops to user 1000 (and so every capability)
    for the command: `apt-get install` works, the service's own code never runs as root."""
    scratch = max(limits.memory_bytes // 4, 16 * 1024 * 1024)
    common = {
        "name": name,
        "image": image,
        "labels": labels,
        "env": {**env, "PORT": str(PORT), "HOME": SCRATCH},
        "workdir": APP,
        "mounts": list(host_mounts),
        "tmpfs": {SCRATCH: f"rw,exec,nosuid,nodev,mode=1777,size={scratch}"},
        "network": Network.SERVICE,  # the server's proxy reaches its port; nothing else reaches it
        "memory_bytes": limits.memory_bytes,
        "cpus": limits.cpus,
        "pids": limits.pids,
    }
    if not run_command:
        return ContainerSpec(argv=list(command), user=SANDBOX_USER, read_only=True, **common)  # type: ignore[arg-type]
    uid, gid = SANDBOX_USER.split(":")
    drop = f"setpriv --reuid={uid} --regid={gid} --clear-groups --"
    script = f'set -e\n{run_command}\nexec {drop} "$@"'
    return ContainerSpec(
        argv=["/bin/sh", "-c", script, "orch-service", *command],
        user="0:0",
        read_only=False,
        cap_add=RUN_COMMAND_CAPS,
        **common,  # type: ignore[arg-type]
    )
