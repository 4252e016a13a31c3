"""What the server learns from a bundle before it accepts it: manifest, entrypoint, build files."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

from orch.bundle.contents import read_bundle
from orch.bundle.entrypoint import Entrypoint, detect_entrypoint
from orch.bundle.limits import MAX_BUNDLE_BYTES, MAX_FILES
from orch.bundle.manifest import Manifest, parse_manifest
from orch.errors import InvalidInput
from orch.text import utf8

MANIFEST_NAMES = ("orch.yaml", "orch.yml")


@dataclass(frozen=True)
class BundleInfo:
    """A bundle that passed every check; the build and dependency files are those at its top."""

    data: bytes
    sha256: str
    files: Mapping[str, bytes]
    manifest: Manifest
    entrypoint: Entrypoint
    dockerfile: str | None
    requirements: bytes | None  # requirements.txt
    package_json: bytes | None
    package_lock: bytes | None  # package-lock.json


def inspect_bundle(
    data: bytes,
    max_bytes: int = MAX_BUNDLE_BYTES,
    max_files: int = MAX_FILES,
    loop_refused: tuple[str, str] | None = None,
) -> BundleInfo:
    """Read `data` safely, parse its manifest and find its entrypoint; InvalidInput on any problem
    (`loop_refused`: see parse_manifest)."""
    files = read_bundle(data, max_bytes, max_files)
    manifest = _manifest(files, loop_refused)
    package_json = files.get("package.json")
    dockerfile = files.get("Dockerfile")
    return BundleInfo(
        data=data,
        sha256=hashlib.sha256(data).hexdigest(),
        files=files,
        manifest=manifest,
        entrypoint=detect_entrypoint(files.keys(), manifest, package_json),
        dockerfile=None if dockerfile is None else utf8(dockerfile, "Dockerfile", "Save it as UTF-8."),
        requirements=files.get("requirements.txt"),
        package_json=package_json,
        package_lock=files.get("package-lock.json"),
    )


def _manifest(files: Mapping[str, bytes], loop_refused: tuple[str, str] | None) -> Manifest:
    present = [name for name in MANIFEST_NAMES if name in files]
    if len(present) > 1:
        raise InvalidInput("The bundle has both orch.yaml and orch.yml.", "Keep one of them.")
    if not present:
        return Manifest()
    name = present[0]
    return parse_manifest(utf8(files[name], name, f"Save {name} as UTF-8."), name, loop_refused)
