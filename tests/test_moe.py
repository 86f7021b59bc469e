"""Mixture-of-experts figures: a Mixtral-8x7B-shaped checkpoint in transformers 5's fused layout
(header only, sparse file), the tiny real MoE models of the roles corpus, and the bank axis rules."""

from __future__ import annotations

import json
import struct
from pathlib import Path

from ckptscan.analyze.analysis import analyze
from ckptscan.analyze.moe import is_expert
from ckptscan.analyze.reduction import bank_channels
from ckptscan.scan import read_inventory
from tests._analysis_helpers import tensor
from tests.conftest import TESTDATA

# Mixtral-8x7B-v0.1's config.json (the fields that shape its tensors)
MIXTRAL = {"model_type": "mixtral", "num_hidden_layers": 32, "hidden_size": 4096, "intermediate_size": 14336,
           "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 32000, "num_local_experts": 8,
           "num_experts_per_tok": 2, "tie_word_embeddings": False, "rms_norm_eps": 1e-5,
           "max_position_embeddings": 32768}  # fmt: skip


def _mixtral(folder: Path) -> Path:
    """model.safetensors with Mixtral-8x7B's 291 tensors as transformers 5 holds them (fused expert
    banks), BF16: a real header, the 93 GB of data a hole in a sparse file."""
    c = MIXTRAL
    h, f, e, v = c["hidden_size"], c["intermediate_size"], c["num_local_experts"], c["vocab_size"]
    kv = h // c["num_attention_heads"] * c["num_key_value_heads"]
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (v, h)}
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        shapes |= {
            p + "self_attn.q_proj.weight": (h, h),
            p + "self_attn.k_proj.weight": (kv, h),
            p + "self_attn.v_proj.weight": (kv, h),
            p + "self_attn.o_proj.weight": (h, h),
            p + "mlp.gate.weight": (e, h),
            p + "mlp.experts.gate_up_proj": (e, 2 * f, h),
            p + "mlp.experts.down_proj": (e, h, f),
            p + "input_layernorm.weight": (h,),
            p + "post_attention_layernorm.weight": (h,),
        }
    shapes |= {"model.norm.weight": (h,), "lm_head.weight": (v, h)}
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, shape in shapes.items():
        size = 2
        for d in shape:
            size *= d
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.safetensors"
    with path.open("wb") as out:
        out.write(struct.pack("<Q", len(raw)) + raw)
        out.truncate(8 + len(raw) + offset)
    (folder / "config.json").write_text(json.dumps(MIXTRAL))
    return path


def test_mixtral_8x7b_fused_layout(tmp_path: Path) -> None:
    a = analyze(read_inventory(_mixtral(tmp_path / "mixtral")))
    assert {d.role.value for d in a.decisions} == {"weight", "embedding", "output_head", "norm"}
    assert sum(d.rule == "expert-bank" for d in a.decisions) == 64
    assert a.parameters.total == 46_702_792_704  # 46.7B, as Mistral AI publishes
    assert a.moe is not None
    assert (a.moe.experts, a.moe.experts_per_token) == (8, 2)
    assert a.moe.expert_parameters == 32 * 8 * 3 * 4096 * 14336
    # each token: attention, embeddings, head, norms, router, and 2 of the 8 experts of every layer
    assert a.moe.active == 12_879_925_248  # "12.9B active"
    assert a.moe.expert_bytes + a.moe.shared_bytes == a.parameters.bytes
    int4 = next(t for t in a.targets if t.name == "int4")
    # TheBloke/Mixtral-8x7B-v0.1-GPTQ, branch gptq-4bit-128g-actorder_True: 24.70 GB (4-bit, group 128)
    assert abs(int4.bytes - 24.70e9) / 24.70e9 < 0.05
    banks = [p for p in int4.plans if "expert bank" in p.rule]
    assert len(banks) == 64 and all("groups along axis 2" in p.rule for p in banks)
    assert next(t for t in a.targets if t.name == "bf16").bytes > 93e9


def test_corpus_moe_models() -> None:
    mixtral = analyze(read_inventory(TESTDATA / "roles" / "mixtral" / "model.safetensors"))
    assert mixtral.moe is not None and mixtral.moe.expert_tensors == 4
    labels = json.loads((TESTDATA / "roles" / "mixtral" / "labels.json").read_text())
    assert mixtral.moe.total == labels["parameters"]
    # 2 of 4 experts: half the expert parameters are active
    assert mixtral.moe.active == mixtral.moe.shared_parameters + mixtral.moe.expert_parameters // 2
    qwen = analyze(read_inventory(TESTDATA / "roles" / "qwen2-moe" / "model.safetensors"))
    assert qwen.moe is not None and qwen.moe.shared_experts == 1
    shared = [t for t in read_inventory(TESTDATA / "roles" / "qwen2-moe" / "model.safetensors").tensors
              if "shared_expert" in t.name]  # fmt: skip
    assert shared and not any(is_expert(t) for t in shared)
    dense = analyze(read_inventory(TESTDATA / "roles" / "llama" / "model.safetensors"))
    assert dense.moe is None


def test_bank_axis() -> None:
    """transformers 5 keeps Mixtral banks [experts, out, in], GPT-OSS banks [experts, in, out]."""
    assert bank_channels(tensor("m.experts.gate_up_proj", (8, 28672, 4096)), 4096) == (8 * 28672, 4096, 2)
    assert bank_channels(tensor("m.experts.down_proj", (8, 4096, 14336)), 4096) == (8 * 4096, 14336, 2)
    assert bank_channels(tensor("m.experts.gate_up_proj", (32, 2880, 5760)), 2880) == (32 * 5760, 2880, 1)
    assert bank_channels(tensor("m.experts.down_proj", (32, 2880, 2880)), 2880) == (32 * 2880, 2880, 2)
    assert bank_channels(tensor("m.experts.down_proj", (4, 24, 16)), 16) == (4 * 16, 24, 1)


def test_gguf_expert_banks_from_metadata() -> None:
    """llama.cpp's ffn_*_exps banks with expert_count / expert_used_count in the GGUF metadata."""
    from tests._analysis_helpers import packed

    tensors = [tensor("token_embd.weight", (64, 16)), tensor("blk.0.attn_q.weight", (16, 16)),
               tensor("blk.0.ffn_gate_inp.weight", (16, 4)), tensor("blk.0.ffn_gate_exps.weight", (4, 32, 16)),
               tensor("blk.0.ffn_up_exps.weight", (4, 32, 16)), tensor("blk.0.ffn_down_exps.weight", (4, 16, 32)),
               tensor("output.weight", (64, 16))]  # fmt: skip
    kv = {"general.architecture": "qwen2moe", "qwen2moe.expert_count": 4, "qwen2moe.expert_used_count": 1}
    a = analyze(packed(tensors, fmt="gguf", metadata={"kv": kv}))
    assert a.moe is not None and (a.moe.experts, a.moe.experts_per_token) == (4, 1)
    assert a.moe.expert_parameters == 3 * 4 * 32 * 16
    assert a.moe.active == a.parameters.total - a.moe.expert_parameters * 3 // 4


def test_banks_without_counts_give_experts_from_shapes() -> None:
    from tests._analysis_helpers import packed

    tensors = [tensor("layers.0.mlp.experts.gate_up_proj", (8, 32, 16)), tensor("layers.0.mlp.experts.down_proj",
               (8, 16, 16)), tensor("layers.0.attn.q_proj.weight", (16, 16))]  # fmt: skip
    a = analyze(packed(tensors))
    assert a.moe is not None and a.moe.experts == 8 and a.moe.active is None
    assert any("shapes" in x for x in a.moe.assumptions)
