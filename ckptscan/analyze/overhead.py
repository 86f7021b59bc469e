"""Where a checkpoint's bytes go: every byte of the files in exactly one category.

Categories (fixed names, docs/contracts.md):

=====================  =========================================================================
``inference_weights``  tensors the model needs to run: weights, biases, embeddings, heads, norms,
                       quantization data, and model tensors no rule recognized (``other``)
``buffers``            module buffers: BatchNorm statistics, rotary tables, masks
``optimizer_state``    optimizer moments, momentum, step counters
``ema_master``         EMA / shadow copies and fp32 master weights
``training_state``     scheduler, RNG, callbacks, counters, hyper-parameter tensors
``duplicates``         a second stored copy of a tensor (a tied head stored apart from its embedding)
``dead_storage``       storage bytes no tensor views (a saved slice keeps its whole storage) and
                       file bytes nothing in the format points at
``format_overhead``    headers, metadata, indexes, padding, pickle, zip framing, graphs
``unaccounted``        what the reader could not place (``exact`` is then false)
=====================  =========================================================================

Bytes are placed, not summed: each tensor (or the storage it views) covers a byte range of a file
(or of a storage), and where several tensors cover the same bytes (a tied embedding saved under two
names, hyper-parameters that reference a model buffer) the bytes go to the first category in the
order above. So the parts add up to the file size exactly when the reader described every byte.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ckptscan.analyze.parameters import Tie
from ckptscan.analyze.roles import Role, RoleDecision
from ckptscan.inventory import Inventory, RegionKind, Tensor

CATEGORIES = (
    "inference_weights",
    "buffers",
    "optimizer_state",
    "ema_master",
    "training_state",
    "duplicates",
    "dead_storage",
    "format_overhead",
    "unaccounted",
)
# Who claims bytes that several things cover, best first: tensor categories, then the reader's regions
# (a region that overlaps a tensor's bytes, such as an ONNX typed-field payload, yields to the tensor).
_TENSOR_ORDER = ("inference_weights", "buffers", "ema_master", "optimizer_state", "training_state", "duplicates",
                 "format_overhead")  # fmt: skip
_REGION_KINDS = tuple(k for k in RegionKind if k is not RegionKind.UNREFERENCED)
_ORDER = (*_TENSOR_ORDER, *(f"region:{k.value}" for k in _REGION_KINDS), "region:unreferenced")
_RANK = {name: i for i, name in enumerate(_ORDER)}
# rules whose tensors are the format's own bookkeeping (a TF checkpoint's object graph)
FORMAT_RULES = frozenset({"object-graph"})

CATEGORY_OF_ROLE = {
    Role.WEIGHT: "inference_weights",
    Role.BIAS: "inference_weights",
    Role.EMBEDDING: "inference_weights",
    Role.OUTPUT_HEAD: "inference_weights",
    Role.NORM: "inference_weights",
    Role.QUANTIZATION: "inference_weights",
    Role.OTHER: "inference_weights",
    Role.BUFFER: "buffers",
    Role.OPTIMIZER_STATE: "optimizer_state",
    Role.EMA: "ema_master",
    Role.MASTER_WEIGHT: "ema_master",
    Role.TRAINING_STATE: "training_state",
}
ABSENT_FILE_ROLES = frozenset({"missing", "unreadable"})
# a file that stores the same model again (model.safetensors beside pytorch_model.bin): see ckptscan.folders
DUPLICATE_FILE_ROLE = "duplicate-copy"
# Tensors without a position whose bytes the reader already counts inside a region (NumPy object
# arrays are the pickle region; HDF5 compact data sits in object headers; a .keras whose weights
# member is deflated is one region) or that have no bytes at all (meta tensors, unallocated datasets).
INSIDE_REGIONS = frozenset({"pickle", "hdf5-compact", "onnx-attribute", "onnx-typed-field"})
NO_BYTES = frozenset({"meta", "hdf5-unallocated"})


@dataclass(frozen=True, slots=True)
class Part:
    """What landed in one category of the split: bytes, and the tensors and elements behind them."""

    bytes: int = 0
    tensors: int = 0  # distinct views whose bytes landed here
    elements: int = 0


@dataclass(frozen=True, slots=True)
class Overhead:
    """Where a checkpoint's bytes go: each category's part, and the format overhead by region kind."""

    file_bytes: int
    parts: dict[str, Part]  # every category, in CATEGORIES order
    format_overhead: dict[str, int]  # region kind -> bytes
    exact: bool
    notes: tuple[str, ...]

    def bytes_of(self, category: str) -> int:
        return self.parts[category].bytes


def split(inventory: Inventory, decisions: Sequence[RoleDecision], ties: Sequence[Tie] = ()) -> Overhead:
    copies = {t.head for t in ties if t.stored == "copy"}
    category = [_category(t, d, copies) for t, d in zip(inventory.tensors, decisions, strict=True)]
    notes: list[str] = []
    present = {f.path for f in inventory.files if f.role not in ABSENT_FILE_ROLES}

    # byte ranges per space (a file, or a storage), each with the rank of what covers it
    spaces: dict[tuple[str, str], list[tuple[int, int, int]]] = defaultdict(list)
    first_view: dict[tuple[object, ...], int] = {}  # view -> index of the tensor whose category it takes
    unplaced: dict[str, int] = defaultdict(int)
    logical = 0  # tensors counted at their logical size: the split is then approximate
    inside = 0  # tensors whose bytes are inside a region
    strided = 0
    for i, t in enumerate(inventory.tensors):
        rank = _RANK[category[i]]
        key = _view(t)
        if key in first_view and _RANK[category[first_view[key]]] <= rank:
            continue
        first_view[key] = i
        if t.storage is not None:
            strided += t.strides is not None
            spaces[("storage", t.storage)].append((t.storage_offset, t.storage_offset + _extent(t), rank))
        elif t.file not in present:
            continue
        elif t.offset is not None:
            spaces[("file", t.file)].append((t.offset, t.offset + t.nbytes, rank))
        elif payload := _payload(t):
            spaces[("file", t.file)].extend((start, start + length, rank) for start, length in payload)
        else:
            stored, how = _unplaced_bytes(t)
            unplaced[category[i]] += stored
            inside += how == "inside"
            logical += how == "logical"
    for r in inventory.regions:
        if r.file in present:
            spaces[("file", r.file)].append((r.offset, r.offset + r.nbytes, _RANK[f"region:{r.kind.value}"]))

    claimed: dict[str, int] = defaultdict(int)
    for ranges in spaces.values():
        for rank, length in _claimed(ranges):
            claimed[_ORDER[rank]] += length
    totals: dict[str, int] = defaultdict(int)
    for name, nbytes in [*claimed.items(), *unplaced.items()]:
        totals[_CATEGORY_OF_RANK.get(name, name)] += nbytes
    format_kinds = {name.split(":", 1)[1]: n for name, n in claimed.items() if name.startswith("region:") and n}
    format_kinds.pop("unreferenced", None)

    storage_map = {s.key: s for s in inventory.storages}
    for s in inventory.storages:
        if s.file not in present:
            continue
        covered = sum(length for _, length in _claimed(spaces.get(("storage", s.key), [])))
        totals["dead_storage"] += max(0, s.nbytes - covered)
        if covered > s.nbytes:
            notes.append(f"views of storage {s.key} reach past its {s.nbytes:,} bytes")
    if any(t.storage is not None and t.storage not in storage_map for t in inventory.tensors):
        notes.append("some tensors name a storage the reader did not list; their bytes are counted by extent")

    # the same model stored again in another format or variant (ckptscan.folders): all of it a duplicate
    copies_of_model = [f for f in inventory.files if f.role == DUPLICATE_FILE_ROLE]
    if copies_of_model:
        totals["duplicates"] += sum(f.size for f in copies_of_model)
        notes.append(f"{', '.join(f.path for f in copies_of_model)}: the same model stored again, all duplicates")
    file_bytes = inventory.file_bytes
    totals["unaccounted"] = file_bytes - sum(totals.values())
    exact = totals["unaccounted"] == 0 and logical == 0 and inventory.complete
    if logical:
        notes.append(
            f"{logical:,} tensors have no position in the file (compressed or chunked): counted at their "
            "logical size, so the split is approximate"
        )
    if totals["unaccounted"] > 0:
        notes.append(f"{totals['unaccounted']:,} bytes the reader did not describe (format internals)")
    elif totals["unaccounted"] < 0:
        notes.append(
            f"the parts exceed the file size by {-totals['unaccounted']:,} bytes: tensors counted at their "
            "logical size are stored compressed"
        )
    if inside:
        notes.append(f"{inside:,} tensors are stored inside structures the format counts as overhead "
                     "(pickled object arrays, HDF5 compact data, ONNX attributes, "
                     "a deflated weights member)")  # fmt: skip
    if strided:
        notes.append(f"{strided:,} strided views are counted by the span of bytes they reach")
    if not inventory.complete:
        notes.append("the model is incomplete: only the files present are split")

    counts = _counts(inventory.tensors, category, first_view)
    parts = {name: Part(totals.get(name, 0), *counts.get(name, (0, 0))) for name in CATEGORIES}
    return Overhead(file_bytes, parts, format_kinds, exact, tuple(notes))


_CATEGORY_OF_RANK = {
    **{f"region:{k.value}": "format_overhead" for k in _REGION_KINDS},
    "region:unreferenced": "dead_storage",
}


def _category(t: Tensor, d: RoleDecision, copies: set[str]) -> str:
    if t.name in copies:
        return "duplicates"
    if d.rule in FORMAT_RULES:
        return "format_overhead"
    return CATEGORY_OF_ROLE[d.role]


def _payload(t: Tensor) -> list[tuple[int, int]]:
    """Byte ranges a reader lists for values stored in pieces (ONNX packed typed fields)."""
    raw = t.attrs.get("payload")
    if not isinstance(raw, (list, tuple)):
        return []
    ranges = []
    for item in raw:
        if not (isinstance(item, (list, tuple)) and len(item) == 2 and all(isinstance(v, int) for v in item)):
            return []
        ranges.append((item[0], item[1]))
    return ranges


def _unplaced_bytes(t: Tensor) -> tuple[int, str]:
    """File bytes of a tensor that has no position, and how known: "exact", "inside" a region, "logical"."""
    if t.encoding in NO_BYTES:
        return 0, "exact"
    if t.encoding in INSIDE_REGIONS or (t.encoding == "zip-deflated" and "image_offset" in t.attrs):
        return 0, "inside"
    stored = t.attrs.get("stored_bytes")  # what the file spends on it (HDF5 chunks, a deflated .npz member)
    if isinstance(stored, int) and not isinstance(stored, bool) and stored >= 0:
        return stored, "exact"
    return t.nbytes, "logical"


def _view(t: Tensor) -> tuple[object, ...]:
    if t.storage is not None:
        return ("storage", t.storage, t.storage_offset, _extent(t))
    return ("at", t.file, t.offset, t.nbytes) if t.offset is not None else ("own", t.file, t.name)


def _extent(t: Tensor) -> int:
    """Bytes from a view's first element to its last (its own size when contiguous)."""
    if t.strides is None or not t.shape or t.elements == 0 or not t.dtype.known:
        return t.nbytes
    if t.dtype.block_elements != 1:
        return t.nbytes
    last = sum((d - 1) * s for d, s in zip(t.shape, t.strides, strict=False) if d > 0)
    return max(t.nbytes, -(-(last + 1) * t.dtype.block_bits // 8))


def _claimed(ranges: Iterable[tuple[int, int, int]]) -> list[tuple[int, int]]:
    """(rank, length) of each stretch covered by the ranges, given to the best (lowest) rank covering it."""
    events: list[tuple[int, int, int]] = []
    for start, end, rank in ranges:
        if end > start:
            events.append((start, 1, rank))
            events.append((end, -1, rank))
    events.sort()
    active = [0] * len(_ORDER)
    out: list[tuple[int, int]] = []
    position = None
    for at, delta, rank in events:
        if position is not None and at > position:
            best = next((r for r, n in enumerate(active) if n), None)
            if best is not None:
                out.append((best, at - position))
        active[rank] += delta
        position = at
    return out


def _counts(
    tensors: Sequence[Tensor], category: Sequence[str], first_view: dict[tuple[object, ...], int]
) -> dict[str, tuple[int, int]]:
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for i in first_view.values():
        acc = counts[category[i]]
        acc[0] += 1
        acc[1] += tensors[i].elements
    return {k: (v[0], v[1]) for k, v in counts.items()}
