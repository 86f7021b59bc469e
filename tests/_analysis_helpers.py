"""Hand-built inventories for the analyzer's unit tests (no file behind them)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ckptscan.dtypes import lookup
from ckptscan.inventory import FileRef, Inventory, Region, RegionKind, Storage, Tensor

FILE = "model.bin"


def tensor(
    name: str,
    shape: Sequence[int] = (4, 4),
    dtype: str = "F32",
    *,
    section: str = "",
    attrs: Mapping[str, Any] | None = None,
    offset: int | None = None,
    storage: str | None = None,
    storage_offset: int = 0,
    strides: Sequence[int] | None = None,
    file: str = FILE,
) -> Tensor:
    elements = 1
    for d in shape:
        elements *= d
    dt = lookup(dtype)
    return Tensor(
        name=name,
        shape=tuple(shape),
        dtype=dt,
        elements=elements,
        nbytes=dt.nbytes(elements),
        file=file,
        offset=offset,
        storage=storage,
        storage_offset=storage_offset,
        strides=tuple(strides) if strides is not None else None,
        section=section,
        attrs=dict(attrs or {}),
    )


def packed(tensors: Sequence[Tensor], *, header: int = 16, fmt: str = "test", **kwargs: Any) -> Inventory:
    """An inventory whose file is a header followed by the tensors back to back (exact accounting)."""
    placed = []
    position = header
    for t in tensors:
        placed.append(_with_offset(t, position))
        position += t.nbytes
    regions = (Region(FILE, RegionKind.HEADER, 0, header, "header"),) if header else ()
    return Inventory(
        format=fmt,
        path=FILE,
        root=".",
        files=(FileRef(FILE, position),),
        tensors=tuple(placed),
        regions=regions,
        **kwargs,
    )


def loose(tensors: Sequence[Tensor], *, fmt: str = "test", **kwargs: Any) -> Inventory:
    """An inventory of tensors as given (offsets, storages), with a file size of their sum."""
    size = sum(t.nbytes for t in tensors if t.storage is None) + sum(s.nbytes for s in kwargs.get("storages", ()))
    size += sum(r.nbytes for r in kwargs.get("regions", ()))
    return Inventory(format=fmt, path=FILE, root=".", files=(FileRef(FILE, size),), tensors=tuple(tensors), **kwargs)


def storage(key: str, nbytes: int, dtype: str = "F32", offset: int = 0) -> Storage:
    return Storage(key=key, file=FILE, offset=offset, nbytes=nbytes, dtype=lookup(dtype))


def _with_offset(t: Tensor, offset: int) -> Tensor:
    return Tensor(
        name=t.name,
        shape=t.shape,
        dtype=t.dtype,
        elements=t.elements,
        nbytes=t.nbytes,
        file=t.file,
        offset=offset,
        section=t.section,
        attrs=t.attrs,
    )
