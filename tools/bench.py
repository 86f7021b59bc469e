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
import compileall
import importlib
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BENCHMARKS = ("safetensors", "gguf", "torch", "onnx", "stats", "audit", "html", "diff", "remote")


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


# Linux counts a child's resident set at fork (a copy of the parent's) in its ru_maxrss, so a big
# benchmark parent would inflate every measurement. A tiny launcher (python -S, a few MB) forks
# and times the measured command instead, and reports the child's own rusage.
_LAUNCHER = """
import os, sys, time
argv = sys.argv[1:]
start = time.perf_counter()
pid = os.fork()
if pid == 0:
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.execvp(argv[0], argv)
_, status, usage = os.wait4(pid, 0)
wall = time.perf_counter() - start
print(wall, usage.ru_maxrss, usage.ru_utime + usage.ru_stime, os.waitstatus_to_exitcode(status))
"""


@dataclass(frozen=True)
class Measurement:
    wall_s: float
    peak_rss_mb: float
    cpu_s: float  # user + system time of the child (and its children waited for)


def measure_full(argv: list[str], ctx: Context, *, repeats: int | None = None) -> Measurement:
    """Best-of-N wall seconds, peak RSS (MiB) and CPU seconds of a whole child process."""
    best: Measurement | None = None
    peak = 0.0
    env = {**os.environ, "PYTHONPATH": str(REPO), **ctx.env}
    for _ in range(repeats or ctx.repeats):
        proc = subprocess.run([sys.executable, "-S", "-c", _LAUNCHER, *argv], capture_output=True, text=True, env=env)
        wall, rss_kib, cpu, code = proc.stdout.split()
        if int(code) != 0:
            raise RuntimeError(f"{' '.join(argv)} failed ({code}): {proc.stderr[-2000:]}")
        m = Measurement(float(wall), int(rss_kib) / 1024, float(cpu))
        peak = max(peak, m.peak_rss_mb)
        if best is None or m.wall_s < best.wall_s:
            best = m
    assert best is not None
    return Measurement(best.wall_s, peak, best.cpu_s)


def measure(argv: list[str], ctx: Context, *, repeats: int | None = None) -> tuple[float, float]:
    """Best-of-N wall seconds and the peak RSS (MiB) of a whole child process."""
    m = measure_full(argv, ctx, repeats=repeats)
    return m.wall_s, m.peak_rss_mb


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
    # Installed packages run from bytecode compiled at install time (pip does it, and the reference
    # libraries in site-packages have theirs); a checkout under PYTHONDONTWRITEBYTECODE would
    # otherwise recompile ckptscan in every measured process.
    compileall.compile_dir(REPO / "ckptscan", quiet=1)
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
