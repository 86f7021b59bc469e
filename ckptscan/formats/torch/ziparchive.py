"""A read-only zip directory parser that tells where every entry's bytes are, exactly.

PyTorch's zip checkpoints store tensor bytes uncompressed; to point at them we need each entry's
absolute data offset, which only the entry's own local header gives (30 bytes + its name + its
extra field, which torch uses to pad data to 64-byte alignment and which differs from the central
directory's). So the central directory is parsed here (with ZIP64), and every local header is read
and checked against it: signature, name, and that the data lies inside the file, before the central
directory, without overlapping another entry. Nothing is decompressed except on request
(:func:`read_entry`), and then with an output cap; declared sizes beyond what deflate can produce
(about 1032:1) are refused as zip bombs without inflating anything.
"""

from __future__ import annotations

import itertools
import struct
import zlib
from dataclasses import dataclass

from ckptscan.errors import LimitExceeded, MalformedFile, TruncatedFile, UnsupportedFeature
from ckptscan.inventory import Region, RegionKind
from ckptscan.source import Source

MAX_ENTRIES = 1_000_000
MAX_CENTRAL_DIRECTORY_BYTES = 256 << 20
MAX_DEFLATE_RATIO = 1032  # deflate cannot expand by more (258-byte matches in ~2 bits)
STORED, DEFLATED = 0, 8

_EOCD = struct.Struct("<4sHHHHIIH")
_ZIP64_LOCATOR = struct.Struct("<4sIQI")
_ZIP64_EOCD = struct.Struct("<4sQHHIIQQQQ")
_CENTRAL = struct.Struct("<4sHHHHHHIIIHHHHHII")
_LOCAL = struct.Struct("<4sHHHHHIIIHH")
_MAX_COMMENT = 0xFFFF


@dataclass(frozen=True, slots=True)
class ZipEntry:
    name: str
    header_offset: int  # local file header
    data_offset: int  # first byte of the (possibly compressed) data
    compressed_size: int
    uncompressed_size: int
    method: int
    crc: int
    descriptor_size: int  # data descriptor after the data (0 when none)

    @property
    def header_size(self) -> int:
        return self.data_offset - self.header_offset

    @property
    def data_end(self) -> int:
        return self.data_offset + self.compressed_size

    @property
    def end(self) -> int:
        return self.data_end + self.descriptor_size


@dataclass(frozen=True, slots=True)
class ZipDirectory:
    entries: tuple[ZipEntry, ...]
    central_offset: int
    central_size: int
    end_offset: int  # ZIP64 end record if any, else the end-of-central-directory record
    size: int  # file size

    def by_name(self) -> dict[str, ZipEntry]:
        return {e.name: e for e in self.entries}

    def framing_regions(self, file: str) -> list[Region]:
        """Local headers, data descriptors, central directory and end records."""
        regions = []
        for e in self.entries:
            regions.append(
                Region(file, RegionKind.FRAMING, e.header_offset, e.header_size, f"zip local header {e.name}")
            )
            if e.descriptor_size:
                regions.append(
                    Region(file, RegionKind.FRAMING, e.data_end, e.descriptor_size, f"zip data descriptor {e.name}")
                )
        regions.append(
            Region(file, RegionKind.FRAMING, self.central_offset, self.central_size, "zip central directory")
        )
        regions.append(
            Region(file, RegionKind.FRAMING, self.end_offset, self.size - self.end_offset, "zip end records")
        )
        return regions


def read_directory(source: Source) -> ZipDirectory:
    eocd_offset, eocd = _find_end_record(source)
    _sig, disk, cd_disk, _n_disk, n_entries, cd_size, cd_offset, _comment = eocd
    end_offset = eocd_offset
    needs_zip64 = 0xFFFF in (n_entries, disk, cd_disk) or 0xFFFFFFFF in (cd_size, cd_offset)
    # writers (PyTorch's among them) may add ZIP64 records even when the sizes fit
    if needs_zip64 or _has_zip64_locator(source, eocd_offset):
        end_offset, n_entries, cd_size, cd_offset = _zip64_end(source, eocd_offset)
    elif disk != 0 or cd_disk != 0:
        raise UnsupportedFeature("multi-disk zip archives are not supported", where=f"offset {eocd_offset}")
    if n_entries > MAX_ENTRIES:
        raise LimitExceeded(f"zip declares {n_entries:,} entries; the limit is {MAX_ENTRIES:,}")
    if cd_size > MAX_CENTRAL_DIRECTORY_BYTES:
        raise LimitExceeded(f"zip central directory of {cd_size:,} bytes exceeds {MAX_CENTRAL_DIRECTORY_BYTES:,}")
    if cd_offset + cd_size != end_offset:
        raise MalformedFile(
            f"zip central directory [{cd_offset}, {cd_offset + cd_size}) does not end at the end record ({end_offset})",
            where=f"offset {eocd_offset}",
        )
    central = source.read_at(cd_offset, cd_size, "zip central directory")
    entries = _parse_central(source, central, cd_offset, n_entries)
    _check_layout(entries, cd_offset)
    return ZipDirectory(tuple(entries), cd_offset, cd_size, end_offset, source.size)


