"""The server's line of defence: bundles built by hand to escape, exhaust or confuse the reader."""

from __future__ import annotations

import gzip
import io
import os
import tarfile
import tracemalloc
import zlib
from pathlib import Path

import pytest

from orch.bundle import extract_bundle, read_bundle
from orch.errors import InvalidInput
from tests.unit.bundle.support import Entry, bundle, directory, file, link, tar_bytes

MiB = 1024**2


def refused(data: bytes, **limits: int) -> str:
    """The message of the refusal of `data`, checked to be the same for reading and unpacking."""
    with pytest.raises(InvalidInput) as read:
        read_bundle(data, **limits)
    with pytest.raises(InvalidInput) as unpacked:
        extract_bundle(data, Path("/nonexistent/never-written"), **limits)
    assert read.value.message == unpacked.value.message
    assert read.value.fix
    return read.value.message


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (file("../evil"), "The bundle's entry ../evil climbs out of the bundle with '..'."),
        (file("ok/../../evil"), "The bundle's entry ok/../../evil climbs out of the bundle with '..'."),
        (file("/etc/passwd"), "The bundle's entry /etc/passwd has an absolute path."),
        (file("..\\evil"), "The bundle's entry '..\\\\evil' has a backslash in its name."),
        (file("a\\b.py"), "The bundle's entry 'a\\\\b.py' has a backslash in its name."),
        (file("new\nline.py"), "The bundle's entry 'new\\nline.py' has a control character in its name."),
        (file("x" * 256), f"The bundle's entry '{'x' * 60}…{'x' * 60}' has a name longer than 255 bytes."),
        (file("/".join(["d" * 200] * 6)), "has a path longer than 1024 bytes."),
    ],
)
def test_bad_paths(entry: Entry, message: str) -> None:
    assert message in refused(bundle(file("main.py"), entry))


@pytest.mark.parametrize(
    "entry",
    [
        file("start-" + "/".join(["d" * 200] * 20) + "-end"),
        file("/start-" + "d" * 4000 + "-end"),
        file("start-" + "d" * 4000 + "/../-end"),
        link("start-" + "d" * 4000 + "-end", "/" + "t" * 4000),
    ],
)
def test_a_long_path_is_quoted_by_its_start_and_end(entry: Entry) -> None:
    # A refused path may be kilobytes long; the message stays one sentence to read.
    message = refused(bundle(file("main.py"), entry))
    assert len(message) < 400
    assert "start-" in message and "…" in message


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ([link("etc", "/etc")], "The bundle's link etc points to '/etc', outside the bundle."),
        ([link("up", "..")], "The bundle's link up points to '..', outside the bundle."),
        ([link("sub/up", "../../x")], "The bundle's link sub/up points to '../../x', outside the bundle."),
        ([link("self", "."), link("out", "self/..")], "The bundle's link out points to 'self/..', outside"),
        ([link("a", "b/../../x")], "The bundle's link a points to 'b/../../x', outside the bundle."),
        ([link("empty", "")], "The bundle's link empty points to '', outside the bundle."),
        ([link("win", "..\\..\\x")], "The bundle's link win points to '..\\\\..\\\\x', outside the bundle."),
    ],
)
def test_links_pointing_out(entries: list[Entry], message: str) -> None:
    assert message in refused(bundle(file("main.py"), *entries))


def test_link_to_etc_then_a_file_through_it() -> None:
    # Refused at the link; with the link's target inside, the file under it is refused too.
    assert "points to '/etc', outside" in refused(
        bundle(link("etc", "/etc"), file("etc/passwd", b"root::0:0"))
    )
    message = refused(bundle(directory("real"), link("etc", "real"), file("etc/passwd", b"root::0:0")))
    assert message == "The bundle's entry etc/passwd is inside etc, which is a link."


def test_file_before_the_link_it_would_go_through() -> None:
    message = refused(bundle(file("d/x.py"), link("d", "sub"), directory("sub")))
    assert message == "The bundle's entry d/x.py is inside d, which is a link."


def test_link_whose_parent_is_a_link() -> None:
    message = refused(bundle(directory("real"), link("alias", "real"), link("alias/deeper", "..")))
    assert message == "The bundle's entry alias/deeper is inside alias, which is a link."


@pytest.mark.parametrize(
    ("kind", "what"),
    [
        (tarfile.LNKTYPE, "a hard link"),
        (tarfile.CHRTYPE, "a character device"),
        (tarfile.BLKTYPE, "a block device"),
        (tarfile.FIFOTYPE, "a named pipe"),
        (tarfile.CONTTYPE, None),  # a contiguous file is an ordinary file
    ],
)
def test_entry_types(kind: bytes, what: str | None) -> None:
    data = bundle(
        file("main.py"), Entry("odd", kind=kind, target="main.py" if kind == tarfile.LNKTYPE else "")
    )
    if what is None:
        assert read_bundle(data) == {"main.py": b"x", "odd": b""}
        return
    assert refused(data) == (
        f"The bundle's entry odd is {what}; a bundle holds files, directories and symbolic links only."
    )


