"""Cutting each tensor into bounded, independent pieces of work.

A tensor is read as *rows* (the first dimension; 1-D and 0-D tensors are one row), because the
per-row int8 error and the relative near-zero counts need a row's absolute maximum. Work is split:

* **tasks** of ``TASK_BYTES`` (a fixed grid over the tensor's bytes, the same grid as the content
  hash's leaves): task k owns the rows that *start* in its bytes; it also reads the tail of the row
  that started before it (for the hash only) and the end of its last row (for the statistics only),
  so every row is computed once and every byte hashed once, whatever the number of workers;
* **blocks** of about ``BLOCK_ELEMENTS`` decoded values (whole rows), the unit the kernel and the
  buffers are sized for, so memory never depends on the tensor's size.

Rows longer than ``MAX_ROW_ELEMENTS`` are read as group-aligned *pieces* instead, after a first
sweep that measures each row's absolute maximum. A weight whose output channels are its last
dimension (Keras kernels ``[in, out]``, ONNX ``MatMul`` weights) is read as rows of inputs, in units
of 128 rows (the int4 groups run down its columns), after a first sweep that measures each output
channel's absolute maximum. Streams that cannot seek (compressed data) are one
task. Sampling replaces the grid by evenly spaced windows of whole rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ckptscan.analyze.layout import channels_last
from ckptscan.errors import CkptscanError
from ckptscan.inventory import Inventory, Tensor
from ckptscan.stats.decode import Decoder, NoDecoder, decoder_for
from ckptscan.stats.kernel import INT4_GROUP, TWO_FOUR_GROUP, Features

TASK_BYTES = 16 << 20  # also the content hash's leaf size: never change without a new hash version
BLOCK_ELEMENTS = 1 << 18
MAX_ROW_ELEMENTS = 1 << 20
PIECE_ELEMENTS = 1 << 18  # a multiple of every block size, of INT4_GROUP and of 4
SAMPLE_WHOLE_BYTES = 4 << 20  # tensors this small are read whole even when sampling
MAX_REPEATED_BYTES = 64 << 20  # views and fill-value datasets beyond this that mostly repeat are skipped
REPEAT_FACTOR = 16


@dataclass(frozen=True, slots=True)
class Block:
    """A byte range of one tensor that a task reads: whole rows, or a piece of one long row."""

    start: int  # byte range of the tensor's canonical bytes
    stop: int
    rows: int  # whole rows in the block (1 for a piece)
    row: int | None = None  # the row a piece belongs to; None for whole rows


@dataclass(frozen=True, slots=True)
class Task:
    """One unit of work for a stats worker: blocks of one tensor, and the bytes it hashes."""

    plan: int  # index into the plans
    kind: str  # "stats", or "absmax" (first sweep over long rows)
    blocks: tuple[Block, ...]
    hash_range: tuple[int, int] | None = None  # bytes this task hashes, leaf-aligned at the start

    @property
    def read_bytes(self) -> int:
        total = sum(b.stop - b.start for b in self.blocks)
        if self.hash_range is not None:
            start, stop = self.hash_range
            first = min(self.blocks[0].start, stop) if self.blocks else stop
            total += max(0, first - start)
        return total


@dataclass(slots=True)
class TensorPlan:
    """How one tensor is read: its decoder (or why it is skipped), its rows and what is measured."""

    index: int
    tensor: Tensor
    decoder: Decoder | None = None
    skipped: str | None = None
    shape: tuple[int, ...] = ()
    nbytes: int = 0
    rows: int = 1
    row_elements: int = 0
    long_rows: bool = False
    unit_rows: int = 1  # rows a task or block never splits (int4 groups of a channels-last weight)
    features: Features = field(default_factory=lambda: Features(False, False, False, False, False))
    hashed: bool = False
    sampled: bool = False
    random_access: bool = True
    notes: dict[str, str] = field(default_factory=dict)

    @property
    def sweep(self) -> bool:
        """A first pass measures row maxima (long rows) or output-channel maxima (channels-last)."""
        features = self.features
        return (self.long_rows or features.channels_last) and (features.int8 or features.relative)

    @property
    def row_bytes(self) -> int:
        assert self.decoder is not None
        return self.decoder.bytes_for(self.row_elements)


def plan_tensor(inventory: Inventory, index: int, sample: float | None) -> TensorPlan:
    from ckptscan.data import open_tensor

    tensor = inventory.tensors[index]
    plan = TensorPlan(index, tensor)
    try:
        plan.decoder = decoder_for(tensor.dtype, tensor.attrs)
    except NoDecoder as e:
        plan.skipped = str(e)
        return plan
    if tensor.elements % plan.decoder.granule_elements and plan.decoder.granule_bytes != 1:
        plan.skipped = f"{tensor.elements} values are not whole {tensor.dtype.name} blocks"
        return plan
    blown_up = _expansion(inventory, tensor)
    if blown_up is not None:
        plan.skipped = blown_up
        return plan
    try:
        stream = open_tensor(inventory, tensor)
    except CkptscanError as e:
        plan.skipped = e.what if not e.path else str(e)
        return plan
    try:
        plan.shape = stream.shape
        plan.random_access = stream.random_access
        logical = stream.logical_order
    finally:
        stream.close()
    plan.nbytes = plan.decoder.bytes_for(tensor.elements)  # sub-byte values: the last byte may be part-filled
    _layout(plan, logical, sample)
    return plan


def _expansion(inventory: Inventory, tensor: Tensor) -> str | None:
    """Why a tensor whose values would be mostly repetition is not read, or None.

    A view may repeat its storage (stride 0) and a never-written HDF5 dataset is its fill value
    everywhere: a small file could otherwise claim terabytes of values to compute.
    """
    if tensor.encoding == "hdf5-unallocated" and tensor.nbytes > MAX_REPEATED_BYTES:
        return f"never written: every one of its {tensor.elements:,} values is the fill value (not expanded)"
    if tensor.storage is not None:
        stored = next((s.nbytes for s in inventory.storages if s.key == tensor.storage), 0)
        if tensor.nbytes > MAX_REPEATED_BYTES and tensor.nbytes > REPEAT_FACTOR * stored:
            return f"a view of {tensor.nbytes:,} bytes over a {stored:,}-byte storage repeats it (not expanded)"
    return None


def _layout(plan: TensorPlan, logical: bool, sample: float | None) -> None:
    decoder, tensor = plan.decoder, plan.tensor
    assert decoder is not None
    shape, elements = plan.shape, tensor.elements
    floating = decoder.numeric == "float"
    plan.sampled = sample is not None and plan.nbytes > SAMPLE_WHOLE_BYTES
    if floating and logical and len(shape) >= 2 and channels_last(tensor) and _channels_last_layout(plan):
        return
    rows = shape[0] if len(shape) >= 2 and logical else 1
    row_elements = elements // rows if rows else 0
    by_rows = len(shape) >= 2 and logical
    if by_rows and row_elements % decoder.granule_elements:
        rows, row_elements, by_rows = 1, elements, False
        plan.notes["int8"] = plan.notes["int4_g128"] = "rows do not end on a byte boundary"
    plan.rows, plan.row_elements = rows, row_elements
    plan.long_rows = row_elements > MAX_ROW_ELEMENTS
    sweep_ok = not (plan.long_rows and plan.sampled)  # a first sweep would read everything
    int8 = floating and by_rows and sweep_ok
    int4 = floating and by_rows  # groups of 128 along the row, the last one shorter when the row is
    plan.features = Features(
        floating=floating,
        int8=int8,
        int4=int4,
        relative=floating and logical and sweep_ok,
        two_four=floating and by_rows and shape[-1] % TWO_FOUR_GROUP == 0,
    )
    _common_notes(plan, logical)
    if not floating or len(shape) < 2:
        return
    if not sweep_ok:
        plan.notes.setdefault("int8", f"rows of {row_elements:,} values are not measured when sampling")
    if by_rows and row_elements % INT4_GROUP:
        plan.notes["int4_g128"] = f"rows of {row_elements:,} values: the last group of each row is shorter"


def _channels_last_layout(plan: TensorPlan) -> bool:
    """Rows of inputs, units of 128 rows for int4; False when the rows would not fit a block."""
    decoder, shape = plan.decoder, plan.shape
    assert decoder is not None
    out = shape[-1]
    rows = plan.tensor.elements // out if out else 0
    if not out or out % decoder.granule_elements or out * TWO_FOUR_GROUP > MAX_ROW_ELEMENTS:
        return False
    int4 = rows % INT4_GROUP == 0 and out * INT4_GROUP <= MAX_ROW_ELEMENTS
    plan.rows, plan.row_elements = rows, out
    plan.unit_rows = INT4_GROUP if int4 else TWO_FOUR_GROUP if rows % TWO_FOUR_GROUP == 0 else 1
    sweep_ok = not plan.sampled
    plan.features = Features(
        floating=True,
        int8=sweep_ok,
        int4=int4,
        relative=sweep_ok,
        two_four=rows % TWO_FOUR_GROUP == 0,
        channels_last=True,
    )
    _common_notes(plan, True)
    plan.notes["layout"] = f"output channels on the last dimension ({out:,}): scales per column"
    if not sweep_ok:
        plan.notes["int8"] = "channels-last weights are not measured for int8 when sampling"
    if not int4:
        plan.notes["int4_g128"] = (
            f"{rows:,} inputs are not a multiple of {INT4_GROUP}"
            if rows % INT4_GROUP
            else f"groups of {INT4_GROUP} inputs x {out:,} outputs exceed a block"
        )
    return True


def _common_notes(plan: TensorPlan, logical: bool) -> None:
    tensor, shape = plan.tensor, plan.shape
    plan.hashed = logical and not plan.sampled
    if not logical:
        plan.notes["order"] = "a view in transposed order: read in storage order; order-dependent values omitted"
        plan.notes.setdefault("hash", "view in transposed order")
    if plan.sampled:
        plan.notes["hash"] = "sampled"
    if not plan.features.floating:
        plan.notes.setdefault("int8", f"{tensor.dtype.name} is not a floating-point type")
        plan.notes.setdefault("int4_g128", plan.notes["int8"])
    elif len(shape) < 2:
        plan.notes.setdefault("int8", "fewer than 2 dimensions: no output channels")
        plan.notes.setdefault("int4_g128", plan.notes["int8"])


# -- tasks -----------------------------------------------------------------------------------------


def tasks_for(plan: TensorPlan, plan_number: int, sample: float | None) -> list[Task]:
    """The work for one tensor: a first sweep (long rows only), then the statistics."""
    if plan.decoder is None or plan.nbytes == 0:
        return []
    if plan.sampled:
        assert sample is not None
        return _sample_tasks(plan, plan_number, sample)
    sweep = plan.sweep
    if not plan.random_access:
        ranges = [(0, plan.nbytes)]
    else:
        ranges = [(a, min(a + TASK_BYTES, plan.nbytes)) for a in range(0, plan.nbytes, TASK_BYTES)]
    tasks = []
    for a, b in ranges:
        blocks = tuple(_blocks(plan, a, b))
        if sweep:
            tasks.append(Task(plan_number, "absmax", blocks))
        tasks.append(Task(plan_number, "stats", blocks, (a, b) if plan.hashed else None))
    return tasks


def _blocks(plan: TensorPlan, a: int, b: int) -> list[Block]:
    """Blocks of the rows (or pieces) that start in bytes [a, b)."""
    if plan.long_rows:
        return _pieces(plan, a, b)
    unit = plan.unit_rows  # rows are taken in units that a block never splits
    unit_bytes = plan.row_bytes * unit
    first = -(-a // unit_bytes) * unit
    stop = min(-(-b // unit_bytes) * unit, plan.rows)
    per_block = max(1, BLOCK_ELEMENTS // max(plan.row_elements * unit, 1)) * unit
    row_bytes = plan.row_bytes
    return [
        Block(r * row_bytes, min(r + per_block, stop) * row_bytes, min(r + per_block, stop) - r)
        for r in range(first, stop, per_block)
    ]


def _pieces(plan: TensorPlan, a: int, b: int) -> list[Block]:
    assert plan.decoder is not None
    row_bytes = plan.row_bytes
    piece_bytes = plan.decoder.elements_to_bytes(PIECE_ELEMENTS)
    out = []
    for row in range(a // row_bytes, min(-(-b // row_bytes), plan.rows)):
        base = row * row_bytes
        first = max(0, -(-(a - base) // piece_bytes))
        for j in range(first, -(-row_bytes // piece_bytes)):
            start = base + j * piece_bytes
            if start >= b:
                break
            out.append(Block(start, min(start + piece_bytes, base + row_bytes), 1, row))
    return out


def _sample_tasks(plan: TensorPlan, plan_number: int, fraction: float) -> list[Task]:
    """Evenly spaced windows of whole rows (or pieces of long rows) covering ``fraction``."""
    every = _blocks(plan, 0, plan.nbytes)
    if not every:
        return []
    average = plan.nbytes / len(every)
    wanted = min(len(every), max(1, math.ceil(fraction * plan.nbytes / average)))
    chosen = [every[(2 * i + 1) * len(every) // (2 * wanted)] for i in range(wanted)]
    if not plan.random_access:
        return [Task(plan_number, "stats", tuple(chosen))]
    return [Task(plan_number, "stats", (block,)) for block in chosen]
