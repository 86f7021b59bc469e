"""Generic HDF5 fixtures written with h5py: every storage layout and link kind the reader handles.

``layouts.h5``: contiguous little- and big-endian datasets, a chunked+gzip+shuffle dataset, an lzf
one, a compact one, fixed- and variable-length strings, a bool (HDF5 enum), a complex64, an int64
scalar, an empty (never written) dataset, attributes, a hard-link alias, a soft link to a dataset,
a soft link to an ancestor group, a soft-link cycle, a dangling soft link, and two external links:
one to a sibling file, one to a file outside the folder (``/etc/passwd``). None is ever followed.
``userblock.h5``: a 512-byte user block before the superblock.
Every dataset is created with ``track_times=False`` so that the bytes do not depend on the clock.
"""

from __future__ import annotations

from pathlib import Path


def generate(out: Path) -> list[Path]:
    import h5py
    import numpy as np

    rng = np.random.default_rng(0)
    path = out / "layouts.h5"
    with h5py.File(path, "w", libver=("earliest", "v110"), track_order=False) as f:
        f.attrs["title"] = "ckptscan HDF5 fixture"
        f.attrs["version"] = 3
        weights = f.create_group("weights")
        w = weights.create_dataset("dense", data=rng.standard_normal((16, 8)).astype("<f4"), track_times=False)
        w.attrs["units"] = 8
        weights.create_dataset("big_endian", data=rng.standard_normal((4, 4)).astype(">f8"), track_times=False)
        weights.create_dataset("half", data=rng.standard_normal(10).astype("<f2"), track_times=False)
        packed = f.create_group("packed")
        packed.create_dataset(
            "gzip",
            data=np.tile(np.arange(64, dtype="<f4"), (64, 1)),
            chunks=(16, 16),
            compression="gzip",
            compression_opts=4,
            shuffle=True,
            track_times=False,
        )
        packed.create_dataset(
            "lzf", data=np.zeros((100, 10), "<i4"), chunks=(25, 10), compression="lzf", track_times=False
        )
        packed.create_dataset("never_written", shape=(1000, 1000), dtype="<f4", chunks=(100, 100), track_times=False)
        dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        dcpl.set_layout(h5py.h5d.COMPACT)
        space = h5py.h5s.create_simple((6,))
        compact = h5py.h5d.create(packed.id, b"compact", h5py.h5t.NATIVE_INT16, space, dcpl=dcpl)
        compact.write(h5py.h5s.ALL, h5py.h5s.ALL, np.arange(6, dtype="<i2"))
        misc = f.create_group("misc")
        misc.create_dataset(
            "fixed_strings", data=np.array([b"alpha", b"beta", b"gamma"], dtype="S16"), track_times=False
        )
        misc.create_dataset("vlen_strings", data=["one", "two", "three"], dtype=h5py.string_dtype(), track_times=False)
        misc.create_dataset("flags", data=np.array([True, False, True]), track_times=False)
        misc.create_dataset("complex", data=(np.arange(4) + 1j).astype("<c8"), track_times=False)
        misc.create_dataset("step", data=np.int64(42), track_times=False)
        misc.create_dataset("unallocated", shape=(5, 5), dtype="<f4", track_times=False)
        links = f.create_group("links")
        links["alias_of_dense"] = w  # a hard link: the same dataset under a second name
        links["soft_to_dense"] = h5py.SoftLink("/weights/dense")
        links["soft_to_ancestor"] = h5py.SoftLink("/links")
        links["cycle_a"] = h5py.SoftLink("/links/cycle_b")
        links["cycle_b"] = h5py.SoftLink("/links/cycle_a")
        links["dangling"] = h5py.SoftLink("/nowhere")
        links["external_sibling"] = h5py.ExternalLink("userblock.h5", "/data")
        links["external_outside"] = h5py.ExternalLink("/etc/passwd", "/root")

    ub = out / "userblock.h5"
    with h5py.File(ub, "w", userblock_size=512, libver=("earliest", "v110")) as f:
        f.create_dataset("data", data=np.arange(32, dtype="<f4"), track_times=False)
    with open(ub, "r+b") as raw:
        raw.write(b"ckptscan user block".ljust(512, b"\0"))
    return [path, ub]
