"""Build cache keys: the normalised Dockerfile plus the base image it builds on."""

from __future__ import annotations

import hashlib
import re

_STEP = re.compile(r"^STEP (\d+)/(\d+): (.*)$")


def dockerfile_hash(normalised_text: str) -> str:
    return hashlib.sha256(normalised_text.encode()).hexdigest()


def cache_key(normalised_text: str, base_image_id: str, private_to: str = "") -> str:
    """SHA-256 of the normalised Dockerfile and the base image's id, and of the workspace
    `private_to` for a Dockerfile whose image may hold what its cache mounts held (see
    dockerfile/cache_mounts.py): docs/environments.md, "Build cache"."""
    text = f"{dockerfile_hash(normalised_text)}\n{base_image_id}" + (f"\n{private_to}" if private_to else "")
    return hashlib.sha256(text.encode()).hexdigest()


def parse_step(line: str) -> tuple[int, int, str] | None:
    """Podman's progress line `STEP 3/5: RUN ...` as (3, 5, "RUN ..."), else None."""
    m = _STEP.match(line)
    return (int(m[1]), int(m[2]), m[3]) if m else None
