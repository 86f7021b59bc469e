"""The ONNX reader against the onnx package, on the committed fixtures and the real models."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import ckptscan
from ckptscan import registry
from ckptscan.errors import CkptscanError, UnsafePath
from ckptscan.formats import _layout
from ckptscan.formats import _protobuf as pb
from ckptscan.formats import onnx as onnx_reader
from ckptscan.inventory import Inventory
from ckptscan.source import Source
from tests.conftest import REAL_MODELS, TESTDATA, real_entries
from tests.helpers import assert_accounted, len_field, tag, varint

onnx = pytest.importorskip("onnx")
numpy_helper = pytest.importorskip("onnx.numpy_helper")

FIXTURES = [
    "dtypes.onnx",
    "graph.onnx",
    "external_one_file/model.onnx",
    "external_per_tensor/model.onnx",
    "torch_export/model.onnx",
]
SUB_BYTE_BITS = {21: 4, 22: 4, 23: 4, 25: 2, 26: 2, 27: 6, 28: 6}


# -- ground truth from the onnx package ------------------------------------------------------------


def _truth_nbytes(tensor: Any, base_dir: Path) -> tuple[int, int]:
    """(elements, bytes as stored) of a TensorProto, via onnx.numpy_helper."""
    if tensor.data_type == onnx.TensorProto.STRING:
        return len(tensor.string_data), sum(len(s) for s in tensor.string_data)
    array = numpy_helper.to_array(tensor, base_dir=str(base_dir))
    bits = SUB_BYTE_BITS.get(tensor.data_type)
    if bits is not None:
        return array.size, -(-array.size * bits // 8)
    return array.size, array.nbytes


def _constant_value(node: Any, base_dir: Path) -> tuple[list[int], int, int, int] | None:
    """(dims, data_type, elements, bytes) of a Constant node's value, whatever attribute holds it."""
    for attribute in node.attribute:
        kind = attribute.name
        if kind == "value":
            return [*attribute.t.dims], attribute.t.data_type, *_truth_nbytes(attribute.t, base_dir)
        if kind == "sparse_value":
            values = attribute.sparse_tensor.values
            return [*values.dims], values.data_type, *_truth_nbytes(values, base_dir)
        if kind in ("value_float", "value_int"):
            return [], 1 if kind == "value_float" else 7, 1, 4 if kind == "value_float" else 8
        if kind in ("value_floats", "value_ints"):
            n = len(attribute.floats) if kind == "value_floats" else len(attribute.ints)
            return [n], 1 if kind == "value_floats" else 7, n, n * (4 if kind == "value_floats" else 8)
        if kind == "value_string":
            return [], 8, 1, len(attribute.s)
    return None


def onnx_truth(path: Path) -> dict[tuple[str, str], tuple[list[int], str, int, int]]:
    """{(section, name): (dims, ONNX dtype name, elements, bytes)} by walking onnx's own objects."""
    model = onnx.load(str(path), load_external_data=False)
    base_dir = path.parent
    found: dict[tuple[str, str], tuple[list[int], str, int, int]] = {}

    def add(section: str, name: str, dims: list[int], data_type: int, elements: int, nbytes: int) -> None:
        found[(section, name)] = (dims, onnx.TensorProto.DataType.Name(data_type), elements, nbytes)

    def walk(graph: Any, inner: bool) -> None:
        for t in graph.initializer:
            add("subgraph_initializer" if inner else "initializer", t.name, [*t.dims], t.data_type,
                *_truth_nbytes(t, base_dir))  # fmt: skip
        for s in graph.sparse_initializer:
            add("subgraph_initializer" if inner else "sparse_initializer", s.values.name, [*s.values.dims],
                s.values.data_type, *_truth_nbytes(s.values, base_dir))  # fmt: skip
        for node in graph.node:
            if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
                value = _constant_value(node, base_dir)
                if value is not None:
                    add("subgraph_constant" if inner else "constant", node.output[0], *value)
            for attribute in node.attribute:
                if attribute.type == onnx.AttributeProto.GRAPH:
                    walk(attribute.g, True)
                for g in attribute.graphs:
                    walk(g, True)

    walk(model.graph, False)
    return found


def ours(inventory: Inventory) -> dict[tuple[str, str], tuple[list[int], str, int, int]]:
    return {(t.section, t.name): ([*t.shape], t.native_dtype, t.elements, t.nbytes) for t in inventory.tensors}


