"""Byte sizes as people write them (`512Mi`, `1G`) and as we print them (`48.2 MiB`)."""

from __future__ import annotations

import re

_UNITS = {
    "": 1,
    "k": 1000,
    "m": 1000**2,
    "g": 1000**3,
    "t": 1000**4,
    "ki": 1024,
    "mi": 1024**2,
    "gi": 1024**3,
    "ti": 1024**4,
}
_SIZE = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*([kmgt]i?)?b?", re.IGNORECASE)


def parse_size(text: str) -> int | None:
    """Bytes in `text` (`512Mi`, `1G`, `300000k`, `1.5GiB`, `1024`), or None if it is not a size."""
    # Python refuses to convert very long digit strings; no real size is that long.
    match = _SIZE.fullmatch(text.strip()) if len(text) <= 40 else None
    if match is None:
        return None
    number, unit = match.groups()
    # Exact for whole numbers, so `1Gi` is 2**30 and not a float's neighbour.
    whole, _, fraction = number.partition(".")
    scale = _UNITS[(unit or "").lower()]
    size = int(whole) * scale
    if fraction:
        size += int(fraction) * scale // 10 ** len(fraction)
    return size


def format_size(size: int, decimals: int = 1) -> str:
    """`size` bytes in binary units with `decimals` decimals (trailing zeros dropped): `512 B`,
    `1.5 KiB`, `48.2 MiB`, `99 TiB`."""
    units = ("B", "KiB", "MiB", "GiB", "TiB")
    value, index = float(size), 0
    while value >= 1024 and index < len(units) - 1:
        value /= 1024
        index += 1
    if index == 0:
        return f"{size} B"
    shown = f"{value:.{decimals}f}"
    return (shown.rstrip("0").removesuffix(".") if "." in shown else shown) + " " + units[index]


def format_apart(size: int, other: int) -> str:
    """`size` as format_size writes it, with as many more decimals as it takes (bytes at the
    last) not to read as `other` does: "written 1.04 GiB, more than the 1 GiB", never "written
    1 GiB, more than the 1 GiB"."""
    for decimals in range(1, 4):
        shown = format_size(size, decimals)
        if size == other or shown != format_size(other, decimals):
            return shown
    return f"{size:,} bytes"
