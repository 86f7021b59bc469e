"""The stats pass against plain numpy: every dtype, GGUF blocks (gguf.quants), views, big-endian
data, long rows, task splits, sampling, and the integrity findings."""

from __future__ import annotations

import dataclasses
import json
import math
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from stats_reference import assert_matches, reference

import ckptscan
from ckptscan.dtypes import lookup
from ckptscan.inventory import FileRef, Inventory, Storage, Tensor
from ckptscan.stats import StatsOptions, StatsResult, TensorStats, compute, hashing
from ckptscan.stats import plan as planning
from ckptscan.stats.decode import byte_table

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "testdata" / "stats"


def run(path: Path | Inventory, **options: Any) -> tuple[Inventory, StatsResult]:
    inventory = path if isinstance(path, Inventory) else ckptscan.read_inventory(path)
    return inventory, compute(inventory, StatsOptions(**options))


def by_name(result: StatsResult) -> dict[str, TensorStats]:
    return {s.name: s for s in result.tensors}


def content_hash(dtype: str, data: bytes, leaf: int = planning.TASK_BYTES) -> str:
    """The documented content hash, computed directly."""
    name, make = hashing.algorithm()
    leaves = []
    for start in range(0, len(data), leaf):
        h = make()
        h.update(data[start : start + leaf])
        leaves.append(h.digest())
    outer = make()
    outer.update(b"ckptscan-content-v1\0" + f"{dtype}\0{len(data)}\0".encode() + b"".join(leaves))
    return f"{name}:{outer.hexdigest()}"


# -- safetensors: every dtype -----------------------------------------------------------------------


def safetensors_entries(path: Path) -> dict[str, tuple[str, tuple[int, ...], bytes]]:
    raw = path.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + length])
    header.pop("__metadata__", None)
    base = 8 + length
    out = {}
    for name, info in header.items():
        begin, end = info["data_offsets"]
        out[name] = (info["dtype"], tuple(info["shape"]), raw[base + begin : base + end])
    return out


def decode_with_ml_dtypes(dtype: str, data: bytes) -> np.ndarray:
    ml_dtypes = pytest.importorskip("ml_dtypes")
    plain = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1",
             "U64": "<u8", "U32": "<u4", "U16": "<u2", "U8": "u1", "BOOL": "?"}  # fmt: skip
    if dtype in plain:
        return np.frombuffer(data, dtype=plain[dtype]).astype(np.float64)
    if dtype == "F4":
        codes = np.frombuffer(data, dtype=np.uint8)
        unpacked = np.stack([codes & 0xF, codes >> 4], axis=1).reshape(-1)  # low nibble first
        return unpacked.view(ml_dtypes.float4_e2m1fn).astype(np.float64)
    exotic = {
        "BF16": "bfloat16",
        "F8_E4M3": "float8_e4m3fn",
        "F8_E5M2": "float8_e5m2",
        "F8_E4M3FNUZ": "float8_e4m3fnuz",
        "F8_E5M2FNUZ": "float8_e5m2fnuz",
        "F8_E8M0": "float8_e8m0fnu",
    }
    return np.frombuffer(data, dtype=getattr(ml_dtypes, exotic[dtype])).astype(np.float64)


@pytest.fixture(scope="module")
def dtypes_result() -> tuple[Inventory, StatsResult]:
    return run(FIXTURES / "dtypes.safetensors", workers=2)


DTYPE_TENSORS = [
    "f64", "f32", "f16", "bf16", "f8_e4m3", "f8_e4m3fnuz", "f8_e5m2", "f8_e5m2fnuz", "f8_e8m0", "f4",
    "i64", "i32", "i16", "i8", "u8", "u16", "u32", "u64", "bool", "scalar", "empty",
]  # fmt: skip


@pytest.mark.parametrize("name", DTYPE_TENSORS)
def test_every_safetensors_dtype_matches_numpy(dtypes_result: tuple[Inventory, StatsResult], name: str) -> None:
    _, result = dtypes_result
    dtype, shape, data = safetensors_entries(FIXTURES / "dtypes.safetensors")[name]
    values = decode_with_ml_dtypes(dtype, data)
    floating = lookup(dtype).is_floating
    got = by_name(result)[name]
    assert_matches(got, reference(values, dtype, shape, floating=floating), label=name)
    assert got.hash == content_hash(dtype, data)
    if not floating:
        assert got.near_zero is None and got.sqnr_int8_db is None and "floating-point" in got.notes["int8"]


