"""GGUF: every count, shape, type, byte size and offset against gguf.GGUFReader; v1/v2 and
hostile headers built by hand."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import pytest

import ckptscan
from ckptscan.dtypes import lookup
from ckptscan.formats.gguf import GGML_TYPES
from tests.conftest import REAL_MODELS, TESTDATA, real_entries
from tests.helpers import assert_matches_truth, assert_one_line_error

gguf = pytest.importorskip("gguf")

FIXTURES = sorted(TESTDATA.glob("gguf/*.gguf"))


def compare_with_reader(path: Path) -> ckptscan.Inventory:
    inventory = ckptscan.read_inventory(path)
    reader = gguf.GGUFReader(str(path))
    assert len(inventory.tensors) == len(reader.tensors)
    for ours, ref in zip(inventory.tensors, reader.tensors, strict=True):
        assert ours.name == ref.name
        assert list(ours.shape) == [int(d) for d in reversed(ref.shape)]
        assert ours.dtype.name == ref.tensor_type.name
        assert ours.elements == int(ref.n_elements)
        assert ours.nbytes == int(ref.n_bytes)
        assert ours.offset == int(ref.data_offset)
    kv = inventory.metadata["kv"]
    ref_keys = [k for k in reader.fields if not k.startswith("GGUF.")]
    assert list(kv) == ref_keys
    assert inventory.metadata["gguf"]["data_offset"] == reader.data_offset
    assert inventory.metadata["gguf"]["alignment"] == reader.alignment
    for key in ref_keys:
        field = reader.fields[key]
        if field.types[0] == gguf.GGUFValueType.ARRAY:
            count = len(field.data)
            value = kv[key]
            assert (value["count"] if isinstance(value, dict) else len(value)) == count
        else:
            assert kv[key] == pytest.approx(field.contents())
    return inventory


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.name)
def test_fixtures_match_reader(path: Path) -> None:
    compare_with_reader(path)


def test_every_ggml_type_is_sized_exactly() -> None:
    inventory = compare_with_reader(TESTDATA / "gguf" / "all-ggml-types.gguf")
    from gguf.constants import GGML_QUANT_SIZES

    assert {t.dtype.name for t in inventory.tensors} == {q.name for q in GGML_QUANT_SIZES}
    for qtype, (block, type_size) in GGML_QUANT_SIZES.items():
        dtype = lookup(qtype.name)
        assert (dtype.block_elements, dtype.block_bits) == (block, type_size * 8)
        assert GGML_TYPES[qtype.value] == qtype.name


def test_large_vocabulary_is_summarized() -> None:
    inventory = ckptscan.read_inventory(TESTDATA / "gguf" / "llama-tiny-q8_0.gguf")
    tokens = inventory.metadata["kv"]["tokenizer.ggml.tokens"]
    assert tokens == {"type": "array", "element_type": "string", "count": 1000, "head": [f"tok{i}" for i in range(8)]}


def test_big_endian_file() -> None:
    inventory = compare_with_reader(TESTDATA / "gguf" / "tiny-big-endian.gguf")
    assert inventory.metadata["gguf"]["byte_order"] == "big"
    assert all(t.encoding == "raw-big-endian" for t in inventory.tensors)


def test_regions_and_tensors_cover_the_file_exactly() -> None:
    for path in FIXTURES:
        inventory = ckptscan.read_inventory(path)
        covered = sum(r.nbytes for r in inventory.regions) + sum(t.nbytes for t in inventory.tensors)
        assert covered == path.stat().st_size, path


@pytest.mark.parametrize("entry", real_entries("gguf"))
def test_real_files_match_manifest(entry: dict[str, Any]) -> None:
    path = REAL_MODELS / entry["path"]
    truth = entry["truth"]
    inventory = compare_with_reader(path)
    assert_matches_truth(inventory, truth)
    header = inventory.metadata["gguf"]
    assert header["version"] == truth["gguf_version"]
    assert header["kv_count"] == truth["kv_count"] == len(inventory.metadata["kv"])
    assert list(inventory.metadata["kv"]) == truth["kv_keys"]
    assert header["alignment"] == truth["alignment"]
    assert header["data_offset"] == truth["data_offset"]
    assert inventory.metadata["kv"]["general.architecture"] == truth["architecture"]
    for sample in truth["samples"]:  # the manifest keeps ggml's ne order
        tensor = next(t for t in inventory.tensors if t.name == sample["name"])
        assert list(tensor.attrs["ggml_ne"]) == sample["shape"]
        assert tensor.dtype.name == sample["dtype"]


# -- hand-built files: other versions and hostile headers ----------------------------------------

Value = tuple[int, Any]  # (gguf value type, python value)
UINT32, STRING, ARRAY, FLOAT32 = 4, 8, 9, 6


class Builder:
    """A GGUF writer for the tests, able to write versions 1 to 3 and to lie."""

    def __init__(self, version: int = 3) -> None:
        self.version = version
        self.kv: list[tuple[str | bytes, int, Any]] = []
        self.tensors: list[tuple[str, list[int], int, int]] = []  # name, ne, type, offset
        self.data = b""
        self.tensor_count: int | None = None
        self.kv_count: int | None = None

    def count(self, n: int) -> bytes:
        return struct.pack("<I" if self.version == 1 else "<Q", n)

    def string(self, s: str | bytes) -> bytes:
        raw = s.encode() if isinstance(s, str) else s
        return self.count(len(raw)) + raw

    def value(self, vtype: int, value: Any) -> bytes:
        if vtype == STRING:
            return self.string(value)
        if vtype == ARRAY:
            etype, items = value
            return struct.pack("<I", etype) + self.count(len(items)) + b"".join(self.value(etype, i) for i in items)
        code = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}.get(vtype)
        return struct.pack("<" + code, value) if code else b""  # an unknown type has no value to write

    def build(self, alignment: int = 32) -> bytes:
        out = b"GGUF" + struct.pack("<I", self.version)
        out += self.count(len(self.tensors) if self.tensor_count is None else self.tensor_count)
        out += self.count(len(self.kv) if self.kv_count is None else self.kv_count)
        for key, vtype, value in self.kv:
            out += self.string(key) + struct.pack("<I", vtype) + self.value(vtype, value)
        for name, ne, ttype, offset in self.tensors:
            dims = b"".join(struct.pack("<I" if self.version == 1 else "<Q", d) for d in ne)
            out += self.string(name) + struct.pack("<I", len(ne)) + dims + struct.pack("<I", ttype)
            out += struct.pack("<Q", offset)
        out += b"\0" * (-len(out) % alignment)
        return out + self.data

    def write(self, tmp_path: Path, name: str = "t.gguf", alignment: int = 32) -> Path:
        path = tmp_path / name
        path.write_bytes(self.build(alignment))
        return path


def small_model(version: int = 3) -> Builder:
    b = Builder(version)
    b.kv = [("general.architecture", STRING, "llama"), ("llama.block_count", UINT32, 1),
            ("tokenizer.ggml.tokens", ARRAY, (STRING, [f"t{i}" for i in range(100)]))]  # fmt: skip
    b.tensors = [("a.weight", [4, 2], 0, 0), ("b.weight", [32], 8, 32)]  # F32 [2,4] = 32 B; Q8_0 one block
    b.data = bytes(32) + bytes(34)
    return b


@pytest.mark.parametrize("version", [1, 2, 3])
def test_versions_1_to_3(tmp_path: Path, version: int) -> None:
    path = small_model(version).write(tmp_path)
    inventory = ckptscan.read_inventory(path)
    assert inventory.metadata["gguf"]["version"] == version
    assert [(t.name, t.shape, t.dtype.name, t.nbytes) for t in inventory.tensors] == [
        ("a.weight", (2, 4), "F32", 32),
        ("b.weight", (32,), "Q8_0", 34),
    ]
    assert inventory.metadata["kv"]["tokenizer.ggml.tokens"]["count"] == 100
    if version > 1:  # the gguf package reads versions 2 and 3 only
        compare_with_reader(path)


def test_unknown_tensor_type_gets_its_size_from_the_layout(tmp_path: Path) -> None:
    b = small_model()
    b.tensors[1] = ("b.weight", [32], 250, 32)
    inventory = ckptscan.read_inventory(b.write(tmp_path))
    t = inventory.tensors[1]
    assert t.dtype.name == "GGML_TYPE_250" and not t.dtype.known
    assert t.nbytes == 34
    assert any("unknown ggml type 250" in w for w in inventory.warnings)


def hostile(b: Builder, tmp_path: Path, alignment: int = 32) -> Path:
    return b.write(tmp_path, "bad.gguf", alignment)


def case_truncated(b: Builder) -> None:
    b.data = b.data[:40]


def case_huge_tensor_count(b: Builder) -> None:
    b.tensor_count = 2**60


def case_huge_kv_count(b: Builder) -> None:
    b.kv_count = 2**40


def case_unknown_value_type(b: Builder) -> None:
    b.kv.append(("k", 99, None))


def case_overlap(b: Builder) -> None:
    b.tensors[1] = ("b.weight", [32], 8, 0)


def case_misaligned(b: Builder) -> None:
    b.tensors[1] = ("b.weight", [32], 8, 33)


def case_duplicate_tensor(b: Builder) -> None:
    b.tensors[1] = ("a.weight", [32], 8, 32)


def case_duplicate_key(b: Builder) -> None:
    b.kv.append(("llama.block_count", UINT32, 2))


def case_too_many_dims(b: Builder) -> None:
    b.tensors[0] = ("a.weight", [1] * 9, 0, 0)


def case_bad_utf8_key(b: Builder) -> None:
    b.kv.append((b"\xff\xfe", UINT32, 1))


def case_bad_alignment(b: Builder) -> None:
    b.kv.append(("general.alignment", UINT32, 3))


def case_bad_version(b: Builder) -> None:
    b.version = 99


def case_block_mismatch(b: Builder) -> None:
    b.tensors[1] = ("b.weight", [31], 8, 32)


def case_tensor_past_end(b: Builder) -> None:
    b.tensors[1] = ("b.weight", [32 * 1000], 8, 32)


def case_deep_array(b: Builder) -> None:
    value: Any = (UINT32, [1])
    for _ in range(6):
        value = (ARRAY, [value])
    b.kv.append(("deep", ARRAY, value))


HOSTILE = {
    "truncated": (case_truncated, "truncated", "the data section has 40"),
    "huge tensor count": (case_huge_tensor_count, "limit-exceeded", "tensor count"),
    "huge kv count": (case_huge_kv_count, "limit-exceeded", "key/value count"),
    "unknown value type": (case_unknown_value_type, "malformed", "unknown value type 99"),
    "overlap": (case_overlap, "malformed", "overlap"),
    "misaligned": (case_misaligned, "malformed", "not a multiple of the alignment"),
    "duplicate tensor": (case_duplicate_tensor, "malformed", "appears twice"),
    "duplicate key": (case_duplicate_key, "malformed", "appears twice"),
    "too many dims": (case_too_many_dims, "limit-exceeded", "dimensions"),
    "bad utf-8 key": (case_bad_utf8_key, "malformed", "UTF-8"),
    "bad alignment": (case_bad_alignment, "malformed", "power-of-two"),
    "bad version": (case_bad_version, "unsupported", "version 99"),
    "block mismatch": (case_block_mismatch, "malformed", "Q8_0 block"),
    "tensor past end": (case_tensor_past_end, "truncated", "data section"),
    "deep array": (case_deep_array, "limit-exceeded", "nests arrays"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_headers_give_one_line_errors(tmp_path: Path, case: str) -> None:
    mutate, code, fragment = HOSTILE[case]
    b = small_model()
    mutate(b)
    error = assert_one_line_error(hostile(b, tmp_path), "gguf", fragment)
    assert error["code"] == code


def test_huge_string_length(tmp_path: Path) -> None:
    raw = bytearray(small_model().build())
    # the first key's length field sits right after the 24-byte header
    raw[24:32] = struct.pack("<Q", 2**50)
    path = tmp_path / "bad.gguf"
    path.write_bytes(bytes(raw))
    assert_one_line_error(path, "gguf", "length")


def test_every_truncation_of_a_fixture_is_a_clean_error(tmp_path: Path) -> None:
    data = (TESTDATA / "gguf" / "llama-tiny-q8_0.gguf").read_bytes()
    header_end = ckptscan.read_inventory(TESTDATA / "gguf" / "llama-tiny-q8_0.gguf").metadata["gguf"]["data_offset"]
    path = tmp_path / "cut.gguf"
    for cut in range(4, header_end + 2000, 97):
        path.write_bytes(data[:cut])
        result = ckptscan.scan(path)
        assert result.error is not None and result.error.code in ("truncated", "limit-exceeded"), (cut, result.error)
