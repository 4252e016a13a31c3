"""The one base image a custom environment may start from."""

from __future__ import annotations

BASE_IMAGE = "e2bdev/code-interpreter:latest"
REPOSITORY = "e2bdev/code-interpreter"

# Docker Hub under the names Docker resolves to it (index.docker.io is its legacy name,
# registry-1.docker.io the host it pulls from). The library/ prefix only applies to
# single-name official images, so not to this one.
_DOCKER_HUB = ("docker.io/", "index.docker.io/", "registry-1.docker.io/")


def on_docker_hub(reference: str) -> str:
    """The reference without a Docker Hub registry in front."""
    for registry in _DOCKER_HUB:
        if reference.startswith(registry):
            return reference.removeprefix(registry)
    return reference


def is_base_image(reference: str) -> bool:
    """Whether a FROM image reference names the platform's code-interpreter base."""
    return on_docker_hub(reference) in (REPOSITORY, BASE_IMAGE)
