"""The zip module every zip-based reader uses: offsets checked against :mod:`zipfile`, hostile archives refused.

Archives are built here byte by byte (:func:`build`) so that ZIP64 fields, data descriptors, gaps
and lies can be placed exactly; every well-formed one is first read back with :mod:`zipfile` to
prove the builder writes what zip readers accept.
"""

from __future__ import annotations

import io
import random
import struct
import tracemalloc
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import pytest

import ckptscan
from ckptscan.errors import CkptscanError, LimitExceeded, MalformedFile, TruncatedFile, UnsupportedFeature
from ckptscan.formats import _zip
from ckptscan.inventory import RegionKind
from ckptscan.source import Source
from tests.conftest import TESTDATA
from tests.helpers import assert_only_one_line_errors

LOCAL = struct.Struct("<4sHHHHHIIIHH")
CENTRAL = struct.Struct("<4sHHHHHHIIIHHHHHII")
EOCD = struct.Struct("<4sHHHHIIH")
ZIP64_EOCD = struct.Struct("<4sQHHIIQQQQ")
ZIP64_LOCATOR = struct.Struct("<4sIQI")

FIXTURES = sorted(
    [
        p
        for p in (TESTDATA / "torch").rglob("*")
        if p.suffix in (".pt", ".bin", ".ckpt", ".pth") and zipfile.is_zipfile(p)
    ]
    + list((TESTDATA / "numpy").glob("*.npz"))
    + list((TESTDATA / "keras").glob("*.keras"))
)


@dataclass
class Member:
    name: str
    data: bytes
    deflate: bool = False
    descriptor: bytes | None = None  # None: sizes in the local header; b"PK\x07\x08" or b"": after the data
    padding: bytes = b""  # after the member (and its descriptor): bytes no entry accounts for


def build(members: list[Member], *, zip64: bool = False, claimed_entries: int | None = None) -> bytes:
    """A zip archive of ``members``; with ``zip64`` every size and offset goes through ZIP64 fields."""
    out, central = bytearray(), bytearray()
    for m in members:
        if m.deflate:
            compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
            payload = compressor.compress(m.data) + compressor.flush()
        else:
            payload = m.data
        method, crc, name = (8 if m.deflate else 0), zlib.crc32(m.data), m.name.encode()
        flags = 0x8 if m.descriptor is not None else 0
        sizes = (crc, len(payload), len(m.data)) if m.descriptor is None else (0, 0, 0)
        offset = len(out)
        out += LOCAL.pack(b"PK\x03\x04", 45, flags, method, 0, 0x21, *sizes, len(name), 0) + name + payload
        if m.descriptor is not None:
            out += m.descriptor + struct.pack("<III", crc, len(payload), len(m.data))
        out += m.padding
        fields = (len(payload), len(m.data), offset)
        extra = b""
        if zip64:
            extra = struct.pack("<HHQQQ", 1, 24, len(m.data), len(payload), offset)
            fields = (0xFFFFFFFF,) * 3
        csize, usize, header = fields
        central += CENTRAL.pack(
            b"PK\x01\x02", 45, 45, flags, method, 0, 0x21, crc, csize, usize, len(name), len(extra), 0, 0, 0, 0, header
        )
        central += name + extra
    count = len(members) if claimed_entries is None else claimed_entries
    cd_offset = len(out)
    out += central
    if zip64:
        z64 = len(out)
        out += ZIP64_EOCD.pack(b"PK\x06\x06", 44, 45, 45, 0, 0, count, count, len(central), cd_offset)
        out += ZIP64_LOCATOR.pack(b"PK\x06\x07", 0, z64, 1)
        out += EOCD.pack(b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    else:
        out += EOCD.pack(b"PK\x05\x06", 0, 0, count, count, len(central), cd_offset, 0)
    return bytes(out)


def directory_of(tmp_path: Path, data: bytes) -> _zip.ZipDirectory:
    path = tmp_path / "archive.zip"
    path.write_bytes(data)
    with Source(path) as source:
        return _zip.read_directory(source)


def refused(tmp_path: Path, data: bytes) -> CkptscanError:
    with pytest.raises(CkptscanError) as info:
        directory_of(tmp_path, data)
    assert "\n" not in str(info.value)
    return info.value


def assert_same_as_zipfile(path: Path) -> _zip.ZipDirectory:
    """Names, methods, sizes, CRCs and offsets as zipfile computes them (header offset + local header length)."""
    raw = path.read_bytes()
    with Source(path) as source:
        directory = _zip.read_directory(source)
    with zipfile.ZipFile(path) as archive:
        infos = archive.infolist()
        assert directory.central_offset == archive.start_dir
    assert [e.name for e in directory.entries] == [i.filename for i in infos]
    for entry, info in zip(directory.entries, infos, strict=True):
        local = LOCAL.unpack_from(raw, info.header_offset)
        assert entry.header_offset == info.header_offset
        assert entry.data_offset == info.header_offset + LOCAL.size + local[9] + local[10]
        assert (entry.method, entry.compressed_size, entry.uncompressed_size, entry.crc) == (
            info.compress_type,
            info.compress_size,
            info.file_size,
            info.CRC,
        )
    return directory


def assert_tiled(path: Path, directory: _zip.ZipDirectory) -> None:
    """Framing regions + every entry's data cover the file exactly once."""
    with Source(path) as source:
        regions = _zip.framing_regions(source, directory)
    spans = sorted(
        [(r.offset, r.offset + r.nbytes) for r in regions] + [(e.data_offset, e.data_end) for e in directory.entries]
    )
    position = 0
    for start, end in spans:
        assert start == position, f"gap or overlap at {position}..{start}"
        position = end
    assert position == path.stat().st_size


# -- the committed fixtures -------------------------------------------------------------------------


def test_fixtures_are_present() -> None:
    kinds = {p.suffix for p in FIXTURES}
    assert {".pt", ".bin", ".ckpt", ".npz", ".keras"} <= kinds


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: str(p.relative_to(TESTDATA)))
def test_fixture_offsets_match_zipfile(path: Path) -> None:
    directory = assert_same_as_zipfile(path)
    assert_tiled(path, directory)
    with Source(path) as source, zipfile.ZipFile(path) as archive:
        for entry in directory.entries:
            assert _zip.read_entry(source, entry, 1 << 24) == archive.read(entry.name)


