"""A gzip'd tar read as a stream with every byte counted: how the server reads untrusted bundles.

`tarfile` is not used for reading: it inflates a pax or GNU long-name header whole before looking
at it, and the pax parser of the Python 3.11 we run has a quadratic regular expression
(CVE-2024-6232), so a small upload could cost gigabytes of memory or minutes of CPU. This reader
knows the few entry types a bundle may hold, bounds everything it inflates, and refuses the rest.
"""

from __future__ import annotations

import gzip
import io
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum

from orch.errors import InvalidInput
from orch.sizes import format_size

BLOCK = 512
MAX_META = 64 * 1024  # bytes of pax or GNU long-name data before one entry
# Headers and padding an entry may add to its content; what a stream may hold beyond that is refused
# before it is inflated, so a decompression bomb costs no more than a full-sized bundle.
_OVERHEAD_PER_ENTRY = 8 * BLOCK
_OVERHEAD_FIXED = 2 * MAX_META

FIX_REPACK = "Make the bundle with `orch publish`, which packs only what can be unpacked safely."
FIX_SMALLER = (
    "Keep the bundle's files under the limit: list data, build output and dependencies in .orchignore "
    "(dependencies are installed from requirements.txt or package.json)."
)


class Kind(StrEnum):
    FILE = "file"
    DIRECTORY = "directory"
    LINK = "link"


@dataclass(frozen=True)
class RawEntry:
    """One entry as the archive states it; names are bytes until `paths` has checked them."""

    name: bytes
    kind: Kind
    mode: int
    data: bytes  # a file's content; empty for directories and links
    target: bytes  # a link's target; empty for the others


_KINDS = {b"0": Kind.FILE, b"\0": Kind.FILE, b"7": Kind.FILE, b"5": Kind.DIRECTORY, b"2": Kind.LINK}
_REFUSED = {
    b"1": "a hard link",
    b"3": "a character device",
    b"4": "a block device",
    b"6": "a named pipe",
    b"S": "a sparse file",
}
_PAX, _PAX_GLOBAL, _GNU_NAME, _GNU_TARGET = b"x", b"g", b"L", b"K"
_META = frozenset({_PAX, _PAX_GLOBAL, _GNU_NAME, _GNU_TARGET})  # headers about the entry after them
_ZERO_BLOCK = bytes(BLOCK)


def entries(data: bytes, max_bytes: int, max_files: int) -> Iterator[RawEntry]:
    """The entries of the gzip'd tar `data`, refusing more than `max_files` or `max_bytes` of content."""
    if not data.startswith(b"\x1f\x8b"):
        raise InvalidInput("The bundle is not a gzip'd tar archive.", FIX_REPACK)
    stream = _Inflated(data, max_bytes + max_files * _OVERHEAD_PER_ENTRY + _OVERHEAD_FIXED, max_bytes)
    total = count = 0
    meta: dict[str, bytes] = {}
    while True:
        block = stream.read(BLOCK)
        if not block or block == _ZERO_BLOCK:
            return  # the end marker; an archive cut exactly after an entry is read as tar reads it
        if len(block) < BLOCK:
            raise _damaged("it ends in the middle of a header")
        kind_flag, name, target, mode, size = _header(block)
        if kind_flag in _META:
            if size > MAX_META:
                raise InvalidInput(
                    f"The bundle has a header of {format_size(size)}; at most {format_size(MAX_META)} "
                    "is allowed.",
                    FIX_REPACK,
                )
            payload = stream.read_padded(size)
            _take_meta(kind_flag, payload, meta)
            continue
        if "size" in meta:
            size = _pax_size(meta["size"])
        name, target = meta.get("path", name), meta.get("linkpath", target)
        meta = {}
        shown = name.decode("utf-8", "replace")
        kind = _kind(kind_flag, shown)
        if kind is Kind.FILE and name.endswith(b"/") and kind_flag == b"\0":
            kind = Kind.DIRECTORY  # the old V7 way of writing a directory
        count += 1
        if count > max_files:
            raise InvalidInput(f"The bundle has more than {max_files} entries.", FIX_SMALLER)
        content = b""
        if kind is Kind.FILE:
            total += size
            if total > max_bytes:
                raise InvalidInput(
                    f"The bundle's files add up to more than {format_size(max_bytes)} (at {shown}).",
                    FIX_SMALLER,
                )
            content = stream.read_padded(size)
        elif size:
            raise _damaged(f"the {kind} {shown} has content")
        yield RawEntry(name, kind, mode, content, target if kind is Kind.LINK else b"")


