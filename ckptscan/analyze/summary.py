"""Totals and per-dtype breakdowns of an inventory.

Two ways of counting, both reported: every tensor entry (what a naive sum over the file's names
gives), and unique views: entries that view the same bytes the same way (same storage, offset,
dtype, shape and strides, e.g. a tied embedding saved under two names) count once. ``stored_bytes``
is what the tensor data physically occupies: each storage once, whole, plus every tensor that owns
its bytes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ckptscan.inventory import Inventory, Tensor


@dataclass(frozen=True, slots=True)
class Count:
    """Tensors, elements and bytes of some tensor entries; ``add`` gives a new count."""

    tensors: int = 0
    elements: int = 0
    bytes: int = 0

    def add(self, tensor: Tensor) -> Count:
        return Count(self.tensors + 1, self.elements + tensor.elements, self.bytes + tensor.nbytes)


@dataclass(frozen=True, slots=True)
class Totals:
    """An inventory's totals: every entry, each distinct view once, and the bytes actually stored."""

    every: Count  # every tensor entry
    unique: Count  # each distinct view once
    stored_bytes: int  # storages once, whole, plus tensors that own their bytes


def view_key(tensor: Tensor) -> tuple[object, ...]:
    """Identity of the bytes a tensor shows; entries with the same key are one tensor saved twice."""
    if tensor.storage is None:
        return (
            ("own", tensor.file, tensor.offset, tensor.name)
            if tensor.offset is None
            else ("at", tensor.file, tensor.offset, tensor.dtype.name, tensor.shape, tensor.strides)
        )
    return ("storage", tensor.storage, tensor.storage_offset, tensor.dtype.name, tensor.shape, tensor.strides)


def unique_views(tensors: Iterable[Tensor]) -> list[Tensor]:
    """The first tensor of each distinct view, in order."""
    seen: set[tuple[object, ...]] = set()
    unique = []
    for t in tensors:
        key = view_key(t)
        if key not in seen:
            seen.add(key)
            unique.append(t)
    return unique


def count(tensors: Iterable[Tensor]) -> Count:
    total = Count()
    for t in tensors:
        total = total.add(t)
    return total


def totals(inventory: Inventory) -> Totals:
    every = count(inventory.tensors)
    unique = count(unique_views(inventory.tensors))
    storage_bytes = sum(s.nbytes for s in inventory.storages)
    own = count(unique_views(t for t in inventory.tensors if t.storage is None)).bytes
    return Totals(every, unique, storage_bytes + own)


def by_dtype(tensors: Iterable[Tensor]) -> dict[str, Count]:
    """Every tensor entry grouped by canonical dtype name, largest bytes first."""
    groups: dict[str, Count] = {}
    for t in tensors:
        groups[t.dtype.name] = groups.get(t.dtype.name, Count()).add(t)
    return dict(sorted(groups.items(), key=lambda item: (-item[1].bytes, item[0])))


def largest(tensors: Iterable[Tensor], n: int = 10) -> list[Tensor]:
    return sorted(tensors, key=lambda t: (-t.nbytes, t.name))[:n]
