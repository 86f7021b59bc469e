"""TensorFlow checkpoints (tensor bundles): ``<prefix>.index`` + ``<prefix>.data-NNNNN-of-NNNNN``.

Written by ``tf.train.Checkpoint`` (TF2, object-based keys) and ``tf.compat.v1.train.Saver`` (TF1,
variable names as keys); read here without TensorFlow.

The ``.index`` file is an SSTable in the LevelDB table format: data blocks of key/value entries
(keys prefix-compressed against the previous key, with a restart array at the end of each block),
an index block whose entries point at the data blocks, a metaindex block, and a 48-byte footer
(two block handles, padding, and the magic ``0xdb4775248b80fb57``). Every block is followed by a
5-byte trailer: a compression type (TensorFlow writes 0, none; snappy blocks are refused with a
clear error) and a CRC32C (not verified). The empty key holds a ``BundleHeaderProto``
(``num_shards``, ``endianness``, ``version``); every other key is a tensor name whose value is a
``BundleEntryProto``: ``dtype``, ``shape``, ``shard_id``, ``offset``, ``size``, ``crc32c`` and, for
partitioned (TF1) variables, ``slices``. The bytes live in shard ``shard_id``'s data file at
``offset``; the file is checked to hold them. A partitioned variable's own entry carries no bytes:
each slice is a separate entry whose key encodes the name and extents (TensorFlow's ``OrderedCode``);
slices are reported as tensors named ``name[start:end,...]``.

Optimizer state: a TF2 checkpoint carries ``_CHECKPOINTABLE_OBJECT_GRAPH``, a serialized
``TrackableObjectGraph`` (read from the data file, bounded): its slot-variable references give each
slot its variable (``attrs["slot"]``, ``attrs["slot_of"]``), as do the ``_momentums`` /
``_velocities``... lists of Keras 3 optimizers, matched by position with ``_trainable_variables``.
TF1 checkpoints name slots ``<variable>/<Optimizer>[_N]`` (``dense/kernel/Adam_1``), recognized
by name. ``Tensor.section`` is ``variable``, ``optimizer_slot``, ``optimizer`` (the optimizer's own
variables: iterations, learning rate, beta powers), ``training_state`` (``save_counter``,
``global_step``), ``object_attribute`` (other saved object attributes) or ``object_graph``.
"""

from __future__ import annotations

import math
import os
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ckptscan.dtypes import lookup
from ckptscan.errors import LimitExceeded, MalformedFile, TruncatedFile, UnsupportedFeature
from ckptscan.formats import _protobuf as pb
from ckptscan.formats._layout import classified, gap_regions
from ckptscan.inventory import FileRef, Finding, Inventory, Region, RegionKind, Severity, Tensor
from ckptscan.source import Head, Source

FORMAT = "tf-checkpoint"
TABLE_MAGIC = 0xDB4775248B80FB57
FOOTER_SIZE = 48
BLOCK_TRAILER_SIZE = 5
NO_COMPRESSION, SNAPPY = 0, 1
MAX_DIMS = 254  # TensorFlow's own limit on tensor rank
MAX_SHARDS = 100_000
MAX_OBJECT_GRAPH_BYTES = 64 << 20
MAX_DATA_ALIGNMENT = 1 << 16
# Prefix-compressed keys cost their full length when materialized, and an entry can add one byte
# to a key shared with the previous one: n entries of a few bytes would make n^2/2 key bytes. The
# keys of one index may total at most this many times the file's size (plus a constant).
MAX_KEY_BYTES_PER_FILE_BYTE = 64
MAX_KEY_BYTES_SLACK = 1 << 20
# the object-graph passes may do this many steps per reference in the graph (plus a constant);
# shared children would otherwise make them quadratic
GRAPH_WORK_PER_REFERENCE = 8
GRAPH_WORK_SLACK = 100_000
INDEX_SUFFIX = ".index"


# Protobuf field numbers (tensorflow/core/protobuf/tensor_bundle.proto, framework/tensor_shape.proto,
# framework/tensor_slice.proto, framework/versions.proto)
class _BundleHeader:
    NUM_SHARDS, ENDIANNESS, VERSION = 1, 2, 3


class _VersionDef:
    PRODUCER, MIN_CONSUMER, BAD_CONSUMERS = 1, 2, 3


class _BundleEntry:
    DTYPE, SHAPE, SHARD_ID, OFFSET, SIZE, CRC32C, SLICES = 1, 2, 3, 4, 5, 6, 7


class _TensorShape:
    DIM, UNKNOWN_RANK = 2, 3
    DIM_SIZE = 1  # TensorShapeProto.Dim.size


class _TensorSlice:
    EXTENT = 1
    EXTENT_START, EXTENT_LENGTH = 1, 2  # TensorSliceProto.Extent


class _ObjectGraph:  # protobuf/trackable_object_graph.proto
    NODES = 1  # TrackableObjectGraph.nodes
    CHILDREN, ATTRIBUTES, SLOT_VARIABLES = 1, 2, 3  # TrackableObject
    # ObjectReference (node_id, local_name), SerializedTensor (name, full_name, checkpoint_key),
    # SlotVariableReference (original_variable_node_id, slot_name, slot_variable_node_id): fields 1, 2, 3


