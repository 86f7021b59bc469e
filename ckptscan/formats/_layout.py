"""Helpers for readers whose tensors live in separate data files (ONNX external data, TF shards).

``gap_regions``: the bytes of a data file that no tensor covers. The file's tensors are sorted by
offset and every gap becomes a region: ``PADDING`` when it is shorter than the alignment of the
offset that ends it (a writer bumped the next tensor to a boundary), else ``UNREFERENCED``; bytes
after the last tensor are unreferenced.

``classified``: a tensor again, with the section and attributes found after a first pass (slots,
consumers); cheaper than ``dataclasses.replace`` for checkpoints with many thousand tensors.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ckptscan.inventory import Region, RegionKind, Tensor


def gap_regions(
    file: str, size: int, tensors: Iterable[Tensor], *, max_alignment: int, warnings: list[str]
) -> list[Region]:
    """Regions for the bytes of ``file`` (``size`` long) between and after its tensors.

    Tensors that overlap are reported in ``warnings``; their bytes are not counted twice.
    """
    spans = sorted((t.offset, t.offset + t.nbytes) for t in tensors if t.file == file and t.offset is not None)
    regions = []
    position = 0
    for begin, end in spans:
        if begin > position:
            regions.append(_gap(file, position, begin, max_alignment))
        elif begin < position and end > begin:
            warnings.append(f"tensors overlap in {file} at byte {begin:,}")
        position = max(position, end)
    if size > position:
        regions.append(Region(file, RegionKind.UNREFERENCED, position, size - position, "after the last tensor"))
    return regions


def _gap(file: str, begin: int, end: int, max_alignment: int) -> Region:
    alignment = min(end & -end, max_alignment)
    if end - begin < alignment:
        return Region(file, RegionKind.PADDING, begin, end - begin, "alignment before a tensor")
    return Region(file, RegionKind.UNREFERENCED, begin, end - begin, "between tensors")


def classified(t: Tensor, section: str, attrs: Mapping[str, Any]) -> Tensor:
    return Tensor(t.name, t.shape, t.dtype, t.elements, t.nbytes, t.file, t.offset, t.storage, t.storage_offset,
                  t.strides, section, t.native_dtype, t.encoding, attrs)  # fmt: skip
