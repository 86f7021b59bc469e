"""PyTorch: inventory of a multi-GB ``pytorch_model.bin`` vs ``torch.load(mmap=True, meta)``.

Inputs: Llama-shaped fp16 state dicts written by ``torch.save`` (TinyLlama's 1.1B shape, ~2.2 GB,
and the same with twice the layers, ~4 GB), so the flat memory of a header-only read shows.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from bench import Context, Row, ckptscan, measure, python, speedup

VOCAB, HIDDEN, INTERMEDIATE, KV = 32000, 2048, 5632, 256
TORCH = "import torch, sys; torch.load(sys.argv[1], mmap=True, weights_only=True, map_location='meta')"


GENERATE = """
import sys, torch
path, layers = sys.argv[1], int(sys.argv[2])
VOCAB, HIDDEN, INTERMEDIATE, KV = (int(a) for a in sys.argv[3:7])
sd = {"model.embed_tokens.weight": torch.zeros(VOCAB, HIDDEN, dtype=torch.float16)}
for i in range(layers):
    p = f"model.layers.{i}."
    for name, shape in (
        ("self_attn.q_proj.weight", (HIDDEN, HIDDEN)), ("self_attn.k_proj.weight", (KV, HIDDEN)),
        ("self_attn.v_proj.weight", (KV, HIDDEN)), ("self_attn.o_proj.weight", (HIDDEN, HIDDEN)),
        ("mlp.gate_proj.weight", (INTERMEDIATE, HIDDEN)), ("mlp.up_proj.weight", (INTERMEDIATE, HIDDEN)),
        ("mlp.down_proj.weight", (HIDDEN, INTERMEDIATE)), ("input_layernorm.weight", (HIDDEN,)),
        ("post_attention_layernorm.weight", (HIDDEN,)),
    ):
        sd[p + name] = torch.zeros(shape, dtype=torch.float16)
sd["model.norm.weight"] = torch.ones(HIDDEN, dtype=torch.float16)
sd["lm_head.weight"] = torch.zeros(VOCAB, HIDDEN, dtype=torch.float16)
torch.save(sd, path)
"""


def _make(path: Path, layers: int) -> None:
    """Written by a child process: a parent that held the tensors would lend its peak RSS to every
    later child (Linux keeps ru_maxrss across fork + exec)."""
    if not path.exists():
        shape = (str(n) for n in (VOCAB, HIDDEN, INTERMEDIATE, KV))
        subprocess.run([sys.executable, "-c", GENERATE, str(path), str(layers), *shape], check=True)


def run(ctx: Context) -> list[Row]:
    rows: list[Row] = []
    for layers in (22, 44):
        path = ctx.workdir / f"llama-{layers}L-fp16.bin"
        _make(path, layers)
        size = path.stat().st_size / 1e9
        case = f"Llama-shaped pytorch_model.bin, {layers} layers fp16 ({size:.1f} GB)"
        wall, rss = measure(ckptscan("--json", str(path)), ctx)
        ours = Row(case, "ckptscan --json", wall, rss)
        wall, rss = measure([*python(TORCH), str(path)], ctx)
        reference = Row(case, "torch.load(mmap, meta)", wall, rss)
        rows += [Row(case, ours.tool, ours.wall_s, ours.peak_rss_mb, speedup(reference, ours)), reference]
        path.unlink()
    return rows