OBJECT_GRAPH_KEY = "_CHECKPOINTABLE_OBJECT_GRAPH"
VARIABLE_VALUE = "VARIABLE_VALUE"

# tensorflow/core/framework/types.proto DataType -> (TensorFlow name, canonical name)
TF_DTYPES: dict[int, tuple[str, str]] = {
    1: ("DT_FLOAT", "F32"), 2: ("DT_DOUBLE", "F64"), 3: ("DT_INT32", "I32"), 4: ("DT_UINT8", "U8"),
    5: ("DT_INT16", "I16"), 6: ("DT_INT8", "I8"), 7: ("DT_STRING", "STRING"), 8: ("DT_COMPLEX64", "C64"),
    9: ("DT_INT64", "I64"), 10: ("DT_BOOL", "BOOL"), 11: ("DT_QINT8", "I8"), 12: ("DT_QUINT8", "U8"),
    13: ("DT_QINT32", "I32"), 14: ("DT_BFLOAT16", "BF16"), 15: ("DT_QINT16", "I16"), 16: ("DT_QUINT16", "U16"),
    17: ("DT_UINT16", "U16"), 18: ("DT_COMPLEX128", "C128"), 19: ("DT_HALF", "F16"),
    20: ("DT_RESOURCE", "DT_RESOURCE"), 21: ("DT_VARIANT", "DT_VARIANT"), 22: ("DT_UINT32", "U32"),
    23: ("DT_UINT64", "U64"), 24: ("DT_FLOAT8_E5M2", "F8_E5M2"), 25: ("DT_FLOAT8_E4M3FN", "F8_E4M3"),
    26: ("DT_FLOAT8_E4M3FNUZ", "F8_E4M3FNUZ"), 27: ("DT_FLOAT8_E4M3B11FNUZ", "F8_E4M3B11FNUZ"),
    28: ("DT_FLOAT8_E5M2FNUZ", "F8_E5M2FNUZ"), 29: ("DT_INT4", "I4"), 30: ("DT_UINT4", "U4"),
    31: ("DT_INT2", "I2"), 32: ("DT_UINT2", "U2"), 33: ("DT_FLOAT4_E2M1FN", "F4"),
}  # fmt: skip
DT_STRING = 7
_SUB_BYTE = {29, 30, 31, 32, 33}  # TensorFlow keeps these one value per byte

# TF1 slot variables are named <variable>/<optimizer name>[_N]; the slot each suffix stands for
TF1_SLOT_SUFFIXES = {
    "Adam": "m", "Adam_1": "v", "Momentum": "momentum", "RMSProp": "rms", "RMSProp_1": "momentum",
    "Adagrad": "accumulator", "Ftrl": "accum", "Ftrl_1": "linear", "Adadelta": "accum",
    "Adadelta_1": "accum_update", "AdagradDA": "gradient_accumulator", "AdagradDA_1": "gradient_squared_accumulator",
    "ProximalAdagrad": "accumulator", "Nadam": "m", "Nadam_1": "v",
}  # fmt: skip
TF1_OPTIMIZER_VARIABLES = ("beta1_power", "beta2_power")
TRAINING_STATE = ("save_counter/.ATTRIBUTES/VARIABLE_VALUE", "global_step")
_TF2_SLOT_MARK = "/.OPTIMIZER_SLOT/"
_TF2_VALUE_SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"
# Keras 3 optimizer children that list variables but are not slots
_KERAS_NOT_SLOTS = ("_variables", "_trainable_variables", "_trainable_variables_indices")


def sniff(head: Head) -> bool:
    """An SSTable (magic at the end) whose first entry has the empty key: the bundle header."""
    if head.size < FOOTER_SIZE or not head.data.startswith(b"\x00\x00"):
        return False
    return int.from_bytes(head.source.read_at(head.size - 8, 8), "little") == TABLE_MAGIC


def read(source: Source) -> Inventory:
    if source.size < FOOTER_SIZE:
        raise TruncatedFile(f"an SSTable needs at least {FOOTER_SIZE} bytes; the file has {source.size}")
    with source.mapped() as view:
        entries = _Table(view).entries()
        return _Bundle(source, view, entries).inventory()


# -- the SSTable ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Entry:
    key: bytes
    offset: int  # of the value in the index file
    length: int


