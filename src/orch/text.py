"""Text that must be UTF-8: a file's or a stream's bytes, or an argument's characters, with one
plain sentence when it is not (the CLI and the server's bundle reader say it the same way)."""

from __future__ import annotations

from orch.errors import InvalidInput


def utf8(data: bytes | str, what: str, fix: str) -> str:
    """`data` as text, or InvalidInput saying `what` is not UTF-8. Bytes: a file or standard
    input, a BOM dropped as editors on Windows write one. Text: an argument, whose undecodable
    bytes Python kept as lone surrogates that no request can carry."""
    if isinstance(data, bytes):
        try:
            return data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise InvalidInput(f"{what} is not UTF-8 text (byte {exc.start}).", fix) from None
    try:
        data.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidInput(f"{what} is not UTF-8 text (character {exc.start}).", fix) from None
    return data
