"""The stats pass on every format's committed fixtures, against that format's own library:
PyTorch (torch.load: stored zip storages, views, legacy files, quantized tensors), NumPy (np.load:
stored and deflated npz, Fortran order, big-endian), HDF5 and Keras (h5py: contiguous, chunked and
compressed, compact, never written; .keras zips)."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from stats_reference import assert_matches, reference

import ckptscan
from ckptscan.stats import StatsOptions, StatsResult, compute
from ckptscan.stats.plan import channels_last

TESTDATA = Path(__file__).resolve().parent.parent / "testdata"


def check_file(path: Path, values_of: Callable[[str], np.ndarray | None], **options: object) -> StatsResult:
    """Every tensor with statistics matches numpy on the library's values; returns the result."""
    inventory = ckptscan.read_inventory(path)
    result = compute(inventory, StatsOptions(**options))  # type: ignore[arg-type]
    compared = 0
    for tensor, stats in zip(inventory.tensors, result.tensors, strict=True):
        if stats.skipped is not None:
            continue
        values = values_of(tensor.name)
        if values is None:
            continue
        floating = tensor.dtype.is_floating or tensor.dtype.kind.value == "quantized"
        layout = "layout" in stats.notes  # channels-last weights: Keras kernels, ONNX MatMul weights
        want = reference(values, tensor.dtype.name, tensor.shape, floating=floating, channels_last=layout)
        assert_matches(stats, want, label=tensor.name)
        compared += 1
    assert compared, f"nothing compared in {path}"
    return result


# -- PyTorch --------------------------------------------------------------------------------------------


def torch_values(path: Path, *, weights_only: bool = True) -> Callable[[str], np.ndarray | None]:
    torch = pytest.importorskip("torch")
    loaded = torch.load(path, map_location="cpu", weights_only=weights_only)  # a test cross-check only

    def values_of(name: str) -> np.ndarray | None:
        value = loaded.get(name) if isinstance(loaded, dict) else None
        if value is None or not isinstance(value, torch.Tensor) or value.is_complex() or value.is_meta:
            return None
        if value.is_quantized:
            value = value.dequantize()
        return value.detach().to(torch.float64).numpy()

    return values_of


@pytest.mark.parametrize("name", ["dtypes.pt", "tied.bin", "legacy.pt"])
def test_torch_files_match_torch_load(name: str) -> None:
    result = check_file(TESTDATA / "torch" / name, torch_values(TESTDATA / "torch" / name), workers=2)
    if name == "tied.bin":  # lm_head shares the embedding's storage: one copy, not a duplicate
        assert not [f for f in result.findings if f.code == "duplicate-tensor-content"]
        stats = {s.name: s for s in result.tensors}
        assert stats["lm_head.weight"].hash == stats["model.embed_tokens.weight"].hash


def test_torch_quantized_per_tensor_is_dequantized() -> None:
    path = TESTDATA / "torch" / "quantized.pt"
    result = check_file(path, torch_values(path, weights_only=False))
    stats = {s.name: s for s in result.tensors}
    assert stats["per_tensor"].skipped is None and stats["packed4"].skipped is None
    assert "per_channel_affine" in (stats["per_channel"].skipped or "")
    assert "meta tensor" in (stats["meta"].skipped or "")


# -- NumPy ----------------------------------------------------------------------------------------------


def numpy_values(path: Path) -> Callable[[str], np.ndarray | None]:
    if path.suffix == ".npy":
        array = np.load(path, allow_pickle=False)
        return lambda name: array.astype(np.float64)
    archive = np.load(path, allow_pickle=False)

    def values_of(name: str) -> np.ndarray | None:
        array = archive[name]
        return None if array.dtype.kind not in "biuf" else array.astype(np.float64)

    return values_of


@pytest.mark.parametrize(
    "name", ["compressed.npz", "stored.npz", "f32.npy", "f64_fortran.npy", "i32_big.npy", "mask.npy", "half_scalar.npy"]
)
def test_numpy_files_match_np_load(name: str) -> None:
    path = TESTDATA / "numpy" / name
    check_file(path, numpy_values(path))


def test_deflated_npz_sampled_and_whole(tmp_path: Path) -> None:
    rng = np.random.default_rng(9)
    big = (rng.standard_normal((1024, 2048)) * 0.02).astype(np.float32)  # 8 MiB: sampled
    big[:, ::2] = 0
    np.savez_compressed(tmp_path / "big.npz", big=big, small=big[:3])
    inventory = ckptscan.read_inventory(tmp_path / "big.npz")
    assert inventory.tensors[0].encoding == "zip-deflated"
    whole = check_file(tmp_path / "big.npz", numpy_values(tmp_path / "big.npz"), workers=2)
    sampled = compute(inventory, StatsOptions(sample=0.1))
    got, exact = sampled.tensors[0], whole.tensors[0]
    assert got.sampled and 0.09 <= got.fraction <= 0.13
    assert abs((got.std or 0) - (exact.std or 0)) < 0.03 * (exact.std or 1)
    assert got.zeros == got.elements // 2


# -- HDF5 and Keras ---------------------------------------------------------------------------------------


def h5_values(path: Path, member: str | None = None) -> Callable[[str], np.ndarray | None]:
    h5py = pytest.importorskip("h5py")
    if member is None:
        handle = h5py.File(path, "r", locking=False)
    else:
        with zipfile.ZipFile(path) as archive:
            handle = h5py.File(io.BytesIO(archive.read(member)), "r")
    inventory = ckptscan.read_inventory(path)
    paths = {t.name: str(t.attrs["hdf5_path"]) for t in inventory.tensors}

    def values_of(name: str) -> np.ndarray | None:
        dataset = handle[paths[name]]
        if dataset.dtype.kind not in "biuf":
            return None
        return np.asarray(dataset[()], dtype=np.float64)

    return values_of


