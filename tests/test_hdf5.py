"""Generic HDF5: every count, shape, dtype, offset and stored size checked against h5py."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import ckptscan
from ckptscan.errors import CkptscanError
from tests.conftest import REPO, TESTDATA, real_entries

h5py = pytest.importorskip("h5py")
np = pytest.importorskip("numpy")

HDF5_FILES = sorted((TESTDATA / "hdf5").glob("*.h5")) + sorted((TESTDATA / "keras").glob("*.h5"))


def h5py_datasets(path: Path) -> dict[str, dict[str, object]]:
    """What h5py's own walk (H5Ovisit: hard links, each object once) finds."""
    found: dict[str, dict[str, object]] = {}

    def visit(name: str, obj: object) -> None:  # returning anything but None would stop the walk
        if isinstance(obj, h5py.Dataset):
            found[name] = _facts(obj)

    with h5py.File(path, "r") as f:
        f.visititems(visit)
    return found


def _facts(d: h5py.Dataset) -> dict[str, object]:
    return {
        "shape": d.shape,
        "dtype": d.dtype,
        "offset": d.id.get_offset(),
        "stored": d.id.get_storage_size(),
        "chunks": d.chunks,
    }


@pytest.mark.parametrize("path", HDF5_FILES, ids=lambda p: p.name)
def test_every_dataset_matches_h5py(path: Path) -> None:
    inventory = ckptscan.read_inventory(path)
    truth = h5py_datasets(path)
    ours = {t.name: t for t in inventory.tensors}
    assert set(ours) == set(truth)
    for name, facts in truth.items():
        tensor = ours[name]
        assert tensor.shape == facts["shape"], name
        assert tensor.attrs["stored_bytes"] == facts["stored"], name
        if tensor.dtype.known:
            assert tensor.nbytes == int(np.prod(facts["shape"])) * facts["dtype"].itemsize, name
        if tensor.encoding.startswith("raw"):
            assert tensor.offset == facts["offset"], name
        else:
            assert tensor.offset is None
        if facts["chunks"] is not None:
            assert tensor.attrs["chunks"] == list(facts["chunks"])


@pytest.mark.parametrize("path", HDF5_FILES, ids=lambda p: p.name)
def test_raw_offsets_hold_the_values(path: Path) -> None:
    inventory = ckptscan.read_inventory(path)
    raw = path.read_bytes()
    with h5py.File(path, "r") as f:
        for tensor in inventory.tensors:
            if tensor.encoding.startswith("raw"):
                values = np.frombuffer(raw, dtype=tensor.native_dtype, count=tensor.elements, offset=tensor.offset)
                assert np.array_equal(values.reshape(tensor.shape), f[tensor.name][()]), tensor.name


def test_layouts_fixture_details() -> None:
    inventory = ckptscan.read_inventory(TESTDATA / "hdf5" / "layouts.h5")
    assert inventory.format == "hdf5"
    by_name = {t.name: t for t in inventory.tensors}
    assert by_name["weights/big_endian"].encoding == "raw-big-endian"
    assert by_name["weights/big_endian"].dtype.name == "F64"
    gzip = by_name["packed/gzip"]
    assert gzip.encoding == "hdf5-chunked" and gzip.attrs["filters"] == ["shuffle", "gzip"]
    assert gzip.nbytes == 64 * 64 * 4 and gzip.attrs["stored_bytes"] < gzip.nbytes
    assert by_name["packed/lzf"].attrs["filters"] == ["lzf"]
    assert by_name["packed/never_written"].attrs["stored_bytes"] == 0
    assert by_name["packed/compact"].encoding == "hdf5-compact"
    assert by_name["misc/fixed_strings"].dtype.name == "S16"
    assert by_name["misc/vlen_strings"].dtype.name == "STRING" and not by_name["misc/vlen_strings"].dtype.known
    assert by_name["misc/flags"].dtype.name == "BOOL"
    assert by_name["misc/complex"].dtype.name == "C64"
    assert by_name["misc/step"].shape == () and by_name["misc/step"].dtype.name == "I64"
    assert by_name["misc/unallocated"].encoding == "hdf5-unallocated"
    # the hard-linked dataset is listed once, under the first path in walk order, with its aliases
    alias = by_name["links/alias_of_dense"]
    assert "weights/dense" not in by_name
    assert set(alias.attrs["aliases"]) == {"weights/dense", "links/soft_to_dense"}
    codes = sorted((f.code, f.where) for f in inventory.findings)
    assert codes == [
        ("hdf5-external-link", "/links/external_outside"),
        ("hdf5-external-link", "/links/external_sibling"),
        ("hdf5-soft-link-cycle", "/links/cycle_a"),
        ("hdf5-soft-link-cycle", "/links/cycle_b"),
    ]
    assert any("dangling" in w for w in inventory.warnings)
    assert inventory.metadata["hdf5"]["root_attributes"] == {"title": "ckptscan HDF5 fixture", "version": 3}


@pytest.mark.parametrize("path", HDF5_FILES, ids=lambda p: p.name)
def test_regions_and_stored_bytes_tile_the_file(path: Path) -> None:
    inventory = ckptscan.read_inventory(path)
    spans = [(r.offset, r.nbytes) for r in inventory.regions]
    with h5py.File(path, "r") as f:
        for tensor in inventory.tensors:
            dset = f[tensor.name]
            if dset.chunks is not None:
                spans += [
                    (c.byte_offset, c.size)
                    for c in (dset.id.get_chunk_info(i) for i in range(dset.id.get_num_chunks()))
                ]
            elif dset.id.get_offset() is not None:  # contiguous, also variable-length pointer arrays
                spans.append((dset.id.get_offset(), dset.id.get_storage_size()))
    position = 0
    for offset, length in sorted(spans):
        assert offset == position, (offset, position)
        position += length
    assert position == path.stat().st_size


