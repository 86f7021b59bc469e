"""Test helpers: protobuf wire-format encoding for building hostile inputs, and byte accounting."""

from __future__ import annotations

from pathlib import Path

from ckptscan.inventory import Inventory

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


def assert_accounted(inventory: Inventory) -> None:
    """Regions + in-place tensor bytes tile every file of the inventory exactly (no gap, no overlap)."""
    for ref in inventory.files:
        if ref.role == "missing":
            continue
        spans = sorted(
            [(r.offset, r.offset + r.nbytes) for r in inventory.regions if r.file == ref.path]
            + [
                (t.offset, t.offset + t.nbytes)
                for t in inventory.tensors
                if t.file == ref.path and t.offset is not None
            ]
        )
        position = 0
        for begin, end in spans:
            assert begin == position, f"{ref.path}: gap or overlap at {position}..{begin}"
            position = end
        assert position == ref.size == (Path(inventory.root) / ref.path).stat().st_size
