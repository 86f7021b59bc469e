"""Zip archives read in place: every entry's exact data offset, the framing bytes, capped inflation.

Every zip-based format reads its archive here: PyTorch's ``torch.save`` zips (also ``.bin`` and
``.ckpt``), NumPy ``.npz``, Keras 3 ``.keras``, and the data pass (:mod:`ckptscan.data`) when it
finds a compressed member again. A tensor stored uncompressed is pointed at, not read, so each
entry's absolute data offset is needed, and only the entry's own local header gives it (30 bytes +
its name + its extra field, which torch uses to pad data to 64-byte alignment and which differs from
the central directory's).

The directory is parsed here, not by :mod:`zipfile`, so that every size is checked before anything
is allocated: the end record must end the file (with its comment); ZIP64 end records and extra
fields are followed; the entry count (at most ``MAX_ENTRIES``) must fit in the central directory (at
most ``MAX_CENTRAL_DIRECTORY_BYTES``), which must end where the end records start. Each entry is
refused when it is encrypted, compressed other than stored or deflated, named twice, stored with
two different sizes, or declares more than deflate can produce from its compressed size
(``MAX_DEFLATE_RATIO``: a zip bomb, refused without inflating anything). Each local header is read
and checked against the central directory (signature, the same name bytes, the same method); the
data (and its data descriptor, bit 3) must lie before the central directory without overlapping
another entry.

Nothing is inflated unless asked, and then never more than declared: :func:`read_entry` returns a
small entry whole under a cap (CRC-checked), :func:`read_entry_prefix` stops after the bytes asked
for, :func:`extract_entry` streams into a file under a cap, and :func:`inflate` (which the data pass
reads deflated tensors with) stops past a given output size. :class:`SourceWindow` hands a
library (h5py) one entry's bytes and nothing outside them.
"""

from __future__ import annotations

import io
import itertools
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

from ckptscan.errors import LimitExceeded, MalformedFile, TruncatedFile, UnsupportedFeature
from ckptscan.inventory import Finding, Region, RegionKind, Severity
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
_CHUNK = 1 << 16
_ENCRYPTED, _DESCRIPTOR, _UTF8 = 0x1, 0x8, 0x800


@dataclass(frozen=True, slots=True)
class ZipEntry:
    """One archive entry, where its bytes are and what the central directory declares for it."""

    name: str
    header_offset: int  # local file header
    data_offset: int  # first byte of the (possibly compressed) data
    compressed_size: int
    uncompressed_size: int
    method: int  # STORED or DEFLATED
    crc: int
    descriptor_size: int  # data descriptor after the data (0 when none)

    @property
    def stored(self) -> bool:
        return self.method == STORED

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
    """Every entry of an archive (in central directory order) and where its directory and end records lie."""

    entries: tuple[ZipEntry, ...]
    central_offset: int
    central_size: int
    end_offset: int  # ZIP64 end record if any, else the end-of-central-directory record; runs to the end
    size: int  # file size

    def get(self, name: str) -> ZipEntry | None:
        return next((entry for entry in self.entries if entry.name == name), None)

    def by_name(self) -> dict[str, ZipEntry]:
        return {entry.name: entry for entry in self.entries}


# -- the directory ----------------------------------------------------------------------------------


def read_directory(source: Source) -> ZipDirectory:
    """Every entry with its data offset, checked against its local header and its neighbours."""
    central, cd_offset, n_entries, end_offset = _central_directory(source)
    entries = _parse_central(source, central, cd_offset, n_entries)
    _check_layout(entries, cd_offset)
    return ZipDirectory(tuple(entries), cd_offset, len(central), end_offset, source.size)


def entry_names(source: Source) -> tuple[str, ...]:
    """The entry names of the central directory, for sniffing: the end records and the directory's
    bounds are checked as by :func:`read_directory`, but not the entries' declarations or local
    headers, so that the reader (not the sniff) says what is wrong with a damaged archive."""
    central, _offset, n_entries, _end = _central_directory(source)
    names = []
    pos = 0
    for _ in range(n_entries):
        if pos + _CENTRAL.size > len(central):
            break
        fields = _CENTRAL.unpack_from(central, pos)
        if fields[0] != b"PK\x01\x02":
            break
        flags, name_len, extra_len, comment_len = fields[3], fields[10], fields[11], fields[12]
        raw_name = central[pos + _CENTRAL.size : pos + _CENTRAL.size + name_len]
        names.append(raw_name.decode("utf-8" if flags & _UTF8 else "cp437", "replace"))
        pos += _CENTRAL.size + name_len + extra_len + comment_len
    return tuple(names)


