"""ONNX (``.onnx``): a protobuf ``ModelProto``, read from the wire format without the ``onnx`` package.

The ``onnx`` package's ``load`` parses every ``raw_data`` into memory, so a 2 GB model with inline
weights costs 2 GB. This reader walks the protobuf in place with small bounded reads
(``ckptscan.formats._protobuf``): a ``raw_data`` field is recorded as an (offset, length) pair and
skipped in O(1), so memory stays flat whatever the size of the weights.

What is reported as tensors (``Tensor.section``):

- ``initializer``: ``graph.initializer`` of the main graph;
- ``sparse_initializer``: ``graph.sparse_initializer`` (the values; the indices are in ``attrs``);
- ``constant``: the ``value`` (or ``sparse_value``, ``value_float(s)``, ``value_int(s)``,
  ``value_string(s)``) of ``Constant`` nodes, named after the node's output;
- ``subgraph_initializer`` / ``subgraph_constant``: the same inside the graphs of node attributes
  (``If`` branches, ``Loop`` / ``Scan`` bodies, at any depth) and of ``training_info``;
- ``function_constant``: ``Constant`` nodes inside model-local functions.

Tensor bytes live in one of three places: ``raw_data`` inline (``encoding="raw"``, ``offset`` into
the ``.onnx``; its length must equal elements x dtype width, sub-byte types packed and rounded up
to whole bytes as ONNX does), a typed field such as ``float_data`` / ``int32_data``
(``encoding="onnx-typed-field"``, ``offset`` None, the logical bytes in ``nbytes`` and the field's
position in ``attrs``), or an external file (``data_location=EXTERNAL``: ``location`` resolved
inside the model's folder only, ``offset``/``length`` checked against the data file). A location
that is absolute, climbs out of the folder or is a link out of it raises ``UnsafePath`` and nothing
is read; a missing data file makes the inventory incomplete with a ``missing-file`` finding.

Every initializer and constant gets ``attrs["consumers"]``: the nodes that read it and at which
input position (``{"op", "input", "node", "domain"}``, plus ``"graph"`` for nodes in subgraphs),
so that an analysis can tell an embedding table (``Gather`` input 0) from a weight (``MatMul`` /
``Gemm`` / ``Conv`` input 1), a bias (input 2) or a normalization scale.

Regions: the ``.onnx`` file's bytes that are not inline tensor data are split into graph
structure (``GRAPH``), tensor protos' non-data fields (``INDEX``), model metadata (``METADATA``)
and typed-field payloads (``OTHER``), so that regions + inline ``raw_data`` bytes == file size;
the bytes of external data files that no tensor references are ``PADDING`` (alignment gaps) or
``UNREFERENCED``.
"""

from __future__ import annotations

import math
import posixpath
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ckptscan.dtypes import DType, DTypeKind, lookup
from ckptscan.errors import CkptscanError, LimitExceeded, MalformedFile, TruncatedFile, UnsafePath
from ckptscan.formats import _protobuf as pb
from ckptscan.formats._layout import classified, gap_regions
from ckptscan.inventory import FileRef, Finding, Inventory, Region, RegionKind, Severity, Tensor
from ckptscan.source import Head, Source

FORMAT = "onnx"
MAX_GRAPH_DEPTH = 32  # graphs inside node attributes inside graphs...
MAX_TYPE_DEPTH = 16  # TypeProto nesting (sequence of optional of map of ...)
MAX_DIMS = 64
MAX_CONSUMERS = 64  # per tensor; the total is kept in "consumer_count"
MAX_LISTED = 256  # graph inputs/outputs, functions, metadata_props listed in the metadata
TEXT_LIMIT = 1024  # doc strings and metadata values are truncated to this many bytes
NAME_LIMIT = 1 << 16  # tensor and value names longer than this are refused
PROTOBUF_LIMIT = (1 << 31) - 1  # protobuf refuses to parse messages this large or larger
MAX_EXTERNAL_ALIGNMENT = 64 * 1024  # the largest alignment the onnx package pads external tensors to
DEFAULT_DOMAIN = "ai.onnx"

EXTERNAL = 1  # TensorProto.DataLocation

# TensorProto.DataType -> (ONNX name, canonical name)
DATA_TYPES: dict[int, tuple[str, str]] = {
    1: ("FLOAT", "F32"), 2: ("UINT8", "U8"), 3: ("INT8", "I8"), 4: ("UINT16", "U16"), 5: ("INT16", "I16"),
    6: ("INT32", "I32"), 7: ("INT64", "I64"), 8: ("STRING", "STRING"), 9: ("BOOL", "BOOL"),
    10: ("FLOAT16", "F16"), 11: ("DOUBLE", "F64"), 12: ("UINT32", "U32"), 13: ("UINT64", "U64"),
    14: ("COMPLEX64", "C64"), 15: ("COMPLEX128", "C128"), 16: ("BFLOAT16", "BF16"),
    17: ("FLOAT8E4M3FN", "F8_E4M3"), 18: ("FLOAT8E4M3FNUZ", "F8_E4M3FNUZ"), 19: ("FLOAT8E5M2", "F8_E5M2"),
    20: ("FLOAT8E5M2FNUZ", "F8_E5M2FNUZ"), 21: ("UINT4", "U4"), 22: ("INT4", "I4"), 23: ("FLOAT4E2M1", "F4"),
    24: ("FLOAT8E8M0", "F8_E8M0"), 25: ("UINT2", "U2"), 26: ("INT2", "I2"),
    27: ("FLOAT6E2M3", "F6_E2M3"), 28: ("FLOAT6E3M2", "F6_E3M2"),
}  # fmt: skip

# TensorProto typed value fields: number -> (name, how values are encoded)
FLOAT_DATA, INT32_DATA, STRING_DATA, INT64_DATA, DOUBLE_DATA, UINT64_DATA = 4, 5, 6, 7, 10, 11
TYPED_FIELDS: dict[int, tuple[str, int]] = {
    FLOAT_DATA: ("float_data", pb.FIXED32),
    INT32_DATA: ("int32_data", pb.VARINT),
    STRING_DATA: ("string_data", pb.LEN),
    INT64_DATA: ("int64_data", pb.VARINT),
    DOUBLE_DATA: ("double_data", pb.FIXED64),
    UINT64_DATA: ("uint64_data", pb.VARINT),
}
# which typed field holds each data type, and how many values per element (onnx.helper's rules)
_FIELD_OF_TYPE: dict[int, int] = {
    1: FLOAT_DATA, 14: FLOAT_DATA, 11: DOUBLE_DATA, 15: DOUBLE_DATA, 7: INT64_DATA,
    12: UINT64_DATA, 13: UINT64_DATA, 8: STRING_DATA,
}  # fmt: skip
_PAIRS = {14, 15}  # complex: two values per element
_PACKED_IN_INT32 = {21: 2, 22: 2, 23: 2, 25: 4, 26: 4}  # sub-byte types: elements per int32_data value


