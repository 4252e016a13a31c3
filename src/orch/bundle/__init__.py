"""Agent bundles: the manifest, the entrypoint, packing a directory and reading a bundle safely."""

from orch.bundle.contents import read_bundle
from orch.bundle.entrypoint import Entrypoint, detect_entrypoint
from orch.bundle.extract import extract_bundle
from orch.bundle.info import BundleInfo, inspect_bundle
from orch.bundle.language import Language
from orch.bundle.limits import MAX_BUNDLE_BYTES, MAX_FILES
from orch.bundle.manifest import Manifest, Runtime, parse_manifest
from orch.bundle.pack import Bundle, BundleFile, pack_directory
from orch.bundle.resources import Resources
from orch.sizes import format_size, parse_size

__all__ = [
    "MAX_BUNDLE_BYTES",
    "MAX_FILES",
    "Bundle",
    "BundleFile",
    "BundleInfo",
    "Entrypoint",
    "Language",
    "Manifest",
    "Resources",
    "Runtime",
    "detect_entrypoint",
    "extract_bundle",
    "format_size",
    "inspect_bundle",
    "pack_directory",
    "parse_manifest",
    "parse_size",
    "read_bundle",
]