class _Table:
    def __init__(self, buf: Any) -> None:
        self.buf = buf
        self.size = len(buf)
        self.footer = self.size - FOOTER_SIZE
        self.key_budget = MAX_KEY_BYTES_PER_FILE_BYTE * self.size + MAX_KEY_BYTES_SLACK

    def entries(self) -> list[_Entry]:
        if int.from_bytes(self.buf[self.size - 8 :], "little") != TABLE_MAGIC:
            raise MalformedFile("the SSTable magic is missing from the footer", where=f"offset {self.size - 8}")
        _, pos = self.handle(self.footer, "metaindex handle")
        (index_offset, index_size), _ = self.handle(pos, "index handle")
        found: list[_Entry] = []
        for separator in self.block(index_offset, index_size, "index block"):
            (offset, size), _ = self.handle(separator.offset, f"block handle of {separator.key!r}",
                                            separator.offset + separator.length)  # fmt: skip
            for entry in self.block(offset, size, "data block"):
                if found and entry.key <= found[-1].key:
                    raise MalformedFile(
                        f"SSTable keys out of order: {entry.key!r} after {found[-1].key!r}",
                        where=f"offset {entry.offset}",
                    )
                found.append(entry)
        return found

    def handle(self, pos: int, what: str, end: int | None = None) -> tuple[tuple[int, int], int]:
        """A BlockHandle (offset, size varints) at ``pos``, and the position after it."""
        limit = self.size - 8 if end is None else end
        offset, pos = pb.read_varint(self.buf, pos, limit)
        size, pos = pb.read_varint(self.buf, pos, limit)
        if offset + size + BLOCK_TRAILER_SIZE > self.footer:
            raise TruncatedFile(
                f"{what} points at bytes {offset:,}..{offset + size + BLOCK_TRAILER_SIZE:,}, past the blocks "
                f"(which end at {self.footer:,})",
                where=f"offset {pos}",
            )
        return (offset, size), pos

    def block(self, offset: int, size: int, what: str) -> list[_Entry]:
        compression = self.buf[offset + size]
        if compression == SNAPPY:
            raise UnsupportedFeature(f"the {what} at {offset:,} is snappy-compressed (TensorFlow never writes that)")
        if compression != NO_COMPRESSION:
            raise MalformedFile(f"the {what} at {offset:,} has unknown compression {compression}",
                                where=f"offset {offset + size}")  # fmt: skip
        end = offset + size
        if size < 4:
            raise MalformedFile(
                f"the {what} at {offset:,} is {size} bytes, too short for a block", where=f"offset {offset}"
            )
        restarts = int.from_bytes(self.buf[end - 4 : end], "little")
        entries_end = end - 4 - 4 * restarts
        if restarts == 0 or entries_end < offset:
            raise MalformedFile(
                f"the {what} at {offset:,} declares {restarts:,} restart points", where=f"offset {end - 4}"
            )
        found = []
        key = b""
        pos = offset
        while pos < entries_end:
            start = pos
            shared, pos = pb.read_varint(self.buf, pos, entries_end)
            unshared, pos = pb.read_varint(self.buf, pos, entries_end)
            value_length, pos = pb.read_varint(self.buf, pos, entries_end)
            if shared > len(key):
                raise MalformedFile(f"an SSTable entry shares {shared} bytes of a {len(key)}-byte key",
                                    where=f"offset {start}")  # fmt: skip
            if unshared + value_length > entries_end - pos:
                raise TruncatedFile("an SSTable entry runs past the end of its block", where=f"offset {start}")
            self.key_budget -= shared + unshared
            if self.key_budget < 0:
                raise LimitExceeded(
                    f"the SSTable keys total more than {MAX_KEY_BYTES_PER_FILE_BYTE} times the file's size "
                    "(prefix compression abused)",
                    where=f"offset {start}",
                )
            key = key[:shared] + self.buf[pos : pos + unshared]
            pos += unshared
            found.append(_Entry(key, pos, value_length))
            pos += value_length
        return found


# -- the bundle ----------------------------------------------------------------------------------------


@dataclass
class _Record:
    name: str
    key: str
    dtype_id: int
    shape: tuple[int, ...]
    shard: int
    offset: int
    size: int
    crc32c: int | None
    slices: list[list[int | None]]
    attrs: dict[str, Any] = field(default_factory=dict)
    section: str = "variable"
    slice_of: str | None = None


