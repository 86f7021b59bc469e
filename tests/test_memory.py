"""Memory estimates: the published formulas, reproduced exactly; architecture from every source."""

from __future__ import annotations

from typing import Any

import pytest

from ckptscan.analyze import architecture
from ckptscan.analyze.analysis import AnalysisOptions, analyze
from ckptscan.analyze.memory import InferenceOptions, TrainingOptions, activation_bytes, optimizer_state_bytes
from ckptscan.inventory import Inventory
from ckptscan.report.json import training_dict
from tests._analysis_helpers import packed, tensor

V, H, F, L, A = 1000, 64, 256, 4, 4


def _gpt(config: dict[str, Any] | None = None, gated: bool = False) -> Inventory:
    tensors = [tensor("transformer.wte.weight", (V, H)), tensor("transformer.wpe.weight", (128, H))]
    for i in range(L):
        p = f"transformer.h.{i}"
        tensors += [tensor(f"{p}.ln_1.weight", (H,)), tensor(f"{p}.ln_1.bias", (H,)),
                    tensor(f"{p}.attn.c_attn.weight", (H, 3 * H)), tensor(f"{p}.attn.c_attn.bias", (3 * H,)),
                    tensor(f"{p}.attn.c_proj.weight", (H, H)), tensor(f"{p}.ln_2.weight", (H,)),
                    tensor(f"{p}.mlp.c_fc.weight", (H, F)), tensor(f"{p}.mlp.c_proj.weight", (F, H))]  # fmt: skip
        if gated:
            tensors.append(tensor(f"{p}.mlp.gate_proj.weight", (F, H)))
    tensors.append(tensor("transformer.ln_f.weight", (H,)))
    sidecars = {"config.json": config} if config is not None else {}
    return packed(tensors, sidecars=sidecars)


CONFIG = {"model_type": "gpt2", "n_layer": L, "n_embd": H, "n_head": A, "vocab_size": V, "n_positions": 128,
          "tie_word_embeddings": True}  # fmt: skip


def _training(inventory: Inventory, **options: Any) -> dict[str, Any]:
    training = analyze(inventory, AnalysisOptions(training=TrainingOptions(**options))).training
    assert training is not None
    return training_dict(training)


def _lines(training: dict[str, Any]) -> dict[str, int]:
    return {line["name"]: line["bytes"] for line in training["lines"]}


@pytest.mark.parametrize(
    ("optimizer", "precision", "per_param", "per_tensor"),
    [
        ("adamw", "bf16-mixed", 16, 4),  # autocast: 4 + 4 + (4 + 4); bf16 copies are a line of their own
        ("adamw", "bf16-master", 16, 4),  # ZeRO: 2 + 2 + (4 master + 4 + 4)
        ("adam", "fp16-mixed", 16, 4),
        ("adamw", "fp32", 16, 4),  # 4 + 4 + 8
        ("adamw", "bf16-true", 8, 4),  # 2 + 2 + 4
        ("sgd", "fp32", 8, 0),
        ("sgd-momentum", "fp32", 12, 0),
        ("lion", "bf16-mixed", 12, 0),
    ],
)
def test_bytes_per_parameter(optimizer: str, precision: str, per_param: int, per_tensor: int) -> None:
    inventory = _gpt()  # no config: activations need an architecture only from shapes; compare without them
    t = _training(inventory, optimizer=optimizer, precision=precision)
    lines = _lines(t)
    lines.pop("activations", None)
    lines.pop("loss_gradients", None)
    lines.pop("weight_copies", None)
    n = t["parameters"]
    n_tensors = len(analyze(inventory).parameters.counted)
    assert sum(lines.values()) == per_param * n + per_tensor * n_tensors


