"""Architecture detection: stacks, modality, mixture of experts and vision towers, from config.json (as
transformers writes it), GGUF metadata and tensor names."""

from __future__ import annotations

from typing import Any

import pytest

from ckptscan.analyze import architecture
from ckptscan.analyze.architecture import Architecture
from ckptscan.report.json import architecture_dict
from tests._analysis_helpers import packed, tensor


def _detect(config: dict[str, Any], tensors: list[Any] | None = None) -> Architecture:
    arch = architecture.detect(packed(tensors or [tensor("w.weight")], sidecars={"config.json": config}))
    assert arch is not None
    return arch


T5_SMALL = {"model_type": "t5", "is_encoder_decoder": True, "d_model": 512, "d_kv": 64, "d_ff": 2048,
            "num_layers": 6, "num_decoder_layers": 6, "num_heads": 8, "vocab_size": 32128,
            "feed_forward_proj": "relu", "dropout_rate": 0.1, "tie_word_embeddings": True}  # fmt: skip
WHISPER_TINY = {"model_type": "whisper", "is_encoder_decoder": True, "d_model": 384, "encoder_layers": 4,
                "decoder_layers": 4, "encoder_attention_heads": 6, "decoder_attention_heads": 6,
                "encoder_ffn_dim": 1536, "decoder_ffn_dim": 1536, "vocab_size": 51865, "num_mel_bins": 80,
                "max_source_positions": 1500, "max_target_positions": 448, "activation_function": "gelu",
                "num_hidden_layers": 4}  # fmt: skip
BERT_BASE = {"model_type": "bert", "architectures": ["BertForMaskedLM"], "hidden_size": 768,
             "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072, "vocab_size": 30522,
             "max_position_embeddings": 512, "hidden_dropout_prob": 0.1, "hidden_act": "gelu"}  # fmt: skip
VIT_BASE = {"model_type": "vit", "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
            "intermediate_size": 3072, "image_size": 224, "patch_size": 16, "num_channels": 3}  # fmt: skip
MIXTRAL = {"model_type": "mixtral", "hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32,
           "num_key_value_heads": 8, "intermediate_size": 14336, "num_local_experts": 8, "num_experts_per_tok": 2,
           "vocab_size": 32000, "max_position_embeddings": 32768, "rms_norm_eps": 1e-5}  # fmt: skip
QWEN2_MOE = {"model_type": "qwen2_moe", "hidden_size": 2048, "num_hidden_layers": 24, "num_attention_heads": 16,
             "num_key_value_heads": 16, "intermediate_size": 5632, "moe_intermediate_size": 1408,
             "shared_expert_intermediate_size": 5632, "num_experts": 60, "num_experts_per_tok": 4,
             "vocab_size": 151936, "max_position_embeddings": 8192, "rms_norm_eps": 1e-6}  # fmt: skip
DEEPSEEK = {"model_type": "deepseek_v2", "hidden_size": 2048, "num_hidden_layers": 27, "num_attention_heads": 16,
            "intermediate_size": 10944, "moe_intermediate_size": 1408, "n_routed_experts": 64,
            "n_shared_experts": 2, "num_experts_per_tok": 6, "first_k_dense_replace": 1,
            "vocab_size": 102400}  # fmt: skip
LLAVA = {"model_type": "llava", "text_config": {"model_type": "llama", "hidden_size": 4096, "num_hidden_layers": 32,
                                                "num_attention_heads": 32, "vocab_size": 32064},
         "vision_config": {"model_type": "clip_vision_model", "hidden_size": 1024, "num_hidden_layers": 24,
                           "num_attention_heads": 16, "intermediate_size": 4096, "image_size": 336,
                           "patch_size": 14}}  # fmt: skip


def test_encoder_decoder_t5() -> None:
    arch = _detect(T5_SMALL)
    assert (arch.kind, arch.layers, arch.encoder_layers, arch.head_dim, arch.ffn) == ("encoder-decoder", 6, 6, 64, 2048)
    assert arch.norm == "rmsnorm" and arch.dropout == 0.1 and not arch.gated_mlp and arch.experts is None


def test_whisper_is_audio_encoder_decoder_with_its_frames() -> None:
    arch = _detect(WHISPER_TINY)
    assert (arch.kind, arch.modality, arch.layers, arch.encoder_layers) == ("encoder-decoder", "audio", 4, 4)
    assert (arch.heads, arch.encoder_seq, arch.context, arch.vocab) == (6, 1500, 448, 51865)


def test_bert_is_encoder_only() -> None:
    arch = _detect(BERT_BASE)
    assert (arch.kind, arch.modality, arch.layers, arch.encoder_layers) == ("encoder-only", "text", 12, 0)
    assert arch.activation == "gelu" and arch.dropout == 0.1


