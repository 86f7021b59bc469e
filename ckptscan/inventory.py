"""The common model every reader produces: what a checkpoint holds and where its bytes are.

All records are frozen, slotted dataclasses; every size, count and offset is a Python ``int`` so
that nothing overflows or rounds. A reader builds one :class:`Inventory` per model (a single file,
or several files that form one model, such as safetensors shards or ONNX external data), and
everything downstream (analysis, reports, audits) works from it alone, never from the file.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from ckptscan.dtypes import DType

_EMPTY: Mapping[str, Any] = MappingProxyType({})


def _empty() -> Mapping[str, Any]:
    return _EMPTY


class Severity(str, enum.Enum):
    """How much a finding matters; ordered, so ``--fail-on`` can compare."""

    INFO = "info"
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return _SEVERITY_RANK[self]


_SEVERITY_RANK = {s: i for i, s in enumerate(Severity)}


class RegionKind(str, enum.Enum):
    """What a non-tensor stretch of a file is for; tensor data is described by the tensors."""

    HEADER = "header"  # magic numbers, length prefixes, fixed headers
    METADATA = "metadata"  # key/value metadata, configs, JSON headers
    INDEX = "index"  # tensor directories (names, shapes, offsets)
    PADDING = "padding"  # alignment and filler bytes
    PICKLE = "pickle"  # serialized Python object trees
    FRAMING = "framing"  # container structure: zip local headers, central directory
    GRAPH = "graph"  # model structure (ONNX nodes, Keras config)
    CODE = "code"  # serialized code (TorchScript, Keras Lambda)
    OTHER = "other"  # known content that is neither of the above
    UNREFERENCED = "unreferenced"  # bytes nothing in the format points at


@dataclass(frozen=True, slots=True)
class Tensor:
    """One tensor entry of a checkpoint.

    ``nbytes`` is what this entry's values occupy (elements x dtype width, exact); two entries that
    view one shared storage both count their own bytes here, and share ``storage``.
    ``offset`` is the absolute position of the first byte in ``file`` (relative to the inventory's
    ``root``), or None when the bytes are not directly addressable (compressed, chunked).
    ``strides`` (in elements) is None for C-contiguous data.
    """

    name: str
    shape: tuple[int, ...]
    dtype: DType
    elements: int
    nbytes: int
    file: str
    offset: int | None
    storage: str | None = None
    storage_offset: int = 0
    strides: tuple[int, ...] | None = None
    section: str = ""  # where in the checkpoint it sits: "initializer", "optimizer_weights", ...
    native_dtype: str = ""  # the format's own name for the dtype
    encoding: str = "raw"  # "raw": little-endian values at ``offset``; readers name anything else
    attrs: Mapping[str, Any] = field(default_factory=_empty)


@dataclass(frozen=True, slots=True)
class Storage:
    """A block of bytes that several tensors may view (PyTorch storages)."""

    key: str  # unique within the inventory
    file: str
    offset: int | None
    nbytes: int
    dtype: DType
    encoding: str = "raw"
    attrs: Mapping[str, Any] = field(default_factory=_empty)


@dataclass(frozen=True, slots=True)
class Region:
    """A stretch of a file that is not tensor data, for the overhead accounting."""

    file: str
    kind: RegionKind
    offset: int
    nbytes: int
    label: str = ""


@dataclass(frozen=True, slots=True)
class Finding:
    """Something a user should know about a checkpoint: a risk, a defect, an oddity."""

    code: str  # stable identifier, e.g. "unsafe-global", "lfs-pointer", "missing-shard"
    severity: Severity
    message: str
    where: str = ""
    subject: str = ""  # what it is about, short (a global's dotted name, a shard): lets reports group findings


@dataclass(frozen=True, slots=True)
class FileRef:
    """A file that is part of the model, with its size on disk (0 when missing)."""

    path: str  # relative to the inventory's root
    size: int
    role: str = "weights"  # "weights", "index", "external-data", "lfs-pointer", "missing", ...


@dataclass(frozen=True, slots=True)
class Inventory:
    """What a reader found in one model: files, tensors, storages, regions, metadata, findings."""

    format: str
    path: str  # what was opened: a file, or an index file for a multi-file model
    root: str  # the model's folder; every FileRef / Tensor.file path is relative to it
    files: tuple[FileRef, ...]
    tensors: tuple[Tensor, ...]
    storages: tuple[Storage, ...] = ()
    regions: tuple[Region, ...] = ()
    metadata: Mapping[str, Any] = field(default_factory=_empty)
    warnings: tuple[str, ...] = ()
    findings: tuple[Finding, ...] = ()
    complete: bool = True  # False when parts of the model are missing (shards, LFS pointers)
    # small JSON files found beside the model (config.json, trainer_state.json...), parsed
    sidecars: Mapping[str, Any] = field(default_factory=_empty)

    @property
    def file_bytes(self) -> int:
        return sum(f.size for f in self.files)


def combine(
    parts: list[Inventory],
    *,
    format: str,
    path: str,
    root: str,
    files: tuple[FileRef, ...] = (),
    regions: tuple[Region, ...] = (),
    metadata: Mapping[str, Any] | None = None,
    warnings: tuple[str, ...] = (),
    findings: tuple[Finding, ...] = (),
    complete: bool = True,
) -> Inventory:
    """One inventory for a model made of several files (shards, trainer folders).

    ``files``/``regions``/... are the composite's own (an index file, say); the parts' are appended.
    All parts must share ``root`` so that their file paths stay comparable.
    """
    return Inventory(
        format=format,
        path=path,
        root=root,
        files=files + tuple(f for p in parts for f in p.files),
        tensors=tuple(t for p in parts for t in p.tensors),
        storages=tuple(s for p in parts for s in p.storages),
        regions=regions + tuple(r for p in parts for r in p.regions),
        metadata=metadata if metadata is not None else {},
        warnings=warnings + tuple(w for p in parts for w in p.warnings),
        findings=findings + tuple(f for p in parts for f in p.findings),
        complete=complete and all(p.complete for p in parts),
    )