def _central_directory(source: Source) -> tuple[bytes, int, int, int]:
    """The central directory's bytes, offset and declared entry count, and where the end records start."""
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
    if n_entries * _CENTRAL.size > cd_size:
        raise MalformedFile(
            f"zip declares {n_entries:,} entries but its central directory of {cd_size:,} bytes holds at most "
            f"{cd_size // _CENTRAL.size:,}",
            where=f"offset {eocd_offset}",
        )
    central = source.read_at(cd_offset, cd_size, "zip central directory")
    return central, cd_offset, n_entries, end_offset


def _find_end_record(source: Source) -> tuple[int, tuple[int, ...]]:
    """The end-of-central-directory record whose comment ends exactly at the end of the file."""
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
    raise MalformedFile(
        "no zip end-of-central-directory record ending the file (truncated, trailing bytes, or not a zip)",
        where="end of file",
    )


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


_LOCAL_EXTRA_GUESS = 128  # local extra fields (ZIP64 sizes, PyTorch's alignment padding) are short


def _parse_central(source: Source, central: bytes, cd_offset: int, n_entries: int) -> list[ZipEntry]:
    entries: list[ZipEntry] = []
    pending: list[tuple[str, bytes, int, int, int, int, int, int]] = []
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
        name = raw_name.decode("utf-8" if flags & _UTF8 else "cp437", "replace")
        extra = central[pos + _CENTRAL.size + name_len : pos + _CENTRAL.size + name_len + extra_len]
        usize, csize, header_offset = _apply_zip64(extra, usize, csize, header_offset, where)
        _check_declaration(name, flags, method, csize, usize, seen, where)
        seen.add(name)
        pending.append((name, raw_name, header_offset, csize, usize, method, crc, flags))
        pos = end
    # a remote source fetches every local header it will be asked for at once (a no-op locally)
    source.prefetch([(offset, _LOCAL.size + len(raw) + _LOCAL_EXTRA_GUESS) for _, raw, offset, *_ in pending])
    for name, raw_name, header_offset, csize, usize, method, crc, flags in pending:
        entries.append(_local_entry(source, name, raw_name, header_offset, csize, usize, method, crc, flags, cd_offset))
    return entries


def _check_declaration(name: str, flags: int, method: int, csize: int, usize: int, seen: set[str], where: str) -> None:
    """What the central directory says about one entry, before its local header is read."""
    if flags & _ENCRYPTED:
        raise UnsupportedFeature(f"zip entry {name} is encrypted", where=where)
    if name in seen:
        raise MalformedFile(f"zip entry name {name!r} appears twice", where=where)
    if method not in (STORED, DEFLATED):
        raise UnsupportedFeature(
            f"zip entry {name} uses compression method {method}; only stored and deflated are read", where=where
        )
    if method == STORED and csize != usize:
        raise MalformedFile(f"stored zip entry {name} declares {csize:,} != {usize:,} bytes", where=where)
    if method == DEFLATED and usize > max(csize, 1) * MAX_DEFLATE_RATIO:
        raise MalformedFile(
            f"zip entry {name} declares {usize:,} bytes from {csize:,} compressed: more than deflate can "
            "produce (zip bomb?)",
            where=where,
        )


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
    local_method, name_len, extra_len = header[3], header[9], header[10]
    if local_method != method:
        raise MalformedFile(
            f"zip entry {name}: local header says method {local_method}, central directory {method}", where=where
        )
    data_offset = offset + _LOCAL.size + name_len + extra_len
    if source.read_at(offset + _LOCAL.size, name_len, "zip local name") != raw_name:
        raise MalformedFile(f"zip entry {name}: local header names a different file", where=where)
    if data_offset + csize > cd_offset:
        raise MalformedFile(
            f"zip entry {name} data [{data_offset}, {data_offset + csize}) runs into the central directory", where=where
        )
    descriptor = 0
    if flags & _DESCRIPTOR:
        descriptor = _descriptor_size(source, data_offset + csize, csize, usize, cd_offset)
    return ZipEntry(name, offset, data_offset, csize, usize, method, crc, descriptor)


