"""The one base image a custom environment may start from."""

from __future__ import annotations

BASE_IMAGE = "e2bdev/code-interpreter:latest"

# Docker resolves all of these to the same image; users copy any of them from docs.
_ACCEPTED = frozenset(
    {
        BASE_IMAGE,
        "e2bdev/code-interpreter",
        f"docker.io/{BASE_IMAGE}",
        "docker.io/e2bdev/code-interpreter",
    }
)


def is_base_image(reference: str) -> bool:
    """Whether a FROM image reference names the platform's code-interpreter base."""
    return reference in _ACCEPTED
