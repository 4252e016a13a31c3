from __future__ import annotations

import pytest

from orch import errors
from orch.builder.cache import cache_key, parse_step
from orch.models import check_name, new_id


@pytest.mark.parametrize("name", ["a", "scraper-plus", "py3.11_env", "x" * 63])
def test_valid_names(name: str) -> None:
    assert check_name(name) == name


@pytest.mark.parametrize("name", ["", "Upper", "-lead", "trail-", "sp ace", "x" * 64, "a/b", "ä"])
def test_invalid_names(name: str) -> None:
    with pytest.raises(errors.InvalidInput, match="not valid"):
        check_name(name)


def test_ids_have_prefix_and_are_unique() -> None:
    ids = {new_id("env") for _ in range(1000)}
    assert len(ids) == 1000
    assert all(i.startswith("env_") and len(i) == 14 for i in ids)


def test_error_round_trip() -> None:
    e = errors.Conflict("Taken.", "Pick another.", findings=[1])
    back = errors.from_dict(e.to_dict())
    assert type(back) is errors.Conflict
    assert (back.message, back.fix, back.details) == ("Taken.", "Pick another.", {"findings": [1]})
    assert back.exit_code == 2 and back.http_status == 409
    assert type(errors.from_dict({"error": "unheard-of", "message": "m"})) is errors.OrchError


def test_cache_key_depends_on_text_and_base() -> None:
    assert cache_key("RUN a", "base1") == cache_key("RUN a", "base1")
    assert cache_key("RUN a", "base1") != cache_key("RUN b", "base1")
    assert cache_key("RUN a", "base1") != cache_key("RUN a", "base2")
    assert len(cache_key("x", "y")) == 64


def test_parse_step() -> None:
    assert parse_step("STEP 3/5: RUN pip install x") == (3, 5, "RUN pip install x")
    assert parse_step("--> Using cache 123") is None