def test_complex_tensors_are_skipped_with_the_reason(dtypes_result: tuple[Inventory, StatsResult]) -> None:
    _, result = dtypes_result
    assert "complex" in (by_name(result)["c64"].skipped or "")
    assert ("c64", by_name(result)["c64"].skipped) in {(k.name, k.reason) for k in result.summary.skipped}


def test_one_dimensional_and_odd_shapes_say_why_quantization_does_not_apply(
    dtypes_result: tuple[Inventory, StatsResult],
) -> None:
    stats = by_name(dtypes_result[1])
    assert stats["f32"].sqnr_int8_db is not None and stats["f32"].sqnr_int4_g128_db is not None
    assert "fewer than 2 dimensions" in stats["scalar"].notes["int8"]
    assert "shorter" in stats["f8_e8m0"].notes["int4_g128"]  # rows of 4: one short group each
    assert stats["f8_e8m0"].sqnr_int4_g128_db is not None


@pytest.mark.parametrize("name", ["F8_E4M3", "F8_E5M2", "F8_E4M3FNUZ", "F8_E5M2FNUZ", "F8_E8M0", "F4"])
def test_minifloat_tables_match_ml_dtypes(name: str) -> None:
    ml_dtypes = pytest.importorskip("ml_dtypes")
    kind = {"F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2", "F8_E4M3FNUZ": "float8_e4m3fnuz",
            "F8_E5M2FNUZ": "float8_e5m2fnuz", "F8_E8M0": "float8_e8m0fnu", "F4": "float4_e2m1fn"}[name]  # fmt: skip
    ours = np.array(byte_table(name))
    codes = np.arange(len(ours), dtype=np.uint8)
    theirs = codes.view(getattr(ml_dtypes, kind)).astype(np.float64)
    assert np.array_equal(ours, theirs, equal_nan=True)


def test_six_bit_floats_are_skipped_not_guessed(tmp_path: Path) -> None:
    header = json.dumps({"f6": {"dtype": "F6_E2M3", "shape": [32], "data_offsets": [0, 24]}}).encode()
    path = tmp_path / "f6.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header + bytes(range(24)))
    _, result = run(path)
    assert "packed" in (result.tensors[0].skipped or "")


# -- GGUF: quantized blocks against gguf.quants ---------------------------------------------------------

GGUF_TENSORS = ["f32", "f16", "bf16", "i8", "i16", "i32", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1",
                "q2_k", "q3_k", "q4_k", "q5_k", "q6_k", "iq4_nl", "iq4_xs"]  # fmt: skip


@pytest.fixture(scope="module")
def gguf_result() -> tuple[Inventory, StatsResult]:
    return run(FIXTURES / "quants.gguf", workers=2)


@pytest.mark.parametrize("name", GGUF_TENSORS)
def test_gguf_tensors_match_gguf_dequantize(gguf_result: tuple[Inventory, StatsResult], name: str) -> None:
    gguf = pytest.importorskip("gguf")
    from gguf.quants import dequantize

    reader = gguf.GGUFReader(str(FIXTURES / "quants.gguf"))
    entry = next(t for t in reader.tensors if t.name == name)
    shape = tuple(int(d) for d in reversed(entry.shape))
    if entry.tensor_type.name in ("I8", "I16", "I32"):
        values = np.asarray(entry.data, dtype=np.float64)
    else:
        values = dequantize(np.asarray(entry.data), entry.tensor_type)
    inventory, result = gguf_result
    tensor = next(t for t in inventory.tensors if t.name == name)
    got = by_name(result)[name]
    assert_matches(got, reference(values, tensor.dtype.name, shape, floating=tensor.dtype.kind.value != "int"))
    data = bytes(np.asarray(entry.data).view(np.uint8).reshape(-1))
    assert got.hash == content_hash(tensor.dtype.name, data)


