"""The container engine interface. Podman today; a fake beside it for unit tests."""

from orch.engine.base import (
    ContainerExit,
    ContainerSpec,
    Engine,
    ImageInfo,
    Mount,
    ProcessResult,
)
from orch.engine.podman import PodmanEngine
from orch.errors import BuildFailed

__all__ = [
    "BuildFailed",
    "ContainerExit",
    "ContainerSpec",
    "Engine",
    "ImageInfo",
    "Mount",
    "PodmanEngine",
    "ProcessResult",
]
