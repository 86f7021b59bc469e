"""The TensorFlow checkpoint reader against what TensorFlow itself read back (expected.json).

The fixtures and their expected.json are written by tools/testdata/tf_checkpoint.py under
TensorFlow; these tests need neither TensorFlow nor its protobuf modules.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

import ckptscan
from ckptscan.errors import CkptscanError
from ckptscan.formats import onnx as onnx_reader
from ckptscan.formats import tf_checkpoint
from ckptscan.inventory import Inventory, Tensor
from ckptscan.source import Source
from tests.conftest import TESTDATA
from tests.helpers import FIXED32, assert_accounted, int_field, len_field, tag, varint

FIXTURES = ["tf2_module", "keras3", "tf1_saver", "sharded"]
TF_NAMES = {
    "float32": "DT_FLOAT", "float16": "DT_HALF", "bfloat16": "DT_BFLOAT16", "float64": "DT_DOUBLE",
    "int32": "DT_INT32", "int64": "DT_INT64", "bool": "DT_BOOL", "uint8": "DT_UINT8",
    "complex64": "DT_COMPLEX64", "string": "DT_STRING",
}  # fmt: skip
NUMPY_DTYPES = {"F32": "<f4", "F16": "<f2", "F64": "<f8", "I32": "<i4", "I64": "<i8", "U8": "u1", "BOOL": "?",
                "C64": "<c8", "BF16": "<u2"}  # fmt: skip


def _load(name: str) -> tuple[Inventory, dict[str, Any]]:
    folder = TESTDATA / "tf_checkpoint" / name
    expected = json.loads((folder / "expected.json").read_text())
    return ckptscan.read_inventory(folder / f"{expected['prefix']}.index"), expected


def _bytes(inventory: Inventory, tensor: Tensor) -> bytes:
    assert tensor.offset is not None
    with (Path(inventory.root) / tensor.file).open("rb") as f:
        f.seek(tensor.offset)
        return f.read(tensor.nbytes)


def _assembled(inventory: Inventory, name: str, shape: list[int]) -> bytes:
    """A partitioned variable put back together from its slices (numpy, test-side only)."""
    np = pytest.importorskip("numpy")
    slices = [t for t in inventory.tensors if t.attrs.get("slice_of") == name]
    full = np.zeros(shape, dtype=NUMPY_DTYPES[slices[0].dtype.name])
    for t in slices:
        index = tuple(slice(start, start + length) for start, length in t.attrs["slice"])
        full[index] = np.frombuffer(_bytes(inventory, t), dtype=full.dtype).reshape(t.shape)
    return bytes(full.tobytes())


@pytest.mark.parametrize("name", FIXTURES)
def test_matches_tensorflow(name: str) -> None:
    inventory, expected = _load(name)
    assert inventory.format == "tf-checkpoint" and inventory.complete
    assert sorted(f.path for f in inventory.files if f.role == "weights") == expected["data_files"]
    whole = {t.name: t for t in inventory.tensors if "slice_of" not in t.attrs}
    partitioned = inventory.metadata.get("partitioned_variables", {})
    assert set(whole) | set(partitioned) == set(expected["variables"])
    for key, truth in expected["variables"].items():
        if key in partitioned:
            assert partitioned[key]["shape"] == truth["shape"]
            assert hashlib.sha256(_assembled(inventory, key, truth["shape"])).hexdigest() == truth["sha256"]
            continue
        t = whole[key]
        assert ([*t.shape], t.native_dtype) == (truth["shape"], TF_NAMES[truth["dtype"]]), key
        if "sha256" in truth:
            assert hashlib.sha256(_bytes(inventory, t)).hexdigest() == truth["sha256"], key
            assert t.nbytes == t.dtype.nbytes(t.elements)


@pytest.mark.parametrize("name", FIXTURES)
def test_slots_match_the_optimizer(name: str) -> None:
    inventory, expected = _load(name)
    by_base: dict[str, list[Tensor]] = {}
    for t in inventory.tensors:
        by_base.setdefault(t.attrs.get("slice_of", t.name), []).append(t)
    for key, slot in expected["slots"].items():
        for t in by_base[key]:
            assert t.section == "optimizer_slot", key
            assert t.attrs["slot"] == slot["slot"], key
            assert t.attrs["slot_of"].split("[")[0] == slot["slot_of"], key
    slots = {t.name for t in inventory.tensors if t.section == "optimizer_slot"}
    assert {t.name for key in expected["slots"] for t in by_base[key]} <= slots


@pytest.mark.parametrize("name", FIXTURES)
def test_every_byte_accounted(name: str) -> None:
    assert_accounted(_load(name)[0])


def test_sections_and_object_graph() -> None:
    inventory, _ = _load("tf2_module")
    sections = {t.name: t.section for t in inventory.tensors}
    assert sections["_CHECKPOINTABLE_OBJECT_GRAPH"] == "object_graph"
    assert sections["optimizer/beta1_power/.ATTRIBUTES/VARIABLE_VALUE"] == "optimizer"
    assert sections["save_counter/.ATTRIBUTES/VARIABLE_VALUE"] == "training_state"
    assert sections["model/kernel/.ATTRIBUTES/VARIABLE_VALUE"] == "variable"
    by_name = {t.name: t for t in inventory.tensors}
    assert by_name["model/kernel/.ATTRIBUTES/VARIABLE_VALUE"].attrs["variable_name"] == "kernel"
    vocab = by_name["model/vocab/.ATTRIBUTES/VARIABLE_VALUE"]
    # 3 one-byte lengths, a 4-byte checksum, then the 5 + 0 + 5 bytes of the strings
    assert (vocab.dtype.name, vocab.encoding, vocab.nbytes) == ("STRING", "tf-string", 3 + 4 + 10)
    assert inventory.metadata["tf_checkpoint"]["object_graph_nodes"] > 10

    keras, _ = _load("keras3")
    keras_sections = {t.name: t.section for t in keras.tensors}
    assert keras_sections["optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE"] == "optimizer"
    assert keras_sections["optimizer/_trainable_variables/0/.ATTRIBUTES/VARIABLE_VALUE"] == "variable"

    tf1, _ = _load("tf1_saver")
    tf1_by_name = {t.name: t for t in tf1.tensors}
    assert tf1_by_name["global_step"].section == "training_state"
    assert tf1_by_name["embedding/Adam_1[5:10,0:4]"].attrs["slot_of"] == "embedding[5:10,0:4]"
    assert tf1.metadata["partitioned_variables"]["embedding"] == {"shape": [10, 4], "dtype": "F32", "slices": 2}


def test_sniff() -> None:
    folder = TESTDATA / "tf_checkpoint" / "tf2_module"
    with Source(folder / "ckpt-1.index") as source:
        assert tf_checkpoint.sniff(source.head())
        assert not onnx_reader.sniff(source.head())
    with Source(folder / "ckpt-1.data-00000-of-00001") as source:
        assert not tf_checkpoint.sniff(source.head())
        assert not onnx_reader.sniff(source.head())
    with Source(TESTDATA / "onnx" / "graph.onnx") as source:
        assert not tf_checkpoint.sniff(source.head())


# -- hand-built SSTables ---------------------------------------------------------------------------------


def _block(entries: list[tuple[bytes, bytes]]) -> bytes:
    body = b"".join(varint(0) + varint(len(k)) + varint(len(v)) + k + v for k, v in entries)
    return body + (0).to_bytes(4, "little") + (1).to_bytes(4, "little")


def _table(entries: list[tuple[bytes, bytes]], *, compression: int = 0, index_size_delta: int = 0) -> bytes:
    data = _block(entries)
    out = data + bytes([compression]) + b"\0" * 4
    index = _block([(entries[-1][0] + b"\xff", varint(0) + varint(len(data)))])
    index_offset = len(out)
    out += index + b"\0" * 5
    meta = _block([])
    meta_offset = len(out)
    out += meta + b"\0" * 5
    handles = varint(meta_offset) + varint(len(meta)) + varint(index_offset) + varint(len(index) + index_size_delta)
    return out + handles.ljust(40, b"\0") + tf_checkpoint.TABLE_MAGIC.to_bytes(8, "little")


def _header(num_shards: int = 1) -> tuple[bytes, bytes]:
    return b"", int_field(1, num_shards) + len_field(3, int_field(1, 1))


def _entry(dims: list[int], *, dtype: int = 1, offset: int = 0, size: int | None = None, shard: int = 0) -> bytes:
    shape = len_field(2, b"".join(len_field(2, int_field(1, d)) for d in dims))
    elements = 1
    for d in dims:
        elements *= d
    size = elements * 4 if size is None else size
    fields = int_field(1, dtype) + shape + int_field(3, shard) + int_field(4, offset) + int_field(5, size)
    return fields + tag(6, FIXED32) + b"\0" * 4


def _bundle(tmp_path: Path, entries: list[tuple[bytes, bytes]], data_size: int | None = 64, **kw: Any) -> Path:
    index = tmp_path / "ckpt.index"
    index.write_bytes(_table(entries, **kw))
    if data_size is not None:
        (tmp_path / "ckpt.data-00000-of-00001").write_bytes(b"\0" * data_size)
    return index


def _error(path: Path) -> CkptscanError:
    with pytest.raises(CkptscanError) as caught:
        ckptscan.read_inventory(path)
    assert "\n" not in str(caught.value) and str(caught.value).startswith(str(path))
    return caught.value


def test_hand_built_bundle_reads(tmp_path: Path) -> None:
    path = _bundle(tmp_path, [_header(), (b"w", _entry([2, 3])), (b"x", _entry([2], offset=32))])
    inventory = ckptscan.read_inventory(path)
    t, _ = inventory.tensors
    assert (t.name, t.shape, t.nbytes, t.offset, t.file) == ("w", (2, 3), 24, 0, "ckpt.data-00000-of-00001")
    regions = [(r.kind.value, r.offset, r.nbytes) for r in inventory.regions if r.file == t.file]
    assert regions == [("padding", 24, 8), ("unreferenced", 40, 24)]


def test_bad_footer_magic(tmp_path: Path) -> None:
    path = _bundle(tmp_path, [_header(), (b"w", _entry([2]))])
    path.write_bytes(path.read_bytes()[:-1] + b"\0")
    assert _error(path).code == "unrecognized-format"
    with Source(path) as source, pytest.raises(CkptscanError, match="magic"):
        tf_checkpoint.read(source)


def test_block_handle_past_end(tmp_path: Path) -> None:
    assert _error(_bundle(tmp_path, [_header(), (b"w", _entry([2]))], index_size_delta=10_000)).code == "truncated"


def test_snappy_block(tmp_path: Path) -> None:
    error = _error(_bundle(tmp_path, [_header(), (b"w", _entry([2]))], compression=1))
    assert error.code == "unsupported" and "snappy" in str(error)


def test_keys_out_of_order(tmp_path: Path) -> None:
    assert "out of order" in str(_error(_bundle(tmp_path, [_header(), (b"b", _entry([1])), (b"a", _entry([1]))])))


def test_missing_header(tmp_path: Path) -> None:
    index = tmp_path / "ckpt.index"
    index.write_bytes(_table([(b"w", _entry([1]))]))
    with Source(index) as source, pytest.raises(CkptscanError, match="bundle header"):
        tf_checkpoint.read(source)


def test_size_mismatch_and_huge_dims(tmp_path: Path) -> None:
    assert "entry says 5" in str(_error(_bundle(tmp_path, [_header(), (b"w", _entry([2], size=5))])))
    huge = _entry([1 << 62, 1 << 62], size=16)
    assert _error(_bundle(tmp_path, [_header(), (b"w", huge)])).code == "malformed"


def test_shard_out_of_range(tmp_path: Path) -> None:
    assert "shard 3" in str(_error(_bundle(tmp_path, [_header(), (b"w", _entry([2], shard=3))])))


def test_absurd_shard_count(tmp_path: Path) -> None:
    assert _error(_bundle(tmp_path, [_header(1 << 30), (b"w", _entry([2]))])).code == "limit-exceeded"


def test_missing_data_file(tmp_path: Path) -> None:
    path = _bundle(tmp_path, [_header(), (b"w", _entry([2]))], data_size=None)
    inventory = ckptscan.read_inventory(path)
    assert not inventory.complete and [f.code for f in inventory.findings] == ["missing-shard"]
    result = ckptscan.scan(path)
    assert result.error is not None and result.error.code == "incomplete-model"


def test_truncated_data_file(tmp_path: Path) -> None:
    path = _bundle(tmp_path, [_header(), (b"w", _entry([4], offset=60))], data_size=64)
    inventory = ckptscan.read_inventory(path)
    assert not inventory.complete and [f.code for f in inventory.findings] == ["truncated-shard"]


def test_shared_prefix_longer_than_key(tmp_path: Path) -> None:
    index = tmp_path / "ckpt.index"
    data = _table([_header(), (b"w", _entry([1]))])
    # the second entry of the data block starts right after the header entry: claim it shares 9 bytes
    header_entry = 3 + len(_header()[1])
    index.write_bytes(data[:header_entry] + varint(9) + data[header_entry + 1 :])
    (tmp_path / "ckpt.data-00000-of-00001").write_bytes(b"\0" * 8)
    assert "shares 9 bytes" in str(_error(index))


def test_slice_keys_decode() -> None:
    key = b"\x00" + b"emb\x00\xffx\x00\x01" + b"\x01\x02" + bytes([0x80, 0x85, 0x80, 0x7F])
    name, extents = tf_checkpoint._decode_slice_key(key, 0)
    assert name == "emb\x00x" and extents == [(0, 5), (0, -1)]
    # two-byte numbers: 100 is 0xc0 0x64; -100 is the bitwise complement
    assert tf_checkpoint._read_signed_num_increasing(b"\xc0\x64", 0, 0) == (100, 2)
    assert tf_checkpoint._read_signed_num_increasing(bytes([0x3F, 0x9C ^ 0x00]), 0, 0)[0] == -100
    with pytest.raises(CkptscanError):
        tf_checkpoint._decode_slice_key(b"\x00emb", 0)