def test_vit_counts_patches_not_tokens() -> None:
    arch = _detect(VIT_BASE)
    assert (arch.kind, arch.modality, arch.vocab) == ("encoder-only", "vision", 0)
    assert arch.encoder_seq == (224 // 16) ** 2 + 1 == arch.context


@pytest.mark.parametrize(
    ("config", "experts", "top_k", "shared", "expert_ffn", "shared_ffn", "dense"),
    [(MIXTRAL, 8, 2, None, 14336, None, 0), (QWEN2_MOE, 60, 4, 1, 1408, 5632, 0), (DEEPSEEK, 64, 6, 2, 1408, 2816, 1)],
)
def test_mixture_of_experts_fields(
    config: dict[str, Any], experts: int, top_k: int, shared: int | None, expert_ffn: int, shared_ffn: int | None,
    dense: int,
) -> None:  # fmt: skip
    arch = _detect(config)
    assert arch.moe and arch.kind == "decoder-only"
    got = (arch.experts, arch.experts_per_token, arch.shared_experts, arch.expert_ffn, arch.shared_expert_ffn)
    assert got == (experts, top_k, shared, expert_ffn, shared_ffn)
    assert arch.dense_layers == dense
    assert architecture_dict(arch)["experts"] == experts


def test_multimodal_keeps_the_vision_tower() -> None:
    arch = _detect(LLAVA)
    assert (arch.modality, arch.layers, arch.hidden) == ("multimodal", 32, 4096)
    assert arch.vision is not None and arch.vision.layers == 24 and arch.vision.encoder_seq == 577
    assert architecture_dict(arch)["vision"]["hidden_size"] == 1024


def test_gguf_moe_metadata() -> None:
    kv = {"general.architecture": "qwen2moe", "qwen2moe.block_count": 24, "qwen2moe.embedding_length": 2048,
          "qwen2moe.attention.head_count": 16, "qwen2moe.feed_forward_length": 5632,
          "qwen2moe.expert_count": 60, "qwen2moe.expert_used_count": 4,
          "qwen2moe.expert_feed_forward_length": 1408, "qwen2moe.expert_shared_feed_forward_length": 5632}  # fmt: skip
    arch = architecture.detect(packed([tensor("blk.0.ffn_gate_exps.weight", (60, 1408, 2048), "F16")], fmt="gguf",
                                      metadata={"kv": kv}))  # fmt: skip
    assert arch is not None and arch.source == "gguf metadata"
    assert (arch.experts, arch.experts_per_token, arch.shared_experts, arch.expert_ffn) == (60, 4, 1, 1408)


def test_gguf_bert_is_an_encoder() -> None:
    kv = {"general.architecture": "bert", "bert.block_count": 12, "bert.embedding_length": 384,
          "bert.attention.head_count": 12, "bert.attention.causal": False}  # fmt: skip
    arch = architecture.detect(packed([tensor("blk.0.attn_q.weight", (384, 384))], fmt="gguf", metadata={"kv": kv}))
    assert arch is not None and arch.kind == "encoder-only"


def test_experts_and_stacks_from_names_are_marked_as_guesses() -> None:
    tensors = [tensor("model.embed_tokens.weight", (100, 64))]
    for i in range(2):
        tensors.append(tensor(f"model.layers.{i}.self_attn.q_proj.weight", (64, 64)))
        tensors += [tensor(f"model.layers.{i}.block_sparse_moe.experts.{e}.w1.weight", (128, 64)) for e in range(4)]
    arch = architecture.detect(packed(tensors))
    assert arch is not None and arch.guessed and arch.experts == 4 and arch.experts_per_token == 2
    assert any("experts" in a for a in arch.assumptions)
    assert architecture_dict(arch)["guessed"] is True


def test_hf_configs_as_transformers_writes_them() -> None:
    """The configs transformers itself serializes (every default key present) give the same answers."""
    transformers = pytest.importorskip("transformers")
    cases = [
        (transformers.T5Config(num_layers=3, num_decoder_layers=2), ("encoder-decoder", 2, 3)),
        (transformers.WhisperConfig(encoder_layers=2, decoder_layers=3), ("encoder-decoder", 3, 2)),
        (transformers.BertConfig(num_hidden_layers=2), ("encoder-only", 2, 0)),
        (transformers.ViTConfig(num_hidden_layers=2), ("encoder-only", 2, 0)),
        (transformers.MixtralConfig(num_hidden_layers=2), ("decoder-only", 2, 0)),
        (transformers.LlamaConfig(num_hidden_layers=2, num_key_value_heads=2), ("decoder-only", 2, 0)),
    ]
    for config, (kind, layers, encoder_layers) in cases:
        arch = _detect(config.to_dict())
        assert (arch.kind, arch.layers, arch.encoder_layers) == (kind, layers, encoder_layers), config.model_type
    mixtral = _detect(transformers.MixtralConfig().to_dict())
    assert (mixtral.experts, mixtral.experts_per_token) == (8, 2)
    qwen = _detect(transformers.Qwen2MoeConfig().to_dict())
    assert qwen.experts == 60 and qwen.shared_experts == 1
