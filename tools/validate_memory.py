#!/usr/bin/env python3
"""Check ``ckptscan memory``'s training estimates against what PyTorch really allocates.

For each configuration: build a small GPT-style transformer with plain torch (HF GPT-2 tensor names),
save it as safetensors with a ``config.json``, ask ``ckptscan memory --json`` for its estimate, then
train it for a few steps and measure:

- weights, gradients, optimizer state: the exact bytes of their storages (each storage once);
- activations: the bytes autograd saves for backward in one forward pass, seen through
  ``torch.autograd.graph.saved_tensors_hooks`` (each storage once; parameters and buffers excluded).
  Not measured under gradient checkpointing, whose own hooks hide the saved tensors;
- peak: the highest total of live tensor bytes over one whole training step (forward, backward,
  optimizer step, zero_grad), from the PyTorch profiler's memory timeline (``profile_memory=True``).
  On a GPU this is what ``torch.cuda.max_memory_allocated`` reports; on a CPU it is the closest
  measurement PyTorch offers (allocator events of the CPU allocator).

Runs on the GPU when one is available (then ``max_memory_allocated`` is used for the peak), else on
CPU; it says which. A few minutes on 2 cores.

    python3 tools/validate_memory.py                 # table on stdout
    python3 tools/validate_memory.py --markdown      # the table for docs/analysis.md
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Config:
    name: str
    layers: int = 4
    hidden: int = 256
    heads: int = 4
    kv_heads: int = 4
    vocab: int = 4096
    seq: int = 256
    batch: int = 4
    optimizer: str = "adamw"
    precision: str = "fp32"  # fp32 or bf16-true
    attention: str = "eager"  # eager or sdpa
    checkpointing: bool = False
    optimizer_impl: str = "foreach"  # foreach or for-loop (PyTorch Adam/AdamW)


CONFIGS = (
    Config("A: fp32 AdamW, eager attention"),
    Config("B: fp32 AdamW, SDPA attention", attention="sdpa"),
    Config("C: fp32 AdamW, GQA 8/2 heads, checkpointing", heads=8, kv_heads=2, checkpointing=True),
    Config("D: pure bf16 AdamW, 6 layers, seq 512, batch 2", layers=6, seq=512, batch=2, precision="bf16-true"),
    Config("E: fp32 SGD momentum, hidden 384", hidden=384, heads=6, kv_heads=6, optimizer="sgd-momentum"),
    Config("F: fp32 Adafactor, seq 128, batch 8", seq=128, batch=8, optimizer="adafactor"),
    Config(
        "G: fp32 AdamW (foreach), hidden 512, batch 1 x 32 tokens", hidden=512, heads=8, kv_heads=8, seq=32, batch=1
    ),
    Config("H: as G, for-loop AdamW step", hidden=512, heads=8, kv_heads=8, seq=32, batch=1, optimizer_impl="for-loop"),
)


# -- the model: GPT-2 layout and names; fused QKV projection sized for grouped-query attention -----


class Block(nn.Module):
    def __init__(self, c: Config) -> None:
        super().__init__()
        self.c = c
        head_dim = c.hidden // c.heads
        self.ln_1 = nn.LayerNorm(c.hidden)
        self.attn = nn.Module()
        self.attn.c_attn = nn.Linear(c.hidden, c.hidden + 2 * c.kv_heads * head_dim)
        self.attn.c_proj = nn.Linear(c.hidden, c.hidden)
        self.ln_2 = nn.LayerNorm(c.hidden)
        self.mlp = nn.Module()
        self.mlp.c_fc = nn.Linear(c.hidden, 4 * c.hidden)
        self.mlp.c_proj = nn.Linear(4 * c.hidden, c.hidden)
        mask = torch.ones(c.seq, c.seq, dtype=torch.bool).triu(1)
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.c
        b, s, h = x.shape
        d = h // c.heads
        qkv = self.attn.c_attn(self.ln_1(x))
        q, k, v = qkv.split([h, c.kv_heads * d, c.kv_heads * d], dim=-1)
        q = q.view(b, s, c.heads, d).transpose(1, 2)
        k = k.view(b, s, c.kv_heads, d).transpose(1, 2)
        v = v.view(b, s, c.kv_heads, d).transpose(1, 2)
        if c.kv_heads != c.heads:
            k = k.repeat_interleave(c.heads // c.kv_heads, dim=1)
            v = v.repeat_interleave(c.heads // c.kv_heads, dim=1)
        if c.attention == "sdpa":
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(d))
            y = scores.masked_fill(self.mask[:s, :s], float("-inf")).softmax(-1) @ v
        x = x + self.attn.c_proj(y.transpose(1, 2).reshape(b, s, h))
        return x + self.mlp.c_proj(F.gelu(self.mlp.c_fc(self.ln_2(x))))


class GPT(nn.Module):
    def __init__(self, c: Config) -> None:
        super().__init__()
        self.c = c
        self.transformer = nn.Module()
        self.transformer.wte = nn.Embedding(c.vocab, c.hidden)
        self.transformer.wpe = nn.Embedding(c.seq, c.hidden)
        self.transformer.h = nn.ModuleList(Block(c) for _ in range(c.layers))
        self.transformer.ln_f = nn.LayerNorm(c.hidden)
        self.lm_head = nn.Linear(c.hidden, c.vocab, bias=False)
        self.lm_head.weight = self.transformer.wte.weight  # tied, as GPT-2

    def forward(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        t = self.transformer
        x = t.wte(idx) + t.wpe(torch.arange(idx.shape[1], device=idx.device))
        for block in t.h:
            x = checkpoint(block, x, use_reentrant=False) if self.c.checkpointing else block(x)
        logits = self.lm_head(t.ln_f(x))
        return F.cross_entropy(logits.float().view(-1, logits.shape[-1]), targets.view(-1))


def save_for_ckptscan(model: GPT, c: Config, folder: Path) -> Path:
    from safetensors.torch import save_model

    path = folder / "model.safetensors"
    save_model(model, str(path))  # drops the tied lm_head, as save_pretrained does
    config = {"model_type": "gpt2", "n_layer": c.layers, "n_embd": c.hidden, "n_head": c.heads,
              "num_key_value_heads": c.kv_heads, "n_inner": 4 * c.hidden, "vocab_size": c.vocab,
              "n_positions": c.seq, "attn_pdrop": 0.0, "resid_pdrop": 0.0, "embd_pdrop": 0.0,
              "layer_norm_epsilon": 1e-5, "tie_word_embeddings": True}  # fmt: skip
    (folder / "config.json").write_text(json.dumps(config))
    return path


def estimate(path: Path, c: Config) -> dict[str, int]:
    args = [sys.executable, "-m", "ckptscan", "memory", str(path), "--json", "--optimizer", c.optimizer,
            "--precision", c.precision, "--batch", str(c.batch), "--seq", str(c.seq),
            "--attention", c.attention, "--optimizer-impl", c.optimizer_impl]  # fmt: skip
    if c.checkpointing:
        args.append("--checkpointing")
    run = subprocess.run(args, cwd=REPO, capture_output=True, text=True, check=True)
    training = json.loads(run.stdout)["results"][0]["memory"]["training"]
    lines = {line["name"]: line["bytes"] for line in training["lines"]}
    lines["total"] = training["total_bytes"]
    lines["sum"] = training["sum_bytes"]
    return lines


# -- measuring -------------------------------------------------------------------------------------


def storage_bytes(tensors: Any) -> int:
    seen: dict[int, int] = {}
    for t in tensors:
        if isinstance(t, torch.Tensor):
            storage = t.untyped_storage()
            seen[storage.data_ptr()] = storage.nbytes()
    return sum(seen.values())


def make_optimizer(model: GPT, c: Config) -> torch.optim.Optimizer:
    params = model.parameters()
    if c.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=1e-4, foreach=c.optimizer_impl == "foreach")
    if c.optimizer == "sgd-momentum":
        return torch.optim.SGD(params, lr=1e-3, momentum=0.9, foreach=False)
    if c.optimizer == "adafactor":
        return torch.optim.Adafactor(params, lr=1e-3, foreach=False)
    raise ValueError(c.optimizer)


def saved_activation_bytes(model: GPT, idx: torch.Tensor, targets: torch.Tensor) -> int:
    """Bytes of the distinct storages autograd keeps for backward (parameters and buffers excluded)."""
    exclude = {p.untyped_storage().data_ptr() for p in model.parameters()}
    exclude |= {b.untyped_storage().data_ptr() for b in model.buffers()}
    kept: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in exclude and t.device.type != "meta":
            kept[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = model(idx, targets)
    del loss
    return sum(kept.values())


def step(model: GPT, optimizer: torch.optim.Optimizer, idx: torch.Tensor, targets: torch.Tensor) -> None:
    model(idx, targets).backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def peak_bytes(model: GPT, optimizer: torch.optim.Optimizer, idx: torch.Tensor, targets: torch.Tensor) -> int:
    if idx.is_cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        step(model, optimizer, idx, targets)
        torch.cuda.synchronize()
        return int(torch.cuda.max_memory_allocated())
    from torch.profiler import ProfilerActivity, profile
    from torch.profiler._memory_profiler import MemoryProfileTimeline

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True, with_stack=True) as p:
        step(model, optimizer, idx, targets)
    _, sizes = MemoryProfileTimeline(p._memory_profile())._coalesce_timeline(torch.device("cpu"))
    return max(sum(row) for row in sizes)


def measure(c: Config, device: torch.device, folder: Path) -> tuple[dict[str, int], dict[str, int]]:
    torch.manual_seed(0)
    model = GPT(c)
    path = save_for_ckptscan(model, c, folder)
    est = estimate(path, c)
    if c.precision == "bf16-true":
        model = model.to(torch.bfloat16)
    model = model.to(device)
    optimizer = make_optimizer(model, c)
    idx = torch.randint(0, c.vocab, (c.batch, c.seq), device=device)
    targets = torch.randint(0, c.vocab, (c.batch, c.seq), device=device)
    step(model, optimizer, idx, targets)  # creates the optimizer state
    got = {"weights": storage_bytes(model.parameters())}
    state = [t for s in optimizer.state.values() for t in s.values()]
    got["optimizer_state"] = storage_bytes(state)
    model(idx, targets).backward()
    got["gradients"] = storage_bytes(p.grad for p in model.parameters())
    optimizer.zero_grad(set_to_none=True)
    if not c.checkpointing:
        got["activations"] = saved_activation_bytes(model, idx, targets)
    got["peak"] = peak_bytes(model, optimizer, idx, targets)
    return est, got


def error(estimated: int, measured: int) -> str:
    return f"{(estimated - measured) / measured:+.1%}" if measured else "-"


def mb(n: int) -> str:
    return f"{n / 1e6:,.2f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    parser.add_argument("--only", help="run only configurations whose name starts with this letter")
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.set_num_threads(max(1, torch.get_num_threads()))
    rows = []
    started = time.time()
    for c in CONFIGS:
        if args.only and not c.name.startswith(args.only):
            continue
        with tempfile.TemporaryDirectory() as tmp:
            est, got = measure(c, device, Path(tmp))
        rows.append((c, est, got))
        print(f"{c.name}: done ({time.time() - started:.0f} s)", file=sys.stderr)
    where = (
        f"GPU ({torch.cuda.get_device_name()}): peak = torch.cuda.max_memory_allocated"
        if device.type == "cuda"
        else "CPU (no GPU available): peak = highest live tensor bytes in the PyTorch profiler's memory timeline"
    )
    print(f"torch {torch.__version__}, {where}")
    header = ["configuration", "part", "estimate (MB)", "measured (MB)", "error"]
    table: list[list[str]] = []
    for c, est, got in rows:
        weights = est["weights"] + est.get("master_weights", 0)
        parts = [("weights", weights, got["weights"]), ("gradients", est["gradients"], got["gradients"]),
                 ("optimizer state", est["optimizer_state"], got["optimizer_state"])]  # fmt: skip
        if "activations" in got:
            parts.append(("activations (saved)", est["activations"], got["activations"]))
        parts.append(("peak", est["total"], got["peak"]))
        parts.append(("(sum of the lines)", est["sum"], got["peak"]))
        for i, (part, e, m) in enumerate(parts):
            table.append([c.name if i == 0 else "", part, mb(e), mb(m), error(e, m)])
    if args.markdown:
        print("| " + " | ".join(header) + " |")
        print("|" + "---|" * len(header))
        for row in table:
            print("| " + " | ".join(row) + " |")
    else:
        widths = [max(len(r[i]) for r in [header, *table]) for i in range(len(header))]
        for row in [header, *table]:
            cells = zip(row, widths, strict=True)
            print("  ".join(cell.ljust(w) if i < 2 else cell.rjust(w) for i, (cell, w) in enumerate(cells)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
