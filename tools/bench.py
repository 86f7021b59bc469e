#!/usr/bin/env python3
"""Benchmarks: ckptscan against the official libraries, side by side, in one run.

    python tools/bench.py                 # every benchmark
    python tools/bench.py safetensors gguf
    python tools/bench.py --workdir /tmp/ckptscan-bench --keep

Each benchmark module in tools/benchmarks/<name>.py exposes ``run(ctx: Context) -> list[Row]``:
it generates its large input files under ``ctx.workdir`` (once; reused with --keep) and measures
whole processes with :func:`measure`, so wall time includes interpreter start-up and imports, and
peak RSS is the child's own maximum resident set (``ru_maxrss``). Ratios are computed between rows
measured in the same run, since these machines are noisy.
"""

from __future__ import annotations

import argparse
import importlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BENCHMARKS = ("safetensors", "gguf", "audit")


@dataclass(frozen=True)
class Row:
    case: str  # what was measured, e.g. "1B-param Llama safetensors (2.2 GB)"
    tool: str  # "ckptscan" or the reference, e.g. "safetensors.safe_open"
    wall_s: float
    peak_rss_mb: float
    note: str = ""


@dataclass
class Context:
    workdir: Path
    repeats: int = 3
    env: dict[str, str] = field(default_factory=dict)


def measure(argv: list[str], ctx: Context, *, repeats: int | None = None) -> tuple[float, float]:
    """Best-of-N wall seconds and the peak RSS (MiB) of a whole child process."""
    best_wall, peak = float("inf"), 0.0
    env = {**os.environ, "PYTHONPATH": str(REPO), **ctx.env}
    for _ in range(repeats or ctx.repeats):
        start = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        if os.waitstatus_to_exitcode(status) != 0:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            raise RuntimeError(f"{' '.join(argv)} failed: {err[-2000:]}")
        if proc.stderr:
            proc.stderr.close()
        best_wall = min(best_wall, wall)
        peak = max(peak, usage.ru_maxrss / 1024)  # Linux reports KiB
    return best_wall, peak


def python(code: str) -> list[str]:
    """argv running ``code`` in a fresh interpreter (the reference libraries' side)."""
    return [sys.executable, "-c", code]


def ckptscan(*args: str) -> list[str]:
    return [sys.executable, "-m", "ckptscan", *args]


def render(rows: list[Row]) -> str:
    lines = ["| case | tool | wall (s) | peak RSS (MiB) | note |", "|---|---|---:|---:|---|"]
    for r in rows:
        lines.append(f"| {r.case} | {r.tool} | {r.wall_s:.3f} | {r.peak_rss_mb:.0f} | {r.note} |")
    return "\n".join(lines)


def speedup(reference: Row, ours: Row) -> str:
    return f"{reference.wall_s / ours.wall_s:.1f}x faster than {reference.tool}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("benchmarks", nargs="*", metavar="NAME", help=f"default: all of {', '.join(BENCHMARKS)}")
    parser.add_argument("--workdir", type=Path, help="where to generate inputs (default: a temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep generated inputs for the next run")
    parser.add_argument("--repeats", type=int, default=3, help="best of N runs per measurement")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.benchmarks) - set(BENCHMARKS))
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="ckptscan-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(REPO / "tools"))
    rows: list[Row] = []
    try:
        for name in args.benchmarks or BENCHMARKS:
            module = importlib.import_module(f"benchmarks.{name}")
            sub = Context(workdir / name, repeats=args.repeats)
            sub.workdir.mkdir(parents=True, exist_ok=True)
            got = module.run(sub)
            print(render(got), flush=True)
            print(flush=True)
            rows.extend(got)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    print("## all results\n")
    print(render(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
