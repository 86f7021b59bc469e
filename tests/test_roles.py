"""Every rule of the roles table, on hand-built tensors: each case names the rule it must hit."""

from __future__ import annotations

from typing import Any

import pytest

from ckptscan.analyze.roles import RULES, Role, classify, classify_tensor, name_parts
from tests._analysis_helpers import loose, tensor

LN1 = {"consumers": [{"op": "LayerNormalization", "input": 1, "node": "ln", "domain": ""}]}

# (tensor name, shape, dtype, extra tensor kwargs, neighbours, role, rule, detail or None)
CASES: list[tuple[str, tuple[int, ...], str, dict[str, Any], list[str], Role, str, str | None]] = [
    # 1. training parts
    ("cpu", (5056,), "U8", {"file": "rng_state.pth", "attrs": {"structure": "model"}}, [], Role.TRAINING_STATE,
     "rng-file", "rng"),
    ("last_epoch", (), "I64", {"file": "checkpoint-4/scheduler.pt"}, [], Role.TRAINING_STATE, "scheduler-file",
     "scheduler"),
    ("fp32_from_fp16.0", (8,), "F32", {}, [], Role.MASTER_WEIGHT, "master-path", "fp32 master copy"),
    ("single_partition_of_fp32_groups.0", (8,), "F32", {}, [], Role.MASTER_WEIGHT, "master-path", None),
    ("w.weight", (4, 4), "F32", {"attrs": {"structure": "master"}}, [], Role.MASTER_WEIGHT, "master-structure", None),
    ("layer.weight", (4, 4), "F32", {"attrs": {"structure": "ema"}}, [], Role.EMA, "ema-structure", "ema copy"),
    ("optimizer_states.0.state.0.exp_avg", (4, 4), "F32",
     {"attrs": {"optimizer_state": "exp_avg", "param_name": "fc.weight"}}, [], Role.OPTIMIZER_STATE,
     "optimizer-slot", "exp_avg"),
    ("optimizer_states.0.state.0.step", (), "F32", {"attrs": {"optimizer_state": "step"}}, [],
     Role.OPTIMIZER_STATE, "optimizer-slot", "step counter"),
    ("model/dense/kernel/.OPTIMIZER_SLOT/optimizer/m/.ATTRIBUTES/VARIABLE_VALUE", (4, 4), "F32",
     {"attrs": {"slot": "m", "slot_of": "model/dense/kernel"}}, [], Role.OPTIMIZER_STATE, "optimizer-slot", "m"),
    ("optimizer_states.0.state.3.exp_avg_sq", (4, 4), "F32", {"attrs": {"structure": "optimizer"}}, [],
     Role.OPTIMIZER_STATE, "optimizer-structure", "exp_avg_sq"),
    ("whatever", (2,), "F64", {"attrs": {"structure": "rng"}}, [], Role.TRAINING_STATE, "training-structure", "rng"),
    ("save_counter/.ATTRIBUTES/VARIABLE_VALUE", (), "I64", {"section": "training_state"}, [], Role.TRAINING_STATE,
     "training-section", "counter"),
    ("_CHECKPOINTABLE_OBJECT_GRAPH", (), "U8", {"section": "object_graph"}, [], Role.OTHER, "object-graph",
     "checkpoint object graph"),
    ("Adam/dense_1/kernel/m:0", (4, 4), "F32", {"section": "optimizer_weights"}, [], Role.OPTIMIZER_STATE,
     "optimizer-section", "m"),
    ("optimizer.state.0.momentum_buffer", (4, 4), "F32", {}, [], Role.OPTIMIZER_STATE, "optimizer-path",
     "momentum_buffer"),
    ("optimizer/iter/.ATTRIBUTES/VARIABLE_VALUE", (), "I64", {}, [], Role.OPTIMIZER_STATE, "optimizer-path",
     "step counter"),
    ("dense/kernel/Adam_1", (4, 4), "F32", {}, [], Role.OPTIMIZER_STATE, "tf1-slot", "adam_1"),
    ("beta1_power", (), "F32", {}, [], Role.OPTIMIZER_STATE, "tf1-beta-power", None),
    ("model_ema.blocks.0.weight", (4, 4), "F32", {}, [], Role.EMA, "ema-path", None),
    ("trainer.cuda_rng_state.0", (816,), "U8", {}, [], Role.TRAINING_STATE, "rng-path", "rng"),
    ("lr_scheduler.base_lrs", (1,), "F64", {}, [], Role.TRAINING_STATE, "scheduler-path", "scheduler"),
    ("callbacks.EarlyStopping.best_score", (), "F32", {}, [], Role.TRAINING_STATE, "trainer-path", "callbacks"),
    ("global_step", (), "I64", {}, [], Role.TRAINING_STATE, "counter-leaf", "counter"),
    # 2. quantization data
    ("onnx::scale_1", (), "F32", {"attrs": {"consumers": [{"op": "DequantizeLinear", "input": 1}]}}, [],
     Role.QUANTIZATION, "quant-consumer", "DequantizeLinear input 1"),
    ("model.layers.0.mlp.down_proj.qweight", (64, 256), "I32", {}, [], Role.WEIGHT, "packed-weight", "packed"),
    ("model.layers.0.mlp.down_proj.weight_packed", (256, 64), "I32", {}, [], Role.WEIGHT, "packed-weight", None),
    ("model.layers.0.mlp.down_proj.W_q", (256, 64), "U8", {}, ["model.layers.0.mlp.down_proj.scale"], Role.WEIGHT,
     "hqq-weight", "packed"),
    ("model.layers.0.mlp.experts.gate_up_proj_blocks", (4, 64, 2, 16), "U8", {}, [], Role.WEIGHT,
     "packed-weight", None),
    ("model.layers.0.mlp.down_proj.weight", (512, 1), "U8", {}, ["model.layers.0.mlp.down_proj.weight.absmax"],
     Role.WEIGHT, "bnb-weight", "packed"),
    ("model.layers.0.mlp.down_proj.scale", (64, 1), "F16", {}, ["model.layers.0.mlp.down_proj.W_q"],
     Role.QUANTIZATION, "hqq-meta", "hqq scale"),
    ("model.layers.0.mlp.down_proj.weight_scale", (), "F32", {}, [], Role.QUANTIZATION, "quant-leaf", "scales"),
    ("model.layers.0.mlp.down_proj.input_scale", (), "F32", {}, [], Role.QUANTIZATION, "quant-leaf", None),
    ("model.layers.0.mlp.down_proj.scales", (4, 256), "F16", {}, [], Role.QUANTIZATION, "quant-leaf", "scales"),
    ("model.layers.0.mlp.down_proj.g_idx", (512,), "I32", {}, [], Role.QUANTIZATION, "quant-leaf", "group index"),
    ("model.layers.0.mlp.down_proj.weight.absmax", (64,), "F32", {}, [], Role.QUANTIZATION, "quant-leaf", "absmax"),
    ("lm.weight.quant_state.bitsandbytes__nf4", (80,), "U8", {}, [], Role.QUANTIZATION, "quant-state", None),
    ("layers.0.q_proj.act_scale", (), "F32", {}, [], Role.QUANTIZATION, "quant-suffix", None),
    ("onnx::w_q", (4, 4), "I8", {"attrs": {"consumers": [{"op": "DequantizeLinear", "input": 0}]}}, [],
     Role.WEIGHT, "dequantized-weight", "quantized"),
    # 3. buffers
    ("bn_mean", (8,), "F32", {"attrs": {"consumers": [{"op": "BatchNormalization", "input": 3}]}}, [],
     Role.BUFFER, "stats-consumer", None),
    ("cos_cache", (2048, 8), "F16", {"attrs": {"consumers": [{"op": "RotaryEmbedding", "input": 2}]}}, [],
     Role.BUFFER, "rotary-consumer", "rotary cache"),
    ("bn.running_mean", (8,), "F32", {}, [], Role.BUFFER, "buffer-leaf", "batchnorm running mean"),
    ("bn.num_batches_tracked", (), "I64", {}, [], Role.BUFFER, "buffer-leaf", "batchnorm counter"),
    ("model.layers.0.self_attn.rotary_emb.inv_freq", (32,), "F32", {}, [], Role.BUFFER, "buffer-leaf",
     "rotary inv_freq"),
    ("bert.embeddings.position_ids", (1, 512), "I64", {}, [], Role.BUFFER, "buffer-leaf", "position ids"),
    ("batch_normalization/moving_variance:0", (8,), "F32", {}, [], Role.BUFFER, "buffer-leaf", None),
    ("transformer.h.0.attn.bias", (1, 1, 8, 8), "BOOL", {}, [], Role.BUFFER, "causal-mask", "attention mask"),
    ("rope_freqs.weight", (32,), "F32", {}, [], Role.BUFFER, "rotary-module", None),
    ("final_logits_bias", (1, 100), "F32", {}, [], Role.BUFFER, "buffer-leaf", None),
    ("model.layers.1.mlp.gate.e_score_correction_bias", (8,), "F32", {}, [], Role.BUFFER, "buffer-leaf", None),
    ("bn1.weight", (8,), "F32", {}, ["bn1.running_mean", "bn1.running_var", "layer2.bn.num_batches_tracked"],
     Role.BUFFER, "frozen-batchnorm", "frozen batchnorm weight"),
    ("pos_embed.pos_embed", (1, 16, 8), "F32", {}, [], Role.BUFFER, "fixed-position-table", None),
    # 4. norms
    ("model_weights/ln/ln/gamma:0", (8,), "F32", {"attrs": {"layer_class": "LayerNormalization"}}, [],
     Role.NORM, "keras-norm-layer", "norm-scale"),
    ("features.1.weight", (8,), "F32", {}, ["features.1.running_mean"], Role.NORM, "batchnorm-sibling",
     "batchnorm-scale"),
    ("features.1.bias", (8,), "F32", {}, ["features.1.running_mean"], Role.NORM, "batchnorm-sibling",
     "batchnorm-shift"),
    ("onnx::ln_w", (8,), "F32", {"attrs": LN1}, [], Role.NORM, "norm-consumer-scale", "LayerNormalization scale"),
    ("onnx::ln_b", (8,), "F32", {"attrs": {"consumers": [{"op": "LayerNormalization", "input": 2}]}}, [],
     Role.NORM, "norm-consumer-shift", None),
    ("model.layers.0.input_layernorm.weight", (8,), "F32", {}, [], Role.NORM, "norm-module", "norm-scale"),
    ("encoder.layer.0.output.LayerNorm.weight", (8,), "F32", {}, ["encoder.layer.0.output.LayerNorm.bias"],
     Role.NORM, "norm-module", "layernorm-scale"),
    ("transformer.h.0.ln_1.bias", (8,), "F32", {}, [], Role.NORM, "norm-module", "layernorm-shift"),
    ("blk.0.attn_norm.weight", (8,), "F32", {}, [], Role.NORM, "norm-module", "norm-scale"),
    ("model.final_rms_norm.weight", (8,), "F32", {}, [], Role.NORM, "norm-module", "rmsnorm-scale"),
    ("bn1.weight", (8,), "F32", {}, [], Role.NORM, "norm-module", "batchnorm-scale"),
    ("block_1/gamma:0", (8,), "F32", {}, ["block_1/beta:0"], Role.NORM, "keras-norm", "norm-scale"),
    ("stem.1.weight", (8,), "F32", {}, ["stem.1.bias"], Role.NORM, "vector-weight", "norm-scale"),
    ("stages.1.downsample.0.bias", (8,), "F32", {}, ["stages.1.downsample.0.weight"], Role.NORM, "vector-weight",
     "norm-shift"),
    ("blocks.0.ls1.gamma", (8,), "F32", {}, [], Role.WEIGHT, "layer-scale", "scale"),
    ("logit_scale", (), "F32", {}, [], Role.WEIGHT, "learned-scale", "scale"),
    ("model.layers.0.self_attn.sinks", (8,), "BF16", {}, [], Role.WEIGHT, "learned-scale", None),
    ("encoder.stages.0.layers.0.layer_scale_parameter", (8,), "F32", {}, [], Role.WEIGHT, "learned-scale", None),
    # 5. embeddings
    ("layers/words/vars/0", (100, 8), "F32", {"attrs": {"layer_class": "Embedding"}}, [], Role.EMBEDDING,
     "keras-embedding-layer", "token"),
    ("onnx::emb", (100, 8), "F16", {"attrs": {"consumers": [{"op": "Gather", "input": 0}]}}, [], Role.EMBEDDING,
     "embedding-consumer", "lookup"),
    ("model.embed_tokens.weight", (100, 8), "F32", {}, [], Role.EMBEDDING, "token-embedding", "token"),
    ("token_embd.weight", (100, 8), "F16", {}, [], Role.EMBEDDING, "token-embedding", "token"),
    ("transformer.wpe.weight", (64, 8), "F32", {}, [], Role.EMBEDDING, "position-embedding", "position"),
    ("bert.embeddings.token_type_embeddings.weight", (2, 8), "F32", {}, [], Role.EMBEDDING, "type-embedding",
     "type"),
    ("cls_token", (1, 1, 8), "F32", {}, [], Role.EMBEDDING, "learned-token", "class token"),
    ("vit.embeddings.position_embeddings", (1, 5, 8), "F32", {}, [], Role.EMBEDDING, "learned-token", "position"),
    ("wav2vec2.masked_spec_embed", (8,), "F32", {}, [], Role.EMBEDDING, "learned-token", "mask token"),
    ("vision_model.embeddings.class_embedding", (8,), "F32", {}, [], Role.EMBEDDING, "learned-token", None),
    ("layers.0.attention.relative_position_bias.relative_position_bias_table", (9, 2), "F32", {}, [],
     Role.EMBEDDING, "learned-token", "relative position"),
    ("encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight", (32, 2), "F32", {}, [],
     Role.EMBEDDING, "position-embedding", "position"),
    ("embedding/embeddings:0", (100, 8), "F32", {}, [], Role.EMBEDDING, "keras-embeddings", "token"),
    ("shared.weight", (100, 8), "F32", {}, [], Role.EMBEDDING, "shared-embedding", "token"),
    # 6. output heads
    ("cls.predictions.transform.dense.weight", (8, 8), "F32", {}, [], Role.WEIGHT, "head-hidden-weight",
     "head transform"),
    ("cls.predictions.transform.dense.bias", (8,), "F32", {}, [], Role.BIAS, "head-hidden-bias", None),
    ("classifier.dense.weight", (8, 8), "F32", {}, [], Role.WEIGHT, "head-hidden-weight", None),
    ("classifier.0.weight", (8, 8), "F32", {}, ["classifier.3.weight"], Role.WEIGHT, "head-hidden-weight", None),
    ("classifier.3.weight", (8, 8), "F32", {}, ["classifier.0.weight"], Role.OUTPUT_HEAD, "head-top", None),
    ("proj_out.weight", (100, 8), "F32", {}, ["model.decoder.embed_tokens.weight"], Role.OUTPUT_HEAD,
     "tied-proj-out", "lm head"),
    ("proj_out.weight", (64, 8), "F32", {}, [], Role.WEIGHT, "weight-leaf", None),
    ("vocab_projector.bias", (100,), "F32", {}, [], Role.OUTPUT_HEAD, "head-module", None),
    ("head_dist.weight", (10, 8), "F32", {}, [], Role.OUTPUT_HEAD, "head-top", "head_dist"),
    ("lm_head.weight", (100, 8), "F32", {}, [], Role.OUTPUT_HEAD, "head-module", "lm head"),
    ("lm_head.MatMul.weight", (8, 100), "F16", {"attrs": {"consumers": [{"op": "MatMul", "input": 1}]}}, [],
     Role.OUTPUT_HEAD, "head-module", None),
    ("output.weight", (100, 8), "Q6_K".replace("Q6_K", "F16"), {}, [], Role.OUTPUT_HEAD, "head-top", "output"),
    ("model.head.fc.weight", (10, 8), "F32", {}, [], Role.OUTPUT_HEAD, "head-top", "head"),
    ("classifier.bias", (10,), "F32", {}, [], Role.OUTPUT_HEAD, "head-top", "classifier"),
    # 7. plain weights and biases
    ("onnx::conv_w", (8, 3, 3, 3), "F32", {"attrs": {"consumers": [{"op": "Conv", "input": 1}]}}, [], Role.WEIGHT,
     "weight-consumer", None),
    ("onnx::gemm_b", (8,), "F32", {"attrs": {"consumers": [{"op": "Gemm", "input": 2}]}}, [], Role.BIAS,
     "bias-consumer", None),
    ("onnx::add_b", (8,), "F32", {"attrs": {"consumers": [{"op": "Add", "input": 1}]}}, [], Role.BIAS, "bias-add",
     None),
    ("encoder.layer.0.attention.self.query.bias", (8,), "F32", {}, [], Role.BIAS, "bias-leaf", None),
    ("lstm.bias_ih_l0", (32,), "F32", {}, [], Role.BIAS, "bias-leaf", None),
    ("encoder.layer.0.attention.self.query.weight", (8, 8), "F32", {}, [], Role.WEIGHT, "weight-leaf", None),
    ("model_weights/dense_1/dense_1/kernel:0", (8, 4), "F32", {}, [], Role.WEIGHT, "weight-leaf", None),
    ("model/layer_with_weights-0/kernel/.ATTRIBUTES/VARIABLE_VALUE", (8, 4), "F32", {}, [], Role.WEIGHT,
     "weight-leaf", None),
    ("layers/dense/vars/0", (8, 4), "F32", {"attrs": {"variable": "dense/kernel"}}, [], Role.WEIGHT, "weight-leaf",
     None),
    ("optimizer/_trainable_variables/0/.ATTRIBUTES/VARIABLE_VALUE", (4, 3), "F32",
     {"section": "variable", "attrs": {"variable_name": "sequential/dense/kernel"}}, [], Role.WEIGHT, "weight-leaf",
     None),
    ("model.layers.0.mlp.experts.gate_up_proj", (8, 64, 16), "BF16", {}, [], Role.WEIGHT, "expert-bank",
     "expert bank"),
    ("encoder.pos_conv_embed.conv.parametrizations.weight.original0", (1, 1, 4), "F32", {}, [], Role.WEIGHT,
     "weight-norm", "magnitude g"),
    ("encoder.pos_conv_embed.conv.parametrizations.weight.original1", (8, 4, 4), "F32", {}, [], Role.WEIGHT,
     "weight-norm", "direction v"),
    ("fc1/b", (8,), "F32", {}, [], Role.BIAS, "bias-letter", None),
    ("fc1/w", (8, 8), "F32", {}, [], Role.WEIGHT, "weight-letter", None),
    # 8. nothing says
    ("state_dict.predictor.output_transform.scale", (1, 1), "F32", {"section": "state_dict"}, [], Role.OTHER,
     "model-part", None),
    ("constants.0", (2,), "F32", {"attrs": {"structure": "constants"}}, [], Role.OTHER, "model-part", None),
    ("tokens", (6,), "I64", {}, [], Role.OTHER, "none", None),
]  # fmt: skip