def _find_end_record(source: Source) -> tuple[int, tuple[int, ...]]:
    tail_len = min(source.size, _EOCD.size + _MAX_COMMENT)
    tail_start = source.size - tail_len
    tail = source.read_at(tail_start, tail_len, "zip end record")
    position = tail.rfind(b"PK\x05\x06")
    while position >= 0:
        if position + _EOCD.size <= len(tail):
            record = _EOCD.unpack_from(tail, position)
            if position + _EOCD.size + record[7] == len(tail):
                return tail_start + position, record
        position = tail.rfind(b"PK\x05\x06", 0, position)
    raise MalformedFile("no zip end-of-central-directory record (truncated or not a zip)", where="end of file")


def _has_zip64_locator(source: Source, eocd_offset: int) -> bool:
    at = eocd_offset - _ZIP64_LOCATOR.size
    return at >= 0 and source.read_at(at, 4) == b"PK\x06\x07"


def _zip64_end(source: Source, eocd_offset: int) -> tuple[int, int, int, int]:
    locator_offset = eocd_offset - _ZIP64_LOCATOR.size
    if locator_offset < 0:
        raise MalformedFile(
            "zip needs a ZIP64 end record but has no room for its locator", where=f"offset {eocd_offset}"
        )
    sig, _disk, z64_offset, _disks = _ZIP64_LOCATOR.unpack(source.read_at(locator_offset, _ZIP64_LOCATOR.size))
    if sig != b"PK\x06\x07":
        raise MalformedFile("zip has no ZIP64 end-of-central-directory locator", where=f"offset {locator_offset}")
    if z64_offset + _ZIP64_EOCD.size > locator_offset:
        raise MalformedFile("ZIP64 end record lies past its locator", where=f"offset {locator_offset}")
    record = _ZIP64_EOCD.unpack(source.read_at(z64_offset, _ZIP64_EOCD.size, "ZIP64 end record"))
    if record[0] != b"PK\x06\x06":
        raise MalformedFile("bad ZIP64 end-of-central-directory signature", where=f"offset {z64_offset}")
    n_entries, cd_size, cd_offset = record[7], record[8], record[9]
    return z64_offset, n_entries, cd_size, cd_offset


def _parse_central(source: Source, central: bytes, cd_offset: int, n_entries: int) -> list[ZipEntry]:
    entries: list[ZipEntry] = []
    seen: set[str] = set()
    pos = 0
    for index in range(n_entries):
        where = f"zip central directory entry {index} (offset {cd_offset + pos})"
        if pos + _CENTRAL.size > len(central):
            raise TruncatedFile(f"zip central directory ends inside entry {index} of {n_entries}", where=where)
        (sig, _made, _need, flags, method, _time, _date, crc, csize, usize, name_len, extra_len, comment_len,
         _disk, _internal, _external, header_offset) = _CENTRAL.unpack_from(central, pos)  # fmt: skip
        if sig != b"PK\x01\x02":
            raise MalformedFile("bad zip central directory signature", where=where)
        end = pos + _CENTRAL.size + name_len + extra_len + comment_len
        if end > len(central):
            raise TruncatedFile("zip central directory entry runs past the directory", where=where)
        raw_name = central[pos + _CENTRAL.size : pos + _CENTRAL.size + name_len]
        name = raw_name.decode("utf-8" if flags & 0x800 else "cp437")
        extra = central[pos + _CENTRAL.size + name_len : pos + _CENTRAL.size + name_len + extra_len]
        usize, csize, header_offset = _apply_zip64(extra, usize, csize, header_offset, where)
        if flags & 0x1:
            raise UnsupportedFeature(f"zip entry {name} is encrypted", where=where)
        if name in seen:
            raise MalformedFile(f"zip entry name {name!r} appears twice", where=where)
        seen.add(name)
        if method not in (STORED, DEFLATED):
            raise UnsupportedFeature(f"zip entry {name} uses compression method {method}", where=where)
        if method == STORED and csize != usize:
            raise MalformedFile(f"stored zip entry {name} declares {csize:,} != {usize:,} bytes", where=where)
        if method == DEFLATED and usize > max(csize, 1) * MAX_DEFLATE_RATIO:
            raise MalformedFile(
                f"zip entry {name} declares {usize:,} bytes from {csize:,} compressed: more than deflate can "
                "produce (zip bomb?)",
                where=where,
            )
        entries.append(_local_entry(source, name, raw_name, header_offset, csize, usize, method, crc, flags, cd_offset))
        pos = end
    return entries


