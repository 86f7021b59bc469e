"""PyTorch reader: committed fixtures and real files, checked against torch and the manifest."""

from __future__ import annotations

import collections
import itertools
from pathlib import Path
from typing import Any

import pytest

import ckptscan
from ckptscan import registry
from ckptscan.formats.torch.storage import dead_bytes, sharing_summary, storage_use
from ckptscan.inventory import Inventory, RegionKind
from tests.conftest import TESTDATA, real_entries

FIXTURES = TESTDATA / "torch"
FILES = [
    "dtypes.pt",
    "tied.bin",
    "legacy.pt",
    "legacy.tar",
    "torchscript.pt",
    "quantized.pt",
    "numpy_objects.pt",
    "training.pt",
    "lightning.ckpt",
]


def read(name: str) -> Inventory:
    return ckptscan.read_inventory(FIXTURES / name)


# -- ground truth from torch (tests only; our own fixtures) -----------------------------------------


def torch_tensors(obj: Any, prefix: str = "", seen: set[int] | None = None) -> dict[str, Any]:
    """Every tensor reachable from ``obj`` by our naming rules: dict keys, indices, attributes."""
    import numpy as np
    import torch

    seen = set() if seen is None else seen
    found: dict[str, Any] = {}

    def join(key: Any) -> str:
        return f"{prefix}.{key}" if prefix else str(key)

    if isinstance(obj, torch.Tensor):
        found[prefix] = obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            found.update(torch_tensors(v, join(k), seen))
    elif isinstance(obj, list | tuple):
        for i, v in enumerate(obj):
            found.update(torch_tensors(v, join(i), seen))
    elif isinstance(obj, np.ndarray | np.generic | str | int | float | bool | bytes) or obj is None:
        pass
    elif hasattr(obj, "__dict__") and id(obj) not in seen:
        seen.add(id(obj))
        for k, v in vars(obj).items():
            found.update(torch_tensors(v, join(k), seen))
    return found


def torch_name(dtype: Any) -> str:
    return str(dtype).removeprefix("torch.")


def load_with_torch(path: Path) -> Any:
    torch = pytest.importorskip("torch")
    if path.name == "torchscript.pt":
        return None
    # weights_only=True where torch accepts it; our own fixtures otherwise (numpy, Lightning, tar)
    try:
        return torch.load(path, weights_only=True, map_location="cpu")
    except Exception:
        return torch.load(path, weights_only=False, map_location="cpu")


@pytest.mark.parametrize("name", [n for n in FILES if n != "torchscript.pt"])
def test_fixture_matches_torch(name: str) -> None:
    truth = torch_tensors(load_with_torch(FIXTURES / name))
    inventory = read(name)
    ours = {t.name: t for t in inventory.tensors if "._q_" not in t.name}
    assert sorted(ours) == sorted(truth)
    for tensor_name, expected in truth.items():
        got = ours[tensor_name]
        assert got.shape == tuple(expected.shape), tensor_name
        assert got.native_dtype == f"torch.{torch_name(expected.dtype)}", tensor_name
        assert got.elements == expected.numel(), tensor_name
        if expected.device.type != "meta":
            assert got.nbytes == expected.untyped_storage().nbytes() * 0 + _nbytes(expected), tensor_name
            assert got.storage_offset == expected.storage_offset() * expected.element_size(), tensor_name
            assert (got.strides is None) == expected.is_contiguous(), tensor_name
    _check_sharing(inventory, truth)


def _nbytes(tensor: Any) -> int:
    import torch

    if tensor.dtype == torch.quint4x2:
        return (tensor.numel() + 1) // 2
    return int(tensor.numel() * tensor.element_size())


