"""An in-memory engine for unit and API tests: records what it was asked, builds instantly.

It subclasses the `Engine` Protocol (as httpx's MockTransport subclasses BaseTransport), so the
type checker holds it to the interface: a method missing or with another signature is an error
here, not a surprise in a test."""

from __future__ import annotations

import dataclasses
import hashlib
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import final

from orch.engine.base import (
    BuildRequest,
    ContainerExit,
    ContainerInfo,
    ContainerSpec,
    Engine,
    ImageInfo,
    ProcessResult,
    repository_of,
)
from orch.engine.network import Network
from orch.errors import BuildFailed, EngineError

# What a sandbox "does": given its spec, write output through the callbacks, return its exit.
Behaviour = Callable[[ContainerSpec, Callable[[bytes], None], Callable[[bytes], None]], ContainerExit]


# final: mypy then reports any method of Engine that this class lacks, where it is declared.
@final
class FakeEngine(Engine):
    """Builds succeed unless a RUN step contains `exit 1`; sandboxes exit 0 unless told otherwise.

    The test hooks, which tests read or set:

        images_by_tag  the images it has, by tag (`add_image` adds one; `build` adds its result)
        inspected      every ref `inspect_image` was asked about, in order
        builds         every BuildRequest, in order
        gate           an Event each build step waits for: clear it to hold builds, set to go on
                       (a held build asks `should_stop` meanwhile)
        stopped        the tags of the builds `should_stop` stopped
        behaviour      what a sandbox does (see Behaviour); the default exits 0 at once
        containers     every sandbox spec `run_container` ran
        runs           (image, argv) of every `run`
        detached       service containers by name; `exit_container` makes one exit
        started        every spec `start_container` started
        prepared       how many times `prepare` was called
        swept          what the remove_*leftovers and remove_untagged_images calls swept
        registry       what `push_image` pushed, by the digest reference it returned
        pushed         (ref, destination, tls_verify) of every push, in order
        pulled         (digest_ref, tag) of every pull, in order
        registry_error set it to a message: every push and pull then fails with it
    """

    name = "fake"

    def __init__(self) -> None:
        self.images_by_tag: dict[str, ImageInfo] = {}
        self.inspected: list[str] = []
        self.builds: list[BuildRequest] = []
        self.runs: list[tuple[str, tuple[str, ...]]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.stopped: list[str] = []
        self.containers: list[ContainerSpec] = []
        self.behaviour: Behaviour = lambda spec, out, err: ContainerExit(0)
        self.detached: dict[str, tuple[ContainerSpec, ContainerInfo]] = {}
        self.started: list[ContainerSpec] = []
        self.prepared = 0
        self.swept: list[str] = []
        self.registry: dict[str, ImageInfo] = {}
        self.pushed: list[tuple[str, str, bool]] = []
        self.pulled: list[tuple[str, str]] = []
        self.registry_error: str | None = None

    def prepare(self) -> None:
        self.prepared += 1

    def add_image(self, tag: str, labels: Mapping[str, str] | None = None) -> ImageInfo:
        """Make an image exist, as if built or pulled (a hook: no real engine has it)."""
        info = ImageInfo(
            id=hashlib.sha256(tag.encode()).hexdigest(),
            size=1000,
            labels=dict(labels or {}),
            tags=(tag,),
        )
        self.images_by_tag[tag] = info
        return info

    def build(
        self,
        request: BuildRequest,
        on_output: Callable[[str], None],
        on_start: Callable[[int], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> ImageInfo:
        self.builds.append(request)
        if on_start:
            on_start(0)
        steps = [ln for ln in request.containerfile.splitlines() if ln.strip()]
        for i, step in enumerate(steps, 1):
            on_output(f"STEP {i}/{len(steps)}: {step}")
            held = time.monotonic() + 30
            while not self.gate.wait(timeout=0.02) and time.monotonic() < held:
                if should_stop is not None and should_stop():
                    self.stopped.append(request.tag)
                    raise BuildFailed("The build was stopped.", "Build it again.", stopped=True)
            if step.startswith("RUN") and "exit 1" in step:
                on_output("error: step failed")
                raise BuildFailed(
                    "podman build failed.",
                    "See the build log.",
                    exit_code=1,
                    tail=["error: step failed"],
                )
        digest = hashlib.sha256(request.containerfile.encode()).hexdigest()
        info = ImageInfo(id=digest, size=1000, labels=dict(request.labels), tags=(request.tag,))
        self.images_by_tag[request.tag] = info
        on_output(f"COMMIT {request.tag}")
        return info

    def import_rootfs(
        self, tarball: Path, tag: str, labels: Mapping[str, str], changes: Sequence[str]
    ) -> ImageInfo:
        return self.add_image(tag, labels)

    def inspect_image(self, ref: str) -> ImageInfo | None:
        self.inspected.append(ref)
        return self.images_by_tag.get(ref)

    def images(self, labels: Mapping[str, str]) -> list[ImageInfo]:
        return [
            i for i in self.images_by_tag.values() if all(i.labels.get(k) == v for k, v in labels.items())
        ]

    def remove_image(self, ref: str) -> None:
        self.images_by_tag.pop(ref, None)

    def untag_image(self, ref: str) -> None:
        self.images_by_tag.pop(ref, None)

    def push_image(self, ref: str, destination: str, tls_verify: bool = True) -> str:
        self.pushed.append((ref, destination, tls_verify))
        if self.registry_error is not None:
            raise EngineError(f"podman push of {ref} to {destination} failed: {self.registry_error}", "")
        info = self.images_by_tag.get(ref)
        if info is None:
            raise EngineError(f"podman push of {ref} failed: image not known", "")
        # As a registry's: the digest of the content (here, of the image's id), not of its name.
        digest_ref = f"{repository_of(destination)}@sha256:{hashlib.sha256(info.id.encode()).hexdigest()}"
        self.registry[digest_ref] = info
        return digest_ref

    def pull_image(self, digest_ref: str, tag: str, tls_verify: bool = True) -> ImageInfo:
        self.pulled.append((digest_ref, tag))
        if self.registry_error is not None:
            raise EngineError(f"podman pull of {digest_ref} failed: {self.registry_error}", "")
        info = self.registry.get(digest_ref)
        if info is None:
            raise EngineError(f"podman pull of {digest_ref} failed: manifest unknown", "")
        self.images_by_tag[tag] = dataclasses.replace(info, tags=(tag,))
        return self.images_by_tag[tag]

    def run_container(
        self,
        spec: ContainerSpec,
        on_stdout: Callable[[bytes], None],
        on_stderr: Callable[[bytes], None],
        timeout: float | None = None,
        should_stop: Callable[[], bool] | None = None,
        on_exit: Callable[[ContainerExit], None] | None = None,
    ) -> ContainerExit:
        self.containers.append(spec)
        if should_stop is not None and should_stop():
            result = ContainerExit(137, cancelled=True)
        else:
            began = time.monotonic()
            result = self.behaviour(spec, on_stdout, on_stderr)
            if not result.timings:
                # As a launcher reports them: nothing to prepare, start or clean up; it ran.
                ran = time.monotonic() - began
                timings = {"prepare": 0.0, "start": 0.0, "run": ran, "exit": 0.0}
                result = dataclasses.replace(result, timings=timings)
        if on_exit is not None:
            on_exit(result)
        return result

    def remove_containers(self, labels: Mapping[str, str]) -> int:
        return 0

    def run(
        self,
        image: str,
        argv: Sequence[str],
        *,
        labels: Mapping[str, str],
        env: Mapping[str, str] | None = None,
        network: Network = Network.NONE,
        timeout: float = 120,
    ) -> ProcessResult:
        self.runs.append((image, tuple(argv)))
        return ProcessResult(0, "", "")

    def remove_build_leftovers(self, owner: str) -> int:
        self.swept.append(f"builds of {owner}")
        return 0

    def storage_disk(self) -> tuple[Path, int] | None:
        return None

    def remove_untagged_images(self, owner: str) -> int:
        self.swept.append(f"untagged images of {owner}")
        return 0

    def remove_leftovers(self, name_prefix: str) -> int:
        self.swept.append(name_prefix)
        return 0

    def start_container(self, spec: ContainerSpec, log_path: Path, log_max: int) -> str:
        if spec.name in self.detached:
            raise EngineError(f"podman run failed: the name {spec.name} is already in use.", "")
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_path.touch()
        cid = hashlib.sha256(spec.name.encode()).hexdigest()
        info = ContainerInfo(cid, spec.name, "running", 0, dict(spec.labels), time.time())
        self.detached[spec.name] = (spec, info)
        self.started.append(spec)
        return cid

    def exit_container(self, name: str, exit_code: int) -> None:
        """Make a detached container exit, as a crash would (a hook: no real engine has it)."""
        spec, info = self.detached[name]
        self.detached[name] = (spec, dataclasses.replace(info, state="exited", exit_code=exit_code))

    def list_containers(self, labels: Mapping[str, str]) -> list[ContainerInfo]:
        return [
            info
            for _spec, info in self.detached.values()
            if all(info.labels.get(k) == v for k, v in labels.items())
        ]

    def container_address(self, name: str) -> str | None:
        return "127.0.0.1" if name in self.detached else None

    def remove_container(self, name: str, timeout: int = 10) -> None:
        self.detached.pop(name, None)
