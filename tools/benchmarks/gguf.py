"""GGUF: a vocabulary-heavy file (a 151,936-token tokenizer with scores, token types and 151,387
merges, as Qwen2 ships it, plus a small model) written by gguf's GGUFWriter, inventoried by
ckptscan vs gguf.GGUFReader (the official reader: it parses every key/value and tensor info)."""

from __future__ import annotations

from pathlib import Path

from bench import Context, Row, ckptscan, measure, python

VOCAB, MERGES = 151_936, 151_387


def write(path: Path) -> None:
    import gguf
    import numpy as np

    w = gguf.GGUFWriter(str(path), "qwen2")
    w.add_name("vocab-heavy benchmark")
    w.add_block_count(2)
    w.add_tokenizer_model("gpt2")
    w.add_token_list([f"token-{i:06d}" for i in range(VOCAB)])
    w.add_token_scores([float(i) for i in range(VOCAB)])
    w.add_token_types([1] * VOCAB)
    w.add_token_merges([f"tok{i} en{i}" for i in range(MERGES)])
    rng = np.random.default_rng(0)
    w.add_tensor("token_embd.weight", rng.standard_normal((VOCAB, 64)).astype(np.float16))
    for i in range(2):
        w.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(64, dtype=np.float32))
        w.add_tensor(f"blk.{i}.ffn_up.weight", rng.standard_normal((256, 64)).astype(np.float16))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def run(ctx: Context) -> list[Row]:
    path = ctx.workdir / "vocab-heavy.gguf"
    if not path.exists():
        write(path)
    case = f"GGUF, {VOCAB:,}-token vocabulary + {MERGES:,} merges ({path.stat().st_size / 1e6:.0f} MB)"
    reference = (
        "import sys, gguf\nr = gguf.GGUFReader(sys.argv[1])\n"
        "inv = [(t.name, t.shape, t.tensor_type) for t in r.tensors]\n"
    )
    wall, rss = measure([*python(reference), str(path)], ctx)
    ref = Row(case, "gguf.GGUFReader", wall, rss)
    wall, rss = measure(ckptscan("--json", str(path)), ctx)
    ours = Row(case, "ckptscan --json", wall, rss, f"{ref.wall_s / wall:.1f}x faster than gguf.GGUFReader")
    wall, rss = measure(ckptscan(str(path)), ctx)
    return [ref, ours, Row(case, "ckptscan (terminal report)", wall, rss)]