def test_adam_8bit_blocks_and_small_tensors() -> None:
    big, small = tensor("w.weight", (64, 128)), tensor("b.bias", (100,))
    assert optimizer_state_bytes("adam-8bit", big, 4) == 2 * 8192 + 2 * 4 * (8192 // 2048)
    assert optimizer_state_bytes("adam-8bit", small, 4) == 2 * 100 * 4


def test_adafactor_factors_matrices() -> None:
    assert optimizer_state_bytes("adafactor", tensor("w.weight", (64, 32)), 4) == (64 + 32) * 4 + 4
    assert optimizer_state_bytes("adafactor", tensor("c.weight", (8, 4, 3, 3)), 4) == (8 * 4 * 3 + 8 * 4 * 3) * 4 + 4
    assert optimizer_state_bytes("adafactor", tensor("b.bias", (64,)), 2) == 64 * 2 + 4


def test_korthikanti_per_layer_formula() -> None:
    """16-bit, dropout, eager attention, 4h MLP, MHA: 34sbh + 5as^2b per layer (+ the norms' statistics)."""
    arch = architecture.Architecture("config.json", layers=2, hidden=1024, heads=16, kv_heads=16, head_dim=64,
                                     ffn=4096, gated_mlp=False, vocab=0, context=None, norm="layernorm",
                                     dropout=0.1)  # fmt: skip
    s, b, h, a = 512, 2, 1024, 16
    got = activation_bytes(arch, b, s, 2, "eager")
    assert got.korthikanti_per_layer_bytes == 34 * s * b * h + 5 * a * s * s * b


def test_checkpointing_keeps_layer_inputs_and_one_layer() -> None:
    inventory = _gpt(CONFIG)
    full = _training(inventory, precision="fp32", batch=2, seq=64)["activations"]
    ckpt = _training(inventory, precision="fp32", batch=2, seq=64, checkpointing=True)["activations"]
    sbh = 2 * 64 * H
    outside = full["bytes"] - L * full["per_layer_bytes"]
    assert ckpt["bytes"] == L * sbh * 4 + ckpt["per_layer_bytes"] + outside
    assert full["logits_bytes"] == 4 * 2 * 64 * V


def test_freeze_patterns_remove_gradients_state_and_early_activations() -> None:
    inventory = _gpt(CONFIG)
    full = _training(inventory, seq=64)
    frozen = _training(inventory, seq=64, freeze=("transformer.wte.*", "transformer.wpe.*", "transformer.h.0.*",
                                                  "transformer.h.1.*"))  # fmt: skip
    assert frozen["trainable_parameters"] < full["trainable_parameters"] == full["parameters"]
    assert frozen["activations"]["layers"] == L - 2
    assert _lines(frozen)["weights"] == _lines(full)["weights"]
    assert _lines(frozen)["gradients"] == 4 * frozen["trainable_parameters"]  # autocast: fp32 gradients


def test_kv_cache_with_grouped_query_attention() -> None:
    config = {"model_type": "llama", "num_hidden_layers": 32, "hidden_size": 4096, "num_attention_heads": 32,
              "num_key_value_heads": 8, "vocab_size": 32000, "max_position_embeddings": 8192}  # fmt: skip
    inventory = packed([tensor("model.embed_tokens.weight", (16, 16))], sidecars={"config.json": config})
    inf = analyze(inventory, AnalysisOptions(inference=InferenceOptions(batch=4, seq=2048, kv_bytes=2))).inference
    assert inf is not None and inf.kv_cache is not None
    assert inf.kv_cache.bytes == 2 * 32 * 8 * 128 * 2048 * 4 * 2
    default = analyze(inventory).inference
    assert default is not None and default.kv_cache is not None and default.kv_cache.context == 8192
    assert default.kv_cache.bytes_per_element == 4  # fp32 weights: the KV cache follows the compute dtype


def test_architecture_from_config_nested_text_config() -> None:
    config = {"model_type": "llava", "text_config": {"num_hidden_layers": 2, "hidden_size": 64,
                                                     "num_attention_heads": 4, "multi_query": True}}  # fmt: skip
    arch = architecture.detect(packed([tensor("w.weight")], sidecars={"config.json": config}))
    assert arch is not None and (arch.layers, arch.kv_heads, arch.head_dim) == (2, 1, 16)
    assert any("4 x hidden" in a for a in arch.assumptions)


def test_architecture_from_gguf_metadata() -> None:
    kv = {"general.architecture": "llama", "llama.block_count": 22, "llama.embedding_length": 2048,
          "llama.attention.head_count": 32, "llama.attention.head_count_kv": 4, "llama.context_length": 2048,
          "llama.feed_forward_length": 5632, "llama.attention.layer_norm_rms_epsilon": 1e-5,
          "tokenizer.ggml.tokens": {"type": "array", "element_type": "string", "count": 32000, "head": []}}  # fmt: skip
    arch = architecture.detect(packed([tensor("blk.0.ffn_gate.weight", (5632, 2048), "F16")], fmt="gguf",
                                      metadata={"kv": kv}))  # fmt: skip
    assert arch is not None
    assert (arch.layers, arch.heads, arch.kv_heads, arch.head_dim, arch.vocab) == (22, 32, 4, 64, 32000)
    assert arch.gated_mlp and arch.norm == "rmsnorm" and arch.source == "gguf metadata"


def test_architecture_from_shapes_says_what_it_assumed() -> None:
    tensors = [tensor("model.embed_tokens.weight", (V, 256))]
    for i in range(3):
        tensors += [tensor(f"model.layers.{i}.self_attn.q_proj.weight", (256, 256)),
                    tensor(f"model.layers.{i}.self_attn.k_proj.weight", (64, 256)),
                    tensor(f"model.layers.{i}.mlp.up_proj.weight", (512, 256))]  # fmt: skip
    arch = architecture.detect(packed(tensors))
    assert arch is not None and arch.source == "tensor shapes"
    assert (arch.layers, arch.hidden, arch.kv_dim, arch.ffn, arch.vocab) == (3, 256, 64, 512, V)
    assert arch.assumptions and "head size" in arch.assumptions[0]


def test_no_architecture_no_activation_or_kv_estimate() -> None:
    a = analyze(packed([tensor("fc.weight", (8, 8))]))
    assert a.architecture is None and a.inference is not None and a.training is not None
    assert a.inference.kv_cache is None and a.training.activations is None
    assert any("architecture unknown" in x for x in a.training.assumptions)


def test_peak_takes_the_larger_end_of_backward_and_the_optimizer_step() -> None:
    inventory = _gpt(CONFIG)
    big_batch = _training(inventory, precision="fp32", batch=8, seq=128)
    lines = _lines(big_batch)
    static = lines["weights"] + lines["optimizer_state"]
    assert big_batch["total_bytes"] == static + lines["activations"] + lines["loss_gradients"]
    assert big_batch["sum_bytes"] == sum(lines.values())
    tiny = _training(inventory, precision="fp32", batch=1, seq=2)
    lines = _lines(tiny)
    foreach = lines["weights"] + lines["optimizer_state"] + 2 * lines["gradients"]  # sqrt(v) of every tensor
    assert tiny["total_bytes"] == foreach and tiny["step_temporaries_bytes"] == lines["gradients"]
    fused = _training(inventory, precision="fp32", batch=1, seq=2, optimizer_impl="fused")
    assert fused["step_temporaries_bytes"] == 0
    loop = _training(inventory, precision="fp32", batch=1, seq=2, optimizer_impl="for-loop")
    assert loop["step_temporaries_bytes"] == 2 * V * H * 4  # the largest tensor: the (tied) embedding
