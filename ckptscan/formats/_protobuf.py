"""The Protocol Buffers wire format, read in place and bounded (shared by the ONNX and TF readers).

A serialized message is a sequence of fields, each a varint *tag* (``field_number << 3 | wire_type``)
followed by its value: a varint (wire type 0), 8 little-endian bytes (1), a varint length and that
many bytes (2: strings, bytes, sub-messages, packed repeated scalars), or 4 little-endian bytes (5).
Groups (3, 4) are long deprecated and used by neither ONNX nor TensorFlow; they are refused.

Everything here works on a *window* ``[start, end)`` of either an in-memory buffer (``bytes``, or
an ``mmap`` of a file with no bulk data in it) or a :class:`FileView` of a large file, and never
reads a length-delimited value it is not asked for: a field is reported as its payload's absolute
offset and length, so skipping a 1 GB ``raw_data`` costs one varint. A ``FileView`` reads through
``pread`` into one small cached chunk: a message small enough is read whole and walked in memory;
a larger one is walked field by field, reading only each field's tag and length. (A memory map
would do the same I/O, but every page it touches stays resident and current Linux kernels map a
whole large folio, up to 2 MB, around each touch: the peak RSS would grow with the tensor count.)

Every length is checked against the bytes left in the enclosing message before anything else
happens, varints are at most 10 bytes, and nesting depth is the caller's to bound
(``check_depth``). Errors are ``MalformedFile`` / ``TruncatedFile`` / ``LimitExceeded`` naming the
absolute offset; readers add the file and format at their boundary.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import NamedTuple, Protocol

from ckptscan.errors import LimitExceeded, MalformedFile, TruncatedFile
from ckptscan.source import Source

VARINT, FIXED64, LEN, START_GROUP, END_GROUP, FIXED32 = 0, 1, 2, 3, 4, 5
WIRE_NAMES = {VARINT: "varint", FIXED64: "64-bit", LEN: "length-delimited", FIXED32: "32-bit"}
MAX_FIELD_NUMBER = (1 << 29) - 1
MAX_VARINT_BYTES = 10
COUNT_CHUNK = 1 << 20  # packed varints are counted in chunks of this many bytes
VIEW_CHUNK = 64 << 10  # a FileView reads and caches this much at a time
SMALL_MESSAGE = VIEW_CHUNK  # messages up to this size are read whole and walked in memory
FIELD_HEAD = 15  # a tag (at most 5 bytes) and a varint (at most 10)
HEAD_CHUNK = 4 << 10  # walking a large message field by field reads this much at a time
_HIGH_BYTES = bytes(range(0x80, 0x100))

_F32 = struct.Struct("<f")
_F64 = struct.Struct("<d")


class Buffer(Protocol):
    """An in-memory buffer: ``bytes`` and ``mmap.mmap`` both qualify."""

    def __getitem__(self, index: int, /) -> int: ...

    def __len__(self) -> int: ...


class FileView:
    """Random access to a file through bounded ``pread`` calls, with one cached chunk."""

    def __init__(self, source: Source) -> None:
        self.source = source
        self.size = source.size
        self._start = 0
        self._chunk = b""

    def read(self, offset: int, length: int) -> bytes:
        """Exactly ``length`` bytes at ``offset`` (TruncatedFile past the end of the file)."""
        start = self._start
        if start <= offset and offset + length <= start + len(self._chunk):
            return self._chunk[offset - start : offset - start + length]
        if length >= VIEW_CHUNK:
            return self.source.read_at(offset, length, "protobuf field")
        self._load(offset, VIEW_CHUNK)
        if len(self._chunk) < length:
            raise TruncatedFile("a field runs past the end of the file", where=f"offset {offset}")
        return self._chunk[:length]

    def read_some(self, offset: int, at_most: int, at_least: int) -> bytes:
        """Between ``at_least`` and ``at_most`` bytes at ``offset``: whatever the cached chunk holds."""
        cached = self._start + len(self._chunk) - offset
        if not (self._start <= offset and cached >= at_least):
            self._load(offset, max(at_least, HEAD_CHUNK))
            cached = len(self._chunk)
            if cached < at_least:
                raise TruncatedFile("a field runs past the end of the file", where=f"offset {offset}")
        begin = offset - self._start
        return self._chunk[begin : begin + min(at_most, cached)]

    def _load(self, offset: int, size: int) -> None:
        self._start = offset
        self._chunk = self.source.read_up_to(offset, size)


Readable = Buffer | FileView


def _read(src: Readable, offset: int, length: int) -> bytes:
    if isinstance(src, FileView):
        return src.read(offset, length)
    return src[offset : offset + length]  # type: ignore[index,return-value]


class Field(NamedTuple):
    """One field of a message. For ``LEN`` fields ``value`` is the payload length, else the raw value.

    ``offset`` is the absolute position of the value (the payload, for ``LEN``); the field's whole
    extent is ``[tag_offset, end)``.
    """

    number: int
    wire_type: int
    value: int
    offset: int
    tag_offset: int
    end: int


def read_varint(buf: Buffer, pos: int, end: int, base: int = 0) -> tuple[int, int]:
    """The unsigned varint at ``pos`` (at most 10 bytes, below 2**64) and the position after it.

    ``base`` is where ``buf`` begins in the file, for error messages.
    """
    result = 0
    shift = 0
    start = pos
    while True:
        if pos >= end:
            raise TruncatedFile("a varint runs past the end of its message", where=f"offset {base + start}")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            break
        shift += 7
        if shift >= 7 * MAX_VARINT_BYTES:
            raise MalformedFile("a varint is longer than 10 bytes", where=f"offset {base + start}")
    if result >> 64:
        raise MalformedFile("a varint overflows 64 bits", where=f"offset {base + start}")
    return result, pos


def fields(src: Readable, start: int, end: int) -> Iterator[Field]:
    """Every field of the message in ``src[start:end]``, in file order; payloads are not read."""
    if not isinstance(src, FileView):
        return _fields(src, start, end, 0)
    if end - start <= SMALL_MESSAGE:
        return _fields(src.read(start, end - start), 0, end - start, start)
    return _large_fields(src, start, end)


def _large_fields(view: FileView, start: int, end: int) -> Iterator[Field]:
    """The fields of a large message, walked a chunk at a time; payloads past the chunk are skipped."""
    pos = start
    while pos < end:
        chunk = view.read_some(pos, end - pos, min(end - pos, 4 * FIELD_HEAD))
        chunk_end = pos + len(chunk)
        # a field is parsed from this chunk only if its whole head (tag and length) is inside it
        heads_end = len(chunk) if chunk_end >= end else len(chunk) - FIELD_HEAD
        resume = pos
        for field in _fields(chunk, 0, len(chunk), pos, whole=False, heads_end=heads_end):
            if field.end > end:
                raise TruncatedFile(
                    f"field {field.number} declares {field.value:,} bytes but its message has "
                    f"{end - field.offset:,} left",
                    where=f"offset {field.tag_offset}",
                )
            yield field
            resume = field.end
            if resume > chunk_end:
                break
        pos = resume


def _fields(
    buf: Buffer, start: int, end: int, base: int, whole: bool = True, heads_end: int | None = None
) -> Iterator[Field]:
    """The fields in ``buf[start:end]``, offsets shifted by ``base`` (where ``buf`` begins in the file).

    With ``whole=False`` the buffer holds part of a larger message: payloads may go on past its end,
    and only fields that begin before ``heads_end`` are read.
    """
    pos = start
    stop = end if heads_end is None else heads_end
    new = tuple.__new__  # Field(...) goes through a Python-level __new__; this is the hot loop
    while pos < stop:
        tag_offset = pos
        tag = buf[pos]  # one-byte varints (tags of fields 1-15, short lengths) are the common case
        if tag < 0x80:
            pos += 1
        else:
            tag, pos = read_varint(buf, pos, end, base)
        number, wire_type = tag >> 3, tag & 7
        if number == 0 or number > MAX_FIELD_NUMBER:
            raise MalformedFile(f"invalid protobuf field number {number}", where=f"offset {base + tag_offset}")
        if wire_type == VARINT:
            value, after = read_varint(buf, pos, end, base)
            yield new(Field, (number, wire_type, value, base + pos, base + tag_offset, base + after))
            pos = after
        elif wire_type == LEN:
            length = buf[pos] if pos < end else 0x80
            if length < 0x80:
                pos += 1
            else:
                length, pos = read_varint(buf, pos, end, base)
            if whole and length > end - pos:
                raise TruncatedFile(
                    f"field {number} declares {length:,} bytes but its message has {end - pos:,} left",
                    where=f"offset {base + tag_offset}",
                )
            yield new(Field, (number, wire_type, length, base + pos, base + tag_offset, base + pos + length))
            pos += length
        elif wire_type in (FIXED64, FIXED32):
            width = 8 if wire_type == FIXED64 else 4
            if width > end - pos:
                raise TruncatedFile(
                    f"field {number} runs past the end of its message", where=f"offset {base + tag_offset}"
                )
            value = int.from_bytes(_read(buf, pos, width), "little")
            yield new(Field, (number, wire_type, value, base + pos, base + tag_offset, base + pos + width))
            pos += width
        else:
            what = "group" if wire_type in (START_GROUP, END_GROUP) else f"wire type {wire_type}"
            raise MalformedFile(
                f"field {number} uses a protobuf {what}, which this format never does",
                where=f"offset {base + tag_offset}",
            )


def expect(field: Field, wire_type: int, what: str) -> None:
    """Refuse a field whose wire type is not the one its schema declares."""
    if field.wire_type != wire_type:
        raise MalformedFile(
            f"{what} (field {field.number}) is {WIRE_NAMES.get(field.wire_type, '?')}, "
            f"expected {WIRE_NAMES[wire_type]}",
            where=f"offset {field.tag_offset}",
        )


def check_depth(depth: int, limit: int, what: str, field: Field) -> None:
    if depth > limit:
        raise LimitExceeded(f"{what} nest deeper than {limit} levels", where=f"offset {field.tag_offset}")


def payload(src: Readable, field: Field, limit: int | None = None) -> bytes:
    """The bytes of a ``LEN`` field (at most ``limit`` of them): only for small values."""
    length = field.value if limit is None else min(field.value, limit)
    return _read(src, field.offset, length)


def text(src: Readable, field: Field, what: str, limit: int | None = None) -> str:
    """A ``string`` field as text; undecodable bytes are replaced, a ``limit`` truncates."""
    if field.wire_type != LEN:
        expect(field, LEN, what)
    length = field.value if limit is None else min(field.value, limit)
    raw = src.read(field.offset, length) if isinstance(src, FileView) else _read(src, field.offset, length)
    value = raw.decode("utf-8", errors="replace")
    if limit is not None and field.value > limit:
        value += f"... ({field.value:,} bytes)"
    return value


def as_int64(value: int) -> int:
    """Two's-complement reading of a varint that encodes an ``int64`` / ``int32``."""
    return value - (1 << 64) if value >> 63 else value