def _descriptor_size(source: Source, at: int, csize: int, usize: int, limit: int) -> int:
    """Bytes of the data descriptor at ``at`` (optional signature, CRC, two 4- or 8-byte sizes); 0 if it cannot fit."""
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


# -- regions ----------------------------------------------------------------------------------------


def framing_regions(source: Source, directory: ZipDirectory) -> list[Region]:
    """Local headers, data descriptors, the central directory and end records (FRAMING), and the
    bytes outside every entry (UNREFERENCED). With a region for each entry's data, the file is covered."""
    regions: list[Region] = []
    position = 0
    for entry in sorted(directory.entries, key=lambda e: e.header_offset):
        regions += _gap(source, position, entry.header_offset)
        regions.append(_frame(source, entry.header_offset, entry.header_size, f"zip local header {entry.name}"))
        if entry.descriptor_size:
            regions.append(_frame(source, entry.data_end, entry.descriptor_size, f"zip data descriptor {entry.name}"))
        position = entry.end
    regions += _gap(source, position, directory.central_offset)
    if directory.central_size:
        regions.append(_frame(source, directory.central_offset, directory.central_size, "zip central directory"))
    regions.append(_frame(source, directory.end_offset, directory.size - directory.end_offset, "zip end records"))
    return regions


def _frame(source: Source, offset: int, length: int, label: str) -> Region:
    return Region(source.name, RegionKind.FRAMING, offset, length, label)


def _gap(source: Source, start: int, end: int) -> list[Region]:
    if end <= start:
        return []
    return [Region(source.name, RegionKind.UNREFERENCED, start, end - start, "bytes outside any zip entry")]


# -- content ----------------------------------------------------------------------------------------


def read_entry(source: Source, entry: ZipEntry, cap: int, what: str | None = None) -> bytes:
    """The entry's whole content (a pickle, a JSON config), refusing one larger than ``cap``; CRC-checked."""
    what = what or f"zip entry {entry.name!r}"
    if entry.uncompressed_size > cap:
        raise LimitExceeded(f"{what} is {entry.uncompressed_size:,} bytes; the limit is {cap:,}", where=entry.name)
    if entry.stored:
        data = source.read_at(entry.data_offset, entry.compressed_size, what)
    else:
        data = b"".join(_content(source, entry, what))
    _check_content(entry, len(data), zlib.crc32(data), what)
    return data


def read_entry_prefix(source: Source, entry: ZipEntry, length: int) -> bytes:
    """The first ``length`` bytes of an entry's content (fewer if it is shorter), inflating no more."""
    out = bytearray()
    for piece in _content(source, entry, f"zip entry {entry.name!r}"):
        out += piece[: length - len(out)]
        if len(out) >= length:
            break
    return bytes(out)


def extract_entry(source: Source, entry: ZipEntry, target: IO[bytes], cap: int) -> int:
    """Stream an entry's content into ``target``, refusing more than ``cap`` bytes; CRC-checked; returns the size."""
    what = f"zip entry {entry.name!r}"
    if entry.uncompressed_size > cap:
        raise LimitExceeded(
            f"{what} would inflate to {entry.uncompressed_size:,} bytes; the limit is {cap:,}", where=entry.name
        )
    written, crc = 0, 0
    for piece in _content(source, entry, what):
        written += len(piece)
        crc = zlib.crc32(piece, crc)
        target.write(piece)
    _check_content(entry, written, crc, what)
    return written


def _check_content(entry: ZipEntry, size: int, crc: int, what: str) -> None:
    if size != entry.uncompressed_size:
        raise MalformedFile(
            f"{what} inflates to {size:,} bytes, not the declared {entry.uncompressed_size:,}", where=entry.name
        )
    if crc != entry.crc:
        raise MalformedFile(f"{what} fails its CRC-32 check (corrupt)", where=entry.name)


