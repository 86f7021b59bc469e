"""Zip containers read in place: where each member's bytes start, and what the framing costs.

Used by the formats that are zip archives of other files (NumPy ``.npz``, Keras 3 ``.keras``). The
central directory is read with :mod:`zipfile` through a bounded window on the :class:`Source`;
each member's *local* header is then read and checked against the central directory (name,
method, sizes), because the data offset is only known from the local header and a file whose two
directories disagree is lying about something. Members must not overlap and must end before the
central directory starts.

Nothing here inflates a whole member into memory: :func:`read_small_member` caps what it returns,
:func:`inflate_prefix` stops after the bytes asked for, and :func:`inflate_to_file` streams into
a file up to a cap.
"""

from __future__ import annotations

import io
import itertools
import struct
import zipfile
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import IO

from ckptscan.errors import LimitExceeded, MalformedFile, UnsupportedFeature
from ckptscan.inventory import Region, RegionKind
from ckptscan.source import Source

LOCAL_HEADER = struct.Struct("<IHHHHHIIIHH")
LOCAL_SIGNATURE = 0x04034B50
STORED, DEFLATED = zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED
MAX_MEMBERS = 1_000_000
_CHUNK = 1 << 16


@dataclass(frozen=True, slots=True)
class ZipMember:
    name: str
    header_offset: int  # the local header
    data_offset: int  # first byte of the (possibly compressed) member data
    compress_size: int
    file_size: int
    method: int
    flag_bits: int

    @property
    def stored(self) -> bool:
        return self.method == STORED

    @property
    def data_end(self) -> int:
        return self.data_offset + self.compress_size

    @property
    def descriptor_size(self) -> int:
        """Bytes of the data descriptor after the data (bit 3); 0 when absent. Bounded by the next header."""
        return 16 if self.flag_bits & 0x08 else 0


@dataclass(frozen=True, slots=True)
class ZipLayout:
    members: tuple[ZipMember, ...]
    directory_offset: int  # where the central directory starts; it runs to the end of the file

    def get(self, name: str) -> ZipMember | None:
        for member in self.members:
            if member.name == name:
                return member
        return None