def test_fixtures_cover_stored_and_deflated() -> None:
    methods = set()
    for path in FIXTURES:
        with Source(path) as source:
            methods |= {e.method for e in _zip.read_directory(source).entries}
    assert methods == {_zip.STORED, _zip.DEFLATED}


# -- well-formed archives built here ----------------------------------------------------------------

MEMBERS = [
    Member("a.bin", bytes(range(256)) * 3),
    Member("dir/", b""),
    Member("b.txt", b"hello " * 500, deflate=True),
    Member("c.bin", b"\x01\x02\x03"),
]


@pytest.mark.parametrize("zip64", [False, True], ids=["plain", "zip64"])
def test_built_archives_match_zipfile(tmp_path: Path, zip64: bool) -> None:
    path = tmp_path / "built.zip"
    path.write_bytes(build(MEMBERS, zip64=zip64))
    directory = assert_same_as_zipfile(path)
    assert_tiled(path, directory)
    assert [e.stored for e in directory.entries] == [True, True, False, True]
    if zip64:
        z64 = path.read_bytes().rfind(b"PK\x06\x06")
        assert directory.end_offset == z64
        assert directory.size - directory.end_offset == ZIP64_EOCD.size + ZIP64_LOCATOR.size + EOCD.size


@pytest.mark.parametrize("signature", [b"PK\x07\x08", b""], ids=["signed", "unsigned"])
@pytest.mark.parametrize("deflate", [False, True], ids=["stored", "deflated"])
def test_data_descriptors(tmp_path: Path, signature: bytes, deflate: bool) -> None:
    members = [Member(m.name, m.data, deflate=deflate, descriptor=signature) for m in MEMBERS if m.data]
    path = tmp_path / "descriptors.zip"
    path.write_bytes(build(members))
    directory = assert_same_as_zipfile(path)
    assert [e.descriptor_size for e in directory.entries] == [len(signature) + 12] * len(members)
    assert_tiled(path, directory)
    with Source(path) as source:
        labels = [r.label for r in _zip.framing_regions(source, directory) if "descriptor" in r.label]
    assert labels == [f"zip data descriptor {m.name}" for m in members]


