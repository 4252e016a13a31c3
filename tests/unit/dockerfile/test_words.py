"""Rewriting expanded words from the backtick escape to the backslash escape."""

from __future__ import annotations

import subprocess

import pytest

from orch.dockerfile.words import rewrite


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("plain", "plain"),
        ("C:\\dir", "C:\\\\dir"),  # a literal backslash
        ("a`$b", "a\\$b"),  # an escaped dollar stays unexpanded
        ("a` b", "a\\ b"),
        ("``", "\\`"),
        ('"q`"r"', '"q\\"r"'),
        ('"lit\\eral"', '"lit\\\\eral"'),
        ('"tick``"', '"tick`"'),
        ('"keep`x"', '"keep`x"'),  # ` before an ordinary character is literal inside quotes
        ("'C:\\x`y'", "'C:\\x`y'"),  # nothing is special inside single quotes
        ("${X:-a`}b}", "${X:-a\\}b}"),
        ("trailing`", "trailing"),  # a final escape escapes nothing
    ],
)
def test_backtick_words(raw: str, expected: str) -> None:
    word = rewrite(raw, "`")
    assert (word.text, word.closed) == (expected, True)


@pytest.mark.parametrize("raw", ["plain", "a\\ b", '"x \\" y"', "'s p'", "${A:-b c}", "a\\$b"])
def test_backslash_words_are_unchanged(raw: str) -> None:
    assert rewrite(raw, "\\").text == raw


def test_blanks_escaped_for_legacy_values() -> None:
    assert rewrite('a  b "c  d" e\tf', "\\", escape_blanks=True).text == 'a\\ \\ b\\ "c  d"\\ e\\\tf'


@pytest.mark.parametrize("raw", ['"open', "'open", "${open", 'x"${a'])
def test_unclosed_quotes_are_reported(raw: str) -> None:
    assert not rewrite(raw, "\\").closed
    assert not rewrite(raw, "`").closed


@pytest.mark.parametrize(
    ("raw", "value"),
    [("C:\\dir", "C:\\dir"), ("a` b", "a b"), ('"x`"y"', 'x"y'), ("'s\\q'", "s\\q"), ('"p\\q"', "p\\q")],
)
def test_rewritten_words_expand_to_the_same_value(raw: str, value: str) -> None:
    # For words without $ or backticks, sh removes quotes and escapes as Docker does.
    text = rewrite(raw, "`").text
    out = subprocess.run(["/bin/sh", "-c", f"printf %s {text}"], capture_output=True, text=True, check=True)
    assert out.stdout == value
