"""Comparing two tensors' values, streamed: ``ckptscan diff A B --stats``.

Both tensors are read through :mod:`ckptscan.data` and decoded by :mod:`ckptscan.stats.decode` in
pieces of :data:`CHUNK_ELEMENTS` values (rounded to whole granules of both dtypes, so a Q8_0 block
is never cut), widened to float64, and reduced to sums at once; memory stays a few pieces whatever
the tensors' size. B is compared against A (A is the reference):

    max_abs_diff   max |b - a|                                  over positions where both are finite
    rel_frobenius  ||b - a|| / ||a||                            (None when a is all zero)
    cosine         a.b / (||a|| ||b||)                          (None when either is all zero)
    sqnr_db        10 log10(||a||^2 / ||b - a||^2)              (None when b == a: infinite)
    changed        positions where b != a (NaN at the same position counts as equal)
    nonfinite_mismatch  positions where one side is NaN/Inf and the other is not the same

Tensors are compared as flat sequences in row-major order: when shapes differ but the element
counts agree the comparison still runs (``notes`` says so); different counts are skipped.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ckptscan.errors import CkptscanError, MissingDependency
from ckptscan.inventory import Inventory, Tensor

if TYPE_CHECKING:
    from ckptscan.data import TensorBytes
    from ckptscan.stats.decode import Decoder
    from ckptscan.stats.kernel import Workspace

CHUNK_ELEMENTS = 1 << 20

ProgressFn = Callable[[int, int], None]  # (pairs done, pairs in all)


@dataclass(frozen=True, slots=True)
class ValueDiff:
    """How the values of one matched pair of tensors differ (or why they were not compared)."""

    a: str  # tensor name in A
    b: str  # tensor name in B
    elements: int = 0
    identical: bool = False
    changed: int = 0
    nonfinite_mismatch: int = 0
    max_abs_diff: float | None = None
    rel_frobenius: float | None = None
    cosine: float | None = None
    sqnr_db: float | None = None
    note: str = ""
    skipped: str | None = None  # why the values were not compared
    bytes_read: int = 0


def _numpy() -> Any:
    try:
        import numpy as np
    except ImportError as e:
        raise MissingDependency("value comparison needs numpy (pip install 'ckptscan[stats]')") from e
    return np


def compare_pairs(
    inventory_a: Inventory,
    inventory_b: Inventory,
    pairs: Sequence[tuple[Tensor, Tensor]],
    progress: ProgressFn | None = None,
) -> list[ValueDiff]:
    """One :class:`ValueDiff` per pair, in order; a pair that cannot be read is skipped with the reason."""
    _numpy()
    from ckptscan.stats.kernel import Workspace

    ws_a, ws_b = Workspace(), Workspace()
    out = []
    for done, (a, b) in enumerate(pairs):
        out.append(compare_tensors(inventory_a, a, inventory_b, b, ws_a, ws_b))
        if progress is not None:
            progress(done + 1, len(pairs))
    return out


def compare_tensors(
    inventory_a: Inventory, a: Tensor, inventory_b: Inventory, b: Tensor, ws_a: Workspace, ws_b: Workspace
) -> ValueDiff:
    from ckptscan.data import open_tensor
    from ckptscan.stats.decode import NoDecoder, decoder_for

    if a.elements != b.elements:
        return ValueDiff(a.name, b.name, skipped=f"element counts differ ({a.elements:,} vs {b.elements:,})")
    try:
        dec_a, dec_b = decoder_for(a.dtype, a.attrs), decoder_for(b.dtype, b.attrs)
    except NoDecoder as e:
        return ValueDiff(a.name, b.name, skipped=str(e))
    note = "" if a.shape == b.shape else f"shapes differ ({list(a.shape)} vs {list(b.shape)}): compared in order"
    stream_a = stream_b = None
    try:
        stream_a = open_tensor(inventory_a, a)
        stream_b = open_tensor(inventory_b, b)
        if not (stream_a.logical_order and stream_b.logical_order):
            return ValueDiff(a.name, b.name, skipped="a transposed view: its values are not stored in order")
        return _compare(a, b, stream_a, stream_b, dec_a, dec_b, ws_a, ws_b, note)
    except CkptscanError as e:
        return ValueDiff(a.name, b.name, skipped=e.what)
    finally:
        for stream in (stream_a, stream_b):
            if stream is not None:
                stream.close()


def _compare(
    a: Tensor,
    b: Tensor,
    stream_a: TensorBytes,
    stream_b: TensorBytes,
    dec_a: Decoder,
    dec_b: Decoder,
    ws_a: Workspace,
    ws_b: Workspace,
    note: str,
) -> ValueDiff:
    np = _numpy()
    granule = math.lcm(dec_a.granule_elements, dec_b.granule_elements)
    chunk = max(granule, CHUNK_ELEMENTS // granule * granule)
    total = a.elements
    sum_aa = sum_bb = sum_ab = sum_dd = 0.0
    max_abs = 0.0
    changed = nonfinite = 0
    bytes_read = 0
    with np.errstate(all="ignore"):
        for first in range(0, total, chunk):
            count = min(chunk, total - first)
            xa = _read(stream_a, dec_a, ws_a, first, count)
            xb = _read(stream_b, dec_b, ws_b, first, count)
            bytes_read += dec_a.bytes_for(count) + dec_b.bytes_for(count)
            fa, fb = np.isfinite(xa), np.isfinite(xb)
            both = fa & fb
            if not both.all():
                same_special = (~fa & ~fb) & ((xa == xb) | (np.isnan(xa) & np.isnan(xb)))
                nonfinite += int(np.count_nonzero(~both & ~same_special))
                changed += int(np.count_nonzero(~both & ~same_special))
                xa, xb = xa[both], xb[both]
            d = xb - xa
            changed += int(np.count_nonzero(d))
            if d.size:
                max_abs = max(max_abs, float(np.max(np.abs(d))))
            sum_aa += float(np.dot(xa, xa))
            sum_bb += float(np.dot(xb, xb))
            sum_ab += float(np.dot(xa, xb))
            sum_dd += float(np.dot(d, d))
    identical = changed == 0
    return ValueDiff(
        a=a.name,
        b=b.name,
        elements=total,
        identical=identical,
        changed=changed,
        nonfinite_mismatch=nonfinite,
        max_abs_diff=max_abs,
        rel_frobenius=math.sqrt(sum_dd / sum_aa) if sum_aa > 0 else None,
        cosine=sum_ab / math.sqrt(sum_aa * sum_bb) if sum_aa > 0 and sum_bb > 0 else None,
        sqnr_db=10 * math.log10(sum_aa / sum_dd) if sum_dd > 0 and sum_aa > 0 else None,
        note=note,
        bytes_read=bytes_read,
    )


def _read(stream: TensorBytes, decoder: Decoder, ws: Workspace, first: int, count: int) -> Any:
    """Values ``first .. first + count`` as a float64 array of exactly ``count`` values."""
    np = _numpy()
    start = decoder.elements_to_bytes(first)
    raw = ws.raw_buffer(decoder.bytes_for(count))
    stream.read_into(start, raw)
    values = decoder.decode(raw, ws)[:count]
    out = ws.array("compare", count, np.dtype(np.float64))
    np.copyto(out, values, casting="unsafe")
    return out


def content_hashes(inventory: Inventory, tensors: Sequence[Tensor]) -> dict[str, str]:
    """The stats pass's content hash (:mod:`ckptscan.stats.hashing`) of some tensors, by name;
    tensors that cannot be read are left out."""
    from ckptscan.data import open_tensor
    from ckptscan.stats import plan as planning
    from ckptscan.stats.hashing import LeafHasher, content_hash

    found: dict[str, str] = {}
    piece = 8 << 20
    buffer = bytearray(min(piece, max((t.nbytes for t in tensors), default=0)))
    for t in tensors:
        try:
            stream = open_tensor(inventory, t)
        except CkptscanError:
            continue
        try:
            if not stream.logical_order:
                continue
            hasher = LeafHasher(0, stream.nbytes, planning.TASK_BYTES)
            for start in range(0, stream.nbytes, piece):
                view = memoryview(buffer)[: min(piece, stream.nbytes - start)]
                stream.read_into(start, view)
                hasher.feed(start, view)
            found[t.name] = content_hash(t.dtype.name, stream.nbytes, [leaf for _, leaf in hasher.finish()])
        except CkptscanError:
            continue
        finally:
            stream.close()
    return found