# -- the fixtures ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", FIXTURES)
def test_fixture_matches_onnx(name: str) -> None:
    path = TESTDATA / "onnx" / name
    inventory = ckptscan.read_inventory(path)
    assert inventory.format == "onnx"
    assert inventory.complete
    assert ours(inventory) == onnx_truth(path)
    assert_accounted(inventory)


@pytest.mark.parametrize("name", FIXTURES)
def test_offsets_point_at_the_bytes(name: str) -> None:
    """Every tensor with an offset names exactly the bytes onnx reads for it."""
    path = TESTDATA / "onnx" / name
    inventory = ckptscan.read_inventory(path)
    model = onnx.load(str(path), load_external_data=False)
    protos = _all_tensor_protos(model)
    checked = 0
    for t in inventory.tensors:
        if t.offset is None or t.encoding != "raw":
            continue
        proto = protos[t.name]
        stored = (Path(inventory.root) / t.file).read_bytes()[t.offset : t.offset + t.nbytes]
        if proto.data_location == onnx.TensorProto.EXTERNAL:
            expected = onnx.external_data_helper._read_external_data_bytes(proto, str(path.parent))
        else:
            expected = proto.raw_data
        assert stored == expected, t.name
        checked += 1
    assert checked > 0


def _all_tensor_protos(model: Any) -> dict[str, Any]:
    """Every TensorProto holding a reported tensor's values, by the name ckptscan reports."""
    found: dict[str, Any] = {}

    def walk(graph: Any) -> None:
        found.update((t.name, t) for t in graph.initializer)
        found.update((s.values.name, s.values) for s in graph.sparse_initializer)
        for node in graph.node:
            for attribute in node.attribute:
                name = node.output[0] if node.op_type == "Constant" else None
                if attribute.type == onnx.AttributeProto.TENSOR and name:
                    found[name] = attribute.t
                if attribute.type == onnx.AttributeProto.SPARSE_TENSOR and name:
                    found[name] = attribute.sparse_tensor.values
                if attribute.type == onnx.AttributeProto.GRAPH:
                    walk(attribute.g)
                for g in attribute.graphs:
                    walk(g)

    walk(model.graph)
    return found


def test_dtypes_and_encodings() -> None:
    inventory = ckptscan.read_inventory(TESTDATA / "onnx" / "dtypes.onnx")
    by_name = {t.name: t for t in inventory.tensors}
    expected = {
        "raw_f32": "F32", "raw_f16": "F16", "raw_bf16": "BF16", "raw_f64": "F64", "raw_i64": "I64",
        "raw_bool": "BOOL", "raw_i8": "I8", "raw_u8": "U8", "raw_c64": "C64", "raw_f8e4m3": "F8_E4M3",
        "raw_f8e5m2": "F8_E5M2", "raw_i4_odd": "I4", "raw_u4": "U4", "raw_f4": "F4", "typed_u2": "U2",
        "typed_c128": "C128", "typed_string": "STRING",
    }  # fmt: skip
    assert {name: by_name[name].dtype.name for name in expected} == expected
    assert by_name["raw_i4_odd"].nbytes == 3  # 5 four-bit values, rounded up to whole bytes
    assert by_name["raw_empty"].nbytes == 0 and by_name["raw_empty"].shape == (0, 4)
    assert by_name["raw_scalar"].shape == () and by_name["raw_scalar"].nbytes == 4
    assert by_name["raw_f16"].encoding == "raw" and by_name["raw_f16"].offset is not None

    typed = by_name["typed_f16"]
    assert (typed.encoding, typed.offset, typed.nbytes) == ("onnx-typed-field", None, 8)
    assert typed.attrs["onnx_field"] == "int32_data" and typed.attrs["values"] == 4
    assert by_name["typed_c128"].attrs["onnx_field"] == "double_data" and by_name["typed_c128"].attrs["values"] == 4
    assert by_name["typed_string"].nbytes == len(b"alpha") + len("\u00e9t\u00e9".encode())
    assert by_name["typed_i4_odd"].attrs["values"] == 2  # two 4-bit values per int32_data entry

    sparse = by_name["sparse_w"]
    assert sparse.section == "sparse_initializer" and sparse.attrs["dense_shape"] == [3, 4]
    assert sparse.attrs["indices"]["dtype"] == "I64" and sparse.attrs["indices"]["nbytes"] == 24

    constants = {t.name: t for t in inventory.tensors if t.section == "constant"}
    assert constants["const_ints"].shape == (3,) and constants["const_ints"].encoding == "onnx-attribute"
    assert constants["const_string"].nbytes == 5
    assert constants["const_sparse"].attrs["dense_shape"] == [4]


