"""Properties over generated text: validate never raises; what it accepts renders and reads back."""

from __future__ import annotations

from collections.abc import Sequence

import dockerfile
from hypothesis import HealthCheck, example, given, settings

from orch.dockerfile import BASE_IMAGE, Instruction, Severity, normalised, render_containerfile, validate
from orch.dockerfile.cache_mounts import private
from orch.dockerfile.heredoc import heredoc_argv
from orch.dockerfile.render import DEFAULT_SHELL
from tests.unit.dockerfile.strategies import ANY_TEXT, dockerfile_texts
from tests.unit.dockerfile.support import BASE

SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def check_validation(text: str) -> None:
    v = validate(text)
    assert v.findings or v.instructions
    last = max(1, text.count("\n") + 1)
    for f in v.findings:
        assert 1 <= f.line <= last
        assert f.message and f.fix and f.severity in (Severity.ERROR, Severity.WARNING)
        assert f.to_dict()["severity"] in ("error", "warning")
    if v.ok:
        assert v.instructions[0].keyword == "FROM"
    else:
        assert v.instructions == ()
    assert v.to_dict()["ok"] is v.ok


@SETTINGS
@given(ANY_TEXT)
def test_validate_never_raises_on_any_text(text: str) -> None:
    check_validation(text)


@SETTINGS
@given(dockerfile_texts())
def test_validate_never_raises_on_dockerfile_fragments(text: str) -> None:
    check_validation(text)


@SETTINGS
@given(dockerfile_texts())
# A ${...} the parser's lexer can't read (test_cache_mount_words.py), then a garbled cache mount.
@example(BASE + "RUN <<EOF ${a#x}\nRUN --mount=type=cache,target=/data/你好 true\n")
@example(BASE + "RUN <<EOF ${a:-${a%x}}\nRUN --mount=type=cache,target=/root/堀 x\n")
def test_accepted_files_render_to_what_they_mean(text: str) -> None:
    v = validate(text)
    if not v.ok:
        return
    out = render_containerfile(v.instructions, BASE_IMAGE)
    # A CR inside a word is kept (to BuildKit it is no line break); one that would end a line
    # (which the parser trims) is never written.
    assert out.endswith("\n") and "\r\n" not in out
    read_back = list(dockerfile.parse_string(out))
    assert read_back[0].value == (BASE_IMAGE,)
    assert meaning(v.instructions[1:]) == read_back_meaning(read_back[1:])
    assert normalised(v.instructions) == normalised(validate(text).instructions)


def _flags(ins: Instruction) -> tuple[str, ...]:
    """A RUN's flags as rendered: a cache mount's id is its owner's (none here), not the user's."""
    return tuple(private(flag, "") for flag in ins.flags)


def meaning(instructions: Sequence[Instruction]) -> list[tuple[str, tuple[str, ...], tuple[str, ...]]]:
    """(keyword, flags, effective arguments) of each rendered line the instructions should give."""
    shell: Sequence[str] = DEFAULT_SHELL
    out = []
    for ins in instructions:
        if ins.keyword == "SHELL":
            shell = ins.args
        elif ins.keyword == "RUN" and ins.heredocs:
            out.append(("RUN", _flags(ins), tuple(heredoc_argv(ins.args[0], ins.heredocs, shell))))
        elif ins.keyword == "RUN":
            out.append(("RUN", _flags(ins), ins.args if ins.json_form else (*shell, ins.args[0])))
        elif ins.keyword in ("ENV", "LABEL"):
            out.append((ins.keyword, (), tuple(guarded(w) if n % 2 else w for n, w in enumerate(ins.args))))
        else:
            out.append((ins.keyword, ins.flags, tuple(guarded(w) for w in ins.args)))
    return out


def guarded(word: str) -> str:
    return word + '""' if word[-1:].isspace() or word.endswith("\\") else word


def read_back_meaning(
    commands: Sequence[dockerfile.Command],
) -> list[tuple[str, tuple[str, ...], tuple[str, ...]]]:
    out = []
    for c in commands:
        args = tuple(c.value)
        if c.cmd == "RUN" and not c.json:
            args = (*DEFAULT_SHELL, args[0])
        out.append((c.cmd, tuple(c.flags), args))
    return out