def test_hdf5_layouts_match_h5py() -> None:
    path = TESTDATA / "hdf5" / "layouts.h5"
    result = check_file(path, h5_values(path))
    stats = {s.name: s for s in result.tensors}
    for name in ("packed/gzip", "packed/lzf", "packed/compact", "misc/unallocated", "weights/big_endian"):
        assert stats[name].skipped is None, name
    assert stats["packed/never_written"].zeros == 1_000_000  # the fill value everywhere


@pytest.mark.parametrize("name", ["tiny.weights.h5", "tiny_legacy.h5"])
def test_keras_hdf5_files_match_h5py(name: str) -> None:
    path = TESTDATA / "keras" / name
    check_file(path, h5_values(path))


def test_keras_kernels_and_onnx_matmul_weights_are_measured_per_column() -> None:
    inventory = ckptscan.read_inventory(TESTDATA / "keras" / "tiny.weights.h5")
    kernels = [t for t in inventory.tensors if channels_last(t)]
    assert kernels and all(str(t.attrs.get("variable", "")).endswith("kernel") for t in kernels)
    result = compute(inventory)
    stats = {s.name: s for s in result.tensors}
    assert all("output channels on the last dimension" in stats[t.name].notes["layout"] for t in kernels)
    onnx = ckptscan.read_inventory(TESTDATA / "onnx" / "torch_export" / "model.onnx")
    assert any(channels_last(t) for t in onnx.tensors)


def test_keras_v3_zip_matches_h5py() -> None:
    path = TESTDATA / "keras" / "tiny.keras"
    check_file(path, h5_values(path, member="model.weights.h5"))


def test_deflated_keras_member_is_inflated_as_it_is_read(tmp_path: Path) -> None:
    source = TESTDATA / "keras" / "tiny.keras"
    target = tmp_path / "deflated.keras"
    with zipfile.ZipFile(source) as original, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as copy:
        for info in original.infolist():
            copy.writestr(info.filename, original.read(info.filename))
    inventory = ckptscan.read_inventory(target)
    assert {t.encoding for t in inventory.tensors} == {"zip-deflated"}
    check_file(target, h5_values(target, member="model.weights.h5"))


# -- ONNX and TensorFlow -----------------------------------------------------------------------------------


def onnx_values(path: Path) -> Callable[[str], np.ndarray | None]:
    onnx = pytest.importorskip("onnx")
    from onnx import numpy_helper

    model = onnx.load(str(path), load_external_data=True)  # a test cross-check only
    protos = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        for attribute in node.attribute:
            if node.op_type == "Constant" and attribute.name == "value":
                protos[node.output[0]] = attribute.t

    def values_of(name: str) -> np.ndarray | None:
        proto = protos.get(name)
        if proto is None:
            return None
        array = numpy_helper.to_array(proto)
        if array.dtype.kind in "cOSU":
            return None
        return np.asarray(array).astype(np.float64)

    return values_of


@pytest.mark.parametrize(
    "name", ["dtypes.onnx", "graph.onnx", "external_one_file/model.onnx", "external_per_tensor/model.onnx"]
)
def test_onnx_files_match_onnx_numpy_helper(name: str) -> None:
    path = TESTDATA / "onnx" / name
    result = check_file(path, onnx_values(path))
    if name == "dtypes.onnx":  # typed fields, packed sub-byte values with a part-filled last byte
        stats = {s.name: s for s in result.tensors}
        for tensor in ("typed_f16", "typed_bf16", "typed_i8", "typed_u32", "typed_i4_odd", "typed_u2", "raw_i4_odd"):
            assert stats[tensor].skipped is None, tensor
        assert "attribute" in (stats["const_float"].skipped or "")


@pytest.mark.parametrize("name", ["tf1_saver/model.ckpt-2.index", "tf2_module/ckpt-1.index", "sharded/ckpt-1.index"])
def test_tensorflow_checkpoints_get_statistics(name: str) -> None:
    path = TESTDATA / "tf_checkpoint" / name
    inventory = ckptscan.read_inventory(path)
    result = compute(inventory)
    for tensor, stats in zip(inventory.tensors, result.tensors, strict=True):
        if tensor.dtype.name in ("STRING", "C64", "C128"):
            assert stats.skipped is not None
            continue
        assert stats.skipped is None and stats.elements == tensor.elements, tensor.name
        if tensor.encoding == "raw" and tensor.dtype.name == "F32" and tensor.offset is not None:
            raw = (path.parent / tensor.file).read_bytes()[tensor.offset : tensor.offset + tensor.nbytes]
            values = np.frombuffer(raw, dtype="<f4")
            want = reference(values, "F32", tensor.shape, channels_last="layout" in stats.notes)
            assert_matches(stats, want, label=tensor.name)


@pytest.mark.parametrize(
    "name", ["hdf5/layouts.h5", "keras/tiny.keras", "numpy/compressed.npz", "torch/tied.bin", "onnx/dtypes.onnx"]
)
def test_forked_workers_read_every_format_alike(name: str) -> None:
    import multiprocessing

    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("no fork on this platform")
    inventory = ckptscan.read_inventory(TESTDATA / name)
    processes = compute(inventory, StatsOptions(workers=2, executor="process"))
    threads = compute(inventory, StatsOptions(workers=2, executor="thread"))
    assert processes.tensors == threads.tensors
