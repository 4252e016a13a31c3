"""Sizes as messages print them: TiB for the largest, and a measure never printed as its bound."""

from __future__ import annotations

import pytest

from orch.engine.build_disk import Stop
from orch.sizes import format_apart, format_size

GiB, TiB = 2**30, 2**40


@pytest.mark.parametrize(
    ("size", "shown"),
    [(512, "512 B"), (1536, "1.5 KiB"), (10 * 2**20, "10 MiB"), (GiB, "1 GiB"), (99 * TiB, "99 TiB")],
)
def test_format_size_scales_up_to_tib(size: int, shown: str) -> None:
    """ORCH_BUILD_DISK_RESERVE=99Ti was said as "101376 GiB"."""
    assert format_size(size) == shown


@pytest.mark.parametrize(
    ("size", "bound", "shown"),
    [
        (int(1.04 * GiB), GiB, "1.04 GiB"),  # one decimal reads as the bound's "1 GiB"
        (GiB + 2**20, GiB, "1.001 GiB"),
        (GiB + 5, GiB, "1,073,741,829 bytes"),  # no decimal tells them apart
        (52 * 2**20, 50 * 2**20, "52 MiB"),  # apart already: as format_size says it
        (int(1.5 * GiB), GiB, "1.5 GiB"),
    ],
)
def test_format_apart_never_reads_as_the_other(size: int, bound: int, shown: str) -> None:
    assert format_apart(size, bound) == shown
    assert format_apart(size, bound) != format_size(bound)


def test_the_write_bound_message_shows_more_than_its_bound() -> None:
    """A tester's build stopped with "its steps had written 1 GiB, more than the 1 GiB"."""
    error = Stop(GiB, int(1.04 * GiB)).error([])
    assert "written 1.04 GiB, more than the 1 GiB that ORCH_BUILD_MAX_SIZE allows" in error.message


def test_a_reserve_not_met_before_the_build_says_it_did_not_start() -> None:
    error = Stop(99 * TiB, 80 * GiB, reserve=True, where="/var/lib/containers/storage").error(
        [], started=False
    )
    assert error.message.startswith("The build did not start: the disk that holds the container storage")
    assert "had 80 GiB free, less than the 99 TiB that ORCH_BUILD_DISK_RESERVE keeps free" in error.message