@pytest.mark.parametrize(
    "entries",
    [
        [file("a.py"), file("a.py")],
        [file("a.py"), file("./a.py")],
        [directory("a.py"), file("a.py")],
        [link("a.py", "b.py"), file("a.py")],
    ],
)
def test_duplicate_paths(entries: list[Entry]) -> None:
    assert refused(bundle(*entries)) == "The bundle has a.py twice."


def test_entry_under_a_file() -> None:
    assert refused(bundle(file("a"), file("a/b"))) == "The bundle's entry a/b is inside a, which is a file."


def test_names_that_are_not_utf8() -> None:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT, encoding="latin-1") as tar:
        info = tarfile.TarInfo("café.py")
        tar.addfile(info, io.BytesIO(b""))
    assert refused(gzip.compress(raw.getvalue())) == "An entry's name is not valid UTF-8: 'caf\ufffd.py'."


def _zeros_bomb(size: int, name: str = "zeros.bin") -> bytes:
    """A tar entry of `size` zero bytes, compressed a chunk at a time (it is never held whole)."""
    info = tarfile.TarInfo(name)
    info.size = size
    header = info.tobuf(tarfile.PAX_FORMAT)
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    parts = [packer.compress(header)]
    chunk = bytes(MiB)
    for _ in range(size // MiB):
        parts.append(packer.compress(chunk))
    parts.append(packer.compress(bytes(1024)))
    parts.append(packer.flush())
    return b"".join(parts)


@pytest.fixture(scope="module")
def bomb() -> bytes:
    """200 MiB of zeros in one entry: about 200 KiB on the wire."""
    return _zeros_bomb(200 * MiB)


def test_gzip_bomb_is_refused_without_inflating_it(bomb: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    # The work is counted, not timed: every byte the reader inflates comes out of a GzipFile's
    # read. Inflating the bomb a chunk at a time and dropping it would keep the memory low and,
    # on a fast machine, take well under a second; the count shows it all the same.
    assert len(bomb) < 1 * MiB
    inflated = 0
    read = gzip.GzipFile.read

    def counted(self: gzip.GzipFile, size: int | None = -1) -> bytes:
        nonlocal inflated
        chunk = read(self, size)
        inflated += len(chunk)
        return chunk

    monkeypatch.setattr(gzip.GzipFile, "read", counted)
    tracemalloc.start()
    with pytest.raises(InvalidInput) as caught:
        read_bundle(bomb)  # the default limit: 50 MiB
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert caught.value.message == "The bundle's files add up to more than 50 MiB (at zeros.bin)."
    assert ".orchignore" in caught.value.fix
    # Refused at its header (the size it states): the reader inflated that block, none of the
    # 200 MiB behind it. None at all would mean the count no longer sees how the reader inflates.
    assert 0 < inflated <= 64 * 1024, inflated
    assert peak < 5 * MiB


def test_bomb_spread_over_many_entries_stops_at_the_limit() -> None:
    data = bundle(*[file(f"part{i}.bin", bytes(MiB)) for i in range(8)])
    tracemalloc.start()
    with pytest.raises(InvalidInput) as caught:
        read_bundle(data, max_bytes=3 * MiB)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert caught.value.message == "The bundle's files add up to more than 3 MiB (at part3.bin)."
    assert peak < 6 * MiB  # the three parts read, not the eight


def test_bomb_of_headers_is_refused() -> None:
    # A pax header claiming 100 MiB: tarfile would read it whole before parsing it.
    header = tarfile.TarInfo("PaxHeaders/x")
    header.type, header.size = tarfile.XHDTYPE, 100 * MiB
    data = gzip.compress(header.tobuf(tarfile.USTAR_FORMAT) + b"9" * MiB)
    assert refused(data) == "The bundle has a header of 100 MiB; at most 64 KiB is allowed."


def test_bomb_of_zeros_without_any_tar() -> None:
    assert refused(gzip.compress(bytes(20 * MiB))) == "The bundle holds no files."


def test_long_stream_of_small_headers_is_cut_off() -> None:
    # Many small pax headers, none of them an entry: refused once the stream outgrows any bundle.
    record = b"20 comment=xxxxxxxx\n"
    header = tarfile.TarInfo("PaxHeaders/x")
    header.type, header.size = tarfile.XHDTYPE, len(record)
    one = header.tobuf(tarfile.USTAR_FORMAT) + record.ljust(512, b"\0")
    data = gzip.compress(one * 20_000)
    assert refused(data, max_bytes=MiB, max_files=10) == "The bundle unpacks to more than 1 MiB."


def test_too_many_files() -> None:
    data = bundle(*[file(f"f{i}.py") for i in range(11)])
    assert refused(data, max_files=10) == "The bundle has more than 10 entries."
    assert len(read_bundle(data, max_files=11)) == 11


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "The bundle is not a gzip'd tar archive."),
        (b"hello, I am not a bundle", "The bundle is not a gzip'd tar archive."),
        (os.urandom(4096).replace(b"\x1f\x8b", b"xx"), "The bundle is not a gzip'd tar archive."),
        (tar_bytes([file("main.py")]), "The bundle is not a gzip'd tar archive."),
        (b"\x1f\x8b" + os.urandom(200), "The bundle is damaged: its gzip stream is cut short or corrupt."),
        (gzip.compress(b"this is text, not a tar " * 100), "a header's checksum is wrong."),
        (bundle(file("main.py", bytes(range(256)) * 100))[:300], "its gzip stream is cut short or corrupt."),
        (
            gzip.compress(tar_bytes([file("main.py", b"x" * 5000)])[:2048]),
            "it ends in the middle of an entry.",
        ),
        (gzip.compress(tar_bytes([file("main.py")])[:1124]), "it ends in the middle of a header."),
    ],
    # Ids that do not hold the data: gzip stamps the time, and every pytest-xdist worker must
    # collect the same tests.
    ids=[
        "empty",
        "text",
        "random",
        "plain-tar",
        "gzip-magic-then-random",
        "gzip-of-text",
        "gzip-cut",
        "cut-in-an-entry",
        "cut-in-a-header",
    ],
)
def test_not_a_bundle(data: bytes, message: str) -> None:
    assert message in refused(data)