def test_metadata_of_the_graph() -> None:
    inventory = ckptscan.read_inventory(TESTDATA / "onnx" / "graph.onnx")
    model = onnx.load(str(TESTDATA / "onnx" / "graph.onnx"))
    meta = inventory.metadata
    assert meta["onnx"]["ir_version"] == model.ir_version
    assert meta["onnx"]["producer_name"] == model.producer_name
    assert meta["onnx"]["opset_import"] == {"ai.onnx": 17}
    assert meta["onnx"]["metadata_props"] == {p.key: p.value for p in model.metadata_props}
    assert meta["graph"]["node_count"] == len(model.graph.node)
    assert meta["graph"]["op_histogram"] == dict(Counter(n.op_type for n in model.graph.node))
    assert meta["graph"]["inputs"][0] == {
        "name": "ids", "type": "tensor", "dtype": "I64", "native_dtype": "INT64", "shape": ["batch", "seq"]
    }  # fmt: skip
    assert meta["subgraph_count"] == 5  # If then/else, Loop body, the If inside it: then/else
    assert meta["sections"] == {"initializer": 10, "subgraph_initializer": 2, "subgraph_constant": 2}


def test_consumers_name_op_and_input() -> None:
    inventory = ckptscan.read_inventory(TESTDATA / "onnx" / "graph.onnx")
    uses = {t.name: [(c["op"], c["input"], c.get("graph")) for c in t.attrs["consumers"]] for t in inventory.tensors}
    assert uses["embed.weight"] == [("Gather", 0, None), ("MatMul", 1, None), ("Gather", 0, "graph/loop/body")]
    assert uses["fc.weight"] == [("Gemm", 1, None)] and uses["fc.bias"] == [("Gemm", 2, None)]
    assert uses["conv.weight"] == [("Conv", 1, None)] and uses["conv.bias"] == [("Conv", 2, None)]
    assert uses["norm.scale"] == [("LayerNormalization", 1, None)]
    assert uses["then_c"] == [("Mul", 1, "graph/branch/then_branch")]
    # an initializer of the Loop body, read by a node of the If nested inside it
    assert uses["loop_step"] == [("Identity", 0, "graph/loop/body/body_if/else_branch")]
    by_name = {t.name: t for t in inventory.tensors}
    assert by_name["loop_step"].attrs["graph"] == "graph/loop/body"


def test_external_data_files() -> None:
    one = ckptscan.read_inventory(TESTDATA / "onnx" / "external_one_file" / "model.onnx")
    assert {f.path: f.role for f in one.files} == {"model.onnx": "weights", "model.onnx.data": "external-data"}
    assert one.metadata["external_data_files"] == {"model.onnx.data": 14}
    assert all(t.encoding == "raw" and t.file == "model.onnx.data" for t in one.tensors)
    per_tensor = ckptscan.read_inventory(TESTDATA / "onnx" / "external_per_tensor" / "model.onnx")
    assert len(per_tensor.files) == 15
    assert {t.file for t in per_tensor.tensors} == {f.path for f in per_tensor.files} - {"model.onnx"}


# -- the real models -----------------------------------------------------------------------------------


