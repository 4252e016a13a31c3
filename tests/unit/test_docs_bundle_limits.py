"""docs/agents.md names every bound a publish is refused for (orch/bundle/limits.py)."""

from __future__ import annotations

from pathlib import Path

from orch.bundle.limits import MAX_BUNDLE_BYTES, MAX_FILES

DOCS = Path(__file__).resolve().parents[2] / "docs" / "agents.md"


def test_the_refusals_name_the_bundles_bounds() -> None:
    text = DOCS.read_text()
    refusals = " ".join(text[text.index("Left out of the bundle:") :].split("\n\n", 1)[0].split())
    assert f"more than {MAX_BUNDLE_BYTES // 1024**2} MiB of files" in refusals
    assert f"more than {MAX_FILES:,} entries (files, directories and links together)" in refusals