# Protobuf field numbers (onnx/onnx.proto3)
class _ModelFields:
    IR_VERSION, PRODUCER_NAME, PRODUCER_VERSION, DOMAIN, MODEL_VERSION, DOC_STRING, GRAPH = 1, 2, 3, 4, 5, 6, 7
    OPSET_IMPORT, METADATA_PROPS, TRAINING_INFO, FUNCTIONS, CONFIGURATION = 8, 14, 20, 25, 26


class _GraphFields:
    NODE, NAME, INITIALIZER, DOC_STRING, INPUT, OUTPUT, VALUE_INFO = 1, 2, 5, 10, 11, 12, 13
    SPARSE_INITIALIZER, METADATA_PROPS = 15, 16


class _NodeFields:
    INPUT, OUTPUT, NAME, OP_TYPE, ATTRIBUTE, DOMAIN = 1, 2, 3, 4, 5, 7


class _AttributeFields:
    NAME, FLOAT, INT, STRING, TENSOR, GRAPH = 1, 2, 3, 4, 5, 6  # the one-letter fields f, i, s, t, g
    FLOATS, INTS, STRINGS, GRAPHS, SPARSE_TENSOR = 7, 8, 9, 11, 22


class _TensorFields:  # TensorProto (its typed value fields: FLOAT_DATA... below)
    DIMS, DATA_TYPE, SEGMENT, NAME, RAW_DATA, EXTERNAL_DATA, DATA_LOCATION = 1, 2, 3, 8, 9, 13, 14


class _SparseFields:
    VALUES, INDICES, DIMS = 1, 2, 3


class _EntryFields:  # StringStringEntryProto; OperatorSetIdProto has the same numbers (domain, version)
    KEY, VALUE = 1, 2


class _TrainingInfoFields:
    INITIALIZATION, ALGORITHM = 1, 2


class _FunctionFields:
    NAME, NODE, DOMAIN = 1, 7, 10


class _ValueInfoFields:
    NAME, TYPE = 1, 2


class _TypeFields:  # TypeProto's oneof value, and the fields of its members
    TENSOR, SEQUENCE, MAP, OPAQUE, SPARSE_TENSOR, OPTIONAL = 1, 4, 5, 7, 8, 9
    ELEM_TYPE, SHAPE = 1, 2  # Tensor / SparseTensor (Sequence and Optional: elem_type = 1)
    MAP_KEY_TYPE, MAP_VALUE_TYPE = 1, 2


class _ShapeFields:
    DIM = 1
    DIM_VALUE, DIM_PARAM = 1, 2  # TensorShapeProto.Dimension


# ModelProto fields, with the wire type each must have (used by sniff)
_MODEL_FIELDS: dict[int, int] = {
    number: pb.VARINT if number in (_ModelFields.IR_VERSION, _ModelFields.MODEL_VERSION) else pb.LEN
    for number in (
        _ModelFields.IR_VERSION, _ModelFields.PRODUCER_NAME, _ModelFields.PRODUCER_VERSION, _ModelFields.DOMAIN,
        _ModelFields.MODEL_VERSION, _ModelFields.DOC_STRING, _ModelFields.GRAPH, _ModelFields.OPSET_IMPORT,
        _ModelFields.METADATA_PROPS, _ModelFields.TRAINING_INFO, _ModelFields.FUNCTIONS, _ModelFields.CONFIGURATION,
    )
}  # fmt: skip
# short printable strings
_MODEL_TEXT_FIELDS = (_ModelFields.PRODUCER_NAME, _ModelFields.PRODUCER_VERSION, _ModelFields.DOMAIN)
_MODEL_LARGE_FIELDS = (_ModelFields.DOC_STRING, _ModelFields.GRAPH, _ModelFields.TRAINING_INFO, _ModelFields.FUNCTIONS)
MAX_SNIFF_IR_VERSION = 100
# where each GraphProto field's bytes go in the main graph's accounting (default: graph structure)
_GRAPH_REGIONS = {
    _GraphFields.INITIALIZER: RegionKind.INDEX, _GraphFields.SPARSE_INITIALIZER: RegionKind.INDEX,
    _GraphFields.NAME: RegionKind.METADATA, _GraphFields.DOC_STRING: RegionKind.METADATA,
    _GraphFields.METADATA_PROPS: RegionKind.METADATA,
}  # fmt: skip


def sniff(head: Head) -> bool:
    """ONNX has no magic: recognize a ModelProto by its leading fields (``ir_version`` first)."""
    data = head.data
    end = len(data)
    whole_file = end >= head.size
    pos = 0
    seen_ir = seen_graph = False
    try:
        while pos < end:
            tag, after_tag = pb.read_varint(data, pos, end)
            number, wire_type = tag >> 3, tag & 7
            if _MODEL_FIELDS.get(number) != wire_type:
                return False
            if wire_type == pb.VARINT:
                value, pos = pb.read_varint(data, after_tag, end)
                if number == _ModelFields.IR_VERSION:
                    if not 1 <= value <= MAX_SNIFF_IR_VERSION:
                        return False
                    seen_ir = True
                continue
            length, start = pb.read_varint(data, after_tag, end)
            if start + length > end:  # the field goes on past what sniff sees (or the file is truncated)
                return seen_ir and number in _MODEL_LARGE_FIELDS
            if number in _MODEL_TEXT_FIELDS and not _printable(data[start : start + length]):
                return False
            seen_graph = seen_graph or number == _ModelFields.GRAPH
            pos = start + length
    except CkptscanError:
        return False  # a varint cut off by the end of what sniff sees: not conclusive, so no
    return seen_ir and (seen_graph or whole_file)


def _printable(raw: bytes) -> bool:
    try:
        value = raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return value.isprintable()


