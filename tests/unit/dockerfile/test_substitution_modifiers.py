"""`${...}` forms Podman 4.3.1 can't substitute are refused on their line (dockerfile/substitutions.py).

Found by a tester: `ENV REQ=${HOME:?mustbeset}` validated, then every build failed in Podman
(`Unsupported modifier (?) in substitution`), blamed on the step before it. Each form below was
run through `podman build` 4.3.1: the refused ones fail there (`Missing ':'` or `Unsupported
modifier`), the accepted ones build.
"""

from __future__ import annotations

import pytest

from orch.dockerfile import validate
from tests.unit.dockerfile.support import BASE, errors, where

_REFUSED = [
    ("${V:?x}", ":?"),
    ("${V?x}", "?"),
    ("${V-x}", "-"),
    ("${V+x}", "+"),
    ("${V#x}", "#"),
    ("${V##x}", "##"),
    ("${V%x}", "%"),
    ("${V%%x}", "%%"),
    ("${V/x/y}", "/"),
    ("${V//x/y}", "//"),
    ("${V^}", "^"),
    ("${V,}", ","),
    ("${V:=x}", ":="),
    ("${V=x}", "="),
    ("${#V}", "#"),
    ("${V:}", ":"),
]


@pytest.mark.parametrize(("form", "modifier"), _REFUSED)
@pytest.mark.parametrize(
    "template",
    ["ENV X={}", "ENV A=1 X={}", "ENV X a {}", "LABEL x={}", "ARG X={}", "WORKDIR /w/{}", "USER {}"],
)
def test_a_form_podman_cant_substitute_is_refused_on_its_line(
    template: str, form: str, modifier: str
) -> None:
    v = validate(BASE + "ENV SQ=1\n" + template.format(form) + "\nRUN echo after\n")
    keyword = template.split()[0]
    [finding] = errors(v)
    assert where([finding]) == [(3, keyword)]
    assert f"uses {form} (the {modifier} form)" in finding.message
    assert "${VAR:-default} and ${VAR:+alt}" in finding.message
    assert "RUN step" in finding.fix
    assert v.instructions == ()


@pytest.mark.parametrize(("form", "modifier"), [("${E%/}", "%"), ("${E:?x}", ":?"), ("${E-/x}", "-")])
def test_a_form_podman_cant_substitute_in_a_mount_flag_is_refused(form: str, modifier: str) -> None:
    """Podman expands a RUN's `--mount` options as it does ENV's: `target=${E%/}` validated, then
    failed the build (`Missing ':' in substitution`), blamed on the RUN step."""
    v = validate(BASE + "ARG E=/x/\n" + f"RUN --mount=type=cache,target={form} true\n")
    [finding] = errors(v)
    assert where([finding]) == [(3, "RUN")]
    assert f"uses {form} (the {modifier} form)" in finding.message


def test_a_mount_flag_of_forms_podman_substitutes_is_accepted() -> None:
    v = validate(BASE + "ARG E=/x\nRUN --mount=type=cache,id=${E%x},target=${E:-/y}${E:+/z} true\n")
    assert v.ok, v.findings


def test_the_testers_dockerfile_is_refused_on_line_3() -> None:
    v = validate(BASE + "ENV SQ='single quoted'\nENV REQ=${HOME:?mustbeset} ALT=${NOPE:+alt}x\nRUN true\n")
    [finding] = errors(v)
    assert where([finding]) == [(3, "ENV")]
    assert "${HOME:?mustbeset}" in finding.message


@pytest.mark.parametrize(
    "word",
    [
        '"${V:-${W%x}}"',  # in a default, within quotes
        "${V:-x${W?y}}",
        '"a}${V%x}"',  # a brace in quotes closes nothing
        '${V:-"}"${W#x}}',
    ],
)
def test_a_form_inside_another_is_refused(word: str) -> None:
    [finding] = errors(validate(BASE + f"ENV X={word}\n"))
    assert where([finding]) == [(2, "ENV")]


def test_a_form_without_the_colon_is_told_to_add_it() -> None:
    [finding] = errors(validate(BASE + "ENV X=${V-x}\n"))
    assert "${V:-...}" in finding.fix


@pytest.mark.parametrize(
    "line",
    [
        "ENV X=${V} Y=$V Z=${V:-d} W=${V:+a} U=${}",
        "ENV X=${V:-${W:+y}} Y=${V_1:-x} Z=${1}",
        "LABEL x=\"${V:-'}'}\"",
        "ENV X='${V%x}'",  # single quotes: no substitution
        "ENV X=\\${V#x}",  # escaped: literal text
        'ENV X="\\${V#x}"',
        "ENV X=${V:-'${W#x}'}",
        "WORKDIR /w/${V:-x}",
        "USER ${V:+x}",
        # The shell expands RUN's command, any form of it.
        "RUN echo ${V:?x} ${V#x} ${V%%x} ${V//a/b} ${V-x}",
        'RUN ["sh", "-c", "echo ${V:?x}"]',
        "RUN <<EOF\necho ${V:?x}\nEOF",
    ],
)
def test_forms_podman_substitutes_and_run_commands_are_accepted(line: str) -> None:
    v = validate(BASE + "ENV V=abc W=def\n" + line + "\n")
    assert v.ok, v.findings


@pytest.mark.parametrize("form", [form for form, _ in _REFUSED])
def test_a_global_arg_is_expanded_here_and_never_reaches_podman(form: str) -> None:
    # orch expands ARGs before FROM itself (global_args.py); a redeclared one reaches Podman
    # with its value written out, and an unused one not at all.
    assert validate(f"ARG G=x\nARG U={form}\n" + BASE + "ARG G\nRUN echo $G\n").ok


def test_a_redeclared_global_arg_keeps_the_forms_orch_expands() -> None:
    v = validate("ARG H=/h\nARG G=${H?x}${N-d}${H:+a}\n" + BASE + "ARG G\n")
    assert v.ok and v.instructions[-1].args == ("G=/hda",)


def test_only_the_first_form_of_an_instruction_is_said() -> None:
    [finding] = errors(validate(BASE + "ENV A=${V#x} B=${V%x}\n"))
    assert "${V#x}" in finding.message
    assert where(errors(validate(BASE + "ENV A=${V#x}\nUSER ${U?x}\n"))) == [(2, "ENV"), (3, "USER")]


def test_a_word_left_open_is_said_once() -> None:
    [finding] = errors(validate(BASE + "ENV A=${V#x\n"))
    assert "never closed" in finding.message
