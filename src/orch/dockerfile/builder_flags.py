"""Flags as BuildKit's parser splits them off an instruction: byte by byte.

The parser's flag splitter (extractBuilderFlags) takes each byte of the line for a character
of its own. A non-ASCII character in a flag therefore comes out garbled (é becomes Ã©), and
the bytes 0x85 and 0xA0 inside a character count as blanks: in `--mount=target=/data/你好 true`
the flag ends inside 你 and `好 true` is taken for the command. When the cut falls inside a
character the rest of the line is not even UTF-8, and the Python binding fails on it. Docker
would build such a flag garbled, so it is refused; this finds it before the parser runs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from orch.dockerfile.lines import TOKEN_SPACE, go_strip

# unicode.IsSpace of a single byte taken as a character.
_BLANK_BYTES = frozenset(b"\t\n\v\f\r \x85\xa0")
_DASH, _QUOTES, _BACKSLASH = ord("-"), (ord("'"), ord('"')), ord("\\")
_NOT_NAME = re.compile(rb"[^A-Za-z0-9_-]")


@dataclass(frozen=True)
class GarbledFlag:
    """The first flag with a non-ASCII character, and that character as written."""

    name: str
    char: str
    stand_in: str  # the instruction without its flag values, for the parser (see compact.py)


def garbled_flag(line: str, markers: tuple[str, ...]) -> GarbledFlag | None:
    """The flag the parser would garble in this joined instruction line, if any.

    ONBUILD's instruction is checked too. `markers` (the instruction's heredoc marker words)
    go into the stand-in, so that the parser still consumes the heredoc bodies.
    """
    if line.isascii():
        return None
    keyword, rest = _split_command(line)
    stand_in = [keyword]
    for _level in range(2 if keyword.lower() == "onbuild" else 1):
        data = rest.encode()
        flags, end = _split_flags(data)
        stand_in += [_name(word) + "=?" for _start, word in flags]
        for start, word in flags:
            if max(word, default=0) >= 0x80:
                # The first such flag starts on a character boundary: any blank byte before
                # it belonged to an ASCII flag.
                char = next((c for c in data[start:].decode(errors="ignore") if not c.isascii()), "?")
                return GarbledFlag(_name(word), char, " ".join([*stand_in, *markers]))
        sub_keyword, rest = _split_command(data[end:].decode())
        stand_in.append(sub_keyword)
    return None


def split_command(line: str) -> tuple[str, str]:
    """splitCommand: the keyword, and the arguments after the flags, cut where the parser cuts them."""
    keyword, rest = _split_command(line)
    data = rest.encode()
    _flags, end = _split_flags(data)
    # A cut inside a character leaves bytes that are not UTF-8; to the parser they are no
    # blank and no "[", which is what U+FFFD is here too.
    return keyword, go_strip(data[end:].decode(errors="replace"))


def _name(word: bytes) -> str:
    return _NOT_NAME.sub(b"?", word.partition(b"=")[0]).decode()


def _split_command(line: str) -> tuple[str, str]:
    """splitCommand: the keyword and the rest, from which the flags are taken."""
    parts = TOKEN_SPACE.split(go_strip(line), maxsplit=1)
    return parts[0], parts[1] if len(parts) > 1 else ""


def _split_flags(line: bytes) -> tuple[list[tuple[int, bytes]], int]:
    """extractBuilderFlags, byte for byte: (start, word) of each flag, and where the rest starts."""
    words: list[tuple[int, bytes]] = []
    word = bytearray()
    start, quote, blank_ok, in_word, in_quote = 0, 0, False, False, False
    pos, n = 0, len(line)
    while pos < n:
        ch = line[pos]
        if not in_word:
            if ch in _BLANK_BYTES:
                pos += 1
                continue
            if ch != _DASH or pos + 1 == n or line[pos + 1] != _DASH:
                return words, pos
            in_word, start = True, pos
        if in_quote:
            if ch == quote:
                in_quote = False
                pos += 1
                continue
            if ch == _BACKSLASH:
                if pos + 1 == n:
                    in_quote = False
                    pos += 1
                    continue
                pos += 1
                ch = line[pos]
            word.append(ch)
        elif ch in _BLANK_BYTES:
            in_word = False
            if word == b"--":
                return words, pos
            if blank_ok or word:
                words.append((start, bytes(word)))
            word, blank_ok = bytearray(), False
        elif ch in _QUOTES:
            quote, blank_ok, in_quote = ch, True, True
        else:
            if ch == _BACKSLASH:
                if pos + 1 == n:
                    pos += 1
                    continue
                pos += 1
                ch = line[pos]
            word.append(ch)
        pos += 1
    if in_word and word != b"--" and (blank_ok or word):
        words.append((start, bytes(word)))
    return words, n