@pytest.mark.parametrize(("name", "shape", "dtype", "kwargs", "neighbours", "role", "rule", "detail"), CASES,
                         ids=[f"{c[6]}:{c[0]}" for c in CASES])  # fmt: skip
def test_rule(
    name: str,
    shape: tuple[int, ...],
    dtype: str,
    kwargs: dict[str, Any],
    neighbours: list[str],
    role: Role,
    rule: str,
    detail: str | None,
) -> None:
    target = tensor(name, shape, dtype, **kwargs)
    inventory = loose([target, *(tensor(n, shape) for n in neighbours)])
    decision = classify(inventory)[0]
    assert (decision.role, decision.rule) == (role, rule), decision
    if detail is not None:
        assert decision.detail == detail
    assert decision.reason and "{" not in decision.reason


def test_every_rule_has_a_case() -> None:
    covered = {case[6] for case in CASES}
    assert {r.id for r in RULES} <= covered


def test_rule_ids_unique() -> None:
    ids = [r.id for r in RULES]
    assert len(ids) == len(set(ids))


def test_first_match_wins_training_part_over_name() -> None:
    """An EMA copy of a norm is EMA, not a norm: where it sits decides before what it is called."""
    decision = classify_tensor(tensor("model_ema.layers.0.input_layernorm.weight", (8,)))
    assert decision.role is Role.EMA