def _check_sharing(inventory: Inventory, truth: dict[str, Any]) -> None:
    """Tensors share a storage in our inventory exactly when they do in torch."""
    ours = {t.name: t.storage for t in inventory.tensors if t.storage is not None}
    by_pointer: dict[int, set[str]] = collections.defaultdict(set)
    for name, tensor in truth.items():
        if tensor.device.type != "meta" and name in ours:
            by_pointer[tensor.untyped_storage().data_ptr()].add(name)
    groups_truth = sorted(sorted(g) for g in by_pointer.values())
    by_key: dict[str, set[str]] = collections.defaultdict(set)
    for name, key in ours.items():
        if name in set().union(*by_pointer.values()):
            by_key[key].add(name)
    assert sorted(sorted(g) for g in by_key.values()) == groups_truth


def test_torchscript_matches_jit_state_dict() -> None:
    torch = pytest.importorskip("torch")
    module = torch.jit.load(str(FIXTURES / "torchscript.pt"))
    inventory = read("torchscript.pt")
    assert inventory.format == "torchscript"
    model = {t.name: t for t in inventory.tensors if t.attrs["structure"] == "model"}
    expected = module.state_dict()
    assert sorted(model) == sorted(expected)
    for name, tensor in expected.items():
        assert model[name].shape == tuple(tensor.shape)
    assert [t.name for t in inventory.tensors if t.attrs["structure"] == "constants"] == ["constants.0"]
    assert any(f.code == "torchscript-code" for f in inventory.findings)
    assert any(r.kind is RegionKind.CODE for r in inventory.regions)


def test_formats_and_sections() -> None:
    assert read("legacy.pt").format == "pytorch-legacy"
    assert read("legacy.tar").format == "pytorch-legacy-tar"
    assert read("lightning.ckpt").format == "lightning"
    assert read("dtypes.pt").format == "pytorch"
    lightning = read("lightning.ckpt")
    assert {t.section for t in lightning.tensors} >= {"state_dict", "optimizer_states"}
    assert lightning.metadata["lightning"]["global_step"] == 4
    assert lightning.metadata["lightning"]["epoch"] == 1


def test_dtypes_are_canonical() -> None:
    by_name = {t.name: t for t in read("dtypes.pt").tensors}
    expected = {"f32": "F32", "f16": "F16", "bf16": "BF16", "f64": "F64", "i64": "I64", "i32": "I32",
                "i16": "I16", "i8": "I8", "u8": "U8", "bool": "BOOL", "c64": "C64", "f8_e4m3": "F8_E4M3",
                "f8_e5m2": "F8_E5M2"}  # fmt: skip
    for name, dtype in expected.items():
        assert by_name[name].dtype.name == dtype
    assert by_name["scalar"].shape == () and by_name["scalar"].elements == 1
    assert by_name["empty"].elements == 0 and by_name["empty"].nbytes == 0


def test_quantized_meta_parameter() -> None:
    by_name = {t.name: t for t in read("quantized.pt").tensors}
    assert by_name["per_tensor"].dtype.name == "QUINT8"
    assert by_name["per_tensor"].attrs["scale"] == pytest.approx(0.1)
    assert by_name["per_tensor"].attrs["zero_point"] == 3
    assert by_name["per_channel"].dtype.name == "QINT8"
    assert by_name["per_channel"].attrs["qscheme"] == "per_channel_affine"
    assert by_name["per_channel._q_scales"].dtype.name == "F64"
    assert by_name["packed4"].dtype.name == "QUINT4X2" and by_name["packed4"].nbytes == 4
    meta = by_name["meta"]
    assert meta.encoding == "meta" and meta.offset is None and meta.storage is None and meta.nbytes == 60
    assert by_name["param"].attrs["kind"] == "parameter"