def test_big_endian_gguf_gives_the_same_values_and_hashes(gguf_result: tuple[Inventory, StatsResult]) -> None:
    little = by_name(gguf_result[1])
    inventory, result = run(FIXTURES / "bigendian.gguf")
    assert {t.encoding for t in inventory.tensors} == {"raw-big-endian"}
    for s in result.tensors:
        assert s.skipped is None
        assert (s.min, s.max, s.mean, s.std, s.hash) == (
            little[s.name].min, little[s.name].max, little[s.name].mean, little[s.name].std, little[s.name].hash,
        )  # fmt: skip


# -- views into a shared storage (hand-built inventory over a raw file) ----------------------------------

STORAGE_ROWS, STORAGE_COLS, PREFIX = 64, 160, 24


def storage_values() -> np.ndarray:
    rng = np.random.default_rng(61)
    values = (rng.standard_normal(STORAGE_ROWS * STORAGE_COLS) * 0.03).astype(np.float32)
    values[::11] = 0
    return values


VIEWS: dict[str, tuple[tuple[int, ...], tuple[int, ...] | None, int]] = {
    # name: (shape, strides in elements or None for contiguous, storage offset in elements)
    "whole": ((64, 160), None, 0),
    "rows": ((10, 160), None, 5 * 160),
    "columns": ((64, 32), (160, 1), 8),
    "every_other_row": ((32, 128), (320, 1), 16),
    "broadcast": ((4, 160), (0, 1), 3 * 160),
    "permuted_3d": ((16, 4, 128), (160, 2560, 1), 0),
    "transposed": ((160, 64), (1, 160), 0),
}


def view_inventory(tmp_path: Path, *, big_endian: bool = False) -> Inventory:
    values = storage_values()
    data = values.astype(">f4" if big_endian else "<f4").tobytes()
    (tmp_path / "data.bin").write_bytes(b"\xff" * PREFIX + data)
    f32 = lookup("F32")
    encoding = "raw-big-endian" if big_endian else "raw"
    storage = Storage("s0", "data.bin", PREFIX, len(data), f32, encoding=encoding)
    tensors = tuple(
        Tensor(name, shape, f32, math.prod(shape), math.prod(shape) * 4, "data.bin", None, storage="s0",
               storage_offset=offset * 4, strides=strides)
        for name, (shape, strides, offset) in VIEWS.items()
    )  # fmt: skip
    return Inventory("test", str(tmp_path / "data.bin"), str(tmp_path), (FileRef("data.bin", PREFIX + len(data)),),
                     tensors, storages=(storage,))  # fmt: skip


def expected_view(name: str) -> np.ndarray:
    shape, strides, offset = VIEWS[name]
    values = storage_values()
    if strides is None:
        return values[offset : offset + math.prod(shape)].reshape(shape)
    return np.lib.stride_tricks.as_strided(values[offset:], shape=shape, strides=tuple(4 * s for s in strides))


@pytest.mark.parametrize("name", list(VIEWS))
def test_views_through_strides_match_numpy(tmp_path: Path, name: str) -> None:
    _, result = run(view_inventory(tmp_path), workers=2)
    expected = expected_view(name)
    got = by_name(result)[name]
    assert_matches(got, reference(expected, "F32", expected.shape), label=name)
    assert got.hash == content_hash("F32", np.ascontiguousarray(expected).tobytes())


def test_a_transpose_too_scattered_to_gather_gives_order_free_statistics_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ckptscan import data

    monkeypatch.setattr(data, "MAX_VIEW_SPAN_BYTES", 2048)  # one row of the transpose spans 40 KB
    _, result = run(view_inventory(tmp_path))
    got = by_name(result)["transposed"]
    want = reference(expected_view("transposed"), "F32", VIEWS["transposed"][0])
    assert (got.min, got.max, got.zeros, got.nan) == (want["min"], want["max"], want["zeros"], 0)
    assert math.isclose(got.std or 0, want["std"], rel_tol=1e-5)
    assert dict(got.near_zero or {}) == want["near_zero"]
    assert got.hash is None and got.sqnr_int8_db is None and "transposed" in got.notes["order"]