def test_zipfile_streamed_archive_has_descriptors(tmp_path: Path) -> None:
    class Unseekable(io.RawIOBase):
        def __init__(self) -> None:
            self.data = bytearray()

        def writable(self) -> bool:
            return True

        def write(self, b: bytes) -> int:  # type: ignore[override]
            self.data += b
            return len(b)

    stream = Unseekable()
    with zipfile.ZipFile(stream, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in ("x.npy", "y.npy"):
            with archive.open(name, "w") as member:
                member.write(name.encode() * 1000)
    path = tmp_path / "streamed.zip"
    path.write_bytes(bytes(stream.data))
    directory = assert_same_as_zipfile(path)
    assert all(e.descriptor_size == 16 for e in directory.entries)
    assert_tiled(path, directory)


def test_bytes_between_entries_are_unreferenced(tmp_path: Path) -> None:
    members = [Member("a", b"1234", padding=b"junk" * 3), Member("b", b"5678")]
    path = tmp_path / "gap.zip"
    path.write_bytes(build(members))
    directory = assert_same_as_zipfile(path)
    assert_tiled(path, directory)
    with Source(path) as source:
        gaps = [r for r in _zip.framing_regions(source, directory) if r.kind is RegionKind.UNREFERENCED]
    assert [(r.offset, r.nbytes) for r in gaps] == [(directory.entries[0].data_end, 12)]


def test_empty_archive(tmp_path: Path) -> None:
    path = tmp_path / "empty.zip"
    with zipfile.ZipFile(path, "w"):
        pass
    directory = directory_of(tmp_path, path.read_bytes())
    assert directory.entries == ()
    assert_tiled(path, directory)


def test_content_helpers(tmp_path: Path) -> None:
    path = tmp_path / "content.zip"
    path.write_bytes(build(MEMBERS))
    with Source(path) as source:
        directory = _zip.read_directory(source)
        for member, entry in zip(MEMBERS, directory.entries, strict=True):
            assert _zip.read_entry(source, entry, len(member.data)) == member.data
            assert _zip.read_entry_prefix(source, entry, 5) == member.data[:5]
            assert _zip.read_entry_prefix(source, entry, 10**6) == member.data
            target = io.BytesIO()
            assert _zip.extract_entry(source, entry, target, 10**6) == len(member.data)
            assert target.getvalue() == member.data
        big = directory.get("a.bin")
        assert big is not None and directory.get("missing") is None
        with pytest.raises(LimitExceeded, match=r"a\.bin"):
            _zip.read_entry(source, big, 100)
        with pytest.raises(LimitExceeded):
            _zip.extract_entry(source, big, io.BytesIO(), 100)


def test_output_zlib_holds_after_the_last_input_is_read(tmp_path: Path) -> None:
    """Around 64 KiB of zeros, the 64 KiB output cap is reached with all input taken and output pending."""
    members = [Member(f"zeros{n}", bytes(n), deflate=True) for n in range(65530, 65560)]
    path = tmp_path / "zeros.zip"
    path.write_bytes(build(members))
    with Source(path) as source:
        for member, entry in zip(members, _zip.read_directory(source).entries, strict=True):
            assert _zip.read_entry(source, entry, 1 << 20) == member.data
            assert _zip.extract_entry(source, entry, io.BytesIO(), 1 << 20) == len(member.data)


@pytest.mark.parametrize("block", [7, 4096, 1 << 20])
def test_data_pass_reads_every_deflated_size(tmp_path: Path, block: int) -> None:
    from ckptscan.data import DataRef, open_stream

    np = pytest.importorskip("numpy")
    for count in [*range(16380, 16400), 262_140, 262_150]:
        path = tmp_path / "zeros.npz"
        np.savez_compressed(path, zeros=np.zeros(count, np.float32))
        [tensor] = ckptscan.read_inventory(path).tensors
        assert tensor.encoding == "zip-deflated"
        stream = open_stream(tmp_path, DataRef.of_tensor(tensor))
        try:
            out = memoryview(bytearray(tensor.nbytes))
            for offset in range(0, tensor.nbytes, block):
                stream.read_into(offset, out[offset : offset + block])
        finally:
            stream.close()
        assert out == bytes(tensor.nbytes)


def test_source_window_stays_inside(tmp_path: Path) -> None:
    path = tmp_path / "window.bin"
    path.write_bytes(bytes(range(100)))
    with Source(path) as source:
        window = _zip.SourceWindow(source, 10, 20)
        assert window.read() == bytes(range(10, 30))
        window.seek(15)
        assert window.read(100) == bytes(range(25, 30))
        window.seek(5, io.SEEK_END)
        assert window.read() == b""
        with pytest.raises(OSError):
            window.seek(-1)


# -- hostile archives -------------------------------------------------------------------------------


def test_million_entries_claimed_in_a_tiny_file(tmp_path: Path) -> None:
    data = build([Member("a", b"x")], zip64=True, claimed_entries=1_000_000)
    tracemalloc.start()
    try:
        error = refused(tmp_path, data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert isinstance(error, MalformedFile) and "1,000,000 entries" in str(error)
    assert peak < 1 << 20
    over = refused(tmp_path, build([Member("a", b"x")], zip64=True, claimed_entries=1_000_001))
    assert isinstance(over, LimitExceeded)


def test_central_directory_size_claims(tmp_path: Path) -> None:
    data = bytearray(build([Member("a", b"x")], zip64=True))
    z64 = data.rfind(b"PK\x06\x06")
    struct.pack_into("<Q", data, z64 + 40, 1 << 40)  # central directory size
    assert isinstance(refused(tmp_path, bytes(data)), LimitExceeded)
    struct.pack_into("<Q", data, z64 + 40, 1 << 20)
    assert "does not end at the end record" in str(refused(tmp_path, bytes(data)))


def test_deflate_bomb_ratio_is_refused_without_inflating(tmp_path: Path) -> None:
    data = bytearray(build([Member("bomb", b"\0" * 10_000, deflate=True)]))
    central = data.rfind(b"PK\x01\x02")
    compressed = struct.unpack_from("<I", data, central + 20)[0]
    struct.pack_into("<I", data, central + 24, compressed * _zip.MAX_DEFLATE_RATIO + 1)
    error = refused(tmp_path, bytes(data))
    assert isinstance(error, MalformedFile) and "zip bomb" in str(error)


def test_inflation_stops_at_the_declared_size(tmp_path: Path) -> None:
    content = b"\0" * (8 << 20)
    data = bytearray(build([Member("liar", content, deflate=True)]))
    central = data.rfind(b"PK\x01\x02")
    struct.pack_into("<I", data, central + 24, 1000)  # declares 1,000 bytes; 8 MiB come out
    directory = directory_of(tmp_path, bytes(data))
    with Source(tmp_path / "archive.zip") as source:
        [entry] = directory.entries
        tracemalloc.start()
        try:
            with pytest.raises(MalformedFile, match="not the declared 1,000"):
                _zip.read_entry(source, entry, 1 << 30)
            with pytest.raises(MalformedFile, match="not the declared 1,000"):
                _zip.extract_entry(source, entry, io.BytesIO(), 1 << 30)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert peak < 1 << 20


def test_corrupt_and_truncated_content(tmp_path: Path) -> None:
    data = bytearray(build([Member("a.txt", b"some text " * 100, deflate=True)]))
    struct.pack_into("<I", data, data.find(b"PK\x01\x02") + 16, 0)  # the central directory's CRC
    stream = zlib.compressobj(9, zlib.DEFLATED, -15)
    cut = (stream.compress(bytes(range(256)) * 100) + stream.flush())[:-3]
    cases = [
        (bytes(data), MalformedFile, "CRC"),
        (deflated_archive(cut, 25600), TruncatedFile, "ends early"),
        (deflated_archive(b"\xff" * 40, 100), MalformedFile, "not valid deflate data"),
    ]
    for archive, error, message in cases:
        path = tmp_path / "content.zip"
        path.write_bytes(archive)
        with Source(path) as source:
            [entry] = _zip.read_directory(source).entries
            with pytest.raises(error, match=message):
                _zip.read_entry(source, entry, 10**6)
            with pytest.raises(error, match=message):
                _zip.extract_entry(source, entry, io.BytesIO(), 10**6)


def deflated_archive(payload: bytes, usize: int) -> bytes:
    """One deflated entry ``x`` whose data is ``payload`` (valid or not), declaring ``usize`` bytes."""
    local = LOCAL.pack(b"PK\x03\x04", 20, 0, 8, 0, 0x21, 0, len(payload), usize, 1, 0) + b"x" + payload
    central = CENTRAL.pack(b"PK\x01\x02", 20, 20, 0, 8, 0, 0x21, 0, len(payload), usize, 1, 0, 0, 0, 0, 0, 0) + b"x"
    return local + central + EOCD.pack(b"PK\x05\x06", 0, 0, 1, 1, len(central), len(local), 0)


def test_overlapping_entries_are_refused(tmp_path: Path) -> None:
    data = bytearray(build([Member("a", b"1" * 100), Member("b", b"2" * 100)]))
    first = data.find(b"PK\x01\x02")
    struct.pack_into("<II", data, first + 20, 150, 150)  # a's data now runs into b's local header
    error = refused(tmp_path, bytes(data))
    assert isinstance(error, MalformedFile) and "overlap" in str(error)


def test_duplicate_names_are_refused(tmp_path: Path) -> None:
    data = bytearray(build([Member("a", b"1" * 100), Member("a", b"2" * 100)]))
    assert "appears twice" in str(refused(tmp_path, bytes(data)))


@pytest.mark.parametrize("offset", [10_000, 1 << 40], ids=["past-directory", "past-eof"])
def test_entry_past_end_of_file(tmp_path: Path, offset: int) -> None:
    data = bytearray(build([Member("a", b"abc")], zip64=True))
    central = data.find(b"PK\x01\x02")
    struct.pack_into("<Q", data, central + CENTRAL.size + 1 + 4 + 16, offset)  # ZIP64 extra: header offset
    assert "past the central directory" in str(refused(tmp_path, bytes(data)))


def test_entry_data_past_end_of_file(tmp_path: Path) -> None:
    data = bytearray(build([Member("a", b"abc")], zip64=True))
    central = data.find(b"PK\x01\x02")
    struct.pack_into("<QQ", data, central + CENTRAL.size + 1 + 4, 1 << 40, 1 << 40)  # ZIP64 sizes
    assert "runs into the central directory" in str(refused(tmp_path, bytes(data)))


def test_lying_local_headers(tmp_path: Path) -> None:
    data = bytearray(build([Member("name", b"abc")]))
    data[30:34] = b"nome"
    assert "names a different file" in str(refused(tmp_path, bytes(data)))
    data = bytearray(build([Member("name", b"abc")]))
    struct.pack_into("<H", data, 8, 8)  # local header: deflated
    assert "local header says method 8" in str(refused(tmp_path, bytes(data)))
    data = bytearray(build([Member("name", b"abc")]))
    data[0:4] = b"XXXX"
    assert "no local header" in str(refused(tmp_path, bytes(data)))


def test_refused_declarations(tmp_path: Path) -> None:
    data = bytearray(build([Member("a", b"abc")]))
    central = data.find(b"PK\x01\x02")
    struct.pack_into("<H", data, central + 8, 1)  # encrypted
    assert isinstance(refused(tmp_path, bytes(data)), UnsupportedFeature)
    path = tmp_path / "lzma.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_LZMA) as archive:
        archive.writestr("a", b"abc")
    error = refused(tmp_path, path.read_bytes())
    assert isinstance(error, UnsupportedFeature) and "compression method 14" in str(error)
    data = bytearray(build([Member("a", b"abc")]))
    struct.pack_into("<I", data, data.find(b"PK\x01\x02") + 20, 2)  # stored, two sizes
    assert "declares 2 != 3" in str(refused(tmp_path, bytes(data)))


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda b: b + b"trailing", id="trailing-bytes"),
        pytest.param(lambda b: b"prefix" + b, id="prepended-bytes"),
        pytest.param(lambda b: b[:-10], id="truncated-end"),
        pytest.param(lambda b: b[: len(b) // 2], id="truncated-half"),
        pytest.param(lambda b: b"", id="empty-file"),
        pytest.param(lambda b: b.replace(b"PK\x01\x02", b"PK\x01\x03"), id="central-signature"),
    ],
)
def test_damaged_archives_are_refused(tmp_path: Path, damage: object) -> None:
    assert callable(damage)
    refused(tmp_path, damage(build(MEMBERS)))


def _mutations(data: bytes, seed: str, count: int) -> list[bytes]:
    """Truncations and bit flips, half of them in the last 2 KiB (the central directory and end records)."""
    rng = random.Random(seed)
    found = []
    for index in range(count):
        if index % 3 == 0:
            found.append(data[: rng.randrange(len(data))])
            continue
        mutated = bytearray(data)
        for spot in (rng.randrange(max(0, len(data) - 2048), len(data)), rng.randrange(len(data))):
            mutated[spot] ^= 1 << rng.randrange(8)
        found.append(bytes(mutated))
    return found


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: str(p.relative_to(TESTDATA)))
def test_fuzzed_directories_give_one_line_errors(path: Path, tmp_path: Path) -> None:
    def read_every_entry(target: Path) -> None:
        with Source(target) as source:
            for entry in _zip.read_directory(source).entries:
                _zip.read_entry(source, entry, 1 << 24)

    assert_only_one_line_errors(tmp_path / path.name, _mutations(path.read_bytes(), path.name, 40), read_every_entry)


@pytest.mark.parametrize("path", [p for p in FIXTURES if p.suffix in (".npz", ".keras")], ids=lambda p: p.name)
def test_fuzzed_archives_give_one_line_errors(path: Path, tmp_path: Path) -> None:
    mutations = _mutations(path.read_bytes(), path.name, 60)
    assert_only_one_line_errors(tmp_path / path.name, mutations, ckptscan.read_inventory)
