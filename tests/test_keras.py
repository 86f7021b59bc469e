"""Keras: legacy .h5, Keras 3 .weights.h5 and .keras, checked against h5py and the saved configs."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import pytest

import ckptscan
from ckptscan.errors import CkptscanError
from ckptscan.inventory import Severity
from tests.conftest import TESTDATA

h5py = pytest.importorskip("h5py")
np = pytest.importorskip("numpy")

KERAS = TESTDATA / "keras"
# model.trainable_variables / optimizer.variables of the fixture model, as Keras 3.15 reported them
TRAINABLE = [
    "embed/embeddings", "lstm/lstm_cell/kernel", "lstm/lstm_cell/recurrent_kernel", "lstm/lstm_cell/bias",
    "ln/gamma", "ln/beta", "dense_1/kernel", "dense_1/bias", "bn/gamma", "bn/beta", "dense_2/kernel", "dense_2/bias",
]  # fmt: skip
ALL_VARIABLES = [*TRAINABLE[:10], "bn/moving_mean", "bn/moving_variance", *TRAINABLE[10:]]


def _datasets(h5: Any) -> dict[str, Any]:
    found: dict[str, Any] = {}

    def visit(name: str, obj: Any) -> None:
        if isinstance(obj, h5py.Dataset):
            found[name] = obj

    h5.visititems(visit)
    return found


def _check_against_h5py(inventory: ckptscan.Inventory, h5: Any, raw: bytes, base: int) -> None:
    truth = _datasets(h5)
    assert {t.name for t in inventory.tensors} == set(truth)
    for tensor in inventory.tensors:
        dset = truth[tensor.name]
        assert tensor.shape == dset.shape
        assert tensor.native_dtype == dset.dtype.str
        assert tensor.nbytes == dset.size * dset.dtype.itemsize
        assert tensor.offset == base + dset.id.get_offset()
        values = np.frombuffer(raw, dtype=dset.dtype, count=dset.size, offset=tensor.offset).reshape(dset.shape)
        assert np.array_equal(values, dset[()])


def test_keras_v3_archive() -> None:
    path = KERAS / "tiny.keras"
    inventory = ckptscan.read_inventory(path)
    assert inventory.format == "keras-v3"
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("model.weights.h5")
        inner = archive.read("model.weights.h5")
    raw = path.read_bytes()
    base = info.header_offset + 30 + len(info.filename) + len(info.extra)
    with h5py.File(io.BytesIO(inner), "r") as h5:
        _check_against_h5py(inventory, h5, raw, base)
    _check_keras3_mapping(inventory)
    assert inventory.metadata["keras"]["date_saved"] == "2024-01-01@00:00:00"
    assert inventory.metadata["keras"]["model"]["class_name"] == "Functional"
    assert inventory.findings == ()
    regions = sorted(
        [(r.offset, r.nbytes) for r in inventory.regions] + [(t.offset, t.nbytes) for t in inventory.tensors]
    )
    position = 0
    for offset, length in regions:
        assert offset == position
        position += length
    assert position == path.stat().st_size


def _read_h5_checked(name: str, format: str) -> ckptscan.Inventory:
    path = KERAS / name
    inventory = ckptscan.read_inventory(path)
    assert inventory.format == format
    with h5py.File(path, "r") as h5:
        _check_against_h5py(inventory, h5, path.read_bytes(), 0)
    return inventory


def test_keras_weights_h5() -> None:
    inventory = _read_h5_checked("tiny.weights.h5", "keras-weights-h5")
    _check_keras3_mapping(inventory)  # without a config: class from group names, order from the optimizer


def _check_keras3_mapping(inventory: ckptscan.Inventory) -> None:
    model = [t for t in inventory.tensors if t.attrs.get("structure") == "model"]
    assert sorted(t.attrs["variable"] for t in model) == sorted(ALL_VARIABLES)
    assert {t.attrs["variable"] for t in model if not t.attrs["trainable"]} == {"bn/moving_mean", "bn/moving_variance"}
    assert all(t.section == "layers" for t in model)
    optimizer = [t for t in inventory.tensors if t.attrs.get("structure") == "optimizer"]
    assert [t.name for t in optimizer] == [f"optimizer/vars/{i}" for i in range(26)]
    assert [t.attrs["optimizer_state"] for t in optimizer[:2]] == ["iterations", "learning_rate"]
    # Keras 3 Adam: momentum and velocity interleaved per trainable variable (verified with Keras 3.15)
    expected = [(state, name) for name in TRAINABLE for state in ("momentum", "velocity")]
    assert [(t.attrs["optimizer_state"], t.attrs["param_name"]) for t in optimizer[2:]] == expected
    assert all(t.attrs["param_name_guessed"] for t in optimizer[2:])
    shapes = {t.attrs["variable"]: t.shape for t in model}
    assert all(t.shape == shapes[t.attrs["param_name"]] for t in optimizer[2:])


def test_legacy_h5_from_keras3() -> None:
    inventory = _read_h5_checked("tiny_legacy.h5", "keras-h5")
    model = [t for t in inventory.tensors if t.section == "model_weights"]
    assert [t.attrs["variable"] for t in model] == ALL_VARIABLES  # Keras order: layer_names x weight_names
    optimizer = [t for t in inventory.tensors if t.section == "optimizer_weights"]
    assert len(optimizer) == 26
    named = [(t.attrs.get("optimizer_state"), t.attrs.get("param_name")) for t in optimizer]
    assert named[:2] == [("iterations", None), ("learning_rate", None)]
    assert named[2:] == [(state, name) for name in TRAINABLE for state in ("momentum", "velocity")]
    assert inventory.metadata["keras"]["optimizer"]["class_name"] == "Adam"
    assert inventory.metadata["keras"]["backend"] == "torch"


def test_lambda_layer_is_a_critical_finding() -> None:
    inventory = ckptscan.read_inventory(KERAS / "lambda.keras")
    assert [(f.code, f.severity) for f in inventory.findings] == [("keras-lambda", Severity.CRITICAL)]
    assert "double" in inventory.findings[0].message


def _keras_zip(tmp_path: Path, config: Any, *, deflate: bool = False) -> Path:
    path = tmp_path / "model.keras"
    with zipfile.ZipFile(KERAS / "tiny.keras") as source, zipfile.ZipFile(path, "w") as out:
        for info in source.infolist():
            data = (
                json.dumps(config).encode()
                if info.filename == "config.json" and config is not None
                else source.read(info)
            )
            method = zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED
            out.writestr(zipfile.ZipInfo(info.filename, (1980, 1, 1, 0, 0, 0)), data, compress_type=method)
    return path


def test_deflated_weights_are_inflated_to_a_temporary_file(tmp_path: Path) -> None:
    path = _keras_zip(tmp_path, None, deflate=True)
    inventory = ckptscan.read_inventory(path)
    stored = ckptscan.read_inventory(KERAS / "tiny.keras")
    assert [(t.name, t.shape, t.nbytes) for t in inventory.tensors] == [
        (t.name, t.shape, t.nbytes) for t in stored.tensors
    ]
    assert all(t.offset is None and t.encoding == "zip-deflated" for t in inventory.tensors)
    assert all(t.attrs["zip_entry"] == "model.weights.h5" for t in inventory.tensors)


def test_custom_and_dangerous_modules_are_findings(tmp_path: Path) -> None:
    with zipfile.ZipFile(KERAS / "tiny.keras") as archive:
        config = json.loads(archive.read("config.json"))
    config["config"]["layers"][1]["module"] = "my_package.layers"
    config["config"]["layers"][1]["registered_name"] = "my_package>Thing"
    config["compile_config"]["loss"] = {"module": "builtins", "class_name": "function", "config": "exec"}
    inventory = ckptscan.read_inventory(_keras_zip(tmp_path, config))
    found = {(f.code, f.severity) for f in inventory.findings}
    assert found == {("keras-custom-object", Severity.LOW), ("keras-dangerous-module", Severity.HIGH)}


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda b: b[: len(b) // 2], id="truncated"),
        pytest.param(lambda b: b.replace(b"model.weights.h5", b"model.weights.hX", 1), id="local-name-lies"),
        pytest.param(lambda b: b[:-22] + b"\0" * 22, id="no-directory"),
    ],
)
def test_damaged_archives_are_one_line_errors(tmp_path: Path, damage: Any) -> None:
    path = tmp_path / "bad.keras"
    path.write_bytes(damage((KERAS / "tiny.keras").read_bytes()))
    with pytest.raises(CkptscanError) as info:
        ckptscan.read_inventory(path)
    assert "\n" not in str(info.value)


def test_zip_entry_size_lie_is_refused(tmp_path: Path) -> None:
    data = bytearray((KERAS / "tiny.keras").read_bytes())
    with zipfile.ZipFile(KERAS / "tiny.keras") as archive:
        info = archive.getinfo("config.json")
    position = data.find(b"config.json", data.find(b"PK\x01\x02")) - 46  # its central directory record
    data[position + 20 : position + 28] = (10**9).to_bytes(4, "little") * 2  # compressed and real size
    path = tmp_path / "lies.keras"
    path.write_bytes(bytes(data))
    with pytest.raises(CkptscanError, match=r"config\.json"):
        ckptscan.read_inventory(path)
    assert info.file_size < 10**9


def test_truncated_legacy_h5_is_one_line_error(tmp_path: Path) -> None:
    path = tmp_path / "cut.h5"
    path.write_bytes((KERAS / "tiny_legacy.h5").read_bytes()[:20000])
    with pytest.raises(CkptscanError) as info:
        ckptscan.read_inventory(path)
    assert "\n" not in str(info.value)
