"""``ckptscan diff A B --stats`` against numpy loading both files whole and comparing.

Two 268 MB float32 safetensors files (16 x [2048, 2048] Gaussian weights; B has one row of one
tensor shifted by 1). Rows: ``ckptscan diff --stats --json`` as a whole process (streamed, bounded
memory), and a numpy script that loads both files with ``safetensors.numpy.load_file`` and computes
the same sums in float64 (changed count, max |b-a|, a.a, d.d, a.b, b.b) per tensor. Both files are
page-cached first, so this measures computation.
"""

from __future__ import annotations

from pathlib import Path

from bench import Context, Row, ckptscan, measure, python

REFERENCE = """
import sys
import numpy as np
from safetensors.numpy import load_file
a, b = load_file(sys.argv[1]), load_file(sys.argv[2])
for k in a:
    x = a[k].astype(np.float64).ravel(); y = b[k].astype(np.float64).ravel(); d = y - x
    r = (np.count_nonzero(d), np.abs(d).max(), x @ x, d @ d, x @ y, y @ y)
"""


def write(folder: Path) -> tuple[Path, Path]:
    import numpy as np
    from safetensors.numpy import save_file

    a, b = folder / "a.safetensors", folder / "b.safetensors"
    if not (a.exists() and b.exists()):
        rng = np.random.default_rng(0)
        tensors = {f"layers.{i}.w": rng.standard_normal((2048, 2048), dtype=np.float32) for i in range(16)}
        save_file(tensors, str(a))
        tensors["layers.3.w"][0, :] += 1
        save_file(tensors, str(b))
    return a, b


def run(ctx: Context) -> list[Row]:
    a, b = write(ctx.workdir)
    gb = (a.stat().st_size + b.stat().st_size) / 1e9
    case = f"2 x 16 x [2048, 2048] F32 safetensors ({gb:.2f} GB in all)"
    measure(ckptscan("diff", str(a), str(b), "--stats", "--json"), ctx, repeats=1)  # warm the page cache
    ref_wall, ref_rss = measure([*python(REFERENCE), str(a), str(b)], ctx)
    wall, rss = measure(ckptscan("diff", str(a), str(b), "--stats", "--json"), ctx)
    return [
        Row(case, "numpy: load both whole, compare", ref_wall, ref_rss, f"{gb / ref_wall:.2f} GB/s"),
        Row(
            case,
            "ckptscan diff --stats",
            wall,
            rss,
            f"{gb / wall:.2f} GB/s; {ref_wall / wall:.2f}x numpy's speed, {rss / ref_rss:.2f}x its memory",
        ),
    ]
