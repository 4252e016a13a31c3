"""ARGs before FROM: accepted when FROM still names the base, and meaningful in the stage."""

from __future__ import annotations

import dockerfile
import pytest

from orch.dockerfile import BASE_IMAGE, normalised, render_containerfile, validate
from orch.dockerfile.expand import expand
from tests.unit.dockerfile.support import BASE, errors, keywords

TAG = "localhost/orch/code-interpreter:abc123"

PINNED = 'ARG V=1\nFROM e2bdev/code-interpreter:latest\nARG V\nRUN pip install "black==${V}"\n'


def render(text: str) -> str:
    v = validate(text)
    assert v.ok, v.findings
    return render_containerfile(v.instructions, TAG)


def test_a_global_arg_redeclared_in_the_stage_keeps_its_value() -> None:
    v = validate(PINNED)
    assert v.ok and v.findings == ()
    assert keywords(v) == ["FROM", "ARG", "RUN"]  # the global ARG itself is not built
    # Docker gives the redeclared ARG the global default; Podman gets it written out.
    assert render(PINNED).splitlines() == [f"FROM {TAG}", "ARG V=1", 'RUN pip install "black==${V}"']


def test_from_may_name_the_base_through_a_global_arg() -> None:
    for text in (
        "ARG BASE=e2bdev/code-interpreter:latest\nFROM ${BASE}\nRUN true\n",
        "ARG BASE=e2bdev/code-interpreter:latest\nFROM $BASE AS env\nRUN true\n",
        "ARG TAG=latest\nFROM e2bdev/code-interpreter:${TAG}\nRUN true\n",
        "ARG REG=docker.io ORG=e2bdev\nARG IMAGE=${REG}/${ORG}/code-interpreter\nFROM ${IMAGE}:latest\n",
        "FROM ${UNSET:-e2bdev/code-interpreter:latest}\nRUN true\n",
        "# escape=`\nARG BASE=e2bdev/code-interpreter:latest\nFROM ${BASE}\nRUN true\n",
    ):
        v = validate(text)
        assert v.ok, (text, v.findings)
        assert render(text).splitlines()[0] == f"FROM {TAG}"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("ARG BASE=python:3.11\nFROM ${BASE}\n", "(that is, python:3.11)"),
        ("ARG TAG=v2\nFROM e2bdev/code-interpreter:${TAG}\n", "only e2bdev/code-interpreter:latest"),
        ("FROM ${BASE}\n", "expands to nothing"),
        ("ARG BASE\nFROM ${BASE}\n", "expands to nothing"),
        ("ARG BASE=e2bdev/code-interpreter:latest\nFROM ${BASE%:*}\n", "can't be worked out"),
        ("FROM e2bdev/code-interpreter:${TARGETARCH}\n", "can't be worked out"),
    ],
)
def test_from_that_does_not_resolve_to_the_base(text: str, needle: str) -> None:
    [finding] = errors(validate(text + "RUN true\n"))
    assert finding.instruction == "FROM" and needle in finding.message


def test_stage_args_see_global_values_as_docker_does() -> None:
    text = (
        'ARG A=1 B="two words"\nARG C=${A}-x\nARG A=9\n'  # a later global value replaces an earlier one
        "FROM e2bdev/code-interpreter:latest\n"
        "ARG A B C D\nARG E=own\n"
    )
    v = validate(text)
    assert v.ok, v.findings
    [a, e] = v.instructions[1:]
    assert a.args == ("A=9", "B=two\\ words", "C=1-x", "D")  # D has no global value: unset, as in Docker
    assert e.args == ("E=own",)
    # Read back by BuildKit's parser, the rendered ARG holds the same words.
    [_, back_a, _] = dockerfile.parse_string(render(text))
    assert back_a.value == a.args


def test_a_global_value_that_cannot_be_worked_out_is_refused_where_it_is_used() -> None:
    text = "ARG V=${X#y}\n" + BASE + "ARG V\n"
    [finding] = errors(validate(text))
    assert (finding.line, finding.instruction) == (3, "ARG")
    assert "line 1" in finding.message and "ARG V=value" in finding.fix
    assert validate("ARG V=${X#y}\n" + BASE + "RUN true\n").ok  # unused: no harm


def test_global_args_without_a_stage_arg_leave_the_build_as_it_was() -> None:
    with_arg = validate("ARG V=1\n" + BASE + "RUN echo $V\n")
    without = validate(BASE + "RUN echo $V\n")
    assert with_arg.ok and normalised(with_arg.instructions) == normalised(without.instructions)


def test_the_global_value_is_part_of_the_cache_key() -> None:
    assert normalised(validate(PINNED).instructions) != normalised(
        validate(PINNED.replace("V=1", "V=2")).instructions
    )


def test_values_with_special_characters_are_written_out_literally() -> None:
    value = '$HOME "q" \\\\ end '  # in single quotes, so all of it literal, backslashes included
    v = validate(f"ARG V='{value}'\n" + BASE + "ARG V\n")
    assert v.ok, v.findings
    [arg] = v.instructions[1:]
    assert expand(arg.args[0].partition("=")[2], {}) == value
    [back] = dockerfile.parse_string(render_containerfile(v.instructions, TAG).splitlines()[1])
    assert expand(back.value[0].partition("=")[2], {}) == value


def test_other_instructions_before_from_are_still_refused() -> None:
    [finding] = errors(validate("RUN true\n" + BASE))
    assert (finding.line, finding.instruction) == (1, "RUN") and "only ARG" in finding.message
    [finding] = errors(validate("ARG\n" + BASE))
    assert (finding.line, finding.instruction) == (1, "ARG")


@pytest.mark.parametrize(
    ("word", "env", "expected"),
    [
        ("plain", {}, "plain"),
        ("\"a b\"'c'", {}, "a bc"),
        ("a\\ b\\$X", {}, "a b$X"),
        ("$A/${A}/${B:-d}/${B-e}/${A:+p}/${B+q}", {"A": "x"}, "x/x/d/e/p/"),
        ("${E:-d}/${E-d}/${E:+p}/${E+p}", {"E": ""}, "d///p"),
        ('"${A} \\"$A\\" \\x"', {"A": "1"}, '1 "1" \\x'),
        ("${A:-${B:-${C:-deep}}}", {}, "deep"),
        ("$1$@$", {}, "$"),
        ("`$A", {"A": "1"}, "$A"),
    ],
)
def test_expand(word: str, env: dict[str, str | None], expected: str) -> None:
    escape = "`" if word.startswith("`") else "\\"
    assert expand(word, env, escape) == expected


@pytest.mark.parametrize(
    "word", ["${A", "${}", "${A%x}", "'open", '"open', "${U?gone}", "${N}", "${A:-" * 40]
)
def test_expand_refuses_what_it_cannot_work_out(word: str) -> None:
    assert expand(word, {"N": None}) is None


def test_a_value_too_long_to_work_out_is_unknown() -> None:
    """Each ARG doubles A: worked out thirty times over, it would take gigabytes; past 64 KiB of
    values taken in, the value is unknown (so a FROM that uses it is refused, saying so)."""
    assert expand("$A$A", {"A": "x" * 32 * 1024}) == "x" * 64 * 1024
    assert expand("$A$A$A", {"A": "x" * 32 * 1024}) is None
    text = "ARG A=xxxxxxxx\n" + "ARG A=$A$A\n" * 20 + "FROM e2bdev/code-interpreter:$A\nRUN true\n"
    found = errors(validate(text))
    assert any("can't be worked out" in f.message for f in found), found


def test_base_image_constant() -> None:
    assert BASE_IMAGE == "e2bdev/code-interpreter:latest"
