"""NumPy fixtures written with numpy.save / savez / savez_compressed.

``.npy``: float32 C order, float64 Fortran order, big-endian int32, bool, float16 scalar, fixed
bytes strings, unicode strings, a structured dtype, a version 2.0 header (forced through
``numpy.lib.format.write_array(version=(2, 0))``), an empty array, and an object array (a pickle,
written with ``allow_pickle=True``; ckptscan never loads it). ``.npz``: the same arrays stored
(``savez``) and deflated (``savez_compressed``). Zip member times come from the clock, so the
archives are rewritten with date_time 1980-01-01 (same order, same compression).
"""

from __future__ import annotations

import zipfile
from pathlib import Path


def generate(out: Path) -> list[Path]:
    import numpy as np

    rng = np.random.default_rng(0)
    arrays = {
        "f32": rng.standard_normal((3, 5)).astype("<f4"),
        "f64_fortran": np.asfortranarray(rng.standard_normal((4, 6))),
        "i32_big": np.arange(12, dtype=">i4").reshape(3, 4),
        "mask": np.array([True, False, True, True]),
        "half_scalar": np.float16(1.5),
        "bytes": np.array([b"ab", b"cdef"], dtype="S4"),
        "text": np.array(["xy", "zzz"], dtype="<U3"),
        "record": np.zeros(3, dtype=[("id", "<i8"), ("pos", "<f4", (2,)), ("tag", "S3")]),
        "empty": np.zeros((0, 7), dtype="<f4"),
    }
    written = []
    for name, value in arrays.items():
        path = out / f"{name}.npy"
        np.save(path, value)
        written.append(path)
    path = out / "v2_header.npy"
    with open(path, "wb") as f:
        np.lib.format.write_array(f, np.arange(10, dtype="<i8"), version=(2, 0))
    written.append(path)
    path = out / "objects.npy"
    np.save(path, np.array([{"a": 1}, [1, 2], "x"], dtype=object), allow_pickle=True)
    written.append(path)
    plain = {k: v for k, v in arrays.items() if k in ("f32", "f64_fortran", "i32_big", "mask", "record", "empty")}
    path = out / "stored.npz"
    np.savez(path, **plain)
    written.append(_fix_times(path))
    path = out / "compressed.npz"
    np.savez_compressed(path, **plain)
    written.append(_fix_times(path))
    path = out / "with_objects.npz"
    np.savez(path, weights=arrays["f32"], meta=np.array([None, "x"], dtype=object))
    written.append(_fix_times(path))
    return written


def _fix_times(path: Path) -> Path:
    with zipfile.ZipFile(path) as archive:
        members = [(info, archive.read(info.filename)) for info in archive.infolist()]
    with zipfile.ZipFile(path, "w") as archive:
        for info, data in members:
            fixed = zipfile.ZipInfo(info.filename, date_time=(1980, 1, 1, 0, 0, 0))
            fixed.compress_type = info.compress_type
            fixed.external_attr = info.external_attr
            archive.writestr(fixed, data)
    return path