class SourceWindow(io.RawIOBase):
    """A read-only, seekable file object over ``[start, start + length)`` of a Source.

    Reads never leave the window, so a library handed this object (zipfile, h5py) cannot be talked
    into reading bytes outside the member it was given.
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


def read_layout(source: Source) -> ZipLayout:
    """Every member with its data offset, checked against its local header and its neighbours."""
    try:
        with zipfile.ZipFile(SourceWindow(source, 0, source.size)) as archive:
            infos = archive.infolist()
            directory_offset = archive.start_dir
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError, OSError, NotImplementedError) as e:
        raise MalformedFile(f"not a readable zip archive ({e})", where="central directory") from e
    if len(infos) > MAX_MEMBERS:
        raise LimitExceeded(f"{len(infos):,} zip members exceed the limit of {MAX_MEMBERS:,}")
    members = [_member(source, info, directory_offset) for info in infos]
    ordered = sorted(members, key=lambda m: m.header_offset)
    for member, following in itertools.pairwise(ordered):
        if member.data_end > following.header_offset:
            raise MalformedFile(
                f"zip member {member.name!r} runs into member {following.name!r} (overlapping members)",
                where=f"offset {following.header_offset}",
            )
    return ZipLayout(tuple(members), directory_offset)


def _member(source: Source, info: zipfile.ZipInfo, directory_offset: int) -> ZipMember:
    where = f"zip member {info.filename!r}"
    if info.flag_bits & 0x01:
        raise UnsupportedFeature(f"zip member {info.filename!r} is encrypted", where=where)
    if info.header_offset + LOCAL_HEADER.size > directory_offset:
        raise MalformedFile(
            f"zip member {info.filename!r} has its local header past the central directory", where=where
        )
    fields = LOCAL_HEADER.unpack(source.read_at(info.header_offset, LOCAL_HEADER.size, "zip local header"))
    signature, method, name_len, extra_len = fields[0], fields[3], fields[9], fields[10]
    if signature != LOCAL_SIGNATURE:
        raise MalformedFile(f"zip member {info.filename!r}: no local header signature", where=where)
    if method != info.compress_type:
        raise MalformedFile(
            f"zip member {info.filename!r}: local header says method {method}, central directory {info.compress_type}",
            where=where,
        )
    name_start = info.header_offset + LOCAL_HEADER.size
    raw_name = source.read_at(name_start, name_len, "zip local file name")
    if raw_name.decode("utf-8", "replace") != info.filename and raw_name.decode("cp437") != info.filename:
        raise MalformedFile(f"zip member {info.filename!r}: local header names {raw_name!r}", where=where)
    data_offset = name_start + name_len + extra_len
    if info.compress_type == STORED and info.compress_size != info.file_size:
        raise MalformedFile(
            f"zip member {info.filename!r} is stored but its sizes differ "
            f"({info.compress_size:,} vs {info.file_size:,})",
            where=where,
        )
    if data_offset + info.compress_size > directory_offset:
        raise MalformedFile(
            f"zip member {info.filename!r} claims {info.compress_size:,} bytes from offset {data_offset:,}, "
            f"past the central directory at {directory_offset:,}",
            where=where,
        )
    return ZipMember(
        name=info.filename,
        header_offset=info.header_offset,
        data_offset=data_offset,
        compress_size=info.compress_size,
        file_size=info.file_size,
        method=info.compress_type,
        flag_bits=info.flag_bits,
    )


def framing_regions(source: Source, layout: ZipLayout) -> list[Region]:
    """Local headers, data descriptors, the central directory, and any bytes no member accounts for."""
    regions: list[Region] = []
    position = 0
    for member in sorted(layout.members, key=lambda m: m.header_offset):
        if member.header_offset > position:
            regions.append(_gap(source, position, member.header_offset))
        header_bytes = member.data_offset - member.header_offset
        regions.append(_frame(source, member.header_offset, header_bytes, f"zip local header {member.name}"))
        position = member.data_end
        descriptor = min(member.descriptor_size, layout.directory_offset - position)
        if descriptor:
            regions.append(_frame(source, position, descriptor, "zip data descriptor"))
            position += descriptor
    if layout.directory_offset > position:
        regions.append(_gap(source, position, layout.directory_offset))
    directory_bytes = source.size - layout.directory_offset
    regions.append(_frame(source, layout.directory_offset, directory_bytes, "zip central directory"))
    return regions


def _frame(source: Source, offset: int, length: int, label: str) -> Region:
    return Region(source.name, RegionKind.FRAMING, offset, length, label)


def _gap(source: Source, start: int, end: int) -> Region:
    return Region(source.name, RegionKind.UNREFERENCED, start, end - start, "bytes between zip members")


def read_small_member(source: Source, member: ZipMember, cap: int) -> bytes:
    """The whole content of a small member (a JSON config), refusing one larger than ``cap``."""
    if member.file_size > cap:
        raise LimitExceeded(
            f"zip member {member.name!r} is {member.file_size:,} bytes; the limit is {cap:,}",
            where=f"zip member {member.name!r}",
        )
    if member.stored:
        return source.read_at(member.data_offset, member.compress_size, f"zip member {member.name}")
    data = inflate_prefix(source, member, member.file_size)
    if len(data) != member.file_size:
        raise MalformedFile(
            f"zip member {member.name!r} inflates to {len(data):,} bytes, not the {member.file_size:,} it declares",
            where=f"zip member {member.name!r}",
        )
    return data


def inflate_prefix(source: Source, member: ZipMember, length: int) -> bytes:
    """The first ``length`` bytes of a member's content (fewer if it is shorter), inflating no more."""
    if member.stored:
        return source.read_at(member.data_offset, min(length, member.compress_size), f"zip member {member.name}")
    out = bytearray()
    for piece in _inflate(source, member):
        out += piece[: length - len(out)]
        if len(out) >= length:
            break
    return bytes(out)


def inflate_to_file(source: Source, member: ZipMember, target: IO[bytes], cap: int) -> int:
    """Stream a member's content into ``target``, refusing more than ``cap`` bytes; returns the size."""
    if member.file_size > cap:
        raise LimitExceeded(
            f"zip member {member.name!r} would inflate to {member.file_size:,} bytes; the limit is {cap:,}",
            where=f"zip member {member.name!r}",
        )
    written = 0
    for piece in _inflate(source, member):
        written += len(piece)
        if written > member.file_size:
            raise MalformedFile(
                f"zip member {member.name!r} inflates past the {member.file_size:,} bytes it declares",
                where=f"zip member {member.name!r}",
            )
        target.write(piece)
    if written != member.file_size:
        raise MalformedFile(
            f"zip member {member.name!r} inflates to {written:,} bytes, not the {member.file_size:,} it declares",
            where=f"zip member {member.name!r}",
        )
    return written


def _inflate(source: Source, member: ZipMember) -> Iterable[bytes]:
    """The member's content in pieces of at most 64 KiB each, never more than it declares (+1 byte)."""
    if member.method != DEFLATED:
        raise UnsupportedFeature(
            f"zip member {member.name!r} uses compression method {member.method}; only stored and deflated are read",
            where=f"zip member {member.name!r}",
        )
    inflater = zlib.decompressobj(-15)
    position, end = member.data_offset, member.data_end
    produced = 0
    try:
        while True:
            pending = inflater.unconsumed_tail
            if not pending:
                if position >= end:
                    break
                pending = source.read_at(position, min(_CHUNK, end - position), f"zip member {member.name}")
                position += len(pending)
            piece = inflater.decompress(pending, _CHUNK)
            produced += len(piece)
            if piece:
                yield piece
            if inflater.eof or produced > member.file_size:
                break
    except zlib.error as e:
        raise MalformedFile(f"zip member {member.name!r} is not valid deflate data ({e})") from e