def test_shared_storage_views_and_dead_bytes() -> None:
    inventory = read("tied.bin")
    by_name = {t.name: t for t in inventory.tensors}
    assert by_name["lm_head.weight"].storage == by_name["model.embed_tokens.weight"].storage
    transposed, rows = by_name["model.layers.0.weight_t"], by_name["model.layers.0.rows"]
    assert transposed.storage == rows.storage
    assert transposed.strides == (1, 5) and transposed.encoding == "raw-strided"
    assert rows.strides is None and rows.storage_offset == 2 * 5 * 4
    partial = by_name["model.partial"]
    assert partial.storage_offset == 40 and partial.nbytes == 40
    assert dead_bytes(inventory) == 90 * 4
    assert inventory.metadata["storage_summary"]["dead_bytes"] == 360
    summary = sharing_summary(inventory)
    assert summary.tensor_entries == 6 and summary.storages == 4 and summary.shared_storages == 2
    use = {u.key: u for u in storage_use(inventory)}
    assert use[partial.storage or ""].covered == 40


def test_offsets_point_at_the_bytes() -> None:
    torch = pytest.importorskip("torch")
    path = FIXTURES / "tied.bin"
    data = path.read_bytes()
    truth = torch.load(path, weights_only=True)
    for tensor in read("tied.bin").tensors:
        if tensor.strides is None:
            assert tensor.offset is not None
            raw = data[tensor.offset : tensor.offset + tensor.nbytes]
            assert raw == truth[tensor.name].contiguous().numpy().tobytes()


@pytest.mark.parametrize("name", ["dtypes.pt", "tied.bin", "torchscript.pt", "lightning.ckpt", "legacy.pt"])
def test_regions_and_storages_cover_the_file_exactly(name: str) -> None:
    inventory = read(name)
    covered = sum(r.nbytes for r in inventory.regions) + sum(s.nbytes for s in inventory.storages)
    assert covered == inventory.file_bytes
    spans = sorted([(r.offset, r.offset + r.nbytes) for r in inventory.regions] + [
        (s.offset, s.offset + s.nbytes) for s in inventory.storages if s.offset is not None
    ])  # fmt: skip
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans))


def test_storage_keys_unique_and_prefixed() -> None:
    inventory = read("torchscript.pt")
    keys = [s.key for s in inventory.storages]
    assert len(keys) == len(set(keys))
    assert all(k.startswith("torchscript.pt:") for k in keys)


def test_training_checkpoint_structures_and_optimizer_names() -> None:
    inventory = read("training.pt")
    by_name = {t.name: t for t in inventory.tensors}
    assert by_name["model.0.weight"].attrs["structure"] == "model"
    assert by_name["ema.0.weight"].attrs["structure"] == "ema"
    adam = by_name["optimizer.state.0.exp_avg"]
    assert adam.attrs["structure"] == "optimizer" and adam.attrs["optimizer_state"] == "exp_avg"
    assert adam.attrs["param_index"] == 0 and adam.attrs["param_name"] == "model.0.weight"
    # the frozen 3.weight is in the state dict but not in the optimizer: index 4 is 3.bias, a guess
    later = by_name["optimizer.state.4.exp_avg"]
    assert later.attrs["param_name"] == "model.3.bias" and later.attrs["param_name_guessed"] is True
    named = by_name["optimizer_named.state.0.momentum_buffer"]
    assert named.attrs["param_name"] == "model.0.weight" and named.attrs["param_name_guessed"] is False
    optimizers = {o["path"]: o for o in inventory.metadata["optimizers"]}
    assert optimizers["optimizer"]["param_groups"][0]["lr"] == pytest.approx(1e-4)
    assert inventory.metadata["values"]["epoch"] == 3
    assert inventory.metadata["structures"]["scheduler"] == "scheduler"


def test_lightning_optimizer_names() -> None:
    inventory = read("lightning.ckpt")
    exp_avg = [t for t in inventory.tensors if t.attrs.get("optimizer_state") == "exp_avg"]
    assert exp_avg and all(t.attrs["param_name"].startswith("state_dict.net.") for t in exp_avg)
    model = {t.name: t.shape for t in inventory.tensors if t.section == "state_dict"}
    assert all(model[t.attrs["param_name"]] == t.shape for t in exp_avg)


