"""safetensors: a ~1.2B-parameter Llama-shaped model (Llama-3.2-1B dimensions, BF16, 2.5 GB),
written by safetensors itself, inventoried by ckptscan vs safetensors.safe_open listing every
tensor's name, shape and dtype (the official library's fastest equivalent: it maps the file and
parses only the header). A sparse 60 GB file with the same header layout shows that ckptscan's
memory does not grow with the file size.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from bench import Context, Row, ckptscan, measure, python

VOCAB, HIDDEN, LAYERS, HEADS, KV_HEADS, FFN = 128256, 2048, 16, 32, 8, 8192


def llama_shapes(layers: int) -> dict[str, list[int]]:
    head_dim = HIDDEN // HEADS
    shapes = {"model.embed_tokens.weight": [VOCAB, HIDDEN]}
    for i in range(layers):
        p = f"model.layers.{i}."
        shapes |= {
            p + "input_layernorm.weight": [HIDDEN],
            p + "self_attn.q_proj.weight": [HEADS * head_dim, HIDDEN],
            p + "self_attn.k_proj.weight": [KV_HEADS * head_dim, HIDDEN],
            p + "self_attn.v_proj.weight": [KV_HEADS * head_dim, HIDDEN],
            p + "self_attn.o_proj.weight": [HIDDEN, HEADS * head_dim],
            p + "post_attention_layernorm.weight": [HIDDEN],
            p + "mlp.gate_proj.weight": [FFN, HIDDEN],
            p + "mlp.up_proj.weight": [FFN, HIDDEN],
            p + "mlp.down_proj.weight": [HIDDEN, FFN],
        }
    shapes["model.norm.weight"] = [HIDDEN]
    return shapes


def count_params(layers: int) -> int:
    total = 0
    for shape in llama_shapes(layers).values():
        n = 1
        for d in shape:
            n *= d
        total += n
    return total


def write_real(path: Path) -> int:
    import torch
    from safetensors.torch import save_file

    tensors = {name: torch.empty(shape, dtype=torch.bfloat16) for name, shape in llama_shapes(LAYERS).items()}
    save_file(tensors, str(path), metadata={"format": "pt"})
    return sum(t.numel() for t in tensors.values())


def moe_shapes() -> dict[str, list[int]]:
    """DeepSeek-V3's layout with every expert stored as its own tensors (61 layers x 256 experts x
    3 projections: 47,278 tensors), the case where per-tensor work shows."""
    hidden, ffn, experts, layers, vocab = 7168, 2048, 256, 61, 129280
    shapes = {"model.embed_tokens.weight": [vocab, hidden]}
    for i in range(layers):
        p = f"model.layers.{i}."
        shapes |= {
            p + "input_layernorm.weight": [hidden],
            p + "post_attention_layernorm.weight": [hidden],
            p + "self_attn.q_proj.weight": [hidden, hidden],
            p + "self_attn.k_proj.weight": [1024, hidden],
            p + "self_attn.v_proj.weight": [1024, hidden],
            p + "self_attn.o_proj.weight": [hidden, hidden],
            p + "mlp.gate.weight": [experts, hidden],
        }
        for e in range(experts):
            q = f"{p}mlp.experts.{e}."
            shapes |= {q + "gate_proj.weight": [ffn, hidden], q + "up_proj.weight": [ffn, hidden],
                       q + "down_proj.weight": [hidden, ffn]}  # fmt: skip
    shapes |= {"model.norm.weight": [hidden], "lm_head.weight": [vocab, hidden]}
    return shapes


def write_sparse(path: Path, shapes: dict[str, list[int]]) -> int:
    """A valid safetensors file whose data section is a hole: big on paper, nothing on disk."""
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = params = 0
    for name, shape in shapes.items():
        n = 1
        for d in shape:
            n *= d
        header[name] = {"dtype": "BF16", "shape": shape, "data_offsets": [offset, offset + 2 * n]}
        offset += 2 * n
        params += n
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    with path.open("wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        f.truncate(8 + len(raw) + offset)
    return params


def run(ctx: Context) -> list[Row]:
    real = ctx.workdir / "llama-1b.safetensors"
    if not real.exists():
        write_real(real)
    params = count_params(LAYERS)
    sparse = ctx.workdir / "llama-sparse.safetensors"
    sparse_params = write_sparse(sparse, llama_shapes(400))
    size_gb = real.stat().st_size / 1e9
    sparse_gb = sparse.stat().st_size / 1e9
    case = f"{params / 1e9:.2f}B-param Llama safetensors ({size_gb:.1f} GB)"
    reference = (
        "import sys\nfrom safetensors import safe_open\n"
        "with safe_open(sys.argv[1], 'numpy') as f:\n"
        "    inv = [(k, f.get_slice(k).get_shape(), f.get_slice(k).get_dtype()) for k in f.keys()]\n"
    )
    # the floor: an interpreter that reads the header and parses its JSON, nothing else (issue 13)
    bare = (
        "import json, struct, sys\nwith open(sys.argv[1], 'rb') as f:\n"
        "    n = struct.unpack('<Q', f.read(8))[0]\n    header = json.loads(f.read(n))\n"
    )
    rows = []
    wall, rss = measure([*python(bare), str(real)], ctx)
    floor = Row(case, "bare python -c (read the header, json.loads)", wall, rss, "the floor")
    wall, rss = measure([*python(reference), str(real)], ctx)
    ref = Row(case, "safetensors.safe_open (names, shapes, dtypes)", wall, rss)
    wall, rss = measure(ckptscan("--json", str(real)), ctx)
    note = f"{ref.wall_s / wall:.1f}x the reference's speed; {wall / floor.wall_s:.2f}x the floor's time"
    ours = Row(case, "ckptscan --json", wall, rss, note)
    wall, rss = measure(ckptscan(str(real)), ctx)
    terminal = Row(case, "ckptscan (terminal report)", wall, rss, f"{wall / floor.wall_s:.2f}x the floor's time")
    rows += [floor, ref, ours, terminal]
    tiny = Path(__file__).resolve().parents[2] / "testdata" / "safetensors" / "llama-tiny" / "model.safetensors"
    wall, rss = measure(ckptscan("--json", str(tiny)), ctx)
    rows.append(Row(f"tiny Llama safetensors ({tiny.stat().st_size / 1e3:.0f} KB)", "ckptscan --json", wall, rss,
                    "baseline for the memory comparison"))  # fmt: skip
    sparse_case = f"{sparse_params / 1e9:.0f}B-param sparse safetensors ({sparse_gb:.0f} GB on paper)"
    wall, rss = measure(ckptscan("--json", str(sparse)), ctx)
    rows.append(Row(sparse_case, "ckptscan --json", wall, rss, "memory flat: header-only"))
    moe = ctx.workdir / "moe-47k-tensors.safetensors"
    moe_params = write_sparse(moe, moe_shapes())
    moe_case = f"{moe_params / 1e9:.0f}B-param MoE, 47,278 tensors (sparse safetensors)"
    wall, rss = measure([*python(reference), str(moe)], ctx)
    moe_ref = Row(moe_case, "safetensors.safe_open (names, shapes, dtypes)", wall, rss)
    wall, rss = measure(ckptscan("--json", str(moe)), ctx)
    rows += [moe_ref, Row(moe_case, "ckptscan --json", wall, rss, f"{wall / moe_ref.wall_s:.1f}x the reference's time "
                          "(it lists; ckptscan also classifies, counts and plans every tensor)")]  # fmt: skip
    return rows