class _Bundle:
    def __init__(self, source: Source, buf: Any, entries: list[_Entry]) -> None:
        self.source = source
        self.buf = buf
        self.entries = entries
        self.warnings: list[str] = []
        self.findings: list[Finding] = []
        name = source.name
        if name.endswith(INDEX_SUFFIX):
            self.prefix = name[: -len(INDEX_SUFFIX)]
        else:
            self.prefix = name
            self.warnings.append(f"the index file's name does not end with {INDEX_SUFFIX}; data files are looked "
                                 f"for as {name}.data-*")  # fmt: skip

    def inventory(self) -> Inventory:
        if not self.entries or self.entries[0].key != b"":
            raise MalformedFile("the SSTable has no bundle header (the entry with the empty key)", where="offset 0")
        header = self.header(self.entries[0])
        num_shards = header["num_shards"]
        records = [self.record(entry, num_shards) for entry in self.entries[1:]]
        partitioned = {r.name: r for r in records if r.slices}
        records = [r for r in records if not r.slices]
        shards = self.shards(num_shards, records)
        tensors = [self.tensor(r, header["endianness"], shards) for r in records]
        object_graph = self.object_graph(records, shards)
        if object_graph is not None:
            _classify_from_graph(records, object_graph, self.warnings)
        _classify_by_name(records, set(partitioned))
        tensors = [classified(t, r.section, {**t.attrs, **r.attrs}) for t, r in zip(tensors, records, strict=True)]
        files = [FileRef(self.source.name, self.source.size, role="index")]
        regions = [
            Region(self.source.name, RegionKind.INDEX, 0, self.source.size - FOOTER_SIZE,
                   "SSTable blocks: tensor names, dtypes, shapes, offsets"),
            Region(self.source.name, RegionKind.HEADER, self.source.size - FOOTER_SIZE, FOOTER_SIZE, "SSTable footer"),
        ]  # fmt: skip
        for _, (file, size) in sorted(shards.items()):
            files.append(FileRef(file, size or 0, role="weights" if size is not None else "missing"))
            if size is not None:
                regions += gap_regions(file, size, tensors, max_alignment=MAX_DATA_ALIGNMENT, warnings=self.warnings)
        metadata: dict[str, Any] = {
            "tf_checkpoint": {
                **header,
                "prefix": self.prefix,
                "entries": len(self.entries) - 1,
                "object_graph": object_graph is not None,
            },
            "sections": dict(Counter(r.section for r in records)),
        }
        if object_graph is not None:
            metadata["tf_checkpoint"]["object_graph_nodes"] = len(object_graph)
        if partitioned:
            metadata["partitioned_variables"] = {
                name: {"shape": list(r.shape), "dtype": _dtype_names(r.dtype_id)[1], "slices": len(r.slices)}
                for name, r in partitioned.items()
            }
            self.check_partitions(partitioned, records)
        return Inventory(
            format=FORMAT,
            path=str(self.source.path),
            root=str(self.source.root),
            files=tuple(files),
            tensors=tuple(tensors),
            regions=tuple(regions),
            metadata=metadata,
            warnings=tuple(self.warnings),
            findings=tuple(self.findings),
            complete=all(size is not None for _, size in shards.values())
            and not any(f.code == "truncated-shard" for f in self.findings),
        )

    def header(self, entry: _Entry) -> dict[str, Any]:
        num_shards, endianness = 1, 0
        version: dict[str, Any] = {}
        for f in pb.fields(self.buf, entry.offset, entry.offset + entry.length):
            if f.number == _BundleHeader.NUM_SHARDS:
                num_shards = pb.as_int32(pb.scalar(f, "num_shards"))
            elif f.number == _BundleHeader.ENDIANNESS:
                endianness = pb.scalar(f, "endianness")
            elif f.number == _BundleHeader.VERSION:
                pb.expect(f, pb.LEN, "version")
                for g in pb.fields(self.buf, f.offset, f.end):
                    if g.number in (_VersionDef.PRODUCER, _VersionDef.MIN_CONSUMER):
                        key = "producer" if g.number == _VersionDef.PRODUCER else "min_consumer"
                        version[key] = pb.as_int32(pb.scalar(g, "version"))
                    elif g.number == _VersionDef.BAD_CONSUMERS:
                        bad = [pb.as_int32(v) for v in pb.repeated_varints(self.buf, g, 1024, "bad_consumers")]
                        version.setdefault("bad_consumers", []).extend(bad)
        if not 1 <= num_shards <= MAX_SHARDS:
            raise LimitExceeded(f"the bundle header declares {num_shards:,} shards", where="bundle header")
        if endianness not in (0, 1):
            raise MalformedFile(f"the bundle header declares endianness {endianness}", where="bundle header")
        return {"num_shards": num_shards, "endianness": "big" if endianness else "little", "version": version}

    def record(self, entry: _Entry, num_shards: int) -> _Record:
        if entry.key.startswith(b"\x00"):
            name, extents = _decode_slice_key(entry.key, entry.offset)
            shown = f"{name}[{','.join(_extent_text(start, length) for start, length in extents)}]"
            slice_of: str | None = name
        else:
            shown = entry.key.decode("utf-8", errors="replace")
            slice_of = None
        where = f"tensor {shown!r}"
        dtype_id, shard, offset, size = 0, 0, 0, 0
        crc: int | None = None
        shape: list[int] = []
        slices: list[list[int | None]] = []
        for f in pb.fields(self.buf, entry.offset, entry.offset + entry.length):
            n = f.number
            if n == _BundleEntry.DTYPE:
                dtype_id = pb.as_int32(pb.scalar(f, "dtype"))
            elif n == _BundleEntry.SHAPE:
                pb.expect(f, pb.LEN, "shape")
                shape = self.shape(f, shown)
            elif n == _BundleEntry.SHARD_ID:
                shard = pb.as_int32(pb.scalar(f, "shard_id"))
            elif n == _BundleEntry.OFFSET:
                offset = pb.as_int64(pb.scalar(f, "offset"))
            elif n == _BundleEntry.SIZE:
                size = pb.as_int64(pb.scalar(f, "size"))
            elif n == _BundleEntry.CRC32C:
                pb.expect(f, pb.FIXED32, "crc32c")
                crc = f.value
            elif n == _BundleEntry.SLICES:
                pb.expect(f, pb.LEN, "slices")
                slices.append(self.slice_proto(f))
        if offset < 0 or size < 0:
            raise MalformedFile(f"tensor {shown!r} has offset {offset} and size {size}", where=where)
        if not 0 <= shard < num_shards:
            raise MalformedFile(f"tensor {shown!r} is in shard {shard}, but the bundle has {num_shards}", where=where)
        record = _Record(shown, shown, dtype_id, tuple(shape), shard, offset, size, crc, slices)
        record.slice_of = slice_of
        if slice_of is not None:
            record.attrs["slice_of"] = slice_of
            record.attrs["slice"] = [list(e) for e in extents]
        return record

    def shape(self, f: pb.Field, name: str) -> list[int]:
        dims: list[int] = []
        for g in pb.fields(self.buf, f.offset, f.end):
            if g.number == _TensorShape.DIM:
                pb.expect(g, pb.LEN, "dim")
                if len(dims) >= MAX_DIMS:
                    raise LimitExceeded(
                        f"tensor {name!r} has more than {MAX_DIMS} dimensions", where=f"tensor {name!r}"
                    )
                size = 0
                for h in pb.fields(self.buf, g.offset, g.end):
                    if h.number == _TensorShape.DIM_SIZE:
                        size = pb.as_int64(pb.scalar(h, "dim size"))
                if size < 0:
                    raise MalformedFile(f"tensor {name!r} has an unknown dimension ({size})", where=f"tensor {name!r}")
                dims.append(size)
            elif g.number == _TensorShape.UNKNOWN_RANK and g.value:
                raise MalformedFile(f"tensor {name!r} has an unknown rank", where=f"tensor {name!r}")
        return dims

    def slice_proto(self, f: pb.Field) -> list[int | None]:
        """A TensorSliceProto as [start, length, start, length, ...] (length None: the whole dimension)."""
        extents: list[int | None] = []
        for g in pb.fields(self.buf, f.offset, f.end):
            if g.number != _TensorSlice.EXTENT:
                continue
            pb.expect(g, pb.LEN, "slice extent")
            start, length = 0, None
            for h in pb.fields(self.buf, g.offset, g.end):
                if h.number == _TensorSlice.EXTENT_START:
                    start = pb.as_int64(pb.scalar(h, "slice start"))
                elif h.number == _TensorSlice.EXTENT_LENGTH:
                    length = pb.as_int64(pb.scalar(h, "slice length"))
            extents.extend((start, length))
        return extents

    def _listing(self) -> set[str] | None:
        """The names in the folder of the data files (None: not listable, resolve each name)."""
        if self.source.is_remote:  # no folder listing over ranged reads: each name is resolved
            return None
        try:
            return set(os.listdir((self.source.root / self.prefix).parent))
        except (OSError, ValueError):
            return None

    def shards(self, num_shards: int, records: list[_Record]) -> dict[int, tuple[str, int | None]]:
        """Every data file the bundle declares: name and size (None when missing)."""
        found: dict[int, tuple[str, int | None]] = {}
        per_shard = Counter(r.shard for r in records)  # one pass, not one per missing shard
        listing = self._listing()
        for shard in range(num_shards):
            name = f"{self.prefix}.data-{shard:05d}-of-{num_shards:05d}"
            # a name not in the folder's listing is missing: no resolve (stat, realpath) per declared
            # shard, which made a 123-byte header declaring 100,000 shards cost seconds
            path = self.source.resolve(name) if listing is None or name.rsplit("/", 1)[-1] in listing else None
            if path is not None and path.is_file():
                with self.source.open_related(name) as data:
                    found[shard] = (name, data.size)
            else:
                found[shard] = (name, None)
                listed = per_shard[shard]
                self.findings.append(
                    Finding("missing-shard", Severity.HIGH, f"data file {name} is missing ({listed} tensors)", name)
                )
        return found

    def tensor(self, record: _Record, endianness: str, shards: dict[int, tuple[str, int | None]]) -> Tensor:
        native, canonical = _dtype_names(record.dtype_id)
        dtype = lookup(canonical)
        elements = math.prod(record.shape)
        where = f"tensor {record.name!r}"
        encoding = "raw" if endianness == "little" else "raw-big-endian"
        if record.dtype_id == DT_STRING:
            encoding = "tf-string"
        elif record.dtype_id in _SUB_BYTE:
            encoding = "raw-unpacked"  # one value per byte
            if record.size != elements:
                raise MalformedFile(f"tensor {record.name!r} is {native} {list(record.shape)} = {elements:,} bytes "
                                    f"but its entry says {record.size:,}", where=where)  # fmt: skip
        elif dtype.known:
            expected = dtype.nbytes(elements)
            if record.size != expected:
                raise MalformedFile(
                    f"tensor {record.name!r} is {native} {list(record.shape)} = {expected:,} bytes but its entry says "
                    f"{record.size:,}",
                    where=where,
                )
        else:
            encoding = native.lower().replace("dt_", "tf-")
            self.warnings.append(f"tensor {record.name!r}: {native} has no fixed width; size taken from its entry")
        file, size = shards[record.shard]
        if size is not None and record.offset + record.size > size:
            self.findings.append(
                Finding(
                    "truncated-shard",
                    Severity.HIGH,
                    f"tensor {record.name} needs bytes {record.offset:,}..{record.offset + record.size:,} of {file}, "
                    f"which has {size:,}",
                    record.name,
                )
            )
        attrs: dict[str, Any] = {"shard": record.shard}
        if record.crc32c is not None:
            attrs["crc32c"] = record.crc32c
        if encoding == "tf-string":
            attrs["string_layout"] = "varint64 lengths, masked crc32c of the lengths, then the bytes"
        return Tensor(
            name=record.name,
            shape=record.shape,
            dtype=dtype,
            elements=elements,
            nbytes=record.size,
            file=file,
            offset=record.offset,
            native_dtype=native,
            encoding=encoding,
            attrs=attrs,
        )

    def object_graph(self, records: list[_Record], shards: dict[int, tuple[str, int | None]]) -> list[_Node] | None:
        """The saved TrackableObjectGraph, read from its (small) string tensor, or None."""
        record = next((r for r in records if r.name == OBJECT_GRAPH_KEY), None)
        if record is None:
            return None
        record.section = "object_graph"
        file, size = shards[record.shard]
        if record.dtype_id != DT_STRING or record.shape != () or size is None:
            return None
        if record.size > MAX_OBJECT_GRAPH_BYTES:
            self.warnings.append(
                f"the object graph is {record.size:,} bytes; not decoded (limit {MAX_OBJECT_GRAPH_BYTES:,})"
            )
            return None
        if record.offset + record.size > size:
            return None
        with self.source.open_related(file) as data:
            raw = data.read_at(record.offset, record.size, "object graph")
        length, pos = pb.read_varint(raw, 0, len(raw))
        if pos + 4 + length != len(raw):
            raise MalformedFile(f"the object graph string is {length:,} bytes in a {len(raw):,}-byte entry",
                                where=f"{file} offset {record.offset}")  # fmt: skip
        return _parse_object_graph(raw, pos + 4, len(raw))

    def check_partitions(self, partitioned: dict[str, _Record], records: list[_Record]) -> None:
        elements: Counter[str] = Counter()
        for r in records:
            if r.slice_of is not None:
                elements[r.slice_of] += math.prod(r.shape)
        for name, full in partitioned.items():
            total = math.prod(full.shape)
            if elements[name] != total:
                self.warnings.append(
                    f"partitioned variable {name!r} has {total:,} elements but its slices hold {elements[name]:,}"
                )