@pytest.mark.parametrize("entry", real_entries("onnx"))
def test_real_model_matches_manifest(entry: dict[str, Any]) -> None:
    path = REAL_MODELS / entry["path"]
    truth = entry["truth"]
    inventory = ckptscan.read_inventory(path)
    assert inventory.complete
    sections = {"initializers": "initializer", "sparse_initializers": "sparse_initializer",
                "constant_nodes": "constant", "subgraph_initializers": "subgraph_initializer",
                "subgraph_constant_nodes": "subgraph_constant"}  # fmt: skip
    for manifest_name, section in sections.items():
        expected = truth["sections"][manifest_name]
        tensors = [t for t in inventory.tensors if t.section == section]
        assert len(tensors) == expected["n_tensors"], manifest_name
        assert sum(t.elements for t in tensors) == expected["total_params"], manifest_name
        assert sum(t.nbytes for t in tensors) == expected["total_tensor_bytes"], manifest_name
        hist: Counter[str] = Counter()
        for t in tensors:
            hist[t.native_dtype] += t.elements
        assert dict(hist) == expected["dtype_hist"], manifest_name
        by_name = {t.name: t for t in tensors}
        for sample in expected["samples"]:
            t = by_name[sample["name"]]
            assert ([*t.shape], t.native_dtype) == (sample["shape"], sample["dtype"])
    meta = inventory.metadata
    assert meta["external_data_files"] == truth["external_data_files"]
    assert meta["subgraph_count"] == truth["n_subgraphs"]
    assert meta["onnx"]["ir_version"] == truth["ir_version"]
    assert meta["onnx"]["opset_import"] == truth["opset_import"]
    assert f"{meta['onnx']['producer_name']} {meta['onnx']['producer_version']}" == truth["producer"]
    assert meta["graph"]["node_count"] == truth["n_nodes_top_level"]
    assert meta["graph"]["op_histogram"] == truth["op_histogram_top_level"]
    assert ours(inventory) == onnx_truth(path)
    assert_accounted(inventory)


def test_real_model_consumers(real_models: Path) -> None:
    path = real_models / "onnx_external" / "tiny-random-llama-fp16" / "model.onnx"
    inventory = ckptscan.read_inventory(path)
    uses = {t.name: {(c["op"], c["input"]) for c in t.attrs["consumers"]} for t in inventory.tensors}
    assert uses["model.embed_tokens.weight"] == {("Gather", 0)}
    assert uses["lm_head.MatMul.weight"] == {("MatMul", 1)}
    assert any(op.endswith("LayerNormalization") for op, _ in uses["model.layers.0.input_layernorm.weight"])


# -- sniffing ----------------------------------------------------------------------------------------


def _sniff(path: Path) -> bool:
    with Source(path) as source:
        return onnx_reader.sniff(source.head())


@pytest.mark.parametrize("name", FIXTURES)
def test_sniff_recognizes_onnx_by_content(name: str, tmp_path: Path) -> None:
    renamed = tmp_path / "weights.bin"
    renamed.write_bytes((TESTDATA / "onnx" / name).read_bytes())
    assert _sniff(renamed)
    with Source(renamed) as source:
        assert registry.detect(source).name == "onnx"


