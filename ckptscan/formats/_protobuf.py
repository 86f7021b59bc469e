"""The Protocol Buffers wire format, read in place and bounded (shared by the ONNX and TF readers).

A serialized message is a sequence of fields, each a varint *tag* (``field_number << 3 | wire_type``)
followed by its value: a varint (wire type 0), 8 little-endian bytes (1), a varint length and that
many bytes (2: strings, bytes, sub-messages, packed repeated scalars), or 4 little-endian bytes (5).
Groups (3, 4) are long deprecated and used by neither ONNX nor TensorFlow; they are refused.

Everything here works on a *window* ``[start, end)`` of a buffer (a read-only ``mmap`` of the whole
file, or ``bytes``) and never copies a length-delimited value: a field is reported as its payload's
absolute offset and length, so skipping a 1 GB ``raw_data`` costs one varint. Every length is
checked against the bytes left in the enclosing message before anything else happens, varints are
at most 10 bytes, and nesting depth is the caller's to bound (``check_depth``). Errors are
``MalformedFile`` / ``TruncatedFile`` / ``LimitExceeded`` naming the absolute offset; readers add
the file and format at their boundary.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import NamedTuple, Protocol

from ckptscan.errors import LimitExceeded, MalformedFile, TruncatedFile

VARINT, FIXED64, LEN, START_GROUP, END_GROUP, FIXED32 = 0, 1, 2, 3, 4, 5
WIRE_NAMES = {VARINT: "varint", FIXED64: "64-bit", LEN: "length-delimited", FIXED32: "32-bit"}
MAX_FIELD_NUMBER = (1 << 29) - 1
MAX_VARINT_BYTES = 10
COUNT_CHUNK = 1 << 20  # packed varints are counted in chunks of this many bytes
_HIGH_BYTES = bytes(range(0x80, 0x100))

_F32 = struct.Struct("<f")
_F64 = struct.Struct("<d")


class Buffer(Protocol):
    """What the reader needs of a buffer: ``bytes`` and ``mmap.mmap`` both qualify."""

    def __getitem__(self, index: int, /) -> int: ...

    def __len__(self) -> int: ...


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


def read_varint(buf: Buffer, pos: int, end: int) -> tuple[int, int]:
    """The unsigned varint at ``pos`` (at most 10 bytes, below 2**64) and the position after it."""
    result = 0
    shift = 0
    start = pos
    while True:
        if pos >= end:
            raise TruncatedFile("a varint runs past the end of its message", where=f"offset {start}")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            break
        shift += 7
        if shift >= 7 * MAX_VARINT_BYTES:
            raise MalformedFile("a varint is longer than 10 bytes", where=f"offset {start}")
    if result >> 64:
        raise MalformedFile("a varint overflows 64 bits", where=f"offset {start}")
    return result, pos


def fields(buf: Buffer, start: int, end: int) -> Iterator[Field]:
    """Every field of the message in ``buf[start:end]``, in file order; payloads are not copied."""
    pos = start
    while pos < end:
        tag_offset = pos
        tag, pos = read_varint(buf, pos, end)
        number, wire_type = tag >> 3, tag & 7
        if number == 0 or number > MAX_FIELD_NUMBER:
            raise MalformedFile(f"invalid protobuf field number {number}", where=f"offset {tag_offset}")
        if wire_type == VARINT:
            value, after = read_varint(buf, pos, end)
            yield Field(number, wire_type, value, pos, tag_offset, after)
            pos = after
        elif wire_type == LEN:
            length, pos = read_varint(buf, pos, end)
            if length > end - pos:
                raise TruncatedFile(
                    f"field {number} declares {length:,} bytes but its message has {end - pos:,} left",
                    where=f"offset {tag_offset}",
                )
            yield Field(number, wire_type, length, pos, tag_offset, pos + length)
            pos += length
        elif wire_type in (FIXED64, FIXED32):
            width = 8 if wire_type == FIXED64 else 4
            if width > end - pos:
                raise TruncatedFile(f"field {number} runs past the end of its message", where=f"offset {tag_offset}")
            value = int.from_bytes(_slice(buf, pos, width), "little")
            yield Field(number, wire_type, value, pos, tag_offset, pos + width)
            pos += width
        else:
            what = "group" if wire_type in (START_GROUP, END_GROUP) else f"wire type {wire_type}"
            raise MalformedFile(f"field {number} uses a protobuf {what}, which this format never does",
                                where=f"offset {tag_offset}")  # fmt: skip


def _slice(buf: Buffer, pos: int, length: int) -> bytes:
    return buf[pos : pos + length]  # type: ignore[index,return-value]


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


def payload(buf: Buffer, field: Field, limit: int | None = None) -> bytes:
    """The bytes of a ``LEN`` field (at most ``limit`` of them): only for small values."""
    length = field.value if limit is None else min(field.value, limit)
    return _slice(buf, field.offset, length)


def text(buf: Buffer, field: Field, what: str, limit: int | None = None) -> str:
    """A ``string`` field as text; undecodable bytes are replaced, a ``limit`` truncates."""
    expect(field, LEN, what)
    raw = payload(buf, field, limit)
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


def count_varints(buf: Buffer, start: int, end: int) -> int:
    """How many varints a packed payload holds, without decoding them (bytes below 0x80 end one)."""
    count = 0
    pos = start
    while pos < end:
        chunk = _slice(buf, pos, min(COUNT_CHUNK, end - pos))
        count += len(chunk.translate(None, _HIGH_BYTES))
        pos += len(chunk)
    if end > start and buf[end - 1] >= 0x80:
        raise TruncatedFile("a packed varint runs past the end of its field", where=f"offset {end - 1}")
    return count


def varints(buf: Buffer, start: int, end: int, limit: int, what: str) -> list[int]:
    """The varints of a packed payload, refusing more than ``limit`` of them before decoding."""
    count = count_varints(buf, start, end)
    if count > limit:
        raise LimitExceeded(f"{what} holds {count:,} values; at most {limit:,} are accepted", where=f"offset {start}")
    values = []
    pos = start
    while pos < end:
        value, pos = read_varint(buf, pos, end)
        values.append(value)
    return values


def repeated_varints(buf: Buffer, field: Field, limit: int, what: str) -> list[int]:
    """A repeated varint field occurrence: packed (``LEN``) or a single unpacked value."""
    if field.wire_type == LEN:
        return varints(buf, field.offset, field.end, limit, what)
    return [scalar(field, what)]
