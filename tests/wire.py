"""Protocol Buffers wire-format encoding for building hostile inputs inside tests."""

from __future__ import annotations

VARINT, LEN, FIXED32 = 0, 2, 5


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def tag(number: int, wire_type: int) -> bytes:
    return varint(number << 3 | wire_type)


def int_field(number: int, value: int) -> bytes:
    return tag(number, VARINT) + varint(value & ((1 << 64) - 1))


def len_field(number: int, payload: bytes) -> bytes:
    return tag(number, LEN) + varint(len(payload)) + payload
