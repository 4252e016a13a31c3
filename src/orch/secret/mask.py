"""Masking secrets' values in output that arrives in pieces (a run's stdout, stderr and log).

`Redactor.feed` takes the next piece and returns what may be stored now: every occurrence of a
value replaced by `***`, even one split across two pieces. To see a split one, it holds back the
end of a piece that could be the start of a value (at most the longest value's length less one
byte, and only that much when the piece really ends with the start of one); `close` returns what
it held. Occurrences that overlap (of one value or of several) become one `***`; two that merely
touch stay two.

Masking runs on the server's CPU, over output an agent chooses, so its cost is linear in the
output: for each value, a piece costs time in proportion to its length plus, at most, the part of
what is held back that begins that value; never a value's length times itself (values reach 64
KiB) nor times the number of its occurrences (bench/mask.py compares with what it was). The
searches and comparisons are the C ones of `bytes` (`find`, `startswith`); Python loops over the
occurrences found, and over what could begin a value near a piece's end. Overlapping occurrences
of a value repeat with its period, and are found as one repetition; KMP's tables of a value are
computed only once output has matched that far into it.
"""

from __future__ import annotations

import bisect
import heapq
import json
import re
from array import array
from collections.abc import Iterable

MASK = b"***"


class Redactor:
    def __init__(self, values: Iterable[bytes]) -> None:
        self.values = sorted({v for v in values if v}, key=len, reverse=True)
        self._found = [_Value(v) for v in self.values]  # each redactor its own: tables grow as it reads
        self._pending = b""  # what was fed but not yet returned
        self._base = 0  # where _pending begins in the stream (all positions below count from its start)
        self._covered = 0  # the stream's bytes before this lie in a `***` already returned
        # For each value: how many bytes at the stream's end are its beginning (less than all of it).
        self._tails = [0] * len(self.values)
        # For each value: every occurrence that starts before _from was masked already; _next is
        # the next one when it was found before it could be masked (it starts in what is held
        # back), else -1.
        self._from = [0] * len(self.values)
        self._next = [-1] * len(self.values)
        # For each value whose occurrences overlapped in output that repeats with their period,
        # up to what is held back: (the next one's start, the period, where the repetition ends
        # so far), so that the next pieces go on with it rather than search the value again.
        self._runs: list[tuple[int, int, int] | None] = [None] * len(self.values)

    @property
    def held(self) -> int:
        """How many bytes are held back now."""
        return len(self._pending)

    def feed(self, data: bytes) -> bytes:
        if not self.values:
            return data
        return self._release(data, final=False)

    def close(self) -> bytes:
        """What is still held back, masked: the stream has ended."""
        if not self.values:
            return b""
        out = self._release(b"", final=True)
        # What is fed next begins another stream, which the old one's repetitions do not go on in.
        self._runs = [None] * len(self.values)
        return out

    def _release(self, data: bytes, final: bool) -> bytes:
        buf, new = self._pending + data, len(self._pending)
        if final:
            tails = [0] * len(self._found)
        else:
            tails = [_tail(f, j, buf, new) for f, j in zip(self._found, self._tails, strict=True)]
        p = _Pass(buf, new, self._base, tails)
        heap: list[tuple[int, int, int]] = []
        for i in range(len(self._found)):
            if self._nothing_new(p, i):
                self._from[i] = max(self._from[i], p.size - tails[i])
            elif (found := self._occurrence(p, i)) is not None:
                heap.append((*found, i))
        covered = self._covered  # where the last `***` given ends
        done = max(covered, p.base)  # everything before this is in the output already
        self._pending, self._base, self._tails = buf[p.cut - p.base :], p.cut, tails
        if not heap:
            return buf[done - p.base : p.cut - p.base] if done < p.cut else b""
        heapq.heapify(heap)
        out = bytearray()
        while heap:
            start, end, i = heapq.heappop(heap)
            if start < covered:  # inside a `***` given: overlapping occurrences extend it
                covered = max(covered, end)
            else:
                out += p.view[done - p.base : start - p.base]
                out += MASK
                covered = end
            done = covered
            if (found := self._occurrence(p, i)) is not None:
                heapq.heappush(heap, (*found, i))
        if done < p.cut:
            out += p.view[done - p.base : p.cut - p.base]
        self._covered = covered
        return bytes(out)

    def _nothing_new(self, p: _Pass, i: int) -> bool:
        """Whether value i surely has no occurrence to mask in this pass, without searching for it:
        one neither masked nor known yet would end in the piece, and there is no room for one, or
        the piece (small beside what is held back, which a search would read again) holds no end
        of the value."""
        f, low = self._found[i], self._from[i]
        if self._next[i] >= 0 or self._runs[i] is not None:
            return False
        if p.size - low < f.size:
            return True
        if p.size - low <= 2 * (len(p.buf) - p.new):
            return False
        # Where the last bytes are of one that starts at `low` or later and ends in the piece.
        at = max(low - p.base + f.size, p.new + 1, len(f.last)) - len(f.last)
        return _find(p.buf, f.last, at) < 0

    def _occurrence(self, p: _Pass, i: int) -> tuple[int, int] | None:
        """The next stretch masked for value i that starts before the cut, as (start, end): one
        occurrence, or a chain of overlapping ones found at once; None when none is left."""
        f, start, run = self._found[i], self._next[i], self._runs[i]
        m, buf, base = f.size, p.buf, p.base
        if run is not None:
            start, step, end = run
            if end == base + p.new:  # it repeated up to the piece: does it go on in it?
                end += _common(buf, p.new, p.view, p.new - step, len(buf) - p.new)
            if start + m <= end:
                if start >= p.cut:
                    self._runs[i] = start, step, end
                    return None
                return self._chain(p, i, start, step, end)
            if end == p.size:  # the next one is not whole yet
                self._runs[i] = start, step, end
                return None
            # The repetition ended: an occurrence overlapping the last one by a period or more
            # would have gone on with it, so the next one starts further on.
            self._runs[i], self._from[i], start = None, start - step + m - step + 1, -1
        if start < 0:
            start = _find(buf, f.data, max(self._from[i] - base, 0))
            if start < 0:
                self._from[i] = max(self._from[i], p.size - p.tails[i])
                return None
            start += base
        if start >= p.cut:
            self._next[i] = start
            return None
        self._next[i] = -1
        after = _find(buf, f.data, start + 1 - base)
        if after >= 0:
            step = after + base - start
        elif p.size - p.tails[i] - start <= m // 2:
            # None whole yet, but the held-back end that begins the value overlaps this one by
            # half the value or more: where it starts, the next one would (the same period).
            step = p.size - p.tails[i] - start
        else:
            self._from[i] = max(start + 1, p.size - p.tails[i])
            return start, start + m
        if step > m // 2:
            self._next[i], self._from[i] = after + base, start + 1
            return start, start + m
        # Two occurrences closer than half the value's length: `step` is its period (the least:
        # one that divides it would have put another between them), and the output repeats with
        # it as far as the occurrences go on overlapping. Found by one comparison of the output
        # with itself, where finding them one by one would read the value again for each.
        end = start + step + _common(buf, start + step - base, p.view, start - base, p.size - start - step)
        return self._chain(p, i, start, step, end)

    def _chain(self, p: _Pass, i: int, start: int, step: int, end: int) -> tuple[int, int]:
        """The occurrences of value i from `start` on, `step` apart, in output that repeats with
        that period up to `end`, as one stretch."""
        m = self._found[i].size
        more = min((end - start - m) // step, (p.cut - 1 - start) // step)  # after `start`
        last = start + more * step
        if last + step < p.cut:
            # The repetition ended: an occurrence overlapping the last one by a period or more
            # would have gone on with it, so the next one starts further on.
            self._runs[i], self._from[i] = None, last + m - step + 1
        else:  # the next one starts in what is held back: seen as the repetition goes on
            self._runs[i] = last + step, step, end
        return start, last + m


class _Pass:
    """One piece's pass over what is held back and the piece (`buf`, from `base` in the stream;
    the piece from `new` in it), with each value's held-back end (`tails`) and so the cut: every
    occurrence that starts before it is whole in `buf`, the rest may go on in the next piece."""

    __slots__ = ("base", "buf", "cut", "new", "size", "tails", "view")

    def __init__(self, buf: bytes, new: int, base: int, tails: list[int]) -> None:
        self.buf, self.view, self.new, self.base, self.tails = buf, memoryview(buf), new, base, tails
        self.size = base + len(buf)
        self.cut = self.size - max(tails)


def _tail(f: _Value, j: int, buf: bytes, new: int) -> int:
    """How many bytes at the end of `buf` are the beginning of value `f` (less than all of it),
    given that `j` were before `buf[new:]` was added: the end that may be a value split off into
    the next piece. Only the last len(value) - 1 bytes can begin one."""
    m, size = f.size, len(buf)
    room = m - 1 - (size - new)  # how much of the old match may still begin a tail
    if room <= 0:  # the piece is as long as the value: only its end counts
        start = size - (m - 1)
        return _match(f, 0, buf, start, -1) if _find(buf, f.first, start) >= 0 else 0
    if j <= room:
        if j == 0 and _find(buf, f.first, new) < 0:
            return 0  # most pieces: nothing near the end begins the value
        return _match(f, j, buf, new, -1)
    if f.known < j and f.reread < 1024 * m:
        # Looking at the last len(value) - 1 bytes afresh usually takes a search or two, where
        # the borders of the old match cost its length in Python steps: tried first, within
        # steps in proportion to the piece, until it has read the value's length 1024 times over
        # (small pieces after a long match): then the borders are worth their cost.
        f.reread += m
        again = _match(f, 0, buf, size - (m - 1), 8 * (size - new) + 8)
        if again >= 0:
            return again
    return _match(f, f.shorter(j, room), buf, new, -1)


def _match(f: _Value, j: int, buf: bytes, i: int, steps: int) -> int:
    """Where a KMP matcher of value `f` that has matched `j` bytes before buf[i] ends at the end
    of `buf`, which is less than len(value) - j bytes further: the match never becomes a whole
    occurrence. Bytes that match are compared at once (`_common`), and output that cannot begin
    the value is skipped by searching for its first bytes. -1 when it takes more than `steps`
    steps (when `steps` is not negative)."""
    v, lead, size = f.data, f.lead, len(buf)
    while i < size:
        if steps == 0:
            return -1
        steps -= 1
        if j == 0:
            at = _find(buf, lead, i)
            if at < 0:  # nearer the end than the lead's length, a shorter beginning may end `buf`
                at = _find(buf, f.first, max(i, size - len(lead) + 1))
                while at >= 0 and not v.startswith(buf[at:]):
                    at = _find(buf, f.first, at + 1)
                return 0 if at < 0 else size - at
            i, j = at + len(lead), len(lead)
            continue
        same = _common(buf, i, f.view, j, size - i)
        i, j = i + same, j + same
        if i == size:
            break
        c = buf[i]  # differs from v[j]: the longest shorter match that c continues, if any
        if f.known < j and _find(v, c, 0, j) < 0:
            j = 0  # c is not in what matched, so no shorter match goes on: no tables needed
        else:
            if f.known < j:
                f.grow(j)
            j = f.strong[j]
            while j >= 0 and v[j] != c:
                j = f.strong[j]
            j += 1
        i += 1
    return j


class _Value:
    """A value and what matching it takes: for each of its beginnings v[:j], its longest border
    (the longest shorter beginning that is also its end) and its longest border not followed by
    v[j] (where a match that failed at v[j] goes on: KMP's tables). They are computed as far as
    matches reach, by the output's bytes that matched, so a value never matched costs nothing."""

    __slots__ = ("border", "data", "first", "last", "lead", "reread", "size", "strong", "view")

    def __init__(self, data: bytes) -> None:
        self.data, self.view, self.size, self.first = data, memoryview(data), len(data), data[0]
        # What a match that reaches the end of the output must begin with, when it is that long:
        # searched for instead of the first byte, which ordinary text holds much more often.
        self.lead = data[: max(1, min(len(data) - 1, 8))]
        self.last = data[-8:]  # what an occurrence ends with
        self.reread = 0  # bytes read again to find a match afresh (`_tail`)
        self.border = array("i", [0, 0])  # border[j], for j up to `known` at least
        self.strong = array("i", [-1])  # strong[j], for j up to `known`: -1 for none
        self.grow(1)

    @property
    def known(self) -> int:
        """How long the beginnings are that the tables hold (len(value) - 1 at most)."""
        return len(self.strong) - 1

    def grow(self, upto: int) -> None:
        """Compute the tables up to beginnings of `upto` bytes."""
        border, strong, v = self.border, self.strong, self.data
        for j in range(len(border), upto + 1):
            c, k = v[j - 1], border[j - 1]
            while k and v[k] != c:
                k = border[k]
            border.append(k + 1 if v[k] == c else 0)
        for j in range(len(strong), min(upto, self.size - 1) + 1):
            b = border[j]
            strong.append(strong[b] if v[b] == v[j] else b)

    def shorter(self, j: int, most: int) -> int:
        """The longest border of v[:j] (v[:j] itself included) at most `most` bytes long. The
        borders of a beginning with period d that are d long or longer are the ones d apart (by
        Fine and Wilf's theorem), so each period's run of them is stepped over at once: a few
        steps, where walking them one by one would take one per byte."""
        self.grow(j)
        border = self.border
        while j > most:
            b = border[j]
            if b <= most:
                return b
            d = j - b
            if j < 2 * d:
                j = b
                continue
            least = d + (j - d) % d  # the shortest of j, j - d, j - 2d, ... that is d or longer
            if most >= least:
                return j - (j - most + d - 1) // d * d
            j = least
        return j


def _find(haystack: bytes, needle: bytes | int, start: int, end: int | None = None) -> int:
    """`haystack.find`: one place for the tests to count what the searches read."""
    return haystack.find(needle, start, end)


def _common(a: bytes, i: int, b: memoryview, j: int, most: int) -> int:
    """How many bytes a[i:] and b[j:] have alike at their start, at most `most`: in time linear
    in the answer (chunks that double in length, then halves of the one that differs), where
    one comparison of all `most` bytes, or byte by byte in Python, would cost more."""
    if most <= 0 or a[i] != b[j]:
        return 0
    same, step = 1, 16
    while same < most:
        size = min(step, most - same)
        if not a.startswith(b[j + same : j + same + size], i + same):
            while size > 1:
                half = size // 2
                if a.startswith(b[j + same : j + same + half], i + same):
                    same, size = same + half, size - half
                else:
                    size = half
            return same
        same += size
        step *= 2
    return most


def redact(text: bytes, values: Iterable[bytes]) -> bytes:
    """`text` with every value masked, at once."""
    redactor = Redactor(values)
    return redactor.feed(text) + redactor.close()


def stretches(data: bytes, values: Iterable[bytes]) -> list[tuple[int, int]]:
    """Where `redact(data, values)` puts each `***`: the stretches of `data` it masks, as (start,
    end), in order (occurrences that overlap joined, as `Redactor` joins them), found as it
    finds them, in time linear in `data`."""
    found = Redactor(values)
    p = _Pass(data, 0, 0, [0] * len(found.values))  # the whole text at once: nothing held back
    heap = [(*at, i) for i in range(len(found.values)) if (at := found._occurrence(p, i)) is not None]
    heapq.heapify(heap)
    out: list[tuple[int, int]] = []
    while heap:
        start, end, i = heapq.heappop(heap)
        if out and start < out[-1][1]:
            out[-1] = out[-1][0], max(out[-1][1], end)
        else:
            out.append((start, end))
        if (at := found._occurrence(p, i)) is not None:
            heapq.heappush(heap, (*at, i))
    return out


_ESCAPE = re.compile(rb"%[0-9A-Fa-f]{2}")
# The escapes of what a URL cannot hold as it is: a control character, a space, `"<>\^`{|}`, what
# is not ASCII, and a `%` that begins no escape. A URL's normalizer (a browser's, httpx's) adds
# just these, keeping an escape that was there: `a%41 é` becomes `a%41%20%C3%A9`.
_UNFIT = re.compile(
    rb"%(?:[0189A-Fa-f][0-9A-Fa-f]|2[02]|25(?![0-9A-Fa-f]{2})|3[CcEe]|5[CcEe]|60|7[B-Db-dFf])"
)


class _Decoded:
    """A URL's bytes with its escapes (`escape`) decoded, and where each decoded byte begins in
    the URL (`where`)."""

    def __init__(self, data: bytes, escape: re.Pattern[bytes]) -> None:
        self.data = escape.sub(lambda m: bytes([int(m[0][1:], 16)]), data)
        # Each escape shortens what follows it by 2: escape k starts at decoded byte starts[k].
        self._starts = [m.start() - 2 * k for k, m in enumerate(escape.finditer(data))]

    def where(self, at: int) -> int:
        """Where decoded byte `at` begins in the URL (the URL's length for the end)."""
        return at + 2 * bisect.bisect_left(self._starts, at)


def shorten(text: str, limit: int) -> str:
    """Masked `text` within `limit` characters: its first ones and `...`, the cut moved back
    off a `***` it would split. Mask first, then cut: a value the cut went through would no
    longer match, and most of it would be kept in clear."""
    if len(text) <= limit:
        return text
    return text[: off_mask(text, limit - 3)] + "..."


def off_mask(text: str | bytes, at: int) -> int:
    """Where a cut of masked `text` at `at` goes: `at`, or the start of the `***` it would split."""
    mask: str | bytes = MASK if isinstance(text, bytes) else MASK.decode()
    for back in (1, 2):
        if at - back >= 0 and text[at - back : at - back + len(mask)] == mask:
            return at - back
    return at


def _fold(data: bytes) -> bytes:
    """`data` with every `+` a space, byte for byte: a URL's `+` read either way."""
    return data.replace(b"+", b" ")


def _quoted(value: str) -> set[bytes]:
    """`value` as UTF-8 and in each form Python's repr writes it in between the quotes: a str's
    (`repr`, `ascii`) and its UTF-8 bytes' (what an HTTP library's error quotes: `bytearray(b'...')`),
    each with a `'` escaped or not (a text that holds a `"` too is quoted with `'`, which its `'`
    is then escaped for); and JSON's (`json.dumps`, with `ensure_ascii` or not: a `"` written
    `\\"`, what is not ASCII `\\u043a`). The same for a value with nothing to escape: one form."""
    raw = value.encode("utf-8", "surrogatepass")
    bodies = [
        repr(value + '"')[1:-2],  # the `"` added: a `'` in the value is escaped
        ascii(value + '"')[1:-2],
        repr(raw + b'"')[2:-2],
        json.dumps(value)[1:-1],
        json.dumps(value, ensure_ascii=False)[1:-1],
    ]
    forms = {raw}
    for body in bodies:
        forms.add(body.encode("utf-8", "surrogatepass"))
        forms.add(body.replace("\\'", "'").encode("utf-8", "surrogatepass"))
    return forms


class Mask:
    """One run's secret values, masked in text that is stored whole (a run's reason, an event's
    field: `mask(text)`; a URL, where a value may stand percent-encoded: `url(text)`) or that
    arrives in pieces (`redactor()`), so that everything stored for the run hides the same values
    the same way. Text stored whole is masked for the forms Python's repr writes a value in too
    (`forms`): it may quote an error's text, which writes a value's line break, backslash or
    bytes that are not ASCII as escapes (`\\n`, `\\\\`, `\\xd0`)."""

    def __init__(self, values: Iterable[str] = ()) -> None:
        given = [v for v in values if v]
        self.values = [v.encode() for v in given]
        # What text stored whole is masked for: each value, and the forms Python's repr writes it
        # in (`_quoted`), which an error's text quotes (an HTTP library's `b'Bearer sk-\\n'`).
        self.forms = sorted({form for v in given for form in _quoted(v)}, key=len, reverse=True)

    def __bool__(self) -> bool:
        return bool(self.values)

    def __call__(self, text: str) -> str:
        if not self.values:
            return text
        # A lone surrogate (which no UTF-8 text holds) must not make masking fail: it goes through
        # as bytes and comes back as U+FFFD.
        return redact(text.encode("utf-8", "surrogatepass"), self.forms).decode("utf-8", "replace")

    def url(self, text: str) -> str:
        """`text`, a URL (a redirect's Location), with every value masked where it stands as it
        is and where it stands percent-encoded: once its escapes are decoded (`%XX`, hex in either
        case, UTF-8 for what is not ASCII; each `+` read as a space or as itself), or once only
        those a URL's normalizer adds are (`_UNFIT`). The URL is shown as it came, each stretch
        that reads as a value one `***`. Other encodings (base64, a value encoded twice) are not
        undone.

        A `+` may stand for a space or for itself, each one its own way (`a+b+c` is `a b+c` when
        a value's space was written `+` and its `+` left as it was): so the URL and the values
        are compared with every `+` made a space in both (`_fold`, which keeps each byte where
        it was), and a stretch that reads as a value either way is masked."""
        if not self.values:
            return text
        data = text.encode("utf-8", "surrogatepass")
        values = [_fold(v) for v in self.forms]
        found = stretches(_fold(data), values)
        for decoded in (_Decoded(data, _ESCAPE), _Decoded(data, _UNFIT)):
            found += [(decoded.where(a), decoded.where(b)) for a, b in stretches(_fold(decoded.data), values)]
        out, done = bytearray(), 0
        for start, end in sorted(found):
            if start >= done:  # else it overlaps the last `***`: one with it
                out += data[done:start] + MASK
            done = max(done, end)
        out += data[done:]
        return bytes(out).decode("utf-8", "replace")

    def quote(self, text: str, limit: int) -> str:
        """`text` masked, then within `limit` characters (`shorten`)."""
        return shorten(self(text), limit)

    def redactor(self) -> Redactor:
        """A masker of output that arrives in pieces, for every form of each value: an agent's
        uncaught exception, a `%r` log line or `json.dumps` writes a value escaped (a PEM key's
        line breaks as `\\n`), by accident as much as the value itself."""
        return Redactor(self.forms)