def _apply_zip64(extra: bytes, usize: int, csize: int, offset: int, where: str) -> tuple[int, int, int]:
    pos = 0
    while pos + 4 <= len(extra):
        tag, length = struct.unpack_from("<HH", extra, pos)
        body = extra[pos + 4 : pos + 4 + length]
        if tag == 0x0001:
            values = [v for (v,) in struct.iter_unpack("<Q", body[: len(body) // 8 * 8])]
            try:
                if usize == 0xFFFFFFFF:
                    usize = values.pop(0)
                if csize == 0xFFFFFFFF:
                    csize = values.pop(0)
                if offset == 0xFFFFFFFF:
                    offset = values.pop(0)
            except IndexError:
                raise MalformedFile("ZIP64 extra field is too short", where=where) from None
        pos += 4 + length
    return usize, csize, offset


def _local_entry(
    source: Source,
    name: str,
    raw_name: bytes,
    offset: int,
    csize: int,
    usize: int,
    method: int,
    crc: int,
    flags: int,
    cd_offset: int,
) -> ZipEntry:
    where = f"zip local header of {name} (offset {offset})"
    if offset + _LOCAL.size > cd_offset:
        raise MalformedFile(f"zip entry {name} starts past the central directory", where=where)
    header = _LOCAL.unpack(source.read_at(offset, _LOCAL.size, "zip local header"))
    if header[0] != b"PK\x03\x04":
        raise MalformedFile(f"zip entry {name} has no local header at its offset", where=where)
    name_len, extra_len = header[9], header[10]
    data_offset = offset + _LOCAL.size + name_len + extra_len
    if source.read_at(offset + _LOCAL.size, name_len, "zip local name") != raw_name:
        raise MalformedFile(f"zip entry {name}: local header names a different file", where=where)
    if data_offset + csize > cd_offset:
        raise MalformedFile(
            f"zip entry {name} data [{data_offset}, {data_offset + csize}) runs into the central directory", where=where
        )
    descriptor = 0
    if flags & 0x8:
        descriptor = _descriptor_size(source, data_offset + csize, csize, usize, cd_offset)
    return ZipEntry(name, offset, data_offset, csize, usize, method, crc, descriptor)


def _descriptor_size(source: Source, at: int, csize: int, usize: int, limit: int) -> int:
    wide = csize >= 0xFFFFFFFF or usize >= 0xFFFFFFFF
    body = 20 if wide else 12
    signed = source.read_up_to(at, 4) == b"PK\x07\x08"
    size = body + (4 if signed else 0)
    return size if at + size <= limit else 0


def _check_layout(entries: list[ZipEntry], cd_offset: int) -> None:
    ordered = sorted(entries, key=lambda e: e.header_offset)
    for before, after in itertools.pairwise(ordered):
        if before.end > after.header_offset:
            raise MalformedFile(
                f"zip entries {before.name} and {after.name} overlap (zip bomb or corrupt archive)",
                where=f"offset {after.header_offset}",
            )
    if ordered and ordered[-1].end > cd_offset:
        raise MalformedFile(f"zip entry {ordered[-1].name} overlaps the central directory")


def read_entry(source: Source, entry: ZipEntry, max_bytes: int, what: str) -> bytes:
    """The entry's uncompressed bytes, refusing more than ``max_bytes``; CRC-checked."""
    if entry.uncompressed_size > max_bytes:
        raise LimitExceeded(
            f"{what} is {entry.uncompressed_size:,} bytes; the limit is {max_bytes:,}", where=entry.name
        )
    raw = source.read_at(entry.data_offset, entry.compressed_size, what)
    if entry.method == DEFLATED:
        inflater = zlib.decompressobj(-15)
        try:
            data = inflater.decompress(raw, entry.uncompressed_size + 1)
        except zlib.error as e:
            raise MalformedFile(f"{what} does not inflate: {e}", where=entry.name) from e
        if len(data) != entry.uncompressed_size or not inflater.eof:
            raise MalformedFile(
                f"{what} inflates to {len(data):,} bytes, not the declared {entry.uncompressed_size:,}",
                where=entry.name,
            )
    else:
        data = raw
    if zlib.crc32(data) != entry.crc:
        raise MalformedFile(f"{what} fails its CRC-32 check (corrupt)", where=entry.name)
    return data
