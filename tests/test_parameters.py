"""Parameter counting: each parameter once, tied embeddings deduplicated by every kind of evidence."""

from __future__ import annotations

from ckptscan.analyze.analysis import analyze
from ckptscan.analyze.roles import Role
from tests._analysis_helpers import loose, packed, storage, tensor

V, H = 100, 8


def _lm(head: bool = True, **kwargs: object) -> list:  # type: ignore[type-arg]
    tensors = [
        tensor("model.embed_tokens.weight", (V, H)),
        tensor("model.layers.0.self_attn.q_proj.weight", (H, H)),
        tensor("model.layers.0.input_layernorm.weight", (H,)),
        tensor("model.layers.1.self_attn.q_proj.weight", (H, H)),
        tensor("model.layers.1.input_layernorm.weight", (H,)),
        tensor("model.norm.weight", (H,)),
    ]
    if head:
        tensors.append(tensor("lm_head.weight", (V, H)))
    return tensors


BODY = V * H + 2 * (H * H + H) + H


def test_untied_counts_everything_and_says_it_cannot_tell() -> None:
    a = analyze(packed(_lm()))
    assert a.parameters.total == BODY + V * H
    assert a.parameters.ties == []
    assert any("does not say whether they are tied" in n for n in a.parameters.notes)


def test_config_tie_with_a_stored_copy_counts_it_once_and_calls_the_copy_duplicate() -> None:
    inventory = packed(_lm(), sidecars={"config.json": {"tie_word_embeddings": True}})
    a = analyze(inventory)
    assert a.parameters.total == BODY
    assert [(t.head, t.stored) for t in a.parameters.ties] == [("lm_head.weight", "copy")]
    assert a.parameters.duplicate_copies == ("lm_head.weight",)
    assert a.overhead.parts["duplicates"].bytes == V * H * 4
    head = a.decisions[-1]
    assert head.role is Role.OUTPUT_HEAD and head.detail == "tied to model.embed_tokens.weight"
    assert a.overhead.exact
    dedupe = next(t for t in a.targets if t.name == "dedupe")
    strip = next(t for t in a.targets if t.name == "strip")
    assert strip.tensor_bytes - dedupe.tensor_bytes == V * H * 4


def test_config_tie_with_the_head_dropped_counts_the_embedding_once() -> None:
    """safetensors save_model drops lm_head of a tied model; config.json says it is the embedding."""
    inventory = packed(_lm(head=False), sidecars={"config.json": {"tie_word_embeddings": True}})
    a = analyze(inventory)
    assert a.parameters.total == BODY
    assert [(t.head, t.stored) for t in a.parameters.ties] == [("", "absent")]
    assert "also the output head" in a.decisions[0].detail


def test_config_untied_counts_both() -> None:
    inventory = packed(_lm(), sidecars={"config.json": {"tie_word_embeddings": False}})
    a = analyze(inventory)
    assert a.parameters.total == BODY + V * H
    assert not a.parameters.ties and not a.parameters.notes


def test_shared_storage_counts_once() -> None:
    """PyTorch saves a tied lm_head as a second view of the embedding's storage."""
    tensors = [
        tensor("model.embed_tokens.weight", (V, H), storage="0"),
        tensor("model.norm.weight", (H,), storage="1"),
        tensor("lm_head.weight", (V, H), storage="0"),
    ]
    inventory = loose(tensors, storages=(storage("0", V * H * 4), storage("1", H * 4, offset=V * H * 4)))
    a = analyze(inventory)
    assert a.parameters.total == V * H + H
    assert a.parameters.repeated_entries == 1
    assert [(t.head, t.stored) for t in a.parameters.ties] == [("lm_head.weight", "shared")]
    assert a.overhead.parts["duplicates"].bytes == 0
    assert a.overhead.parts["inference_weights"].bytes == V * H * 4 + H * 4
    assert a.overhead.exact


def test_onnx_graph_reading_one_initializer_twice_is_a_tie() -> None:
    consumers = [{"op": "Gather", "input": 0, "node": "emb", "domain": ""},
                 {"op": "MatMul", "input": 1, "node": "head", "domain": ""}]  # fmt: skip
    matmul = {"consumers": [{"op": "MatMul", "input": 1}]}
    tensors = [tensor("onnx::emb", (V, H), attrs={"consumers": consumers}, section="initializer"),
               tensor("onnx::w", (H, H), attrs=matmul, section="initializer")]  # fmt: skip
    a = analyze(packed(tensors, fmt="onnx"))
    assert a.parameters.total == V * H + H * H
    assert [(t.embedding, t.stored) for t in a.parameters.ties] == [("onnx::emb", "shared")]


