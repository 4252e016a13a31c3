"""Dockerfiles for custom environments: validation, the Containerfile Podman builds, the cache key."""

from orch.dockerfile.base_image import BASE_IMAGE
from orch.dockerfile.bounded import validate
from orch.dockerfile.cache_mounts import owner as cache_owner
from orch.dockerfile.cache_mounts import uses_cache
from orch.dockerfile.findings import Finding, Severity
from orch.dockerfile.instruction import Instruction
from orch.dockerfile.normalise import normalised
from orch.dockerfile.render import render_containerfile
from orch.dockerfile.validate import Validation

__all__ = [
    "BASE_IMAGE",
    "Finding",
    "Instruction",
    "Severity",
    "Validation",
    "cache_owner",
    "normalised",
    "render_containerfile",
    "uses_cache",
    "validate",
]
