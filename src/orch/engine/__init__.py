"""The container engine interface. Podman today; a fake beside it for unit tests."""

from orch.engine.base import BuildFailed, Engine, ImageInfo, ProcessResult
from orch.engine.podman import PodmanEngine

__all__ = ["BuildFailed", "Engine", "ImageInfo", "PodmanEngine", "ProcessResult"]