def test_views_of_one_storage_are_not_reported_as_duplicates(tmp_path: Path) -> None:
    inventory = view_inventory(tmp_path)
    twice = Inventory(inventory.format, inventory.path, inventory.root, inventory.files,
                      (*inventory.tensors, Tensor("whole_again", *_tensor_fields(inventory.tensors[0]))),
                      storages=inventory.storages)  # fmt: skip
    _, result = run(twice)
    assert by_name(result)["whole_again"].hash == by_name(result)["whole"].hash
    assert not [f for f in result.findings if f.code == "duplicate-tensor-content"]


def _tensor_fields(t: Tensor) -> tuple[Any, ...]:
    return (t.shape, t.dtype, t.elements, t.nbytes, t.file, t.offset, t.storage, t.storage_offset, t.strides)


def test_wide_strided_reads_are_split_to_bounded_spans(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ckptscan import data

    _, whole = run(view_inventory(tmp_path))
    monkeypatch.setattr(data, "MAX_VIEW_SPAN_BYTES", 2048)
    _, split = run(view_inventory(tmp_path))
    for a, b in zip(whole.tensors, split.tensors, strict=True):
        if a.name not in ("transposed", "permuted_3d"):  # slabs wider than the span: storage order
            assert (a.min, a.max, a.zeros, a.hash, a.sqnr_int8_db) == (b.min, b.max, b.zeros, b.hash, b.sqnr_int8_db)


def test_big_endian_raw_storage_equals_little_endian(tmp_path: Path) -> None:
    (tmp_path / "le").mkdir()
    (tmp_path / "be").mkdir()
    _, little = run(view_inventory(tmp_path / "le"))
    _, big = run(view_inventory(tmp_path / "be", big_endian=True))
    for a, b in zip(little.tensors, big.tensors, strict=True):
        assert (a.mean, a.std, a.hash, a.sqnr_int4_g128_db) == (b.mean, b.std, b.hash, b.sqnr_int4_g128_db)


# -- layout: long rows, task splits, workers -------------------------------------------------------------


def raw_inventory(tmp_path: Path, arrays: dict[str, np.ndarray], dtype: str = "F32") -> Inventory:
    blob, tensors, offset = b"", [], 0
    for name, array in arrays.items():
        data = np.ascontiguousarray(array).tobytes()
        tensors.append(Tensor(name, array.shape, lookup(dtype), array.size, len(data), "w.bin", offset))
        blob += data
        offset += len(data)
    (tmp_path / "w.bin").write_bytes(blob)
    return Inventory("test", str(tmp_path / "w.bin"), str(tmp_path), (FileRef("w.bin", len(blob)),), tuple(tensors))


def layout_arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    matrix = (rng.standard_normal((50, 2560)) * 0.02).astype(np.float32)
    matrix[3] = 0
    matrix[7, ::3] *= 50
    vector = (rng.standard_normal(5000) * 0.5).astype(np.float32)
    vector[100] = np.nan
    odd = (rng.standard_normal((33, 100)) * 0.1).astype(np.float32)
    ragged = (rng.standard_normal((6, 2600)) * 0.1).astype(np.float32)  # long rows ending in a short group
    return {"matrix": matrix, "vector": vector, "odd": odd, "ragged": ragged}


def test_long_rows_are_read_in_pieces_after_a_first_sweep(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(planning, "MAX_ROW_ELEMENTS", 1024)
    monkeypatch.setattr(planning, "PIECE_ELEMENTS", 256)
    arrays = layout_arrays()
    _, result = run(raw_inventory(tmp_path, arrays), workers=2)
    for name, array in arrays.items():
        assert_matches(by_name(result)[name], reference(array, "F32", array.shape), label=name)
        assert by_name(result)[name].hash == content_hash("F32", array.tobytes())


def test_tasks_split_anywhere_merge_to_the_same_result(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    arrays = layout_arrays()
    _, whole = run(raw_inventory(tmp_path, arrays))
    monkeypatch.setattr(planning, "TASK_BYTES", 4096)  # rows of 10,240 / 400 bytes cross task edges
    _, split = run(raw_inventory(tmp_path, arrays), workers=3)
    for name, array in arrays.items():
        got = by_name(split)[name]
        assert_matches(got, reference(array, "F32", array.shape), label=name)
        assert got.hash == content_hash("F32", array.tobytes(), leaf=4096)
        assert got.zeros == by_name(whole)[name].zeros


def test_results_do_not_depend_on_the_number_of_workers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(planning, "TASK_BYTES", 8192)
    inventory = raw_inventory(tmp_path, layout_arrays())
    one = compute(inventory, StatsOptions(workers=1))
    three = compute(inventory, StatsOptions(workers=3))
    assert one.tensors == three.tensors


def test_quantization_error_agrees_with_direct_quantize_dequantize(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    heavy = (rng.standard_t(3, size=(256, 512)) * 0.02).astype(np.float32)
    heavy[:, 17] *= 30  # an outlier input channel
    ml_dtypes = pytest.importorskip("ml_dtypes")
    bf16 = heavy.astype(ml_dtypes.bfloat16)
    inventory = raw_inventory(tmp_path, {"heavy": bf16.view(np.uint16)}, dtype="BF16")
    _, result = run(inventory)
    got = result.tensors[0]
    values = bf16.astype(np.float64)
    from stats_reference import sqnr

    assert abs((got.sqnr_int8_db or 0) - (sqnr(values, 127) or 0)) < 0.1
    assert abs((got.sqnr_int4_g128_db or 0) - (sqnr(values.reshape(-1, 128), 7) or 0)) < 0.1
    ranked = result.summary.quantization.keep_high_precision
    assert ranked and ranked[0].name == "heavy"


# -- sampling ----------------------------------------------------------------------------------------------


def test_sampling_reads_the_stated_fraction_and_says_so(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    big = (rng.standard_normal((2048, 1024)) * 0.02).astype(np.float32)  # 8 MiB
    small = big[:4].copy()
    inventory = raw_inventory(tmp_path, {"big": big, "small": small})
    _, full = run(inventory)
    _, sampled = run(inventory, sample=0.1)
    got, exact = by_name(sampled)["big"], by_name(full)["big"]
    assert got.sampled and 0.09 <= got.fraction <= 0.13 and got.elements == round(got.fraction * big.size)
    assert got.hash is None and got.notes["hash"] == "sampled"
    assert abs((got.std or 0) - (exact.std or 0)) / (exact.std or 1) < 0.02
    assert abs((got.sqnr_int4_g128_db or 0) - (exact.sqnr_int4_g128_db or 0)) < 0.2
    assert not by_name(sampled)["small"].sampled and by_name(sampled)["small"].hash is not None
    assert sampled.sampled and sampled.summary.sample_fraction == 0.1 and sampled.summary.pruning.estimated
    assert sampled.bytes_read < 0.2 * full.bytes_read


# -- integrity findings ---------------------------------------------------------------------------------


def test_integrity_fixture_produces_its_findings() -> None:
    _, result = run(FIXTURES / "integrity.safetensors")
    found = {(f.code, f.where): f for f in result.findings}
    assert "2 NaN values" in found["nan-values", "layers.2.nan.weight"].message
    assert "2 infinite values" in found["inf-values", "layers.2.inf.weight"].message
    assert found["all-zero-tensor", "layers.2.dead.weight"].severity.value == "medium"
    assert found["all-zero-tensor", "layers.1.mlp.bias"].severity.value == "low"
    duplicate = found["duplicate-tensor-content", "layers.0.attn.weight"]
    assert "layers.1.attn.weight" in duplicate.message
    stats = by_name(result)
    assert stats["layers.0.mlp.weight"].structured_2_4 is True
    assert stats["layers.0.attn.weight"].structured_2_4 is False
    assert stats["layers.2.nan.weight"].nan == 2 and stats["layers.2.inf.weight"].inf == 2
    integrity = result.summary.integrity
    assert integrity.nan_tensors == ("layers.2.nan.weight",) and integrity.nan_values == 2
    assert integrity.duplicate_groups[0].copies == 2
    assert result.summary.pruning.structured_2_4.tensors == ("layers.0.mlp.weight",)
    assert "layers.1.mlp.weight" in {e.name for e in result.summary.quantization.keep_high_precision}


def test_integrity_values_match_numpy() -> None:
    _, result = run(FIXTURES / "integrity.safetensors")
    entries = safetensors_entries(FIXTURES / "integrity.safetensors")
    for s in result.tensors:
        dtype, shape, data = entries[s.name]
        values = np.frombuffer(data, dtype="<f4" if dtype == "F32" else "<f2")
        assert_matches(s, reference(values, dtype, shape), label=s.name)


# -- errors, dependencies ------------------------------------------------------------------------------------


def test_unreadable_tensors_are_skipped_and_the_rest_computed(tmp_path: Path) -> None:
    inventory = raw_inventory(tmp_path, {"ok": np.ones((4, 4), np.float32)})
    f32 = lookup("F32")
    broken = (
        Tensor("past_the_end", (100,), f32, 100, 400, "w.bin", 10_000),
        Tensor("packed_field", (4,), f32, 4, 16, "w.bin", None, encoding="some-future-encoding"),
        Tensor("elsewhere", (4,), f32, 4, 16, "../outside.bin", 0),
        Tensor("missing_storage", (4,), f32, 4, 16, "w.bin", None, storage="nope"),
    )
    inventory = Inventory("test", inventory.path, inventory.root, inventory.files, inventory.tensors + broken)
    _, result = run(inventory)
    stats = by_name(result)
    assert stats["ok"].skipped is None and stats["ok"].mean == 1.0
    assert "needs bytes" in (stats["past_the_end"].skipped or "")
    assert "some-future-encoding" in (stats["packed_field"].skipped or "")
    assert "out of the model's folder" in (stats["elsewhere"].skipped or "")
    assert "not in the inventory" in (stats["missing_storage"].skipped or "")
    assert len(result.summary.skipped) == 4


def test_bad_options_are_usage_errors() -> None:
    from ckptscan.errors import UsageError

    with pytest.raises(UsageError):
        StatsOptions(sample=0).validated()
    with pytest.raises(UsageError):
        StatsOptions(sample=float("nan")).validated()
    with pytest.raises(UsageError):
        StatsOptions(workers=-1).validated()


def test_sha256_is_used_without_xxhash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import hashlib

    hashing.algorithm.cache_clear()
    monkeypatch.setitem(sys.modules, "xxhash", None)
    try:
        array = np.arange(12, dtype=np.float32).reshape(3, 4)
        _, result = run(raw_inventory(tmp_path, {"a": array}))
        leaf = hashlib.sha256(array.tobytes()).digest()
        outer = hashlib.sha256(b"ckptscan-content-v1\0F32\x0048\0" + leaf).hexdigest()
        assert result.tensors[0].hash == f"sha256:{outer}"
        assert result.hash_algorithm == "sha256"
    finally:
        hashing.algorithm.cache_clear()


def test_a_plain_scan_never_imports_numpy() -> None:
    code = (
        "import contextlib, io, sys, ckptscan\n"
        "from ckptscan.cli import main\n"
        f"r = ckptscan.scan({str(FIXTURES / 'dtypes.safetensors')!r})\n"
        f"g = ckptscan.scan({str(FIXTURES / 'quants.gguf')!r})\n"
        "assert r.ok and g.ok\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        f"    main([{str(FIXTURES / 'integrity.safetensors')!r}, '--json'])\n"
        f"    main([{str(FIXTURES / 'integrity.safetensors')!r}])\n"
        "print('numpy' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "False"


# -- real third-party files --------------------------------------------------------------------------------


def test_real_safetensors_and_gguf_files_match_their_libraries(real_models: Path) -> None:
    gguf = pytest.importorskip("gguf")
    from safetensors.numpy import load_file

    manifest = json.loads((real_models / "MANIFEST.json").read_text())
    checked = 0
    for entry in manifest["files"]:
        path = real_models / entry["path"]
        if entry["format"] == "safetensors":
            arrays = load_file(str(path))
        elif entry["format"] == "gguf":
            reader = gguf.GGUFReader(str(path))
            arrays = {t.name: np.asarray(t.data).reshape([int(d) for d in reversed(t.shape)]) for t in reader.tensors}
        else:
            continue
        inventory, result = run(path)
        for tensor, s in zip(inventory.tensors, result.tensors, strict=True):
            array = arrays[tensor.name]
            if s.skipped is not None:
                assert array.dtype.kind == "c", s.skipped
                continue
            floating = array.dtype.kind == "f"
            assert_matches(s, reference(array, tensor.dtype.name, tensor.shape, floating=floating), label=tensor.name)
            checked += 1
    assert checked > 0


def test_every_real_file_gets_statistics_without_internal_errors(real_models: Path) -> None:
    manifest = json.loads((real_models / "MANIFEST.json").read_text())
    computed = 0
    for entry in manifest["files"]:
        result = ckptscan.scan(real_models / entry["path"])
        if result.inventory is None or not result.inventory.tensors:
            continue
        stats = compute(result.inventory, StatsOptions(workers=2))
        for tensor, s in zip(result.inventory.tensors, stats.tensors, strict=True):
            assert "internal error" not in (s.skipped or ""), f"{entry['path']}: {tensor.name}: {s.skipped}"
            if s.skipped is None:
                assert s.elements == tensor.elements, f"{entry['path']}: {tensor.name}"
                computed += 1
    assert computed > 0


def test_forked_worker_processes_give_the_same_results(tmp_path: Path) -> None:
    import multiprocessing

    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("no fork on this platform")
    inventory = raw_inventory(tmp_path, layout_arrays())
    threads = compute(inventory, StatsOptions(workers=2, executor="thread"))
    processes = compute(inventory, StatsOptions(workers=2, executor="process"))
    assert threads.tensors == processes.tensors


def test_channels_last_weights_split_across_tasks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(11)
    weight = (rng.standard_normal((512, 96)) * 0.02).astype(np.float32)  # [in, out], as ONNX MatMul's B
    weight[:, 5] *= 40  # one loud output channel
    weight[::4, :] = 0
    weight[1::4, :] = 0  # 2 of every 4 inputs zero: the 2:4 pattern down the columns
    inventory = raw_inventory(tmp_path, {"proj": weight})
    consumers = {"consumers": [{"op": "MatMul", "input": 1, "node": "mm", "domain": ""}]}
    tensor = dataclasses.replace(inventory.tensors[0], attrs=consumers)
    inventory = dataclasses.replace(inventory, tensors=(tensor,))
    monkeypatch.setattr(planning, "TASK_BYTES", 64 * 1024)  # 4 tasks of 128-row units
    _, result = run(inventory, workers=2)
    got = result.tensors[0]
    assert "last dimension" in got.notes["layout"]
    assert_matches(got, reference(weight, "F32", weight.shape, channels_last=True))
    assert got.structured_2_4 is True
    assert got.hash == content_hash("F32", weight.tobytes(), leaf=64 * 1024)
    _, sampled = run(inventory, sample=0.5)
    assert sampled.tensors[0].sqnr_int8_db is None or not sampled.tensors[0].sampled


def test_every_ggml_type_matches_gguf_or_says_why() -> None:
    gguf = pytest.importorskip("gguf")
    from gguf.quants import dequantize

    path = REPO / "testdata" / "gguf" / "all-ggml-types.gguf"
    reader = gguf.GGUFReader(str(path))
    inventory, result = run(path, workers=2)
    checked = 0
    for entry, tensor, got in zip(reader.tensors, inventory.tensors, result.tensors, strict=True):
        assert entry.name == tensor.name
        try:
            if entry.tensor_type.name in ("I8", "I16", "I32", "I64", "F64"):
                values = np.asarray(entry.data, dtype=np.float64)
            else:
                values = dequantize(np.asarray(entry.data), entry.tensor_type)
        except NotImplementedError:
            assert got.skipped is not None, tensor.name
            continue
        shape = tuple(int(d) for d in reversed(entry.shape))
        floating = tensor.dtype.kind.value != "int"
        assert_matches(got, reference(values, tensor.dtype.name, shape, floating=floating), label=tensor.name)
        checked += 1
    assert checked >= 25


def test_views_that_repeat_their_storage_are_not_expanded(tmp_path: Path) -> None:
    inventory = view_inventory(tmp_path)
    f32 = lookup("F32")
    huge = 1 << 40  # a stride-0 view claiming 4 TiB of values over a 40 KB storage
    repeat = Tensor("repeat", (huge,), f32, huge, huge * 4, "data.bin", None, storage="s0", strides=(0,))
    inventory = dataclasses.replace(inventory, tensors=(*inventory.tensors, repeat))
    _, result = run(inventory)
    assert "repeats it" in (by_name(result)["repeat"].skipped or "")
    assert by_name(result)["whole"].skipped is None