def test_gguf_without_output_weight_uses_token_embd() -> None:
    tensors = [tensor("token_embd.weight", (V, H), "F16"), tensor("blk.0.attn_q.weight", (H, H), "F16"),
               tensor("output_norm.weight", (H,))]  # fmt: skip
    inventory = packed(tensors, fmt="gguf", metadata={"kv": {"general.architecture": "llama"}})
    a = analyze(inventory)
    assert a.parameters.total == V * H + H * H + H
    assert [(t.head, t.stored) for t in a.parameters.ties] == [("", "absent")]
    assert "llama.cpp" in a.parameters.ties[0].evidence


def test_buffers_and_optimizer_are_not_parameters() -> None:
    tensors = [
        tensor("state_dict.bn.weight", (8,), section="state_dict"),
        tensor("state_dict.bn.bias", (8,), section="state_dict"),
        tensor("state_dict.bn.running_mean", (8,), section="state_dict"),
        tensor("state_dict.bn.num_batches_tracked", (), "I64", section="state_dict"),
        tensor("optimizer_states.0.state.0.exp_avg", (8,), section="optimizer_states"),
    ]
    a = analyze(packed(tensors))
    assert a.parameters.total == 16
    assert a.parameters.by_role == {"norm": 16}
    assert a.parameters.excluded["buffer"].elements == 9


def test_modules_collapse_repeated_blocks() -> None:
    a = analyze(packed(_lm()))
    names = [g.name for g in a.parameters.groups]
    assert "model.layers.[0-1]" in names


def test_packed_quantized_weights_count_as_the_weights_they_hold() -> None:
    """GPTQ qweight [in/8, out] I32 at 4 bits holds in x out weights; scales are not parameters."""
    tensors = [tensor("model.layers.0.mlp.down_proj.qweight", (16, 64), "I32"),
               tensor("model.layers.0.mlp.down_proj.scales", (1, 64), "F16")]  # fmt: skip
    inventory = packed(tensors, sidecars={"quantize_config.json": {"bits": 4}})
    a = analyze(inventory)
    assert a.parameters.total == 128 * 64
    assert a.parameters.packed.elements == 8192 and a.parameters.packed_bits == 4
    assert any("hold 8,192 weights at 4 bits, as the quantization config declares" in n for n in a.parameters.notes)
    eight = analyze(packed(tensors, sidecars={"quantize_config.json": {"bits": 8}}))
    assert eight.parameters.total == 4096
    unknown = analyze(packed(tensors))
    assert unknown.parameters.total == 8192
    assert any("ASSUMED" in n for n in unknown.parameters.notes)


def test_bitsandbytes_4bit_weight_counts_its_weights() -> None:
    tensors = [tensor("layers.0.proj.weight", (32, 1), "U8"), tensor("layers.0.proj.weight.absmax", (1,), "F32"),
               tensor("layers.0.proj.weight.quant_map", (16,), "F32")]  # fmt: skip
    config = {"config.json": {"quantization_config": {"load_in_4bit": True, "bnb_4bit_quant_type": "nf4"}}}
    a = analyze(packed(tensors, sidecars=config))
    assert a.parameters.total == 64
    assert a.parameters.excluded["quantization"].tensors == 2


def test_unrecognized_model_tensor_counts_with_uncertainty() -> None:
    tensors = [tensor("layers.0.A_log", (8, 4)), tensor("layers.0.proj.weight", (4, 4)),
               tensor("tokens", (6,), "I64")]  # fmt: skip
    a = analyze(packed(tensors))
    assert a.parameters.total == 32 + 16
    assert a.parameters.uncertain.elements == 32 and a.parameters.uncertain_names == ("layers.0.A_log",)
    assert any("no rule recognizes" in n and "uncertain" in n for n in a.parameters.notes)
    assert a.parameters.excluded["other"].elements == 6


def test_compressed_tensors_bits_from_config_groups() -> None:
    tensors = [tensor("layers.0.proj.weight_packed", (32, 8), "I32"), tensor("layers.0.proj.weight_scale", (32, 1)),
               tensor("layers.0.proj.weight_shape", (2,), "I64")]  # fmt: skip
    config = {"quantization_config": {"quant_method": "compressed-tensors",
                                      "config_groups": {"group_0": {"weights": {"num_bits": 4}}}}}  # fmt: skip
    a = analyze(packed(tensors, sidecars={"config.json": config}))
    assert a.parameters.total == 32 * 64 and a.parameters.packed_bits == 4
