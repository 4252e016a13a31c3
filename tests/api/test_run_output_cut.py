"""A run's stream cut at its bound keeps the beginning of what was written, masked: never the
room a cut left before a `***` filled with what came after it (found by a tester: `…ZZZY`)."""

from __future__ import annotations

import pytest

from orch.services.platform import Platform
from orch.services.run_output import RunOutput
from orch.store.schema import RunRow
from tests.api.test_run_output import held, queued, read

__all__ = ["held", "queued"]  # fixtures


@pytest.mark.parametrize("before", [1, 2])
@pytest.mark.parametrize("split", [0, 3])
def test_what_comes_after_a_mask_the_cut_dropped_is_not_kept(
    platform: Platform, queued: str, held: None, before: int, split: int
) -> None:
    out = RunOutput(platform, queued)
    out.bound = 8
    out.mask(["s3cret"])
    out.write("stdout", b"Z" * (8 - before) + b"s3cret"[:split])  # the value may come in two writes
    out.write("stdout", b"s3cret"[split:] + b"Y" * 5)
    out.write("stdout", b"Y" * 5)  # more after the cut: it would fit in the room the cut left
    out.write("stdout", b"Y")
    out.close()
    assert read(platform, queued)["stdout"] == b"Z" * (8 - before)
    with platform.store.session() as s:
        run = s.get(RunRow, queued)
        assert run is not None and run.truncated


def test_a_stream_cut_ends_there_and_the_others_go_on(platform: Platform, queued: str, held: None) -> None:
    out = RunOutput(platform, queued)
    out.bound = 8
    out.mask(["s3cret"])
    out.write("stdout", b"Z" * 7 + b"s3cret")
    out.write("stderr", b"e" * 7)
    out.write("stdout", b"Y")
    out.write("stderr", b"f")  # exactly at the bound: no cut
    out.write("stderr", b"g")
    out.close()
    assert read(platform, queued) == {"stdout": b"Z" * 7, "stderr": b"e" * 7 + b"f", "log": b""}