def as_int32(value: int) -> int:
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value >> 31 else value


def as_float(field: Field) -> float:
    if field.wire_type == FIXED32:
        return float(_F32.unpack(field.value.to_bytes(4, "little"))[0])
    if field.wire_type == FIXED64:
        return float(_F64.unpack(field.value.to_bytes(8, "little"))[0])
    raise MalformedFile(f"field {field.number} is not a float", where=f"offset {field.tag_offset}")


def scalar(field: Field, what: str) -> int:
    """The value of a ``VARINT`` field (the wire type is checked)."""
    expect(field, VARINT, what)
    return field.value


def count_varints(src: Readable, start: int, end: int) -> int:
    """How many varints a packed payload holds, without decoding them (bytes below 0x80 end one)."""
    count = 0
    pos = start
    last = 0
    while pos < end:
        chunk = _read(src, pos, min(COUNT_CHUNK, end - pos))
        count += len(chunk.translate(None, _HIGH_BYTES))
        pos += len(chunk)
        last = chunk[-1]
    if last >= 0x80:
        raise TruncatedFile("a packed varint runs past the end of its field", where=f"offset {end - 1}")
    return count


def varints(src: Readable, start: int, end: int, limit: int, what: str) -> list[int]:
    """The varints of a packed payload, refusing more than ``limit`` of them before decoding."""
    count = count_varints(src, start, end)
    if count > limit:
        raise LimitExceeded(f"{what} holds {count:,} values; at most {limit:,} are accepted", where=f"offset {start}")
    data = _read(src, start, end - start)
    values = []
    pos = 0
    while pos < len(data):
        value, pos = read_varint(data, pos, len(data), start)
        values.append(value)
    return values


def repeated_varints(src: Readable, field: Field, limit: int, what: str) -> list[int]:
    """A repeated varint field occurrence: packed (``LEN``) or a single unpacked value."""
    if field.wire_type == LEN:
        return varints(src, field.offset, field.end, limit, what)
    return [scalar(field, what)]
