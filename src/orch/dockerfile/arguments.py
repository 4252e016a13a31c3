"""Argument checks for the instructions that are built, as BuildKit would make them."""

from __future__ import annotations

from collections.abc import Callable

from orch.dockerfile.findings import Finding, error
from orch.dockerfile.instruction import Instruction
from orch.dockerfile.run_flags import check_run_flags
from orch.dockerfile.words import BACKSLASH, rewrite

_Check = Callable[[Instruction], tuple[str, str] | None]


def check_arguments(ins: Instruction) -> list[Finding]:
    """Findings for flags and arguments of RUN, ENV, ARG, WORKDIR, USER, LABEL and SHELL."""
    if ins.keyword == "RUN":
        findings = check_run_flags(ins)
    elif ins.flags:
        name = ins.flags[0].partition("=")[0][:40]
        findings = [
            error(ins.line, ins.keyword, f"{ins.keyword} takes no flags such as {name}.", "Remove it.")
        ]
    else:
        findings = []
    check = _CHECKS.get(ins.keyword)
    problem = check(ins) if check else None
    if problem is not None:
        findings.append(error(ins.line, ins.keyword, problem[0], problem[1]))
    return findings


def _run(ins: Instruction) -> tuple[str, str] | None:
    if not ins.args or (not "".join(ins.args).strip() and not ins.json_form):
        return "RUN has no command.", "Add the command to run, or remove the line."
    # The parser hands strings over C, which ends them at a NUL, so the command would be cut short.
    if ins.json_form and "\\u0000" in ins.original.lower():
        return "The JSON array holds a \\u0000 (NUL) character, which no command can receive.", "Remove it."
    return None


def _pairs(ins: Instruction) -> tuple[str, str] | None:
    kw = ins.keyword
    if not ins.args:
        return f"{kw} needs at least one NAME=value pair.", f'Write {kw} NAME=value, e.g. {kw} MODE="fast".'
    if any(not key for key in ins.args[::2]):
        return f"{kw} has a pair with no name before the = sign.", "Put a name before each = sign."
    if ins.args[0].lstrip("\"'").startswith("--"):
        # Quoted (`ENV "--mount" x`) it is a name to Docker; written back out for Podman it
        # would read `ENV "--mount"=x`, which BuildKit's parser takes for an option.
        return (
            f"{kw} {ins.args[0][:40]} looks like an option: a name can't begin with --.",
            "Give it a name that begins with a letter or _.",
        )
    return _closed(ins)


def _arg(ins: Instruction) -> tuple[str, str] | None:
    if not ins.args or any(not w.partition("=")[0] for w in ins.args):
        return "ARG needs a name.", "Write ARG NAME or ARG NAME=default."
    return _closed(ins)


def _single(ins: Instruction) -> tuple[str, str] | None:
    if not ins.args or not ins.args[0]:
        what = "a directory" if ins.keyword == "WORKDIR" else "a user name or id"
        return f"{ins.keyword} needs {what}.", f"Add {what}, or remove the line."
    return _closed(ins)


def _shell(ins: Instruction) -> tuple[str, str] | None:
    if not ins.json_form:
        return "SHELL must be written as a JSON array.", 'Write it like SHELL ["/bin/bash", "-c"].'
    if not ins.args:
        return "SHELL needs at least the shell program.", 'Write it like SHELL ["/bin/bash", "-c"].'
    return None


def _closed(ins: Instruction) -> tuple[str, str] | None:
    if all(rewrite(w, BACKSLASH).closed for w in ins.args):
        return None
    return (
        f"A quote or ${{ in this {ins.keyword} is never closed.",
        "Close it, or escape a literal quote with a backslash.",
    )


_CHECKS: dict[str, _Check] = {
    "RUN": _run,
    "ENV": _pairs,
    "LABEL": _pairs,
    "ARG": _arg,
    "WORKDIR": _single,
    "USER": _single,
    "SHELL": _shell,
}