class _Inflated:
    """The decompressed stream, refusing to inflate more than `budget` bytes in all."""

    def __init__(self, data: bytes, budget: int, max_bytes: int) -> None:
        self._gzip = gzip.GzipFile(fileobj=io.BytesIO(data), mode="rb")
        self._left = budget
        self._max_bytes = max_bytes

    def read(self, size: int) -> bytes:
        """`size` bytes, or fewer only where the stream ends."""
        if size > self._left:
            raise InvalidInput(
                f"The bundle unpacks to more than {format_size(self._max_bytes)}.", FIX_SMALLER
            )
        chunks: list[bytes] = []
        wanted = size
        while wanted:
            try:
                chunk = self._gzip.read(wanted)
            except (OSError, EOFError, zlib.error):
                raise InvalidInput(
                    "The bundle is damaged: its gzip stream is cut short or corrupt.", FIX_REPACK
                ) from None
            if not chunk:
                break
            chunks.append(chunk)
            wanted -= len(chunk)
        self._left -= size - wanted
        return b"".join(chunks)

    def read_padded(self, size: int) -> bytes:
        """`size` bytes of entry data, then the padding to the next block."""
        padded = -(-size // BLOCK) * BLOCK
        data = self.read(padded)
        if len(data) < padded:
            raise _damaged("it ends in the middle of an entry")
        return data[:size]


def _header(block: bytes) -> tuple[bytes, bytes, bytes, int, int]:
    """(type, name, link target, mode, size) of a header block whose checksum holds."""
    digits = _text_field(block[148:156]).strip(b" ")
    # The checksum counts its own field as spaces; some old writers summed signed bytes.
    unsigned = sum(struct.unpack("148B8x356B", block)) + 8 * 32
    signed = sum(struct.unpack("148b8x356b", block)) + 8 * 32
    if not _is_octal(digits) or int(digits, 8) not in (unsigned, signed):
        raise InvalidInput(
            "The bundle is not a tar archive, or is damaged: a header's checksum is wrong.", FIX_REPACK
        )
    name = _text_field(block[0:100])
    if block[257:263] == b"ustar\0":  # POSIX: long names are split into prefix and name
        prefix = _text_field(block[345:500])
        if prefix:
            name = prefix + b"/" + name
    return (
        block[156:157],
        name,
        _text_field(block[157:257]),
        _octal(block[100:108], "mode") & 0o7777,
        _size(block),
    )


def _size(block: bytes) -> int:
    if block[124] & 0x80:  # base-256, which writers use only for sizes over 8 GiB
        raise InvalidInput("The bundle holds an entry of more than 8 GiB.", FIX_SMALLER)
    return _octal(block[124:136], "size")


def _text_field(field: bytes) -> bytes:
    return field.split(b"\0", 1)[0]


def _octal(field: bytes, what: str) -> int:
    digits = _text_field(field).strip(b" ")
    if not digits:
        return 0
    if not _is_octal(digits):
        raise _damaged(f"a header's {what} is not a number")
    return int(digits, 8)


def _is_octal(digits: bytes) -> bool:
    return bool(digits) and all(0x30 <= c <= 0x37 for c in digits)


def _kind(flag: bytes, shown: str) -> Kind:
    kind = _KINDS.get(flag)
    if kind is not None:
        return kind
    what = _REFUSED.get(flag, f"of a type orch does not unpack ({flag!r})")
    raise InvalidInput(
        f"The bundle's entry {shown} is {what}; a bundle holds files, directories and symbolic links only.",
        FIX_REPACK,
    )


def _take_meta(flag: bytes, payload: bytes, meta: dict[str, bytes]) -> None:
    """Record what a pax or GNU header says about the entry that follows it."""
    if flag == _GNU_NAME:
        meta["path"] = _text_field(payload)
    elif flag == _GNU_TARGET:
        meta["linkpath"] = _text_field(payload)
    else:
        records = _pax_records(payload)
        if any(key.startswith("GNU.sparse.") for key in records):
            raise InvalidInput("The bundle holds a sparse file, which orch does not unpack.", FIX_REPACK)
        wanted: dict[str, bytes] = {
            key: records[key] for key in ("path", "linkpath", "size") if key in records
        }
        if flag == _PAX_GLOBAL and wanted:
            raise InvalidInput("The bundle has a global header that renames or resizes entries.", FIX_REPACK)
        meta.update(wanted)


def _pax_records(payload: bytes) -> dict[str, bytes]:
    """The `LENGTH KEY=VALUE\\n` records of a pax header, parsed in one pass."""
    records: dict[str, bytes] = {}
    pos = 0
    while pos < len(payload) and payload[pos] != 0:  # some writers pad the header with NULs
        space = payload.find(b" ", pos, pos + 21)
        digits = payload[pos:space] if space > pos else b""
        if not digits.isdigit():
            raise _damaged("a pax header is malformed")
        end = pos + int(digits)
        record = payload[space + 1 : end]
        key, equals, value = record.partition(b"=")
        if end > len(payload) or end <= space + 1 or not equals or not record.endswith(b"\n"):
            raise _damaged("a pax header is malformed")
        try:
            records[key.decode("utf-8")] = value[:-1]
        except UnicodeDecodeError:
            raise _damaged("a pax header is malformed") from None
        pos = end
    return records


def _pax_size(value: bytes) -> int:
    if not value.isdigit() or len(value) > 20:
        raise _damaged("a pax header gives a size that is not a number")
    return int(value)


def _damaged(why: str) -> InvalidInput:
    return InvalidInput(f"The bundle is not a valid tar archive: {why}.", FIX_REPACK)
