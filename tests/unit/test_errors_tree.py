"""errors.py holds every error class of orch, and each one goes to the CLI and back as itself."""

from __future__ import annotations

import inspect

import pytest

from orch import errors

CLASSES = [
    cls
    for _name, cls in inspect.getmembers(errors, inspect.isclass)
    if issubclass(cls, errors.OrchError) and cls.__module__ == errors.__name__
]


def test_every_class_has_its_own_code_in_the_map() -> None:
    codes = [cls.code for cls in CLASSES]
    assert len(codes) == len(set(codes)), codes
    assert {cls.code: cls for cls in CLASSES} == errors._BY_CODE


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_every_class_round_trips(cls: type[errors.OrchError]) -> None:
    back = errors.from_dict(cls("It failed.", "Do this.", extra=[1]).to_dict())
    assert type(back) is cls
    assert (back.message, back.fix, back.details) == ("It failed.", "Do this.", {"extra": [1]})
    assert (back.exit_code, back.http_status) == (cls.exit_code, cls.http_status)


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_every_class_is_drawn_in_the_docstring(cls: type[errors.OrchError]) -> None:
    assert f" {cls.__name__} " in (errors.__doc__ or "")


def test_the_errors_raised_elsewhere_are_these() -> None:
    from orch.engine import BuildFailed as engine_build_failed
    from orch.engine.base import BuildFailed as base_build_failed

    assert engine_build_failed is base_build_failed is errors.BuildFailed
    assert issubclass(errors.BuildFailed, errors.EngineError)
    assert errors.ServiceUnavailable.http_status == 503
    assert errors.IllegalTransition.http_status == 500