def test_sniff_refuses_other_formats(tmp_path: Path) -> None:
    import json
    import pickle
    import struct
    import zipfile

    header = json.dumps({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()
    samples = {
        "model.safetensors": struct.pack("<Q", len(header)) + header + b"\0" * 4,
        "model.gguf": b"GGUF" + struct.pack("<IQQ", 3, 0, 0),
        "model.h5": b"\x89HDF\r\n\x1a\n" + b"\0" * 100,
        "model.pkl": pickle.dumps({"a": [1, 2, 3]}, protocol=2),
        "model.pkl4": pickle.dumps({"a": [1, 2, 3]}, protocol=4),
        "empty.onnx": b"",
        "text.onnx": b"hello world, this is not a model\n",
        "random.onnx": bytes(range(256)) * 16,
        # a TensorFlow SavedModel: schema version 1 (like ir_version), then a MetaGraphDef in field 2
        "saved_model.pb": tag(1, 0) + varint(1) + len_field(2, len_field(1, len_field(1, b"serve")) * 3),
        "saved_model_big.pb": tag(1, 0) + varint(1) + len_field(2, b"\n" * 10_000),
    }
    for name, data in samples.items():
        (tmp_path / name).write_bytes(data)
    with zipfile.ZipFile(tmp_path / "model.zip", "w") as archive:
        archive.writestr("archive/data.pkl", b"x")
    for path in sorted(tmp_path.iterdir()):
        assert not _sniff(path), path.name


def test_sniff_claims_no_other_real_model(real_models: Path) -> None:
    """Across every real third-party file, only the ONNX models are claimed (by ONNX, not TF)."""
    from ckptscan.formats import tf_checkpoint

    for path in sorted(p for p in real_models.rglob("*") if p.is_file()):
        with Source(path) as source:
            head = source.head()
            assert onnx_reader.sniff(head) == (path.suffix == ".onnx"), path
            assert not tf_checkpoint.sniff(head), path


def test_sniff_refuses_raw_external_data(real_models: Path) -> None:
    assert not _sniff(real_models / "onnx_external" / "tiny-random-llama-fp16" / "model.onnx.data")
    assert not _sniff(TESTDATA / "onnx" / "external_one_file" / "model.onnx.data")


# -- malformed and hostile input -------------------------------------------------------------------------


def _error(path: Path) -> CkptscanError:
    with pytest.raises(CkptscanError) as caught:
        ckptscan.read_inventory(path)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(str(path))
    result = ckptscan.scan(path)
    assert result.error is not None and result.error.code == caught.value.code
    return caught.value


def _model_bytes(*graph_fields: bytes, ir: int = 8) -> bytes:
    return tag(1, 0) + varint(ir) + len_field(7, b"".join(graph_fields))


def _initializer(*fields: bytes) -> bytes:
    return len_field(5, b"".join(fields))


def _write(tmp_path: Path, data: bytes, name: str = "bad.onnx") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_truncated_file(tmp_path: Path) -> None:
    data = (TESTDATA / "onnx" / "graph.onnx").read_bytes()
    error = _error(_write(tmp_path, data[: len(data) // 2]))
    assert error.code == "truncated"


def test_varint_overflow(tmp_path: Path) -> None:
    data = _model_bytes(tag(1, 2) + b"\xff" * 10 + b"\x01")
    assert _error(_write(tmp_path, data)).code == "malformed"


def test_length_past_end(tmp_path: Path) -> None:
    tensor = len_field(8, b"w") + tag(2, 0) + varint(1) + tag(9, 2) + varint(1 << 40) + b"\0" * 8
    data = _model_bytes(_initializer(tensor))
    assert _error(_write(tmp_path, data)).code == "truncated"


def test_huge_declared_dims(tmp_path: Path) -> None:
    dims = len_field(1, varint(1 << 62) + varint(1 << 62))
    tensor = dims + tag(2, 0) + varint(1) + len_field(8, b"w") + len_field(9, b"\0" * 16)
    error = _error(_write(tmp_path, _model_bytes(_initializer(tensor))))
    assert error.code == "malformed" and "raw_data has 16" in str(error)


def test_too_many_dims(tmp_path: Path) -> None:
    dims = len_field(1, varint(1) * 1000)
    tensor = dims + tag(2, 0) + varint(1) + len_field(8, b"w") + len_field(9, b"\0" * 4)
    assert _error(_write(tmp_path, _model_bytes(_initializer(tensor)))).code == "limit-exceeded"


def test_typed_count_mismatch(tmp_path: Path) -> None:
    tensor = len_field(1, varint(3)) + tag(2, 0) + varint(1) + len_field(8, b"w") + len_field(4, b"\0" * 8)
    error = _error(_write(tmp_path, _model_bytes(_initializer(tensor))))
    assert "2 values in float_data" in str(error)


def test_tensor_without_data(tmp_path: Path) -> None:
    tensor = len_field(1, varint(3)) + tag(2, 0) + varint(1) + len_field(8, b"w")
    assert "no data" in str(_error(_write(tmp_path, _model_bytes(_initializer(tensor)))))


def test_wrong_wire_type(tmp_path: Path) -> None:
    data = _model_bytes(tag(5, 0) + varint(5))
    assert "expected length-delimited" in str(_error(_write(tmp_path, data)))


def test_group_wire_type(tmp_path: Path) -> None:
    data = tag(1, 0) + varint(8) + len_field(7, tag(3, 3) + tag(3, 4))
    assert _error(_write(tmp_path, data)).code == "malformed"


def test_nesting_bomb(tmp_path: Path) -> None:
    """Graphs nested in If attributes far deeper than any model: refused, no RecursionError."""
    graph = b""
    for _ in range(200):
        attribute = len_field(1, b"then_branch") + tag(20, 0) + varint(5) + len_field(6, graph)
        node = len_field(4, b"If") + len_field(5, attribute)
        graph = len_field(1, node)
    data = tag(1, 0) + varint(8) + len_field(7, graph)
    assert _error(_write(tmp_path, data)).code == "limit-exceeded"


def test_absurd_name_length(tmp_path: Path) -> None:
    tensor = len_field(8, b"n" * 100_000) + tag(2, 0) + varint(1) + len_field(9, b"\0" * 4)
    assert _error(_write(tmp_path, _model_bytes(_initializer(tensor)))).code == "limit-exceeded"


def test_weights_are_never_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A model whose initializers hold 8 MB is inventoried reading a few chunks, not the weights."""
    import numpy as np
    from onnx import helper

    weights = [numpy_helper.from_array(np.full((512, 1024), i, np.float32), f"w{i}") for i in range(4)]
    graph = helper.make_graph([], "g", [], [], initializer=weights)
    path = tmp_path / "big.onnx"
    onnx.save_model(helper.make_model(graph), str(path))
    read: list[int] = []
    real_read_at = Source.read_at

    def counting(self: Source, offset: int, length: int, what: str = "data") -> bytes:
        read.append(length)
        return real_read_at(self, offset, length, what)

    monkeypatch.setattr(Source, "read_at", counting)
    inventory = ckptscan.read_inventory(path)
    assert sum(t.nbytes for t in inventory.tensors) == 8 << 20
    assert sum(read) < 512 << 10, read


def test_folder_expansion_skips_data_files() -> None:
    assert [p.name for p in ckptscan.model_inputs(TESTDATA / "onnx" / "external_per_tensor")] == ["model.onnx"]
    assert [p.name for p in ckptscan.model_inputs(TESTDATA / "onnx" / "external_one_file")] == ["model.onnx"]


# -- external data: escapes, missing files, bad ranges ---------------------------------------------------


def _external_model(folder: Path, location: str, offset: int = 0, length: int | None = 16) -> Path:
    from onnx import TensorProto, helper

    tensor = helper.make_tensor("w", TensorProto.FLOAT, [4], [0.0] * 4)
    del tensor.float_data[:]
    tensor.data_location = TensorProto.EXTERNAL
    entries = {"location": location, "offset": str(offset)}
    if length is not None:
        entries["length"] = str(length)
    for key, value in entries.items():
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    graph = helper.make_graph([], "g", [], [], initializer=[tensor])
    model = helper.make_model(graph)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.onnx"
    path.write_bytes(model.SerializeToString())
    return path


@pytest.fixture
def opened_paths(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every path os.open is asked for while the test runs."""
    opened: list[str] = []
    real_open = os.open

    def spy(path: Any, *args: Any, **kwargs: Any) -> int:
        opened.append(os.path.realpath(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", spy)
    return opened


@pytest.mark.parametrize("location", ["../../etc/passwd", "../secret.bin", "/etc/passwd", "sub/../../secret.bin"])
def test_external_path_escapes_are_refused(location: str, tmp_path: Path, opened_paths: list[str]) -> None:
    (tmp_path / "secret.bin").write_bytes(b"\0" * 16)
    path = _external_model(tmp_path / "model", location)
    error = _error(path)
    assert isinstance(error, UnsafePath) and error.code == "unsafe-path"
    assert "refused" in str(error) and "tensor 'w'" in str(error)
    model_dir = os.path.realpath(tmp_path / "model")
    assert all(p.startswith(model_dir + os.sep) for p in opened_paths), opened_paths


def test_external_symlink_out_is_refused(tmp_path: Path, opened_paths: list[str]) -> None:
    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"\0" * 16)
    path = _external_model(tmp_path / "model", "weights.bin")
    (tmp_path / "model" / "weights.bin").symlink_to(secret)
    error = _error(path)
    assert error.code == "unsafe-path" and "link" in str(error)
    assert os.path.realpath(secret) not in opened_paths


def test_external_symlink_inside_is_followed(tmp_path: Path) -> None:
    path = _external_model(tmp_path / "model", "weights.bin")
    (tmp_path / "model" / "real.bin").write_bytes(b"\0" * 16)
    (tmp_path / "model" / "weights.bin").symlink_to("real.bin")
    inventory = ckptscan.read_inventory(path)
    assert inventory.complete and inventory.tensors[0].file == "weights.bin"


def test_missing_external_file(tmp_path: Path) -> None:
    path = _external_model(tmp_path, "gone.bin")
    inventory = ckptscan.read_inventory(path)
    assert not inventory.complete
    assert [(f.code, f.where) for f in inventory.findings] == [("missing-file", "w")]
    assert {f.path: f.role for f in inventory.files}["gone.bin"] == "missing"
    result = ckptscan.scan(path)
    assert result.error is not None and result.error.code == "incomplete-model"
    assert result.inventory is None or not result.inventory.complete


def test_external_range_past_end(tmp_path: Path) -> None:
    path = _external_model(tmp_path, "weights.bin", offset=8)
    (tmp_path / "weights.bin").write_bytes(b"\0" * 16)
    assert _error(path).code == "truncated"


def test_external_length_mismatch(tmp_path: Path) -> None:
    path = _external_model(tmp_path, "weights.bin", length=12)
    (tmp_path / "weights.bin").write_bytes(b"\0" * 16)
    assert "external length is 12" in str(_error(path))


def test_external_without_length_and_gaps(tmp_path: Path) -> None:
    path = _external_model(tmp_path, "weights.bin", offset=4096, length=None)
    (tmp_path / "weights.bin").write_bytes(b"\0" * 5000)
    inventory = ckptscan.read_inventory(path)
    (tensor,) = inventory.tensors
    assert (tensor.file, tensor.offset, tensor.nbytes) == ("weights.bin", 4096, 16)
    gaps = [(r.kind.value, r.offset, r.nbytes) for r in inventory.regions if r.file == "weights.bin"]
    assert gaps == [("unreferenced", 0, 4096), ("unreferenced", 4112, 888)]
    assert_accounted(inventory)
    # a gap shorter than the alignment of the offset that ends it is alignment padding
    assert _layout._gap("f", 4000, 4096, 1 << 16).kind.value == "padding"
    assert _layout._gap("f", 4000, 4100, 1 << 16).kind.value == "unreferenced"


def test_bad_external_offset(tmp_path: Path) -> None:
    path = _external_model(tmp_path, "weights.bin", offset=-4)
    (tmp_path / "weights.bin").write_bytes(b"\0" * 16)
    assert "not a non-negative integer" in str(_error(path))


# -- the wire-format reader ---------------------------------------------------------------------------------


def test_protobuf_reader_does_not_copy_payloads() -> None:
    data = tag(1, 0) + varint(300) + len_field(2, b"x" * 1000) + tag(3, 5) + b"\0\0\x80?" + tag(4, 1) + b"\0" * 8
    f1, f2, f3, f4 = pb.fields(data, 0, len(data))
    assert (f1.number, f1.value, f1.end) == (1, 300, 3)
    assert (f2.number, f2.value, f2.offset, f2.end) == (2, 1000, 6, 1006)
    assert pb.as_float(f3) == 1.0 and f4.value == 0
    assert pb.as_int64((1 << 64) - 1) == -1 and pb.count_varints(b"\x81\x01\x05", 0, 3) == 2


def test_function_constants(tmp_path: Path) -> None:
    """Constants in model-local functions, and in subgraphs of function nodes, are inventoried."""
    import numpy as np
    from onnx import TensorProto, helper

    def constant(name: str, value: float) -> Any:
        return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.full(2, value, np.float32)))

    branch = helper.make_graph(
        [constant("tc", 1)], "t", [], [helper.make_tensor_value_info("tc", TensorProto.FLOAT, [2])]
    )
    other = helper.make_graph(
        [helper.make_node("Identity", ["fx"], ["eo"])],
        "e",
        [],
        [helper.make_tensor_value_info("eo", TensorProto.FLOAT, [2])],
    )
    body = [
        constant("fc", 3),
        helper.make_node("Add", ["fx", "fc"], ["fa"], name="fadd"),
        helper.make_node("If", ["flag"], ["fy"], then_branch=branch, else_branch=other, name="fif"),
    ]
    function = helper.make_function("custom", "MyFn", ["fx", "flag"], ["fy"], body, [helper.make_opsetid("", 17)])
    graph = helper.make_graph(
        [helper.make_node("MyFn", ["x", "b"], ["y"], domain="custom")],
        "g",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [2]),
            helper.make_tensor_value_info("b", TensorProto.BOOL, []),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
    )
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("custom", 1)]
    model = helper.make_model(graph, functions=[function], opset_imports=opsets)
    onnx.checker.check_model(model)
    path = tmp_path / "functions.onnx"
    onnx.save_model(model, str(path))
    inventory = ckptscan.read_inventory(path)
    by_name = {t.name: t for t in inventory.tensors}
    assert by_name["fc"].section == "function_constant"
    assert by_name["fc"].attrs["consumers"][0]["graph"] == "function custom.MyFn"
    assert (by_name["tc"].section, by_name["tc"].attrs["graph"]) == (
        "subgraph_constant",
        "function custom.MyFn/fif/then_branch",
    )
    assert inventory.metadata["functions"] == [{"name": "MyFn", "domain": "custom", "node_count": 3}]
    assert_accounted(inventory)
