"""NumPy .npy / .npz: shapes, dtypes, offsets and sizes checked against numpy itself."""

from __future__ import annotations

import ast
import io
import zipfile
from pathlib import Path

import pytest

import ckptscan
from ckptscan.errors import CkptscanError
from ckptscan.inventory import Severity
from tests.conftest import TESTDATA

np = pytest.importorskip("numpy")

NUMPY = TESTDATA / "numpy"
PLAIN_NPY = sorted(p for p in NUMPY.glob("*.npy") if p.name != "objects.npy")


def _header(stream: io.BufferedIOBase) -> tuple[tuple[int, ...], bool, object, int]:
    version = np.lib.format.read_magic(stream)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, fortran, dtype = read(stream)
    return shape, fortran, dtype, stream.tell()


@pytest.mark.parametrize("path", PLAIN_NPY, ids=lambda p: p.name)
def test_npy_matches_numpy(path: Path) -> None:
    inventory = ckptscan.read_inventory(path)
    assert inventory.format == "npy"
    [tensor] = inventory.tensors
    array = np.load(path, mmap_mode="r")
    with open(path, "rb") as f:
        shape, fortran, dtype, data_offset = _header(f)
    assert tensor.shape == array.shape == shape
    assert tensor.elements == array.size
    assert tensor.nbytes == array.nbytes
    assert tensor.offset == data_offset
    native = ast.literal_eval(tensor.native_dtype) if tensor.native_dtype.startswith("[") else tensor.native_dtype
    assert np.dtype(native) == dtype
    assert (tensor.strides is not None) == (fortran and array.ndim > 1)
    order = "F" if fortran else "C"
    raw = np.frombuffer(path.read_bytes(), dtype=dtype, count=array.size, offset=tensor.offset)
    assert np.array_equal(raw.reshape(array.shape, order=order), array)
    assert sum(r.nbytes for r in inventory.regions) + tensor.nbytes == path.stat().st_size


def test_dtype_names() -> None:
    names = {p.stem: ckptscan.read_inventory(p).tensors[0] for p in PLAIN_NPY}
    assert names["f32"].dtype.name == "F32"
    assert names["i32_big"].dtype.name == "I32" and names["i32_big"].encoding == "raw-big-endian"
    assert names["mask"].dtype.name == "BOOL"
    assert names["half_scalar"].dtype.name == "F16" and names["half_scalar"].shape == ()
    assert names["bytes"].dtype.name == "S4"
    assert names["text"].dtype.name == "UNICODE3" and names["text"].nbytes == 2 * 12
    assert names["record"].dtype.name == "RECORD19"
    assert names["f64_fortran"].strides == (1, 4)
    assert names["v2_header"].dtype.name == "I64"


def test_object_array_is_a_finding_and_never_loaded() -> None:
    inventory = ckptscan.read_inventory(NUMPY / "objects.npy")
    [tensor] = inventory.tensors
    assert tensor.dtype.name == "OBJECT" and tensor.encoding == "pickle" and tensor.offset is None
    assert [(f.code, f.severity) for f in inventory.findings] == [("numpy-object-array", Severity.HIGH)]
    assert any(r.kind.value == "pickle" for r in inventory.regions)


@pytest.mark.parametrize("name", ["stored.npz", "compressed.npz"])
def test_npz_matches_numpy(name: str) -> None:
    path = NUMPY / name
    inventory = ckptscan.read_inventory(path)
    assert inventory.format == "npz"
    raw = path.read_bytes()
    with np.load(path) as archive, zipfile.ZipFile(path) as zf:
        assert [t.name for t in inventory.tensors] == archive.files
        for tensor in inventory.tensors:
            array = archive[tensor.name]
            assert tensor.shape == array.shape and tensor.nbytes == array.nbytes
            info = zf.getinfo(tensor.name + ".npy")
            with zf.open(info) as member:
                _, fortran, dtype, data_offset = _header(member)  # type: ignore[arg-type]
            if info.compress_type == zipfile.ZIP_STORED:
                start = info.header_offset + 30 + len(info.filename) + len(info.extra)
                assert tensor.offset == start + data_offset
                values = np.frombuffer(raw, dtype=dtype, count=array.size, offset=tensor.offset)
                assert np.array_equal(values.reshape(array.shape, order="F" if fortran else "C"), array)
            else:
                assert tensor.offset is None and tensor.encoding == "zip-deflated"
                assert tensor.attrs["entry_data_offset"] == data_offset
                assert tensor.attrs["stored_bytes"] == info.compress_size


def test_npz_with_object_member() -> None:
    inventory = ckptscan.read_inventory(NUMPY / "with_objects.npz")
    assert [t.name for t in inventory.tensors] == ["weights", "meta"]
    assert [f.code for f in inventory.findings] == ["numpy-object-array"]


def _error(tmp_path: Path, data: bytes, name: str = "bad.npy") -> str:
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(CkptscanError) as info:
        ckptscan.read_inventory(path)
    message = str(info.value)
    assert "\n" not in message
    return message


def _npy(header: str, data: bytes = b"", version: bytes = b"\x01\x00") -> bytes:
    text = header.encode("latin1")
    length = len(text).to_bytes(2 if version == b"\x01\x00" else 4, "little")
    return b"\x93NUMPY" + version + length + text + data


def test_malformed_npy_headers(tmp_path: Path) -> None:
    huge = "{'descr': '<f4', 'fortran_order': False, 'shape': (1000000000000,), }\n"
    assert "needs 4,000,000,000,000 bytes" in _error(tmp_path, _npy(huge))
    assert "Python literal" in _error(tmp_path, _npy("{'descr': __import__('os'), }\n"))
    assert "exactly descr" in _error(tmp_path, _npy("{'descr': '<f4', 'shape': (1,)}\n"))
    assert "non-negative" in _error(tmp_path, _npy("{'descr': '<f4', 'fortran_order': False, 'shape': (-1,)}\n"))
    assert "unknown dtype" in _error(tmp_path, _npy("{'descr': '<q9', 'fortran_order': False, 'shape': (1,)}\n"))
    assert "version 9.0" in _error(tmp_path, _npy("{}", version=b"\x09\x00"))
    long_header = b"\x93NUMPY\x02\x00" + (1 << 30).to_bytes(4, "little")
    assert "limit" in _error(tmp_path, long_header)
    assert "bytes" in _error(tmp_path, b"\x93NUMPY\x01\x00\x50\x00{'descr'")


def test_truncated_npy_data(tmp_path: Path) -> None:
    data = (NUMPY / "f32.npy").read_bytes()
    assert "follow the header" in _error(tmp_path, data[:-4])


def test_npz_member_lies(tmp_path: Path) -> None:
    data = bytearray((NUMPY / "stored.npz").read_bytes())
    position = data.find(b"f32.npy", data.find(b"PK\x01\x02")) - 46
    data[position + 20 : position + 28] = (10**8).to_bytes(4, "little") * 2
    _error(tmp_path, bytes(data), "lies.npz")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("a.npy", _npy("{'descr': '<f8', 'fortran_order': False, 'shape': (100,), }\n", b"\0" * 8))
    assert "a.npy" in _error(tmp_path, buffer.getvalue(), "short.npz")
