"""The stats pass (``ckptscan PATH --stats``) against the machine's own numpy streaming limit.

Two >= 2 GB safetensors files (fp32 and bf16, 4096 x 4096 weight matrices of Gaussian values with
some zeros) are read by:

* a bare numpy loop: chunked reads into one buffer, min/max/mean/std/zero count per chunk and
  nothing else (bf16 widened to float32 the usual way); the best of several chunk sizes is the
  "numpy streaming limit" of this machine for those statistics;
* ``ckptscan FILE --stats --json`` with 1 and with 2 workers (every statistic: moments,
  thresholds, NaN/Inf, int8 and int4 quantization error, content hash), as whole processes; with 2
  workers on a file this size the pass forks 2 worker processes.

Rows report throughput over the tensor bytes, the ratio to the numpy limit, the cores kept busy,
peak RSS (the process's own, and for 2 workers the sampled sum over all processes), and the
1 -> 2 worker scaling. All files are page-cached (generated just before; the first run warms), so
this measures computation, not the disk.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from bench import REPO, Context, Row, ckptscan, measure, measure_full, python

ROWS, COLS = 4096, 4096
TARGET_BYTES = 2_100_000_000
CHUNK_CHOICES_MB = (1, 4, 16)

NUMPY_LOOP = """
import json, struct, sys
import numpy as np
path, chunk_mb = sys.argv[1], int(sys.argv[2])
with open(path, "rb") as f:
    (n,) = struct.unpack("<Q", f.read(8))
    header = json.loads(f.read(n))
header.pop("__metadata__", None)
base, chunk = 8 + n, chunk_mb << 20
buffer = bytearray(chunk)
with open(path, "rb", buffering=0) as f:
    for info in header.values():
        begin, end = info["data_offsets"]
        f.seek(base + begin)
        remaining = end - begin
        lo, hi, total, squares, zeros, count = np.inf, -np.inf, 0.0, 0.0, 0, 0
        while remaining:
            k = min(chunk, remaining)
            view = memoryview(buffer)[:k]
            f.readinto(view)
            remaining -= k
            if info["dtype"] == "F32":
                a = np.frombuffer(view, np.float32)
            else:
                a = (np.frombuffer(view, np.uint16).astype(np.uint32) << 16).view(np.float32)
            lo, hi = min(lo, a.min()), max(hi, a.max())
            total += float(a.sum(dtype=np.float64))
            squares += float(np.dot(a, a))
            zeros += a.size - np.count_nonzero(a)
            count += a.size
        mean = total / count
        std = max(squares / count - mean * mean, 0.0) ** 0.5
"""


def run(ctx: Context) -> list[Row]:
    rows: list[Row] = []
    for dtype in ("F32", "BF16"):
        path = ctx.workdir / f"stats-{dtype.lower()}.safetensors"
        if not path.exists():
            write_file(path, dtype)
        tensor_bytes = path.stat().st_size  # the header is a few KB of it
        gb = tensor_bytes / 1e9
        case = f"{len(header_of(path))} x [{ROWS}, {COLS}] {dtype} safetensors ({gb:.2f} GB)"
        measure(ckptscan(str(path), "--stats", "--json", "--stats-workers", "1"), ctx, repeats=1)  # warm the cache
        limit: Row | None = None
        for chunk in CHUNK_CHOICES_MB:
            wall, rss = measure([*python(NUMPY_LOOP), str(path), str(chunk)], ctx)
            row = Row(case, f"numpy loop, {chunk} MiB chunks", wall, rss, f"{gb / wall:.2f} GB/s")
            rows.append(row)
            if limit is None or row.wall_s < limit.wall_s:
                limit = row
        assert limit is not None
        single: Row | None = None
        for workers in (1, 2):
            argv = ckptscan(str(path), "--stats", "--json", "--stats-workers", str(workers))
            m = measure_full(argv, ctx)
            tree = tree_peak_rss_mb(argv, ctx)
            note = (
                f"{gb / m.wall_s:.2f} GB/s, {limit.wall_s / m.wall_s:.0%} of the numpy limit, "
                f"{m.cpu_s / m.wall_s:.2f} cores busy"
            )
            if single is not None:
                note += f", {single.wall_s / m.wall_s:.2f}x the 1-worker speed"
            if workers > 1:
                note += f"; all processes together peak at {tree:.0f} MiB RSS"
            row = Row(case, f"ckptscan --stats, {workers} worker{'s' if workers > 1 else ''}", m.wall_s,
                      m.peak_rss_mb, note)  # fmt: skip
            rows.append(row)
            single = single or row
        wall, rss = measure(ckptscan(str(path), "--stats-sample", "0.05", "--json"), ctx)
        rows.append(Row(case, "ckptscan --stats-sample 0.05", wall, rss, f"{gb / wall:.2f} GB/s of file"))
    return rows


def tree_peak_rss_mb(argv: list[str], ctx: Context) -> float:
    """Peak of the summed RSS of a command and its worker processes, sampled every 10 ms (psutil).

    ``ru_maxrss`` of a process tree is the largest single process; with forked workers the sum is
    what the machine must hold (an upper bound: pages the workers share with the parent count twice).
    """
    import os
    import subprocess
    import time

    import psutil

    env = {**os.environ, "PYTHONPATH": str(REPO), **ctx.env}
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    peak = 0
    try:
        root = psutil.Process(proc.pid)
        while proc.poll() is None:
            try:
                total = root.memory_info().rss + sum(c.memory_info().rss for c in root.children(recursive=True))
            except psutil.Error:
                total = 0
            peak = max(peak, total)
            time.sleep(0.01)
    finally:
        proc.wait()
    return peak / (1 << 20)


def write_file(path: Path, dtype: str) -> None:
    """Gaussian weights (std 0.02), every 7th value of a row zero; written block by block."""
    import numpy as np

    itemsize = 4 if dtype == "F32" else 2
    per_tensor = ROWS * COLS * itemsize
    count = -(-TARGET_BYTES // per_tensor)
    header = {
        f"model.layers.{i}.weight": {
            "dtype": dtype,
            "shape": [ROWS, COLS],
            "data_offsets": [i * per_tensor, (i + 1) * per_tensor],
        }
        for i in range(count)
    }
    encoded = json.dumps(header).encode()
    encoded += b" " * (-len(encoded) % 8)
    rng = np.random.default_rng(2024)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(encoded)) + encoded)
        for _ in range(count):
            for _ in range(0, ROWS, 512):
                block = rng.standard_normal((512, COLS), dtype=np.float32) * np.float32(0.02)
                block[:, ::7] = 0
                if dtype == "BF16":
                    f.write((block.view(np.uint32) >> 16).astype(np.uint16).tobytes())
                else:
                    f.write(block.tobytes())


def header_of(path: Path) -> dict[str, object]:
    with open(path, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        header: dict[str, object] = json.loads(f.read(length))
    return header
