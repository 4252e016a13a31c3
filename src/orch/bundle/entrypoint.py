"""Which file a run starts, in which language, and with which command line (docs/agents.md,
"Publishing")."""

from __future__ import annotations

import json
import posixpath
import shlex
from collections.abc import Collection
from dataclasses import dataclass

from orch.bundle.language import Language, language_of
from orch.bundle.manifest import Manifest
from orch.errors import InvalidInput
from orch.models import shown_name

# Detected entrypoints, in order of preference within a language.
CANDIDATES = ("main.py", "agent.py", "app.py", "index.js", "main.js")
_SHOWN = 5  # files named in a "no entrypoint" error
_PACKAGE_FIX = "Fix package.json, for example with `npm init`."


@dataclass(frozen=True)
class Entrypoint:
    """The file that starts the agent; `command` is the argv the sandbox runs."""

    path: str
    language: Language
    command: tuple[str, ...]


def detect_entrypoint(files: Collection[str], manifest: Manifest, package_json: bytes | None) -> Entrypoint:
    """The manifest's entrypoint, else the one detected among `files` (paths in the bundle)."""
    if manifest.has_loop:  # runs no file (docs/loop.md); one found picks the base environment only
        try:
            found = detect_entrypoint(files, manifest.model_copy(update={"loop": None}), package_json)
        except InvalidInput:
            return Entrypoint("", Language.PYTHON, ())
        return Entrypoint(found.path, found.language, ())
    path = manifest.entrypoint or _detect(files, *_package_main(package_json, files))
    language = language_of(path)
    if language is None:
        raise InvalidInput(
            f"The entrypoint {path} is neither a .py nor a .js file.", "Name a .py or .js file in orch.yaml."
        )
    if path not in files:
        raise InvalidInput(
            f"orch.yaml names the entrypoint {path}, which is not in the bundle.",
            "Add the file, or correct `entrypoint:` in orch.yaml.",
        )
    if manifest.command is not None:
        command = tuple(shlex.split(manifest.command))
    else:
        command = ("python" if language is Language.PYTHON else "node", path)
    return Entrypoint(path, language, command)


def _detect(files: Collection[str], package_main: str | None, named_main: str | None = None) -> str:
    """The entrypoint found among `files`; `named_main`: package.json's "main" as written, said
    when it names no file of the bundle and nothing else is found."""
    # package.json's "main" is the author's explicit choice, so it comes before the Node defaults.
    python, node = CANDIDATES[:3], CANDIDATES[3:]
    order = [*python, *([package_main] if package_main else []), *node]
    found = [name for name in dict.fromkeys(order) if name in files]
    languages = {language_of(name) for name in found}
    if len(languages) > 1:
        raise InvalidInput(
            f"Found both Python and JavaScript entrypoints ({', '.join(found)}) and no manifest entrypoint.",
            "Add `entrypoint: FILE` to orch.yaml.",
        )
    if not found and named_main:
        raise InvalidInput(
            f'package.json\'s "main" names {shown_name(named_main)}, which is not a .js file of the bundle.',
            'Add the file, or correct "main" in package.json (or name the entrypoint with '
            "`entrypoint: FILE` in orch.yaml).",
        )
    if not found:
        listed = sorted(files, key=lambda name: (name.count("/"), name))
        shown = ", ".join(listed[:_SHOWN])
        if len(listed) > _SHOWN:
            shown += f" and {len(listed) - _SHOWN} more"
        raise InvalidInput(
            f"No entrypoint found: the bundle has none of {', '.join(CANDIDATES)} "
            f"(its files: {shown or 'none'}).",
            "Add one of those files, or name yours with `entrypoint: FILE` in orch.yaml.",
        )
    return found[0]


def _package_main(package_json: bytes | None, files: Collection[str]) -> tuple[str | None, str | None]:
    """package.json's "main" when it names a .js file of the bundle (as Node resolves it), else
    None; and "main" as written (None when there is none)."""
    if package_json is None:
        return None, None
    try:
        package = json.loads(package_json)
    except (ValueError, RecursionError):
        raise InvalidInput("package.json is not valid JSON.", _PACKAGE_FIX) from None
    if not isinstance(package, dict):
        raise InvalidInput("package.json is not a JSON object.", _PACKAGE_FIX)
    main = package.get("main")
    if main is None:
        return None, None
    if not isinstance(main, str):
        raise InvalidInput(
            f'package.json\'s "main" is {main!r}, not a path.',
            'In package.json, write "main" as a path such as "index.js".',
        )
    base = posixpath.normpath(main.replace("\\", "/")) if main else ""
    for path in (base, base + ".js", base + "/index.js"):
        if path in files and language_of(path) is Language.NODE:
            return path, main
    return None, main