# -- the object graph ------------------------------------------------------------------------------------


@dataclass
class _Node:
    children: list[tuple[int, str]] = field(default_factory=list)
    attributes: list[tuple[str, str, str]] = field(default_factory=list)  # (name, full_name, checkpoint_key)
    slot_variables: list[tuple[int, str, int]] = field(default_factory=list)  # (variable node, slot, slot node)


def _parse_object_graph(buf: bytes, start: int, end: int) -> list[_Node]:
    nodes = []
    for f in pb.fields(buf, start, end):
        if f.number != _ObjectGraph.NODES:
            continue
        pb.expect(f, pb.LEN, "object graph node")
        node = _Node()
        for g in pb.fields(buf, f.offset, f.end):
            if g.number not in (_ObjectGraph.CHILDREN, _ObjectGraph.ATTRIBUTES, _ObjectGraph.SLOT_VARIABLES):
                continue
            pb.expect(g, pb.LEN, "object graph reference")
            values: dict[int, Any] = {}
            for h in pb.fields(buf, g.offset, g.end):
                if h.wire_type == pb.LEN:
                    values[h.number] = pb.text(buf, h, "object graph name")
                elif h.wire_type == pb.VARINT:
                    values[h.number] = pb.as_int32(h.value)
            if g.number == _ObjectGraph.CHILDREN:
                node.children.append((values.get(1, 0), values.get(2, "")))
            elif g.number == _ObjectGraph.ATTRIBUTES:
                node.attributes.append((values.get(1, ""), values.get(2, ""), values.get(3, "")))
            else:
                node.slot_variables.append((values.get(1, 0), values.get(2, ""), values.get(3, 0)))
        nodes.append(node)
    return nodes


