"""`orch server` takes what start-up made out of the garbage collector's walks (server/main.py)."""

from __future__ import annotations

import gc

from orch.server.main import freeze_startup


def test_the_server_freezes_what_start_up_made() -> None:
    walked = len(gc.get_objects())  # what a full collection walks (generations 0 to 2)
    try:
        frozen = freeze_startup()
        # As many as were frozen, less those freed since by another test's thread still running.
        assert frozen >= gc.get_freeze_count() >= walked // 2 > 10_000
        assert len(gc.get_objects()) < walked // 10  # a full collection now walks only what came after
    finally:
        gc.unfreeze()