def test_empty_archive() -> None:
    assert refused(gzip.compress(tar_bytes([]))) == "The bundle holds no files."
    assert refused(bundle(directory("only-a-directory"))) == "The bundle holds no files."


def test_sparse_and_unknown_types() -> None:
    assert "is a sparse file" in refused(bundle(Entry("s", kind=tarfile.GNUTYPE_SPARSE)))
    assert "of a type orch does not unpack (b'Z')" in refused(bundle(Entry("z", kind=b"Z")))


def test_pax_sparse_file() -> None:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("s.bin")
        info.pax_headers = {"GNU.sparse.major": "1", "GNU.sparse.minor": "0"}
        tar.addfile(info, io.BytesIO(b""))
    assert (
        refused(gzip.compress(raw.getvalue()))
        == "The bundle holds a sparse file, which orch does not unpack."
    )


def _with_pax_size(size: str) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("main.py")
        info.size, info.pax_headers = 5, {"size": size}
        tar.addfile(info, io.BytesIO(b"hello"))
    return gzip.compress(raw.getvalue())


def test_pax_size_overrides_the_header_as_tar_reads_it() -> None:
    assert read_bundle(_with_pax_size("3")) == {"main.py": b"hel"}
    assert (
        refused(_with_pax_size(str(10**12))) == "The bundle's files add up to more than 50 MiB (at main.py)."
    )
    assert refused(_with_pax_size("3x")) == (
        "The bundle is not a valid tar archive: a pax header gives a size that is not a number."
    )


def test_global_header_renaming_entries() -> None:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT, pax_headers={"path": "../x"}) as tar:
        tar.addfile(tarfile.TarInfo("main.py"), io.BytesIO(b""))
    assert (
        refused(gzip.compress(raw.getvalue()))
        == "The bundle has a global header that renames or resizes entries."
    )


def test_malformed_pax_header() -> None:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(tarfile.TarInfo("é" * 120), io.BytesIO(b""))
    data = bytearray(raw.getvalue())
    data[512:515] = b"999"  # the first record now claims more bytes than the header holds
    assert (
        refused(gzip.compress(bytes(data)))
        == "The bundle is not a valid tar archive: a pax header is malformed."
    )


def test_what_careful_clients_send_is_read() -> None:
    long_name = "deep/" + "d" * 150 + "/" + "f" * 200 + ".py"
    for fmt in (tarfile.PAX_FORMAT, tarfile.GNU_FORMAT):
        data = bundle(
            directory("./"),
            directory("./src/"),
            file("./src/main.py", b"print()", mode=0o755),
            file(long_name, b"long"),
            file("café.py", b"utf-8 name"),
            link("main.py", "src/main.py"),
            link("src/up.py", "../café.py"),
            link("lib", "src"),
            link("dangling.py", "not/there.py"),
            link("here", "."),
            fmt=fmt,
        )
        assert read_bundle(data) == {
            "café.py": b"utf-8 name",
            long_name: b"long",
            "main.py": b"print()",
            "src/main.py": b"print()",
            "src/up.py": b"utf-8 name",
        }


def test_link_loops_are_harmless() -> None:
    data = bundle(file("main.py"), link("a", "b"), link("b", "a"))
    assert read_bundle(data) == {"main.py": b"x"}
