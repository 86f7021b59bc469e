"""Shared-storage accounting over an inventory: unique bytes, views, and dead bytes.

Pure functions of an :class:`~ckptscan.inventory.Inventory` (no file access), for the reader's
metadata summary and for the analyzer. A view covers the byte extent from its first to its last
element (for a strided view, the gaps inside that extent count as covered); bytes of a storage
that no view covers are *dead*: saved, loaded and never used (e.g. ``torch.save(t[:10])`` writes
the whole storage of ``t``).
"""

from __future__ import annotations

from dataclasses import dataclass

from ckptscan.inventory import Inventory, Tensor


@dataclass(frozen=True, slots=True)
class StorageUse:
    key: str
    nbytes: int
    covered: int  # bytes inside at least one view's extent
    views: int  # tensor entries that view it

    @property
    def dead(self) -> int:
        return self.nbytes - self.covered


@dataclass(frozen=True, slots=True)
class SharingSummary:
    storages: int
    storage_bytes: int
    dead_bytes: int
    shared_storages: int  # storages viewed by more than one tensor entry
    tensor_entries: int
    tensor_bytes: int  # every entry counted (views of one storage counted each time)
    unique_views: int  # distinct (storage, offset, shape, strides)
    unique_view_elements: int


def view_extent(tensor: Tensor) -> tuple[int, int]:
    """[start, end) in bytes of ``tensor`` inside its storage."""
    start = tensor.storage_offset
    if tensor.elements == 0:
        return start, start
    if tensor.strides is None:
        return start, start + tensor.nbytes
    span = 1 + sum((dim - 1) * stride for dim, stride in zip(tensor.shape, tensor.strides, strict=False))
    itemsize = max(1, tensor.nbytes // tensor.elements) if tensor.elements else 1
    return start, start + span * itemsize


def storage_use(inventory: Inventory) -> list[StorageUse]:
    spans: dict[str, list[tuple[int, int]]] = {s.key: [] for s in inventory.storages}
    for t in inventory.tensors:
        if t.storage is not None and t.storage in spans:
            spans[t.storage].append(view_extent(t))
    uses = []
    for s in inventory.storages:
        covered, position = 0, 0
        for start, end in sorted(spans[s.key]):
            start, end = max(start, position), min(end, s.nbytes)
            if end > start:
                covered += end - start
                position = end
        uses.append(StorageUse(s.key, s.nbytes, covered, len(spans[s.key])))
    return uses


def dead_bytes(inventory: Inventory) -> int:
    return sum(u.dead for u in storage_use(inventory))


def sharing_summary(inventory: Inventory) -> SharingSummary:
    uses = storage_use(inventory)
    views: dict[tuple[object, ...], int] = {}
    for t in inventory.tensors:
        if t.storage is not None:
            views.setdefault((t.storage, t.storage_offset, t.shape, t.strides, t.dtype.name), t.elements)
    return SharingSummary(
        storages=len(uses),
        storage_bytes=sum(u.nbytes for u in uses),
        dead_bytes=sum(u.dead for u in uses),
        shared_storages=sum(1 for u in uses if u.views > 1),
        tensor_entries=len(inventory.tensors),
        tensor_bytes=sum(t.nbytes for t in inventory.tensors),
        unique_views=len(views),
        unique_view_elements=sum(views.values()),
    )