def _classify_from_graph(records: list[_Record], nodes: list[_Node], warnings: list[str]) -> None:
    """Slots, optimizer variables and variable names from the object graph."""
    by_key: dict[str, list[_Record]] = {}
    for r in records:
        by_key.setdefault(r.slice_of or r.key, []).append(r)
    names = {r.name for r in records}
    references = sum(len(n.children) + len(n.attributes) + len(n.slot_variables) for n in nodes)
    budget = _Budget(GRAPH_WORK_PER_REFERENCE * (references + len(records)) + GRAPH_WORK_SLACK)
    keys: dict[int, str | None] = {}

    def key_of(node_id: int) -> str | None:
        if not 0 <= node_id < len(nodes):
            warnings.append(f"the object graph refers to node {node_id} of {len(nodes)}")
            return None
        if node_id not in keys:  # once per node: many slots may name one variable
            keys[node_id] = next((key for name, _, key in nodes[node_id].attributes if name == VARIABLE_VALUE), None)
        return keys[node_id]

    try:
        _classify_graph_nodes(records, nodes, by_key, names, key_of, budget)
    except _OverBudget:
        warnings.append(
            "the object graph shares children too often to follow within the work limit "
            f"({budget.limit:,} steps); the rest is classified by name"
        )


class _OverBudget(Exception):
    pass