def test_optimizer_reason_names_parameter() -> None:
    t = tensor("optimizer_states.0.state.2.exp_avg", attrs={"optimizer_state": "exp_avg", "param_name": "fc.weight",
                                                             "param_name_guessed": True})  # fmt: skip
    reason = classify_tensor(t).reason
    assert "Adam/AdamW first moment" in reason and "`fc.weight`" in reason and "guessed" in reason


def test_optimizer_slot_mirrors_model_parameter() -> None:
    """Without a param_name, the slot's reason names the model tensor whose shape and name it mirrors."""
    inventory = loose(
        [
            tensor("model_weights/dense_1/dense_1/kernel:0", (8, 4), section="model_weights"),
            tensor("model_weights/dense_2/dense_2/kernel:0", (8, 4), section="model_weights"),
            tensor("optimizer_weights/Adam/dense_2/kernel/m:0", (8, 4), section="optimizer_weights"),
        ]
    )
    decision = classify(inventory)[2]
    assert decision.role is Role.OPTIMIZER_STATE
    assert "dense_2/dense_2/kernel" in decision.reason


def test_keras_gamma_with_moving_stats_is_batchnorm() -> None:
    inventory = loose([tensor("bn/gamma:0", (8,)), tensor("bn/beta:0", (8,)), tensor("bn/moving_mean:0", (8,))])
    decisions = classify(inventory)
    assert [d.detail for d in decisions] == ["batchnorm-scale", "batchnorm-shift", "batchnorm moving mean"]


def test_unknown_is_other_never_a_guess() -> None:
    decision = classify_tensor(tensor("xyz.A_log", (8,)))
    assert decision.role is Role.OTHER and decision.rule == "none"


def test_name_parts() -> None:
    assert name_parts("model/dense/kernel/.ATTRIBUTES/VARIABLE_VALUE") == ("model", "dense", "kernel")
    assert name_parts("dense_1/kernel:0") == ("dense_1", "kernel")
    assert name_parts("Model.Layers.0.W") == ("model", "layers", "0", "w")


def test_docs_list_every_rule() -> None:
    from tests.conftest import REPO

    text = (REPO / "docs" / "analysis.md").read_text()
    missing = [r.id for r in RULES if f"`{r.id}`" not in text]
    assert not missing, f"docs/analysis.md does not mention rules {missing}"