def test_userblock_is_a_header_region() -> None:
    inventory = ckptscan.read_inventory(TESTDATA / "hdf5" / "userblock.h5")
    assert inventory.regions[0].label == "HDF5 user block" and inventory.regions[0].nbytes == 512
    assert inventory.tensors[0].offset == 2560


def test_external_link_target_is_never_opened(tmp_path: Path) -> None:
    """The external link points at a FIFO: opening it would block, so the scan would time out."""
    target = tmp_path / "target.h5"
    os.mkfifo(target)
    with h5py.File(tmp_path / "model.h5", "w") as f:
        f.create_dataset("w", data=np.zeros(3, "f4"), track_times=False)
        f["ext"] = h5py.ExternalLink(str(target), "/x")
        f["soft_through_ext"] = h5py.SoftLink("/ext/deeper")
        layout = h5py.VirtualLayout(shape=(3,), dtype="f4")
        layout[:] = h5py.VirtualSource(str(target), "x", shape=(3,))
        f.create_virtual_dataset("virtual", layout)
        f.create_dataset("outside", shape=(4,), dtype="f4", external=[(str(target), 0, 16)])
    script = (
        "import sys, ckptscan; inv = ckptscan.read_inventory(sys.argv[1]);print(sorted(f.code for f in inv.findings))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "model.h5")], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "['hdf5-external-link', 'hdf5-external-storage', 'hdf5-virtual-dataset']"


def test_hard_link_cycle_does_not_loop(tmp_path: Path) -> None:
    path = tmp_path / "cycle.h5"
    with h5py.File(path, "w") as f:
        group = f.create_group("a/b")
        group.create_dataset("w", data=np.ones(2, "f4"), track_times=False)
        group["back_to_a"] = f["a"]  # a hard link to an ancestor
    inventory = ckptscan.read_inventory(path)
    assert [t.name for t in inventory.tensors] == ["a/b/w"]
    assert any("second hard link" in w for w in inventory.warnings)


def _one_line_error(path: Path) -> str:
    with pytest.raises(CkptscanError) as info:
        ckptscan.read_inventory(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    return message


def test_truncated_file_is_one_line_error(tmp_path: Path) -> None:
    path = tmp_path / "cut.h5"
    path.write_bytes((TESTDATA / "hdf5" / "layouts.h5").read_bytes()[:3000])
    assert "truncated" in _one_line_error(path)


def test_corrupt_superblock_is_one_line_error(tmp_path: Path) -> None:
    data = bytearray((TESTDATA / "hdf5" / "layouts.h5").read_bytes())
    data[8:48] = b"\xff" * 40
    path = tmp_path / "bad.h5"
    path.write_bytes(bytes(data))
    _one_line_error(path)


def test_scan_reports_instead_of_raising(tmp_path: Path) -> None:
    path = tmp_path / "cut.h5"
    path.write_bytes((TESTDATA / "hdf5" / "layouts.h5").read_bytes()[:100])
    result = ckptscan.scan(path)
    assert not result.ok and result.error is not None and "\n" not in result.error.message


def test_missing_h5py_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from ckptscan.errors import MissingDependency
    from ckptscan.formats import hdf5

    monkeypatch.setitem(sys.modules, "h5py", None)
    with pytest.raises(MissingDependency, match="pip install"):
        hdf5.import_h5py()


@pytest.mark.parametrize("entry", real_entries("keras-hdf5"))
def test_real_files_match_manifest(entry: dict[str, object], real_models: Path) -> None:
    path = real_models / str(entry["path"])
    truth = entry["truth"]
    assert isinstance(truth, dict)
    inventory = ckptscan.read_inventory(path)
    assert inventory.format == "keras-h5"
    assert len(inventory.tensors) == truth["n_tensors"]
    assert sum(t.elements for t in inventory.tensors) == truth["total_params"]
    assert sum(t.nbytes for t in inventory.tensors) == truth["total_tensor_bytes"]
    hist: dict[str, int] = {}
    for t in inventory.tensors:
        native = np.dtype(t.native_dtype).name
        hist[native] = hist.get(native, 0) + t.elements
    assert hist == truth["dtype_hist"]
    by_name = {t.name: t for t in inventory.tensors}
    for sample in truth["samples"]:
        tensor = by_name[sample["name"]]
        assert list(tensor.shape) == sample["shape"]
        assert np.dtype(tensor.native_dtype).name == sample["dtype"]
    for section, facts in truth.get("sections", {}).items():
        members = [t for t in inventory.tensors if t.section == section]
        assert len(members) == facts["n_tensors"]
        assert sum(t.elements for t in members) == facts["total_params"]
        assert sum(t.nbytes for t in members) == facts["total_tensor_bytes"]
    assert set(h5py_datasets(path)) == set(by_name)
    assert inventory.metadata["keras"]["keras_version"] == truth["h5_attrs"]["keras_version"]


def test_copied_real_file_reads_from_anywhere(tmp_path: Path, real_models: Path) -> None:
    source = real_models / "keras_h5" / "hls4ml_dense_streaming_keras_model.keras"
    copy = tmp_path / "model.keras"
    shutil.copy(source, copy)
    assert ckptscan.read_inventory(copy).format == "keras-h5"  # content decides, not the extension
