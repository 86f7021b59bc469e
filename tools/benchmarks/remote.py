"""Remote reads, distributed audits and the audit index (issue 14's done-when figures).

1. Header-only remote scans over HTTP (a Range-capable server on 127.0.0.1, counting what it
   sends): a sparse ~2.5 GB Llama-3.2-1B-shaped safetensors file and a sparse ~1 GiB GGUF with a
   Qwen2-sized vocabulary (151,936 tokens + merges in its metadata). Bound: bytes sent <= 1.2x the
   header bytes + 64 KiB, and <= 3 requests for safetensors (the config.json probe included).
2. ``ckptscan audit s3://bucket/prefix --engine dask`` against a moto S3 server on 127.0.0.1
   holding a copy of testdata/ (less the HF Trainer folder, a local-only folder format), compared
   with the local audit of the same files (records and totals, paths aside).
3. ``ckptscan audit TREE --index audit.sqlite`` on the 2,000-file tree of the audit benchmark:
   the first run (empty index) against the second (nothing changed).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench import REPO, Context, Row, ckptscan, measure, measure_full

sys.path.insert(0, str(REPO))

from tests.remote_server import file_server, moto_s3

KIB = 1024


def run(ctx: Context) -> list[Row]:
    return remote_scans(ctx) + s3_dask_audit(ctx) + index_rerun(ctx)


# -- 1. header-only remote scans -------------------------------------------------------------------


def write_gguf(path: Path) -> int:
    """A sparse GGUF: a vocabulary-heavy header, one 1 GiB F16 tensor whose data is a hole."""
    import gguf
    import numpy as np

    from benchmarks.gguf import MERGES, VOCAB

    w = gguf.GGUFWriter(str(path), "qwen2")
    w.add_name("remote benchmark")
    w.add_tokenizer_model("gpt2")
    w.add_token_list([f"token-{i:06d}" for i in range(VOCAB)])
    w.add_token_scores([float(i) for i in range(VOCAB)])
    w.add_token_types([1] * VOCAB)
    w.add_token_merges([f"tok{i} en{i}" for i in range(MERGES)])
    shape = (32768, 16384)
    w.add_tensor_info("token_embd.weight", shape, np.dtype(np.float16), 2 * shape[0] * shape[1])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    w.close()
    header = path.stat().st_size
    data_start = header + (-header % 32)
    with path.open("r+b") as f:
        f.truncate(data_start + 2 * shape[0] * shape[1])
    return data_start


def remote_scans(ctx: Context) -> list[Row]:
    from benchmarks.safetensors import LAYERS, llama_shapes, write_sparse

    served = ctx.workdir / "served"
    served.mkdir(exist_ok=True)
    st = served / "llama-1b.safetensors"
    if not st.exists():
        write_sparse(st, llama_shapes(LAYERS))
    gg = served / "vocab-1g.gguf"
    marker = served / "vocab-1g.header"
    if not marker.exists():
        marker.write_text(str(write_gguf(gg)))
    headers = {
        st: 8 + int.from_bytes(_first(st, 8), "little"),
        gg: int(marker.read_text()),
    }
    rows = []
    with file_server(served) as server:
        for path, header in headers.items():
            url = f"{server.url}/{path.name}"
            server.log.clear()
            out = subprocess.run([*ckptscan(url, "--json")], capture_output=True, text=True, cwd=REPO,
                                 env=_env(ctx), check=True).stdout  # fmt: skip
            remote = json.loads(out)["results"][0]["remote"]
            sent, requests = server.log.bytes_sent, len(server.log.requests)
            bound = 1.2 * header + 64 * KIB
            wall, rss = measure(ckptscan(url, "--json"), ctx)
            case = f"{path.name} over HTTP ({path.stat().st_size / 1e9:.2f} GB, header {header:,} B)"
            note = (
                f"sent {sent:,} B in {requests} requests (report: {remote['bytes_transferred']:,} B, "
                f"{remote['requests']} requests); bound 1.2x header + 64 KiB = {bound:,.0f} B: "
                f"{'met' if sent <= bound else 'NOT met'}"
            )
            if path.suffix == ".safetensors":
                note += f"; <= 3 requests: {'met' if requests <= 3 else 'NOT met'}"
            rows.append(Row(case, "ckptscan URL --json", wall, rss, note))
    return rows


def _first(path: Path, n: int) -> bytes:
    with path.open("rb") as f:
        return f.read(n)


def _env(ctx: Context, extra: dict[str, str] | None = None) -> dict[str, str]:
    import os

    return {**os.environ, "PYTHONPATH": str(REPO), **ctx.env, **(extra or {})}


# -- 2. S3 + Dask ----------------------------------------------------------------------------------


def _stable(doc: dict[str, Any], prefix: str) -> Any:
    summary = {k: v for k, v in doc["audit"].items() if k not in ("elapsed_s", "index", "engine", "workers", "roots")}
    results = [{k: v for k, v in r.items() if k != "remote"} for r in doc["results"]]
    return json.loads(json.dumps({"results": results, "audit": summary}, sort_keys=True).replace(prefix, "ROOT"))


def s3_dask_audit(ctx: Context) -> list[Row]:
    # testdata/ without the HF Trainer folder: folder formats are recognized on local disks only
    tree = ctx.workdir / "s3-tree"
    if not tree.exists():
        shutil.copytree(REPO / "testdata", tree, ignore=shutil.ignore_patterns("checkpoint-4"))
    local = json.loads(
        subprocess.run(ckptscan("audit", str(tree), "--json"), capture_output=True, text=True, env=_env(ctx)).stdout
    )
    with moto_s3("bench", tree, "checkpoints") as env:
        argv = ckptscan("audit", "s3://bench/checkpoints", "--engine", "dask", "--workers", "2", "--json")
        proc = subprocess.run(argv, capture_output=True, text=True, env=_env(ctx, env))
        doc = json.loads(proc.stdout)
        saved, ctx.env = ctx.env, {**ctx.env, **env}
        try:
            m = measure_full(argv, ctx, repeats=1) if proc.returncode == 0 else None
        finally:
            ctx.env = saved
    same = _stable(doc, "s3://bench/checkpoints") == _stable(local, str(tree))
    models = doc["audit"]["totals"]["models"]
    note = f"{models} models; records and totals equal to the local audit: {'yes' if same else 'NO'}"
    note += f" (exit {proc.returncode})"
    wall, rss = (m.wall_s, m.peak_rss_mb) if m is not None else (float("nan"), float("nan"))
    return [Row("audit s3://bench/checkpoints (testdata/, moto)", "ckptscan audit --engine dask", wall, rss, note)]


# -- 3. the index ----------------------------------------------------------------------------------


def index_rerun(ctx: Context) -> list[Row]:
    from benchmarks.audit import N_FOLDERS, PER_FOLDER, available_formats

    tree = ctx.workdir / "tree"
    formats = available_formats()
    marker = tree / f".complete-{'-'.join(formats)}"
    if not marker.exists():
        code = f"from benchmarks.audit import generate; generate({str(tree)!r}, {formats!r})"
        subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO / "tools")
        marker.write_text("ok")
    index = ctx.workdir / "audit.sqlite"
    argv = ckptscan("audit", str(tree), "--json", "--index", str(index))
    firsts = []
    for _ in range(ctx.repeats):
        index.unlink(missing_ok=True)
        firsts.append(measure_full(argv, ctx, repeats=1))
    first = min(firsts, key=lambda m: m.wall_s)
    second = measure_full(argv, ctx)
    case = f"audit of {N_FOLDERS * PER_FOLDER:,} unchanged files ({', '.join(formats)}) with --index"
    ratio = first.wall_s / second.wall_s
    return [
        Row(case, "first run (empty index)", first.wall_s, first.peak_rss_mb),
        Row(case, "second run (unchanged)", second.wall_s, second.peak_rss_mb,
            f"{ratio:.1f}x faster than the first run (goal >= 10x: {'met' if ratio >= 10 else 'NOT met'})"),
    ]  # fmt: skip