def iter_content(source: Source, entry: ZipEntry, what: str | None = None) -> Iterator[bytes]:
    """The entry's content in pieces of at most 64 KiB (for streaming it, e.g. through the unpickler);
    size and CRC-32 are checked once the last piece has been taken."""
    what = what or f"zip entry {entry.name!r}"
    size, crc = 0, 0
    for piece in _content(source, entry, what):
        size += len(piece)
        crc = zlib.crc32(piece, crc)
        yield piece
    _check_content(entry, size, crc, what)


def _content(source: Source, entry: ZipEntry, what: str) -> Iterator[bytes]:
    """The entry's content in pieces of at most 64 KiB, stopping one piece past what it declares."""
    if entry.stored:
        for start in range(entry.data_offset, entry.data_end, _CHUNK):
            yield source.read_at(start, min(_CHUNK, entry.data_end - start), what)
    else:
        yield from inflate(source, entry.data_offset, entry.compressed_size, entry.uncompressed_size, what)


def inflate(source: Source, start: int, length: int, limit: int, what: str, piece: int = _CHUNK) -> Iterator[bytes]:
    """The raw deflate stream in ``[start, start + length)`` inflated in pieces of at most ``piece`` bytes.

    Stops at the end of the stream, or after the piece that passes ``limit`` bytes, so no more than
    ``limit + piece`` bytes are ever produced whatever the stream holds. Input running out before the
    stream ends is ``TruncatedFile``.
    """
    inflater = zlib.decompressobj(-15)
    position, end, produced = start, start + length, 0
    try:
        while not inflater.eof and produced <= limit:
            pending = inflater.unconsumed_tail
            if not pending and position < end:
                pending = source.read_at(position, min(piece, end - position), what)
                position += len(pending)
            # with the input all taken, zlib may still hold output (the rest of a match): ask again
            output = inflater.decompress(pending, piece)
            if not output and not pending and not inflater.eof:
                raise TruncatedFile(f"{what}: the deflate stream ends early")
            produced += len(output)
            if output:
                yield output
    except zlib.error as e:
        raise MalformedFile(f"{what} is not valid deflate data ({e})") from e


# -- a window for libraries -------------------------------------------------------------------------


class SourceWindow(io.RawIOBase):
    """A read-only, seekable file object over ``[start, start + length)`` of a Source.

    Reads never leave the window, so a library handed this object (h5py) cannot be talked into
    reading bytes outside the entry it was given.
    """

    def __init__(self, source: Source, start: int, length: int) -> None:
        super().__init__()
        self._source = source
        self._start = start
        self._length = length
        self._position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._length}[whence]
        if base + offset < 0:
            raise OSError("negative seek position")
        self._position = base + offset
        return self._position

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        wanted = min(len(buffer), max(0, self._length - self._position))
        if not wanted:
            return 0
        data = self._source.read_at(self._start + self._position, wanted)
        buffer[:wanted] = data
        self._position += wanted
        return wanted


# -- member names ------------------------------------------------------------------------------------


def unsafe_name(name: str) -> str | None:
    """Why an entry name could write outside an extraction folder (or fool a terminal), or None.

    ``zipfile`` sanitises names on extraction, but other extractors (and ``torch.load`` of a zip
    handed to a custom loader) need not: ``../``, absolute paths, drive letters, backslashes, NUL
    and line breaks are all reported.
    """
    if "\0" in name:
        return "contains a NUL byte"
    if "\n" in name or "\r" in name:
        return "contains a line break"
    if "\\" in name:
        return "contains a backslash (a path separator on Windows)"
    if name.startswith("/"):
        return "is an absolute path"
    if len(name) >= 2 and name[1] == ":" and name[0].isalpha():
        return "starts with a drive letter"
    if ".." in name.split("/"):
        return "climbs out of its folder with '..'"
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return "contains control characters"
    return None


def name_findings(directory: ZipDirectory) -> list[Finding]:
    """A ``zip-unsafe-name`` finding (HIGH) for every entry whose name escapes or hides."""
    found = []
    for entry in directory.entries:
        why = unsafe_name(entry.name)
        if why is not None:
            shown = entry.name.encode("unicode_escape").decode("ascii")
            found.append(
                Finding("zip-unsafe-name", Severity.HIGH, f"zip entry name {shown!r} {why}", shown, subject=shown)
            )
    return found
