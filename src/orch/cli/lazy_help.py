"""Typer's help formatting without rich's Markdown and Traceback until they are used.

Typer formats help and usage errors with `typer.rich_utils`, which imports `rich.markdown`
(markdown-it and its rules) and `rich.traceback` (pygments, through rich's syntax highlighting)
at its top, though it uses them only for help written in Markdown (`rich_markup_mode="markdown"`)
and for pretty tracebacks, neither of which orch's commands have. Those two imports were ~40 ms
of `orch --help`'s own ~170 (docs/benchmarks.md, "The CLI's own start").

`install()` adds an import hook for `typer.rich_utils` alone: while it is being imported,
`rich.markdown` and `rich.traceback` resolve to small modules whose `Markdown` and `Traceback`
build the real classes' objects on first use (importing the real modules then). Once
`typer.rich_utils` is imported, the stand-ins leave `sys.modules`, so every other importer gets
rich's own modules. Where rich's modules are imported already, nothing is stood in for.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import sys
import types
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # importlib.abc itself costs ~10 ms (importlib.resources): the protocols are
    import importlib.abc  # duck-typed, so the hook's classes do without it at run time

TARGET = "typer.rich_utils"


def _markdown_module() -> types.ModuleType:
    module = types.ModuleType("rich.markdown", "Stands in for rich.markdown (orch.cli.lazy_help).")

    class Markdown:
        """rich.markdown.Markdown, imported when one is made."""

        def __new__(cls, *args: Any, **kwargs: Any) -> Any:
            return importlib.import_module("rich.markdown").Markdown(*args, **kwargs)

    module.Markdown = Markdown  # type: ignore[attr-defined]
    return module


def _traceback_module() -> types.ModuleType:
    module = types.ModuleType("rich.traceback", "Stands in for rich.traceback (orch.cli.lazy_help).")

    class Traceback:
        """rich.traceback.Traceback, imported when one is made."""

        def __new__(cls, *args: Any, **kwargs: Any) -> Any:
            return importlib.import_module("rich.traceback").Traceback(*args, **kwargs)

        @classmethod
        def from_exception(cls, *args: Any, **kwargs: Any) -> Any:
            return importlib.import_module("rich.traceback").Traceback.from_exception(*args, **kwargs)

    module.Traceback = Traceback  # type: ignore[attr-defined]
    return module


STAND_INS = {"rich.markdown": _markdown_module, "rich.traceback": _traceback_module}


class _Loader:
    """The real loader of typer.rich_utils, run with the stand-ins in place."""

    def __init__(self, real: importlib.abc.Loader) -> None:
        self.real = real

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
        return self.real.create_module(spec)

    def exec_module(self, module: types.ModuleType) -> None:
        placed = [name for name in STAND_INS if name not in sys.modules]
        for name in placed:
            sys.modules[name] = STAND_INS[name]()
        try:
            self.real.exec_module(module)
        finally:
            for name in placed:
                sys.modules.pop(name, None)


class _Finder:
    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: types.ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != TARGET:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return None
        spec.loader = _Loader(spec.loader)  # type: ignore[assignment]  # a Loader, duck-typed
        return spec


def install() -> None:
    """Add the hook (once), unless typer.rich_utils is imported already."""
    if TARGET not in sys.modules and not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())