def read(source: Source) -> Inventory:
    if source.size == 0:
        raise MalformedFile("the file is empty")
    return _Parser(pb.FileView(source), source).parse()


# -- what the walk collects -------------------------------------------------------------------------


@dataclass
class _Typed:
    """A typed value field of one TensorProto (possibly split over several occurrences)."""

    number: int
    values: int = 0  # how many values (strings, for string_data)
    string_bytes: int = 0
    spans: list[tuple[int, int]] = field(default_factory=list)  # packed payloads (offset, length)
    unpacked: bool = False


@dataclass
class _TensorProto:
    start: int
    end: int
    name: str = ""
    dims: list[int] = field(default_factory=list)
    data_type: int = 0
    raw: tuple[int, int] | None = None  # (offset, length) of raw_data
    typed: dict[int, _Typed] = field(default_factory=dict)
    external: dict[str, str] = field(default_factory=dict)
    data_location: int = 0
    segment: bool = False


@dataclass
class _Record:
    """A tensor to report, before its consumers are known."""

    name: str
    section: str
    graph: str
    attrs: dict[str, Any] = field(default_factory=dict)
    consumers: list[dict[str, Any]] = field(default_factory=list)
    consumer_count: int = 0
    tensor: Tensor | None = None


@dataclass
class _Node:
    name: str
    op_type: str
    domain: str
    inputs: list[str]


@dataclass
class _Graph:
    path: str
    parent: _Graph | None
    defined: dict[str, int | None] = field(default_factory=dict)  # value name -> record index
    nodes: list[_Node] = field(default_factory=list)

    def lookup(self, name: str) -> int | None:
        graph: _Graph | None = self
        while graph is not None:
            if name in graph.defined:
                return graph.defined[name]
            graph = graph.parent
        return None


@dataclass
class _GraphInfo:
    name: str = ""
    node_count: int = 0
    ops: Counter[str] = field(default_factory=Counter)
    inputs: list[dict[str, Any]] = field(default_factory=list)
    outputs: list[dict[str, Any]] = field(default_factory=list)
    input_count: int = 0
    output_count: int = 0
    value_info_count: int = 0
    metadata_props: dict[str, str] = field(default_factory=dict)