def test_numpy_arrays_and_objects_in_metadata() -> None:
    inventory = read("numpy_objects.pt")
    assert [t.name for t in inventory.tensors] == ["state_dict.w"]
    arrays = inventory.metadata["numpy_arrays"]
    assert arrays == [{"name": "scaler.means", "shape": [2], "dtype": "<f8", "data_bytes": 16}]
    assert inventory.metadata["values"]["scaler.scale"] == 0.25
    assert inventory.metadata["values"]["scaler.count"] == 7
    assert inventory.metadata["values"]["args.name"] == "demo"
    assert inventory.metadata["objects"]["argparse.Namespace"]["count"] == 1
    assert [f.code for f in inventory.findings] == ["unknown-global"]


def test_legacy_tar_values() -> None:
    inventory = read("legacy.tar")
    assert sorted(t.name for t in inventory.tensors) == ["bias", "weight"]
    assert inventory.metadata["values"]["epoch"] == 3


def test_sharded_bin_index() -> None:
    inventory = ckptscan.read_inventory(FIXTURES / "sharded" / "pytorch_model.bin.index.json")
    assert inventory.format == "pytorch-sharded"
    assert inventory.complete and not inventory.findings and not inventory.warnings
    assert len(inventory.tensors) == 11
    assert len({s.key for s in inventory.storages}) == len(inventory.storages) == 11


def test_registry_sniffs_each_container() -> None:
    for name in FILES:
        with ckptscan.source.Source(FIXTURES / name) as source:
            assert registry.detect(source).name == "pytorch"


# -- real third-party files against the manifest's ground truth -------------------------------------


@pytest.mark.parametrize("entry", real_entries("pytorch", "lightning-ckpt"))
def test_real_file_matches_manifest(entry: dict[str, Any], real_models: Path) -> None:
    truth = entry["truth"]
    inventory = ckptscan.read_inventory(real_models / entry["path"])
    tensors = inventory.tensors
    assert len(tensors) == truth["n_tensors"]
    assert sum(t.elements for t in tensors) == truth["total_params"]
    assert sum(t.nbytes for t in tensors) == truth["total_tensor_bytes"]
    hist: dict[str, int] = collections.Counter()
    for t in tensors:
        hist[t.native_dtype.removeprefix("torch.")] += t.elements
    assert dict(hist) == truth["dtype_hist"]
    assert len(inventory.storages) == truth["n_unique_storages"]
    assert sum(s.nbytes for s in inventory.storages) == truth["unique_storage_bytes"]
    summary = sharing_summary(inventory)
    assert summary.unique_view_elements == truth["total_params_dedup_shared"]
    assert summary.unique_views == truth["n_unique_tensor_views"]
    assert sum(1 for t in tensors if t.strides is not None) == truth["n_non_contiguous"]
    for sample in truth["samples"]:
        match = next(t for t in tensors if t.name == sample["name"])
        assert list(match.shape) == sample["shape"]
        assert match.native_dtype == f"torch.{sample['dtype']}"
    for key, expected in truth.get("by_top_level_key", {}).items():
        part = [t for t in tensors if t.section == key]
        assert len(part) == expected["n_tensors"]
        assert sum(t.elements for t in part) == expected["total_params"]
        assert sum(t.nbytes for t in part) == expected["total_tensor_bytes"]
    numpy_truth = truth.get("numpy_arrays_not_counted")
    if numpy_truth:
        arrays = inventory.metadata["numpy_arrays"]
        assert len(arrays) == numpy_truth["n"]
        assert {a["name"] for a in arrays} >= {s["name"] for s in numpy_truth["samples"]}
    stubbed = set(truth.get("stubbed_globals", []))
    reported = {f.message.split()[2].rstrip(",") for f in inventory.findings if f.code == "unknown-global"}
    assert reported == {g for g in stubbed if g != "__builtin__.set"}
    expected_format = "lightning" if entry["format"] == "lightning-ckpt" else "pytorch"
    assert inventory.format == expected_format
    if "cuda:0" in truth["saved_storage_locations"]:
        assert all(t.attrs.get("device") == "cuda:0" for t in tensors)
