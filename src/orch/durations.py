"""How long something took, as a person reads it: the CLI and the web UI say it the same way."""

from __future__ import annotations


def duration_text(seconds: float) -> str:
    """A run's duration as a person reads it: "32 ms" for a run faster than a tenth of a second
    (most of them: not "0.0 s"), else "1.7 s". The web UI's pages say it the same way."""
    return f"{seconds * 1000:.0f} ms" if seconds < 0.1 else f"{seconds:.1f} s"
