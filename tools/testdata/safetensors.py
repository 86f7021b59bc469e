"""safetensors fixtures, written by the `safetensors` library itself (torch tensors for the dtypes
numpy lacks: bfloat16, float8, float4).

- llama-tiny/: a 2-layer Llama-shaped model in BF16 with a HF config.json; embeddings are tied
  (tie_word_embeddings: true), so like transformers' save_pretrained there is no lm_head tensor.
- sharded-tiny/: the same architecture in F32 split over two shards with a
  model.safetensors.index.json, as transformers writes it (weight_map + metadata.total_size).
- all_dtypes.safetensors: one tensor of every dtype safetensors can write (F64 ... F4).
- edge_cases.safetensors: __metadata__, a 0-d scalar, a zero-size tensor, a non-ASCII name.
"""

from __future__ import annotations

import json
from pathlib import Path

VOCAB, HIDDEN, LAYERS, HEADS, KV_HEADS, FFN = 256, 64, 2, 4, 2, 128


def llama_state_dict(dtype: object, *, tied: bool) -> dict[str, object]:
    import torch

    g = torch.Generator().manual_seed(0)
    head_dim = HIDDEN // HEADS

    def rand(*shape: int) -> object:
        return (torch.randn(*shape, generator=g) * 0.02).to(dtype)

    sd: dict[str, object] = {"model.embed_tokens.weight": rand(VOCAB, HIDDEN)}
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        sd[p + "input_layernorm.weight"] = torch.ones(HIDDEN).to(dtype)
        sd[p + "self_attn.q_proj.weight"] = rand(HEADS * head_dim, HIDDEN)
        sd[p + "self_attn.k_proj.weight"] = rand(KV_HEADS * head_dim, HIDDEN)
        sd[p + "self_attn.v_proj.weight"] = rand(KV_HEADS * head_dim, HIDDEN)
        sd[p + "self_attn.o_proj.weight"] = rand(HIDDEN, HEADS * head_dim)
        sd[p + "post_attention_layernorm.weight"] = torch.ones(HIDDEN).to(dtype)
        sd[p + "mlp.gate_proj.weight"] = rand(FFN, HIDDEN)
        sd[p + "mlp.up_proj.weight"] = rand(FFN, HIDDEN)
        sd[p + "mlp.down_proj.weight"] = rand(HIDDEN, FFN)
    sd["model.norm.weight"] = torch.ones(HIDDEN).to(dtype)
    if not tied:
        sd["lm_head.weight"] = rand(VOCAB, HIDDEN)
    return sd


def llama_config(dtype: str, *, tied: bool) -> dict[str, object]:
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": VOCAB,
        "hidden_size": HIDDEN,
        "intermediate_size": FFN,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS,
        "max_position_embeddings": 512,
        "rms_norm_eps": 1e-6,
        "tie_word_embeddings": tied,
        "torch_dtype": dtype,
    }


def generate(out: Path) -> list[Path]:
    import torch
    from safetensors.torch import save_file

    written: list[Path] = []

    tiny = out / "llama-tiny"
    tiny.mkdir(exist_ok=True)
    save_file(llama_state_dict(torch.bfloat16, tied=True), tiny / "model.safetensors", metadata={"format": "pt"})
    (tiny / "config.json").write_text(json.dumps(llama_config("bfloat16", tied=True), indent=2) + "\n")
    written += [tiny / "model.safetensors", tiny / "config.json"]

    sharded = out / "sharded-tiny"
    sharded.mkdir(exist_ok=True)
    sd = llama_state_dict(torch.float32, tied=False)
    names = list(sd)
    shards = {
        "model-00001-of-00002.safetensors": names[: len(names) // 2],
        "model-00002-of-00002.safetensors": names[len(names) // 2 :],
    }
    weight_map = {}
    total = 0
    for shard, keys in shards.items():
        save_file({k: sd[k] for k in keys}, sharded / shard, metadata={"format": "pt"})
        written.append(sharded / shard)
        for k in keys:
            weight_map[k] = shard
            total += sd[k].numel() * sd[k].element_size()  # type: ignore[attr-defined]
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (sharded / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    (sharded / "config.json").write_text(json.dumps(llama_config("float32", tied=False), indent=2) + "\n")
    written += [sharded / "model.safetensors.index.json", sharded / "config.json"]

    g = torch.Generator().manual_seed(1)
    base = torch.randn(3, 4, generator=g)
    dtypes = {
        "f64": torch.float64, "f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16,
        "i64": torch.int64, "i32": torch.int32, "i16": torch.int16, "i8": torch.int8, "u8": torch.uint8,
        "u16": torch.uint16, "u32": torch.uint32, "u64": torch.uint64, "bool": torch.bool,
        "f8_e4m3": torch.float8_e4m3fn, "f8_e5m2": torch.float8_e5m2, "f8_e4m3fnuz": torch.float8_e4m3fnuz,
        "f8_e5m2fnuz": torch.float8_e5m2fnuz, "f8_e8m0": torch.float8_e8m0fnu, "c64": torch.complex64,
    }  # fmt: skip
    tensors = {name: (base * 10).to(dt) if dt != torch.bool else base > 0 for name, dt in dtypes.items()}
    tensors["f4"] = torch.arange(12, dtype=torch.uint8).reshape(3, 4).view(torch.float4_e2m1fn_x2)
    save_file(tensors, out / "all_dtypes.safetensors")
    written.append(out / "all_dtypes.safetensors")

    edge = {
        "scalar": torch.tensor(3.5),
        "empty": torch.zeros(0, 7),
        "größe.gewicht": torch.arange(6, dtype=torch.int32).reshape(2, 3),
    }
    save_file(
        edge, out / "edge_cases.safetensors", metadata={"note": "ckptscan fixture"}
    )  # one key: the Rust writer orders map keys randomly
    written.append(out / "edge_cases.safetensors")
    return written
