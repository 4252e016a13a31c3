"""What orch needs from a container engine, as a small Protocol."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from orch.errors import EngineError

LABEL_PREFIX = "org.orch."


@dataclass(frozen=True)
class ImageInfo:
    id: str
    size: int
    labels: Mapping[str, str] = field(default_factory=dict)
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class ProcessResult:
    exit_code: int
    stdout: str
    stderr: str


class BuildFailed(EngineError):
    """A build step exited non-zero, or the build was stopped (timeout)."""

    code = "build_failed"


@dataclass(frozen=True)
class BuildRequest:
    containerfile: str
    tag: str
    labels: Mapping[str, str] = field(default_factory=dict)
    # host path -> container path, mounted read-only into every RUN step
    mounts: Mapping[str, str] = field(default_factory=dict)
    build_args: Mapping[str, str] = field(default_factory=dict)
    no_cache: bool = False
    timeout: float | None = None
    context: Path | None = None  # only the platform's own recipes have one; user builds never


class Engine(Protocol):
    name: str

    def build(
        self,
        request: BuildRequest,
        on_output: Callable[[str], None],
        on_start: Callable[[int], None] | None = None,
    ) -> ImageInfo:
        """Build an image, streaming each output line to `on_output`; raise BuildFailed."""
        ...

    def import_rootfs(
        self, tarball: Path, tag: str, labels: Mapping[str, str], changes: Sequence[str]
    ) -> ImageInfo: ...

    def inspect_image(self, ref: str) -> ImageInfo | None: ...

    def images(self, labels: Mapping[str, str]) -> list[ImageInfo]: ...

    def remove_image(self, ref: str) -> None: ...

    def run(
        self,
        image: str,
        argv: Sequence[str],
        *,
        labels: Mapping[str, str],
        env: Mapping[str, str] | None = None,
        network: bool = False,
        timeout: float = 120,
    ) -> ProcessResult:
        """Run `argv` in a fresh, removed-afterwards container and collect its output."""
        ...