class _Parser:
    def __init__(self, buf: pb.FileView, source: Source) -> None:
        self.buf = buf
        self.size = buf.size
        self.source = source
        self.records: list[_Record] = []
        self.graphs: list[_Graph] = []
        self.covers: list[tuple[int, int, RegionKind]] = []  # top-level structure, tiling the file
        self.holes: list[tuple[int, int, RegionKind | None, str]] = []  # cut out of covers; None = tensor data
        self.warnings: list[str] = []
        self.findings: list[Finding] = []
        self.external_files: dict[str, tuple[str, int | None]] = {}  # location -> (file, size or None)
        self.node_count_all = 0
        self.subgraph_count = 0

    # -- ModelProto ---------------------------------------------------------------------------------

    def parse(self) -> Inventory:
        model: dict[str, Any] = {}
        opsets: dict[str, int] = {}
        metadata_props: dict[str, str] = {}
        functions: list[dict[str, Any]] = []
        graph_info: _GraphInfo | None = None
        training_count = 0
        buf = self.buf
        for f in pb.fields(buf, 0, self.size):
            n = f.number
            if n == _ModelFields.GRAPH:
                if graph_info is not None:
                    raise MalformedFile("the model has two graph fields", where=f"offset {f.tag_offset}")
                pb.expect(f, pb.LEN, "ModelProto.graph")
                self.covers.append((f.tag_offset, f.offset, RegionKind.GRAPH))
                graph_info = _GraphInfo()
                self.graph(f, "graph", None, 1, "main", graph_info)
                continue
            structure = n in (_ModelFields.TRAINING_INFO, _ModelFields.FUNCTIONS)
            self.covers.append((f.tag_offset, f.end, RegionKind.GRAPH if structure else RegionKind.METADATA))
            if n == _ModelFields.IR_VERSION:
                model["ir_version"] = pb.as_int64(pb.scalar(f, "ir_version"))
            elif n == _ModelFields.PRODUCER_NAME:
                model["producer_name"] = pb.text(buf, f, "producer_name", TEXT_LIMIT)
            elif n == _ModelFields.PRODUCER_VERSION:
                model["producer_version"] = pb.text(buf, f, "producer_version", TEXT_LIMIT)
            elif n == _ModelFields.DOMAIN:
                model["domain"] = pb.text(buf, f, "domain", TEXT_LIMIT)
            elif n == _ModelFields.MODEL_VERSION:
                model["model_version"] = pb.as_int64(pb.scalar(f, "model_version"))
            elif n == _ModelFields.DOC_STRING:
                model["doc_string"] = pb.text(buf, f, "doc_string", TEXT_LIMIT)
            elif n == _ModelFields.OPSET_IMPORT:
                domain, version = self.opset(f)
                opsets[domain] = version
            elif n == _ModelFields.METADATA_PROPS:
                self.string_entry(f, metadata_props, "metadata_props")
            elif n == _ModelFields.TRAINING_INFO:
                pb.expect(f, pb.LEN, "training_info")
                self.training_info(f, training_count)
                training_count += 1
            elif n == _ModelFields.FUNCTIONS:
                pb.expect(f, pb.LEN, "functions")
                described = self.function(f)
                if len(functions) < MAX_LISTED:
                    functions.append(described)
        if graph_info is None:
            # onnx.checker refuses it and no runtime can load it: not a model
            raise MalformedFile("the model has no graph (ModelProto field 7)", where="ModelProto")
        if "ir_version" not in model:
            self.warnings.append("the model declares no ir_version")
        if self.size > PROTOBUF_LIMIT:
            self.warnings.append(
                f"the .onnx file is {self.size:,} bytes, over protobuf's 2 GiB message limit: the onnx package "
                "cannot load it (large weights belong in external data)"
            )

        self.resolve_consumers()
        tensors = [self.tensor(r) for r in self.records]
        regions = self.model_regions(tensors) + self.external_regions(tensors)
        self.check_duplicate_names()
        metadata = self.metadata(model, opsets, metadata_props, functions, graph_info, training_count)
        files = [FileRef(self.source.name, self.size)]
        for file, size in dict(self.external_files.values()).items():
            files.append(FileRef(file, size or 0, role="external-data" if size is not None else "missing"))
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
            complete=all(size is not None for _, size in self.external_files.values()),
        )

    def name(self, f: pb.Field, what: str) -> str:
        """A value or tensor name: kept whole (names are matched), so refused when absurdly long."""
        if f.wire_type == pb.LEN and f.value > NAME_LIMIT:
            raise LimitExceeded(f"a {what} is {f.value:,} bytes long (at most {NAME_LIMIT:,})",
                                where=f"offset {f.tag_offset}")  # fmt: skip
        return pb.text(self.buf, f, what)

    def opset(self, f: pb.Field) -> tuple[str, int]:
        pb.expect(f, pb.LEN, "opset_import")
        domain, version = "", 0
        for g in pb.fields(self.buf, f.offset, f.end):
            if g.number == _EntryFields.KEY:  # OperatorSetIdProto.domain
                domain = pb.text(self.buf, g, "opset domain", TEXT_LIMIT)
            elif g.number == _EntryFields.VALUE:  # OperatorSetIdProto.version
                version = pb.as_int64(pb.scalar(g, "opset version"))
        return domain or DEFAULT_DOMAIN, version

    def string_entry(self, f: pb.Field, into: dict[str, str], what: str) -> None:
        """A StringStringEntryProto, added to ``into`` (bounded)."""
        pb.expect(f, pb.LEN, what)
        key = value = ""
        for g in pb.fields(self.buf, f.offset, f.end):
            if g.number == _EntryFields.KEY:
                key = pb.text(self.buf, g, f"{what} key", TEXT_LIMIT)
            elif g.number == _EntryFields.VALUE:
                value = pb.text(self.buf, g, f"{what} value", TEXT_LIMIT)
        if len(into) < MAX_LISTED or key in into:
            into[key] = value

    def training_info(self, f: pb.Field, index: int) -> None:
        for g in pb.fields(self.buf, f.offset, f.end):
            if g.number in (_TrainingInfoFields.INITIALIZATION, _TrainingInfoFields.ALGORITHM):
                pb.expect(g, pb.LEN, "training_info graph")
                part = "initialization" if g.number == _TrainingInfoFields.INITIALIZATION else "algorithm"
                self.graph(g, f"training_info[{index}].{part}", None, 2, "subgraph", None)

    def function(self, f: pb.Field) -> dict[str, Any]:
        parts = list(pb.fields(self.buf, f.offset, f.end))
        name = next(
            (pb.text(self.buf, g, "function name", TEXT_LIMIT) for g in parts if g.number == _FunctionFields.NAME), ""
        )
        domain = next(
            (pb.text(self.buf, g, "function domain", TEXT_LIMIT) for g in parts if g.number == _FunctionFields.DOMAIN),
            "",
        )
        scope = _Graph(path=f"function {domain}.{name}" if domain else f"function {name}", parent=None)
        self.graphs.append(scope)
        nodes = [g for g in parts if g.number == _FunctionFields.NODE]
        for g in nodes:
            pb.expect(g, pb.LEN, "function node")
            self.node(g, scope, 2, "function", None)
        return {"name": name, "domain": domain, "node_count": len(nodes)}

    # -- GraphProto ----------------------------------------------------------------------------------

    def graph(
        self, f: pb.Field, path: str, parent: _Graph | None, depth: int, kind: str, info: _GraphInfo | None
    ) -> None:
        """Walk a GraphProto; ``info`` (the main graph only) also collects its description and regions."""
        pb.check_depth(depth, MAX_GRAPH_DEPTH, "graphs", f)
        scope = _Graph(path=path, parent=parent)
        self.graphs.append(scope)
        if kind != "main":
            self.subgraph_count += 1
        buf = self.buf
        initializer_section = "initializer" if kind == "main" else "subgraph_initializer"
        for g in pb.fields(buf, f.offset, f.end):
            n = g.number
            if info is not None:
                kind_of = _GRAPH_REGIONS.get(n, RegionKind.GRAPH)
                self.covers.append((g.tag_offset, g.end, kind_of))
            if n == _GraphFields.NODE:
                pb.expect(g, pb.LEN, "graph node")
                op = self.node(g, scope, depth, kind, info)
                if info is not None:
                    info.node_count += 1
                    info.ops[op] += 1
            elif n == _GraphFields.INITIALIZER:
                pb.expect(g, pb.LEN, "graph initializer")
                proto = self.tensor_proto(g)
                self.add_record(proto.name, initializer_section, scope, proto)
            elif n == _GraphFields.SPARSE_INITIALIZER:
                pb.expect(g, pb.LEN, "graph sparse_initializer")
                self.sparse(g, None, "sparse_initializer" if kind == "main" else "subgraph_initializer", scope)
            elif n in (_GraphFields.INPUT, _GraphFields.OUTPUT, _GraphFields.VALUE_INFO):
                pb.expect(g, pb.LEN, "graph value info")
                self.value_info(g, n, scope, kind, info)
            elif info is not None and n == _GraphFields.NAME:
                info.name = pb.text(buf, g, "graph name", TEXT_LIMIT)
            elif info is not None and n == _GraphFields.METADATA_PROPS:
                self.string_entry(g, info.metadata_props, "graph metadata_props")

    def value_info(self, f: pb.Field, number: int, scope: _Graph, kind: str, info: _GraphInfo | None) -> None:
        name = ""
        type_field: pb.Field | None = None
        for g in pb.fields(self.buf, f.offset, f.end):
            if g.number == _ValueInfoFields.NAME:
                name = self.name(g, "value name")
            elif g.number == _ValueInfoFields.TYPE:
                pb.expect(g, pb.LEN, "value type")
                type_field = g
        if number == _GraphFields.INPUT and kind != "main":
            scope.defined.setdefault(name, None)  # a subgraph's own input hides an outer value of that name
        if info is None:
            return
        if number == _GraphFields.VALUE_INFO:
            info.value_info_count += 1
            return
        is_input = number == _GraphFields.INPUT
        listing, counter = (info.inputs, "input_count") if is_input else (info.outputs, "output_count")
        setattr(info, counter, getattr(info, counter) + 1)
        if len(listing) < MAX_LISTED:
            described = {"name": name}
            if type_field is not None:
                described.update(self.type_proto(type_field, 1))
            listing.append(described)

    def type_proto(self, f: pb.Field, depth: int) -> dict[str, Any]:
        pb.check_depth(depth, MAX_TYPE_DEPTH, "type descriptions", f)
        t = _TypeFields
        kinds = {t.TENSOR: "tensor", t.SEQUENCE: "sequence", t.MAP: "map", t.OPTIONAL: "optional",
                 t.SPARSE_TENSOR: "sparse_tensor", t.OPAQUE: "opaque"}  # fmt: skip
        tensors, wrappers = (t.TENSOR, t.SPARSE_TENSOR), (t.SEQUENCE, t.OPTIONAL)
        for g in pb.fields(self.buf, f.offset, f.end):
            if g.number not in kinds:
                continue
            pb.expect(g, pb.LEN, "type")
            described: dict[str, Any] = {"type": kinds[g.number]}
            for h in pb.fields(self.buf, g.offset, g.end):
                if g.number in tensors and h.number == _TypeFields.ELEM_TYPE:
                    native, canonical = _type_names(pb.as_int32(pb.scalar(h, "elem_type")))
                    described["dtype"], described["native_dtype"] = canonical, native
                elif g.number in tensors and h.number == _TypeFields.SHAPE:
                    pb.expect(h, pb.LEN, "shape")
                    described["shape"] = self.shape(h)
                elif (g.number in wrappers and h.number == _TypeFields.ELEM_TYPE) or (
                    g.number == _TypeFields.MAP and h.number == _TypeFields.MAP_VALUE_TYPE
                ):
                    pb.expect(h, pb.LEN, "element type")
                    described["element"] = self.type_proto(h, depth + 1)
                elif g.number == _TypeFields.MAP and h.number == _TypeFields.MAP_KEY_TYPE:
                    described["key_dtype"] = _type_names(pb.as_int32(pb.scalar(h, "key_type")))[1]
            return described
        return {"type": "unknown"}

    def shape(self, f: pb.Field) -> list[int | str | None]:
        dims: list[int | str | None] = []
        for g in pb.fields(self.buf, f.offset, f.end):
            if g.number != _ShapeFields.DIM:
                continue
            pb.expect(g, pb.LEN, "shape dim")
            if len(dims) >= MAX_DIMS:
                raise LimitExceeded(f"a shape has more than {MAX_DIMS} dimensions", where=f"offset {g.tag_offset}")
            dim: int | str | None = None
            for h in pb.fields(self.buf, g.offset, g.end):
                if h.number == _ShapeFields.DIM_VALUE:
                    dim = pb.as_int64(pb.scalar(h, "dim_value"))
                elif h.number == _ShapeFields.DIM_PARAM:
                    dim = pb.text(self.buf, h, "dim_param", TEXT_LIMIT)
            dims.append(dim)
        return dims

    # -- NodeProto -----------------------------------------------------------------------------------

    def node(self, f: pb.Field, scope: _Graph, depth: int, kind: str, info: _GraphInfo | None) -> str:
        buf = self.buf
        inputs: list[str] = []
        outputs: list[str] = []
        name = op_type = domain = ""
        attributes: list[pb.Field] = []
        for g in pb.fields(buf, f.offset, f.end):
            n = g.number
            if n == _NodeFields.INPUT:
                inputs.append(self.name(g, "node input"))
            elif n == _NodeFields.OUTPUT:
                outputs.append(self.name(g, "node output"))
            elif n == _NodeFields.NAME:
                name = pb.text(buf, g, "node name", TEXT_LIMIT)
            elif n == _NodeFields.OP_TYPE:
                op_type = pb.text(buf, g, "op_type", TEXT_LIMIT)
            elif n == _NodeFields.DOMAIN:
                domain = pb.text(buf, g, "node domain", TEXT_LIMIT)
            elif n == _NodeFields.ATTRIBUTE:
                pb.expect(g, pb.LEN, "node attribute")
                attributes.append(g)
        self.node_count_all += 1
        scope.nodes.append(_Node(name, op_type, domain or DEFAULT_DOMAIN, inputs))
        is_constant = op_type == "Constant" and domain in ("", DEFAULT_DOMAIN)
        label = name or f"{op_type}#{len(scope.nodes) - 1}"
        for attribute in attributes:
            self.attribute(attribute, scope, depth, kind, f"{scope.path}/{label}", outputs if is_constant else None)
        if is_constant and not attributes:
            self.warnings.append(f"Constant node {label!r} in {scope.path} has no value attribute")
        return op_type

    def attribute(
        self, f: pb.Field, scope: _Graph, depth: int, kind: str, node_path: str, constant_outputs: list[str] | None
    ) -> None:
        """Recurse into graph-valued attributes; turn a Constant node's value into a tensor record."""
        buf = self.buf
        name = ""
        fields = list(pb.fields(buf, f.offset, f.end))
        for g in fields:
            if g.number == _AttributeFields.NAME:
                name = pb.text(buf, g, "attribute name", TEXT_LIMIT)
        for g in fields:
            if g.number in (_AttributeFields.GRAPH, _AttributeFields.GRAPHS):
                pb.expect(g, pb.LEN, "graph attribute")
                self.graph(g, f"{node_path}/{name}", scope, depth + 1, "subgraph", None)
        if constant_outputs is None:
            return
        if not constant_outputs:
            self.warnings.append(f"Constant node {node_path} has no output")
            return
        if kind == "main":
            section = "constant"
        elif kind == "function":
            section = "function_constant"
        else:
            section = "subgraph_constant"
        output = constant_outputs[0]
        if name == "value":
            t = next((g for g in fields if g.number == _AttributeFields.TENSOR), None)
            if t is not None:
                pb.expect(t, pb.LEN, "Constant value")
                proto = self.tensor_proto(t)
                attrs = {"proto_name": proto.name} if proto.name and proto.name != output else {}
                self.add_record(output, section, scope, proto, attrs)
        elif name == "sparse_value":
            s = next((g for g in fields if g.number == _AttributeFields.SPARSE_TENSOR), None)
            if s is not None:
                self.sparse(s, output, section, scope)
        elif name in ("value_float", "value_floats", "value_int", "value_ints", "value_string", "value_strings"):
            self.attribute_constant(fields, name, output, section, scope)

    def attribute_constant(self, fields: list[pb.Field], name: str, output: str, section: str, scope: _Graph) -> None:
        """A Constant whose value is a plain attribute (``value_ints`` ...): a tensor with no file bytes."""
        kind = name.removeprefix("value_")
        f = _AttributeFields
        number = {"float": f.FLOAT, "int": f.INT, "string": f.STRING, "floats": f.FLOATS, "ints": f.INTS,
                  "strings": f.STRINGS}[kind]  # fmt: skip
        values = 0
        string_bytes = 0
        for g in fields:
            if g.number != number:
                continue
            if kind in ("string", "strings"):
                pb.expect(g, pb.LEN, name)
                values += 1
                string_bytes += g.value
            elif kind == "floats" and g.wire_type == pb.LEN:
                if g.value % 4:
                    raise MalformedFile(f"{name} of {output!r} is not a whole number of floats",
                                        where=f"offset {g.tag_offset}")  # fmt: skip
                values += g.value // 4
            elif kind == "ints" and g.wire_type == pb.LEN:
                values += pb.count_varints(self.buf, g.offset, g.end)
            else:
                values += 1
        canonical = {"float": "F32", "floats": "F32", "int": "I64", "ints": "I64"}.get(kind, "STRING")
        shape: tuple[int, ...] = () if kind in ("float", "int", "string") else (values,)
        attrs: dict[str, Any] = {"constant_attribute": name}
        if canonical == "STRING":
            attrs["string_bytes"] = string_bytes
        record = _Record(output, section, scope.path, attrs)
        record.tensor = Tensor(
            name=output,
            shape=shape,
            dtype=lookup(canonical),
            elements=values,
            nbytes=string_bytes if canonical == "STRING" else lookup(canonical).nbytes(values),
            file=self.source.name,
            offset=None,
            section=section,
            native_dtype={"F32": "FLOAT", "I64": "INT64"}.get(canonical, "STRING"),
            encoding="onnx-attribute",
        )
        self.register(record, scope)

    def sparse(self, f: pb.Field, name: str | None, section: str, scope: _Graph) -> None:
        pb.expect(f, pb.LEN, "sparse tensor")
        values: _TensorProto | None = None
        indices: _TensorProto | None = None
        dense: list[int] = []
        for g in pb.fields(self.buf, f.offset, f.end):
            if g.number == _SparseFields.VALUES:
                pb.expect(g, pb.LEN, "sparse values")
                values = self.tensor_proto(g)
            elif g.number == _SparseFields.INDICES:
                pb.expect(g, pb.LEN, "sparse indices")
                indices = self.tensor_proto(g)
            elif g.number == _SparseFields.DIMS:
                dense.extend(pb.as_int64(d) for d in pb.repeated_varints(self.buf, g, MAX_DIMS, "sparse dims"))
        if values is None:
            raise MalformedFile("a sparse tensor has no values", where=f"offset {f.tag_offset}")
        attrs: dict[str, Any] = {"dense_shape": dense}
        if indices is not None:
            index_tensor = self.describe(indices, f"{values.name} indices", section, RegionKind.INDEX)
            attrs["indices"] = {
                "dtype": index_tensor.dtype.name,
                "shape": list(index_tensor.shape),
                "nbytes": index_tensor.nbytes,
                "file": index_tensor.file,
                "offset": index_tensor.offset,
                "encoding": index_tensor.encoding,
            }
        self.add_record(name if name is not None else values.name, section, scope, values, attrs)

    # -- TensorProto ---------------------------------------------------------------------------------

    def tensor_proto(self, f: pb.Field) -> _TensorProto:
        buf = self.buf
        proto = _TensorProto(f.offset, f.end)
        for g in pb.fields(buf, f.offset, f.end):
            n = g.number
            if n == _TensorFields.DIMS:
                proto.dims.extend(pb.as_int64(d) for d in pb.repeated_varints(buf, g, MAX_DIMS, "tensor dims"))
                if len(proto.dims) > MAX_DIMS:
                    raise LimitExceeded(f"a tensor declares more than {MAX_DIMS} dimensions",
                                        where=f"offset {g.tag_offset}")  # fmt: skip
            elif n == _TensorFields.DATA_TYPE:
                proto.data_type = pb.as_int32(pb.scalar(g, "data_type"))
            elif n == _TensorFields.NAME:
                proto.name = self.name(g, "tensor name")
            elif n == _TensorFields.RAW_DATA:
                pb.expect(g, pb.LEN, "raw_data")
                if proto.raw is not None:
                    raise MalformedFile("a tensor has raw_data twice", where=f"offset {g.tag_offset}")
                proto.raw = (g.offset, g.value)
            elif n in TYPED_FIELDS:
                self.typed_value(proto, g)
            elif n == _TensorFields.EXTERNAL_DATA:
                self.string_entry_into(g, proto.external)
            elif n == _TensorFields.DATA_LOCATION:
                proto.data_location = pb.as_int32(pb.scalar(g, "data_location"))
            elif n == _TensorFields.SEGMENT:
                proto.segment = True
        return proto

    def string_entry_into(self, f: pb.Field, into: dict[str, str]) -> None:
        pb.expect(f, pb.LEN, "external_data")
        key = value = ""
        for g in pb.fields(self.buf, f.offset, f.end):
            if g.number == _EntryFields.KEY:
                key = pb.text(self.buf, g, "external_data key", TEXT_LIMIT)
            elif g.number == _EntryFields.VALUE:
                value = pb.text(self.buf, g, "external_data value", 4 * TEXT_LIMIT)
        into[key] = value

    def typed_value(self, proto: _TensorProto, g: pb.Field) -> None:
        field_name, element_wire = TYPED_FIELDS[g.number]
        typed = proto.typed.setdefault(g.number, _Typed(g.number))
        if element_wire == pb.LEN:  # string_data: one string per occurrence
            pb.expect(g, pb.LEN, field_name)
            typed.values += 1
            typed.string_bytes += g.value
            typed.unpacked = True
            return
        if g.wire_type != pb.LEN:  # an unpacked value (allowed by protobuf, never written by onnx)
            pb.expect(g, element_wire, field_name)
            typed.values += 1
            typed.unpacked = True
            return
        if element_wire == pb.VARINT:
            typed.values += pb.count_varints(self.buf, g.offset, g.end)
        else:
            width = 4 if element_wire == pb.FIXED32 else 8
            if g.value % width:
                raise MalformedFile(f"{field_name} is {g.value:,} bytes, not a whole number of {width}-byte values",
                                    where=f"offset {g.tag_offset}")  # fmt: skip
            typed.values += g.value // width
        typed.spans.append((g.offset, g.value))
        self.holes.append((g.offset, g.end, RegionKind.OTHER, f"{field_name} values"))

    def add_record(
        self, name: str, section: str, scope: _Graph, proto: _TensorProto, attrs: dict[str, Any] | None = None
    ) -> None:
        record = _Record(name, section, scope.path, dict(attrs or {}))
        record.tensor = self.describe(proto, name, section)
        self.register(record, scope)

    def register(self, record: _Record, scope: _Graph) -> None:
        scope.defined[record.name] = len(self.records)
        self.records.append(record)

    def describe(self, proto: _TensorProto, name: str, section: str, data_kind: RegionKind | None = None) -> Tensor:
        """The Tensor for one TensorProto: where its bytes are and how many there are.

        Inline ``raw_data`` is tensor data (``data_kind`` None) unless the caller says it is not
        reported as a tensor (sparse indices), in which case it becomes a region of that kind.
        """
        where = f"tensor {name!r}"
        if any(d < 0 for d in proto.dims):
            raise MalformedFile(f"tensor {name!r} has a negative dimension {proto.dims}", where=where)
        if proto.segment:
            self.warnings.append(f"tensor {name!r} is a segment of a larger tensor; its size is the segment's")
        native, canonical = _type_names(proto.data_type)
        dtype = lookup(canonical)
        elements = math.prod(proto.dims)
        expected = _packed_nbytes(dtype, elements)
        common: dict[str, Any] = {
            "name": name,
            "shape": tuple(proto.dims),
            "dtype": dtype,
            "elements": elements,
            "section": section,
            "native_dtype": native,
        }
        if proto.data_location == EXTERNAL:
            return self.external_tensor(proto, common, expected, where)
        if proto.external:
            self.warnings.append(f"tensor {name!r} has external_data entries but data_location is not EXTERNAL")
        if proto.raw is not None:
            offset, length = proto.raw
            if expected is not None and length != expected:
                raise MalformedFile(
                    f"tensor {name!r} is {native} {proto.dims} = {expected:,} bytes but its raw_data has {length:,}",
                    where=where,
                )
            if expected is None:
                self.warnings.append(f"tensor {name!r}: unknown data type {proto.data_type}; size taken from raw_data")
            self.holes.append((offset, offset + length, data_kind, name))
            return Tensor(**common, nbytes=length, file=self.source.name, offset=offset)
        return self.typed_tensor(proto, common, expected, where)

    def typed_tensor(self, proto: _TensorProto, common: dict[str, Any], expected: int | None, where: str) -> Tensor:
        name, native, elements = common["name"], common["native_dtype"], common["elements"]
        wanted = _FIELD_OF_TYPE.get(proto.data_type, INT32_DATA)
        for number, other in proto.typed.items():
            if number != wanted and other.values:
                raise MalformedFile(
                    f"tensor {name!r} ({native}) has values in {TYPED_FIELDS[number][0]}, which {native} tensors "
                    f"keep in {TYPED_FIELDS[wanted][0]}",
                    where=where,
                )
        typed = proto.typed.get(wanted)
        count = typed.values if typed is not None else 0
        if proto.data_type == 8:
            expected_values = elements
        elif proto.data_type in _PACKED_IN_INT32:
            per_value = _PACKED_IN_INT32[proto.data_type]
            expected_values = -(-elements // per_value)
        else:
            expected_values = elements * (2 if proto.data_type in _PAIRS else 1)
        if expected is None and proto.data_type != 8:
            raise MalformedFile(f"tensor {name!r} has unknown data type {proto.data_type}", where=where)
        if count != expected_values:
            have = f"{count:,} values in {TYPED_FIELDS[wanted][0]}" if count else "no data"
            raise MalformedFile(
                f"tensor {name!r} is {native} {proto.dims} ({elements:,} elements) but has {have}", where=where
            )
        attrs: dict[str, Any] = {"onnx_field": TYPED_FIELDS[wanted][0], "field_number": wanted, "values": count}
        if typed is not None and typed.spans:
            attrs["payload"] = [list(span) for span in typed.spans[:16]]
        if typed is not None and typed.unpacked:
            attrs["unpacked"] = True
        nbytes = typed.string_bytes if proto.data_type == 8 and typed is not None else expected or 0
        return Tensor(
            **common, nbytes=nbytes, file=self.source.name, offset=None, encoding="onnx-typed-field", attrs=attrs
        )

    def external_tensor(self, proto: _TensorProto, common: dict[str, Any], expected: int | None, where: str) -> Tensor:
        name = common["name"]
        entries = proto.external
        location = entries.get("location")
        if not location:
            raise MalformedFile(f"tensor {name!r} is external but names no location", where=where)
        if proto.raw is not None:
            self.warnings.append(f"tensor {name!r} is external and also has raw_data; the raw_data is ignored")
        offset = _decimal(entries.get("offset", "0"), "offset", name)
        length = _decimal(entries["length"], "length", name) if "length" in entries else None
        if expected is None:
            if length is None:
                raise MalformedFile(
                    f"tensor {name!r} has unknown data type {proto.data_type} and no length", where=where
                )
            self.warnings.append(f"tensor {name!r}: unknown data type {proto.data_type}; size taken from length")
            expected = length
        if length is not None and length != expected:
            raise MalformedFile(
                f"tensor {name!r} is {common['native_dtype']} {proto.dims} = {expected:,} bytes but its external "
                f"length is {length:,}",
                where=where,
            )
        file, size = self.external_file(location, name)
        if size is not None and offset + expected > size:
            raise TruncatedFile(
                f"tensor {name!r} needs bytes {offset:,}..{offset + expected:,} of {file}, which has {size:,}",
                where=where,
            )
        attrs = {"external_data": dict(entries)}
        for key in sorted(entries.keys() - {"location", "offset", "length", "checksum", "basepath"}):
            self.warnings.append(f"tensor {name!r}: unknown external_data key {key!r}")
        return Tensor(**common, nbytes=expected, file=file, offset=offset, attrs=attrs)

    def external_file(self, location: str, tensor_name: str) -> tuple[str, int | None]:
        """The data file a location names, relative to the model's folder, and its size (None if missing)."""
        known = self.external_files.get(location)
        if known is not None:
            return known
        try:
            path = self.source.resolve(location)
        except UnsafePath as e:
            e.where = f"tensor {tensor_name!r}"
            raise
        file = posixpath.normpath(location.replace("\\", "/"))
        if path.is_file():
            with self.source.open_related(location) as data:
                found: tuple[str, int | None] = (file, data.size)
        else:
            found = (file, None)
            self.findings.append(
                Finding("missing-file", Severity.HIGH, f"external data file {file} is missing", tensor_name)
            )
        self.external_files[location] = found
        return found

    # -- after the walk ------------------------------------------------------------------------------

    def resolve_consumers(self) -> None:
        for graph in self.graphs:
            inner = graph.path != "graph"
            for node in graph.nodes:
                for position, value in enumerate(node.inputs):
                    if not value:
                        continue
                    index = graph.lookup(value)
                    if index is None:
                        continue
                    record = self.records[index]
                    record.consumer_count += 1
                    if len(record.consumers) < MAX_CONSUMERS:
                        use = {"op": node.op_type, "input": position, "node": node.name, "domain": node.domain}
                        if inner:
                            use["graph"] = graph.path
                        record.consumers.append(use)

    def tensor(self, record: _Record) -> Tensor:
        assert record.tensor is not None
        t = record.tensor
        attrs = {**t.attrs, **record.attrs, "consumers": record.consumers, "consumer_count": record.consumer_count}
        if record.graph != "graph":
            attrs["graph"] = record.graph
        return classified(t, record.section, attrs)

    def check_duplicate_names(self) -> None:
        seen: dict[tuple[str, str], str] = {}
        for record in self.records:
            key = (record.graph, record.name)
            if key in seen:
                self.warnings.append(f"tensor name {record.name!r} is defined twice in {record.graph}")
            seen[key] = record.section

    def model_regions(self, tensors: list[Tensor]) -> list[Region]:
        """The .onnx file's bytes that are not inline tensor data, by what they hold."""
        name = self.source.name
        labels = {
            RegionKind.GRAPH: "graph structure (nodes, inputs, outputs, attributes)",
            RegionKind.INDEX: "tensor protos (names, dims, data types)",
            RegionKind.METADATA: "model metadata (ir_version, producer, opsets, properties)",
        }
        merged: list[list[Any]] = []
        for start, end, kind in self.covers:
            if merged and merged[-1][2] == kind and merged[-1][1] == start:
                merged[-1][1] = end
            else:
                merged.append([start, end, kind])
        holes = sorted(self.holes)
        regions: list[Region] = []
        hole_index = 0
        for start, end, kind in merged:
            position = start
            while hole_index < len(holes) and holes[hole_index][0] < end:
                h_start, h_end, h_kind, h_label = holes[hole_index]
                if h_start > position:
                    regions.append(Region(name, kind, position, h_start - position, labels[kind]))
                if h_kind is not None:
                    regions.append(Region(name, h_kind, h_start, h_end - h_start, h_label))
                position = max(position, h_end)
                hole_index += 1
            if end > position:
                regions.append(Region(name, kind, position, end - position, labels[kind]))
        return regions

    def external_regions(self, tensors: list[Tensor]) -> list[Region]:
        """Bytes of each external data file that no tensor references: alignment padding or unreferenced."""
        regions: list[Region] = []
        for file, size in dict(self.external_files.values()).items():
            if size is not None:
                regions += gap_regions(
                    file, size, tensors, max_alignment=MAX_EXTERNAL_ALIGNMENT, warnings=self.warnings
                )
        return regions

    def metadata(
        self,
        model: dict[str, Any],
        opsets: dict[str, int],
        metadata_props: dict[str, str],
        functions: list[dict[str, Any]],
        graph_info: _GraphInfo | None,
        training_count: int,
    ) -> dict[str, Any]:
        sections = Counter(r.section for r in self.records)
        onnx: dict[str, Any] = {**model, "opset_import": opsets}
        if metadata_props:
            onnx["metadata_props"] = metadata_props
        external = Counter(t.tensor.file for t in self.records if t.tensor and t.tensor.file != self.source.name)
        result: dict[str, Any] = {
            "onnx": onnx,
            "sections": dict(sections),
            "external_data_files": dict(external),
            "subgraph_count": self.subgraph_count,
            "node_count_all": self.node_count_all,
            "over_protobuf_limit": self.size > PROTOBUF_LIMIT,
        }
        if functions:
            result["functions"] = functions
        if training_count:
            result["training_info_count"] = training_count
        if graph_info is not None:
            initializer_names = {r.name for r in self.records if r.section in ("initializer", "sparse_initializer")}
            inputs = [i for i in graph_info.inputs if i["name"] not in initializer_names]
            result["graph"] = {
                "name": graph_info.name,
                "node_count": graph_info.node_count,
                "op_histogram": dict(graph_info.ops.most_common()),
                "inputs": inputs,
                "initializer_inputs": len(graph_info.inputs) - len(inputs),
                "outputs": graph_info.outputs,
                "input_count": graph_info.input_count,
                "output_count": graph_info.output_count,
                "value_info_count": graph_info.value_info_count,
            }
            if graph_info.metadata_props:
                result["graph"]["metadata_props"] = graph_info.metadata_props
        return result


def _type_names(data_type: int) -> tuple[str, str]:
    """(ONNX name, canonical name) of a TensorProto.DataType; unknown ones keep their number."""
    known = DATA_TYPES.get(data_type)
    if known is not None:
        return known
    name = "UNDEFINED" if data_type == 0 else f"ONNX_TYPE_{data_type}"
    return name, name


def _packed_nbytes(dtype: DType, elements: int) -> int | None:
    """Bytes of ``elements`` values as ONNX stores them: sub-byte types packed, rounded up to a byte."""
    if not dtype.known or dtype.kind == DTypeKind.STRING:
        return None
    return -(-elements * dtype.block_bits // (8 * dtype.block_elements))


def _decimal(value: str, key: str, name: str) -> int:
    if not value.isascii() or not value.isdigit():
        raise MalformedFile(f"tensor {name!r} external_data {key} {value!r} is not a non-negative integer",
                            where=f"tensor {name!r}")  # fmt: skip
    return int(value)