class _Budget:
    """A count of steps, so that work driven by references in a file stays linear in the file."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.left = limit

    def spend(self, steps: int = 1) -> None:
        self.left -= steps
        if self.left < 0:
            raise _OverBudget


def _classify_graph_nodes(
    records: list[_Record],
    nodes: list[_Node],
    by_key: dict[str, list[_Record]],
    names: set[str],
    key_of: Callable[[int], str | None],
    budget: _Budget,
) -> None:
    for node in nodes:
        for name, full_name, key in node.attributes:
            found = by_key.get(key, ())
            budget.spend(len(found) + 1)
            for record in found:
                if name == VARIABLE_VALUE:
                    record.attrs["variable_name"] = full_name
                elif record.section == "variable":
                    record.section = "object_attribute"
                    record.attrs["attribute"] = name

    slots: dict[int, tuple[str, int]] = {}  # slot node -> (slot name, variable node)
    optimizers: set[int] = set()
    for index, node in enumerate(nodes):
        for variable, slot_name, slot in node.slot_variables:
            slots[slot] = (slot_name, variable)
            optimizers.add(index)
        budget.spend(len(node.slot_variables) + 1)
        if not node.slot_variables:
            keras = _keras_slots(node, nodes, budget)
            slots.update(keras)
            if keras or {"_trainable_variables", "_iterations"} <= {name for _, name in node.children}:
                optimizers.add(index)

    for slot_node, (slot_name, variable_node) in slots.items():
        slot_key, variable_key = key_of(slot_node), key_of(variable_node)
        if slot_key is None or variable_key is None:
            continue
        budget.spend(len(by_key.get(slot_key, ())) + 1)
        for record in by_key.get(slot_key, ()):
            record.section = "optimizer_slot"
            record.attrs["slot"] = slot_name
            record.attrs["slot_of"] = _slot_target(record, slot_key, variable_key, names)
    slot_nodes = set(slots)
    for index in optimizers:
        for child, _ in nodes[index].children:
            child_key = key_of(child) if child not in slot_nodes else None
            budget.spend(len(by_key.get(child_key or "", ())) + 1)
            for record in by_key.get(child_key or "", ()):
                if record.section == "variable":
                    record.section = "optimizer"


def _slot_target(record: _Record, slot_base: str, variable: str, names: set[str]) -> str:
    """The tensor a slot belongs to: for a slice, the same slice of the variable when it is sliced alike."""
    if record.slice_of is None:
        return variable
    same_slice = variable + record.name[len(slot_base) :]
    return same_slice if same_slice in names else variable


def _keras_slots(node: _Node, nodes: list[_Node], budget: _Budget) -> dict[int, tuple[str, int]]:
    """Keras 3 optimizers: ``_momentums[i]`` is the slot of ``_trainable_variables[i]``."""
    budget.spend(len(node.children) + 1)
    children = {name: child for child, name in node.children if 0 <= child < len(nodes)}
    if "_trainable_variables" not in children:
        return {}
    variables = [child for child, _ in nodes[children["_trainable_variables"]].children]
    budget.spend(len(variables))
    found: dict[int, tuple[str, int]] = {}
    for name, child in children.items():
        budget.spend(len(nodes[child].children) + 1)
        listed = [c for c, _ in nodes[child].children]
        if name in _KERAS_NOT_SLOTS or len(listed) != len(variables) or not listed:
            continue
        if nodes[child].attributes:
            continue
        slot_name = _singular(name.lstrip("_"))
        for slot, variable in zip(listed, variables, strict=True):
            found[slot] = (slot_name, variable)
    return found


def _tf2_slot(key: str) -> tuple[str, str] | None:
    """(variable, slot) of ``<variable>/.OPTIMIZER_SLOT/<optimizer>/<slot>/.ATTRIBUTES/VARIABLE_VALUE``.

    String operations, linear in the key (a backtracking regex was quadratic on hostile keys); the
    variable part runs to the last marker, as a greedy match would."""
    if not key.endswith(_TF2_VALUE_SUFFIX):
        return None
    variable, mark, rest = key[: -len(_TF2_VALUE_SUFFIX)].rpartition(_TF2_SLOT_MARK)
    optimizer, _, slot = rest.rpartition("/")
    if not (mark and variable and optimizer and slot):
        return None
    return variable, slot


def _singular(name: str) -> str:
    if name.endswith("ies"):
        return name[:-3] + "y"
    return name[:-1] if name.endswith("s") else name


def _classify_by_name(records: list[_Record], partitioned: set[str]) -> None:
    """What names alone say: TF2 ``.OPTIMIZER_SLOT`` keys, TF1 ``<variable>/Adam`` slots, counters."""
    names = {r.slice_of or r.name for r in records} | partitioned
    tensor_names = {r.name for r in records}
    for record in records:
        if record.section not in ("variable",) or "slot" in record.attrs:
            continue
        base = record.slice_of or record.name
        if base in TRAINING_STATE:
            record.section = "training_state"
            continue
        if base in TF1_OPTIMIZER_VARIABLES:
            record.section = "optimizer"
            continue
        match = _tf2_slot(base)
        if match is not None:
            record.section = "optimizer_slot"
            record.attrs["slot"] = match[1]
            variable = f"{match[0]}/.ATTRIBUTES/VARIABLE_VALUE"
            record.attrs["slot_of"] = _slot_target(record, base, variable, tensor_names)
            continue
        variable, _, suffix = base.rpartition("/")
        if variable in names and (suffix in TF1_SLOT_SUFFIXES or re.fullmatch(r"[A-Z]\w*", suffix)):
            record.section = "optimizer_slot"
            record.attrs["slot"] = TF1_SLOT_SUFFIXES.get(suffix, suffix)
            record.attrs["slot_of"] = _slot_target(record, base, variable, tensor_names)
            record.attrs["optimizer"] = re.sub(r"_\d+$", "", suffix)


# -- keys of slices: TensorFlow's OrderedCode --------------------------------------------------------------


def _decode_slice_key(key: bytes, where: int) -> tuple[str, list[tuple[int, int]]]:
    """``EncodeTensorNameSlice``: 0, the name (escaped, ``\\x00\\x01``-terminated), rank, (start, length)s."""
    pos = 1
    name = bytearray()
    while True:
        if pos + 1 >= len(key):
            raise MalformedFile("a slice key ends inside its name", where=f"offset {where}")
        byte = key[pos]
        if byte == 0x00:
            follow = key[pos + 1]
            if follow == 0x01:
                pos += 2
                break
            if follow != 0xFF:
                raise MalformedFile("a slice key has a bad escape in its name", where=f"offset {where}")
            name.append(0x00)
            pos += 2
        elif byte == 0xFF:
            if key[pos + 1] != 0x00:
                raise MalformedFile("a slice key has a bad escape in its name", where=f"offset {where}")
            name.append(0xFF)
            pos += 2
        else:
            name.append(byte)
            pos += 1
    rank, pos = _read_num_increasing(key, pos, where)
    if rank > MAX_DIMS:
        raise LimitExceeded(f"a slice key declares rank {rank}", where=f"offset {where}")
    extents = []
    for _ in range(rank):
        start, pos = _read_signed_num_increasing(key, pos, where)
        length, pos = _read_signed_num_increasing(key, pos, where)
        extents.append((start, length))
    return name.decode("utf-8", errors="replace"), extents


def _read_num_increasing(key: bytes, pos: int, where: int) -> tuple[int, int]:
    if pos >= len(key) or key[pos] > 8 or pos + 1 + key[pos] > len(key):
        raise MalformedFile("a slice key has a bad number", where=f"offset {where}")
    length = key[pos]
    return int.from_bytes(key[pos + 1 : pos + 1 + length], "big"), pos + 1 + length


def _read_signed_num_increasing(key: bytes, pos: int, where: int) -> tuple[int, int]:
    """OrderedCode::ReadSignedNumIncreasing: a unary length header, then a big-endian two's complement."""
    if pos >= len(key):
        raise MalformedFile("a slice key ends inside a number", where=f"offset {where}")
    negative = not key[pos] & 0x80
    flip = 0xFF if negative else 0
    first = key[pos] ^ flip
    if first != 0xFF:
        length = 8 - (first ^ 0xFF).bit_length()  # the leading one bits of ``first``
    else:
        second = key[pos + 1] ^ flip if pos + 1 < len(key) else 0
        third = key[pos + 2] ^ flip if pos + 2 < len(key) else 0
        if second < 0x80:
            length = 8
        elif second < 0xC0:
            length = 9
        elif second == 0xC0 and third < 0x80:
            length = 10
        else:
            raise MalformedFile("a slice key has a number longer than 64 bits", where=f"offset {where}")
    if pos + length > len(key):
        raise MalformedFile("a slice key ends inside a number", where=f"offset {where}")
    bits = 8 * length
    raw = int.from_bytes(key[pos : pos + length], "big")
    if negative:
        raw -= 1 << bits
    header = ((1 << length) - 1) << (bits - length)
    return raw ^ header, pos + length


def _extent_text(start: int, length: int) -> str:
    return ":" if length < 0 else f"{start}:{start + length}"


def _dtype_names(dtype_id: int) -> tuple[str, str]:
    known = TF_DTYPES.get(dtype_id)
    if known is not None:
        return known
    name = "DT_INVALID" if dtype_id == 0 else f"DT_{dtype_id}"
    return name, name
