"""What a dependency install may read besides the index: only its dependency files, or the
bundle too.

An install whose files name nothing but packages of an index (PyPI, npm's registry, or an index
URL they give) reads nothing of the bundle but those files: the install sees only them
(sandbox/deps.py mounts them alone), so its result is the same for every bundle, in every
workspace, that has the same files on the same image, and is shared. Anything else (a local path,
`-e ./pkg`, a wheel or archive in the bundle, `-r`/`-c` of another file, a `file:` or VCS URL,
npm's `file:`/`link:`/git specs, workspaces, or install scripts of the root package) may read the
rest of the bundle: such an install sees the whole bundle and its result belongs to that bundle
and workspace alone. The reading here is deliberately narrow: a line it does not know as an index
requirement makes the install the bundle's, which costs a cache entry, never a wrong share.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping

_NAME = r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?"
# NAME[extras] and version clauses (PEP 508 without a URL): no '@', '/', ':', '\' or '$' can
# appear, so nothing here names a file or a URL.
_REQUIREMENT = re.compile(
    rf"{_NAME}\s*(?:\[\s*(?:{_NAME}(?:\s*,\s*{_NAME})*)?\s*\])?\s*"
    r"(?:[(<>=!~][<>=!~,.*+A-Za-z0-9_\s()-]*)?"
)
# An environment marker after ';': its words and quoted values, still no path or URL characters.
_MARKER = re.compile(r"[A-Za-z0-9_.<>=!~'\"(),*+\s-]*")
_HASH = re.compile(r"--hash[=\s]\s*[A-Za-z0-9]+:[A-Fa-f0-9]+")
_URL = r"https?://[^\s$\\]+"
# Options of the whole file that only choose among an index's packages.
_OPTIONS = re.compile(
    rf"(?:(?:-i|--index-url|--extra-index-url)(?:=|\s+){_URL}"
    r"|--pre|--prefer-binary"
    rf"|(?:--only-binary|--no-binary)(?:=|\s+)(?::all:|:none:|{_NAME}(?:,{_NAME})*)"
    r"|--trusted-host(?:=|\s+)[A-Za-z0-9.-]+(?::[0-9]+)?)"
)
_COMMENT = re.compile(r"(^|\s)#.*$")
_ARCHIVES = (".whl", ".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz", ".tar.xz", ".txz")

# npm: a semver range or a dist-tag, nothing that names a path, a URL, git or an alias.
_NPM_SPEC = re.compile(r"[A-Za-z0-9 .*^~<>=|+_-]*")
_NPM_DEPENDENCIES = ("dependencies", "devDependencies", "optionalDependencies", "peerDependencies")
# The root package's scripts that `npm ci`/`npm install` runs: they may read anything.
_NPM_INSTALL_SCRIPTS = {
    "preinstall",
    "install",
    "postinstall",
    "prepublish",
    "preprepare",
    "prepare",
    "postprepare",
    "dependencies",
}
_NPM_BUNDLE_KEYS = ("workspaces", "bundleDependencies", "bundledDependencies", "overrides")


def reads_bundle(dep_files: Mapping[str, bytes]) -> bool:
    """Whether an install of these dependency files may read more of the bundle than them."""
    if "requirements.txt" in dep_files and not _index_only_requirements(dep_files["requirements.txt"]):
        return True
    return "package.json" in dep_files and not _index_only_package(dep_files["package.json"])


def _index_only_requirements(data: bytes) -> bool:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return all(_index_line(line) for line in _logical_lines(text))


def _logical_lines(text: str) -> list[str]:
    """The file's lines as pip reads them: continued lines joined, comments and blanks gone."""
    lines, pending = [], ""
    for raw in text.splitlines():
        if raw.endswith("\\"):
            pending += raw[:-1]
            continue
        line = _COMMENT.sub("", pending + raw).strip()
        pending = ""
        if line:
            lines.append(line)
    if line := _COMMENT.sub("", pending).strip():
        lines.append(line)
    return lines


def _index_line(line: str) -> bool:
    if line.startswith("-"):
        return _OPTIONS.fullmatch(line) is not None
    # A requirement's own options follow it (pip allows only --hash of them here).
    head, *options = re.split(r"\s+(?=-)", line)
    if not all(_HASH.fullmatch(option) for option in options):
        return False
    requirement, _, marker = head.partition(";")
    requirement = requirement.strip()
    if requirement.lower().endswith(_ARCHIVES):  # a file's name, not a package's
        return False
    return _REQUIREMENT.fullmatch(requirement) is not None and _MARKER.fullmatch(marker) is not None


def _index_only_package(data: bytes) -> bool:
    try:
        package = json.loads(data)
    except ValueError:
        return False
    if not isinstance(package, dict) or any(key in package for key in _NPM_BUNDLE_KEYS):
        return False
    scripts = package.get("scripts", {})
    if not isinstance(scripts, dict) or _NPM_INSTALL_SCRIPTS & scripts.keys():
        return False
    for section in _NPM_DEPENDENCIES:
        deps = package.get(section, {})
        if not isinstance(deps, dict):
            return False
        for spec in deps.values():
            if not isinstance(spec, str) or not _NPM_SPEC.fullmatch(spec):
                return False
    return True
