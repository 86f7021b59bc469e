"""Reduction targets: exact bytes per tensor and per target, recomputed here from first principles."""

from __future__ import annotations

import math

import pytest

from ckptscan.analyze.analysis import AnalysisOptions, analyze
from ckptscan.analyze.reduction import Options, Target, use_more_bits
from ckptscan.dtypes import DTYPES
from ckptscan.inventory import Inventory
from tests._analysis_helpers import packed, tensor

V, H, F, L = 512, 256, 1024, 8
HEADER = 16


def _model(dtype: str = "F32", with_optimizer: bool = False) -> Inventory:
    tensors = [tensor("model.embed_tokens.weight", (V, H), dtype)]
    for i in range(L):
        p = f"model.layers.{i}"
        tensors += [
            tensor(f"{p}.self_attn.q_proj.weight", (H, H), dtype),
            tensor(f"{p}.self_attn.k_proj.weight", (H, H), dtype),
            tensor(f"{p}.self_attn.v_proj.weight", (H, H), dtype),
            tensor(f"{p}.self_attn.o_proj.weight", (H, H), dtype),
            tensor(f"{p}.mlp.gate_proj.weight", (F, H), dtype),
            tensor(f"{p}.mlp.up_proj.weight", (F, H), dtype),
            tensor(f"{p}.mlp.down_proj.weight", (H, F), dtype),
            tensor(f"{p}.input_layernorm.weight", (H,), dtype),
            tensor(f"{p}.post_attention_layernorm.weight", (H,), dtype),
        ]
    tensors += [tensor("model.norm.weight", (H,), dtype), tensor("lm_head.weight", (V, H), dtype)]
    if with_optimizer:
        tensors += [tensor(f"optimizer.state.{i}.exp_avg", t.shape) for i, t in enumerate(list(tensors))]
    return packed(tensors, header=HEADER)


def _target(inventory: Inventory, name: str, options: Options | None = None) -> Target:
    a = analyze(inventory, AnalysisOptions(reduction=options or Options()))
    return next(t for t in a.targets if t.name == name)


def _q(type_name: str, elements: int) -> int:
    return DTYPES[type_name].nbytes(elements)


MATRICES = L * (4 * H * H + 3 * F * H)
VECTORS = (2 * L + 1) * H
EMB = V * H


def test_strip_drops_optimizer_state() -> None:
    trained = _model(with_optimizer=True)
    plain = _model()
    strip = _target(trained, "strip")
    assert strip.tensor_bytes == 4 * (MATRICES + VECTORS + 2 * EMB)
    assert strip.bytes == plain.file_bytes
    assert strip.saving_bytes == trained.file_bytes - plain.file_bytes


def test_bytes_the_reader_did_not_describe_are_kept_not_saved() -> None:
    """Format internals a reader cannot place (or files of a model never downloaded) stay."""
    from dataclasses import replace

    plain = _model()
    undescribed = 1000
    bigger = replace(plain, files=tuple(replace(f, size=f.size + undescribed) for f in plain.files))
    assert _target(bigger, "strip").saving_bytes == 0
    assert _target(bigger, "strip").bytes == bigger.file_bytes
    assert "1,000 of them not described by the reader" in _target(bigger, "strip").assumptions[-1]
    assert _target(bigger, "fp16").saving_bytes == _target(plain, "fp16").saving_bytes


def test_fp16_and_bf16_halve_every_float() -> None:
    for name in ("fp16", "bf16"):
        t = _target(_model(), name)
        assert t.tensor_bytes == 2 * (MATRICES + VECTORS + 2 * EMB)
        assert t.bytes == t.tensor_bytes + HEADER


def test_fp16_keeps_a_bf16_source_as_is() -> None:
    t = _target(_model("BF16"), "fp16")
    assert t.tensor_bytes == 2 * (MATRICES + VECTORS + 2 * EMB)
    assert set(t.by_dtype) == {"BF16"}


def test_fp8_per_tensor_scale_and_16_bit_rest() -> None:
    t = _target(_model(), "fp8")
    n_matrices = 7 * L
    assert t.tensor_bytes == MATRICES + 4 * n_matrices + 2 * (VECTORS + 2 * EMB)


def test_int8_per_channel() -> None:
    t = _target(_model(), "int8")
    scales = 2 * L * (4 * H + 2 * F + H)  # one F16 scale per output row
    assert t.tensor_bytes == MATRICES + scales + 2 * (VECTORS + 2 * EMB)


@pytest.mark.parametrize("group", [128, 64, 0, 100])
def test_int4_groups(group: int) -> None:
    t = _target(_model(), "int4", Options(group_size=group))

    def groups(rows: int, row: int) -> int:
        return rows * (math.ceil(row / group) if group else 1)

    scales = 2 * L * (4 * groups(H, H) + 2 * groups(F, H) + groups(H, F))
    assert t.tensor_bytes == MATRICES // 2 + scales + 2 * (VECTORS + 2 * EMB)


def test_int4_zero_points() -> None:
    with_zeros = _target(_model(), "int4", Options(zero_points=True))
    without = _target(_model(), "int4")
    n_groups = L * (4 * H * (H // 128) + 2 * F * (H // 128) + H * (F // 128))
    assert with_zeros.tensor_bytes - without.tensor_bytes == n_groups // 2


def test_never_grows_a_tensor() -> None:
    tiny = packed([tensor("fc.weight", (4, 4), "I4"), tensor("fc2.weight", (4, 4), "F16")])
    t = _target(tiny, "int8")
    results = {p.name: (p.result, p.bytes) for p in t.plans}
    assert results["fc.weight"] == ("I4", 8)  # int8 would double it: kept
    assert results["fc2.weight"] == ("I8 per-channel", 16 + 4 * 2)  # 16 codes + 4 F16 scales < 32


def test_use_more_bits_matches_llama_cpp() -> None:
    assert [i for i in range(32) if use_more_bits(i, 32)] == [0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30,
                                                              31]  # fmt: skip
    assert [i for i in range(8) if use_more_bits(i, 8)] == [0, 3, 6, 7]


def test_q4_k_m_recipe_exact() -> None:
    t = _target(_model(), "Q4_K_M")
    more = sum(use_more_bits(i, L) for i in range(L))
    expected = (
        _q("Q4_K", EMB)  # token embedding: base type
        + _q("Q6_K", EMB)  # output head
        + L * (3 * _q("Q4_K", H * H) + 2 * _q("Q4_K", F * H))  # q, k, o, gate, up
        + more * (_q("Q6_K", H * H) + _q("Q6_K", H * F))  # attn_v and ffn_down in the chosen layers
        + (L - more) * (_q("Q4_K", H * H) + _q("Q4_K", H * F))
        + 4 * VECTORS  # norms F32
    )
    assert t.tensor_bytes == expected
    by_rule = {p.name: p.result for p in t.plans}
    assert by_rule["model.layers.0.self_attn.v_proj.weight"] == "Q6_K"
    assert by_rule["model.layers.1.self_attn.v_proj.weight"] == "Q4_K"
    assert by_rule["model.layers.7.mlp.down_proj.weight"] == "Q6_K"
    assert by_rule["model.norm.weight"] == "F32"


@pytest.mark.parametrize(("name", "base"), [("Q8_0", "Q8_0"), ("Q6_K", "Q6_K"), ("Q4_0", "Q4_0")])
def test_uniform_recipes(name: str, base: str) -> None:
    t = _target(_model(), name)
    head = "Q8_0" if base == "Q8_0" else "Q6_K"
    assert t.tensor_bytes == _q(base, MATRICES) + _q(base, EMB) + _q(head, EMB) + 4 * VECTORS


def test_tied_model_quantizes_token_embedding_as_the_head() -> None:
    inventory = _model()
    tied = packed([t for t in inventory.tensors if t.name != "lm_head.weight"], header=HEADER,
                  sidecars={"config.json": {"tie_word_embeddings": True}})  # fmt: skip
    t = _target(tied, "Q4_K_M")
    assert {p.name: p.result for p in t.plans}["model.embed_tokens.weight"] == "Q6_K"


def test_gguf_fallback_for_rows_off_the_block() -> None:
    inventory = packed(
        [tensor("blk.0.attn_q.weight", (64, 96), "F16"), tensor("blk.0.attn_k.weight", (64, 200), "F16")]
    )
    t = _target(inventory, "Q4_K_M")
    results = {p.name: (p.result, p.bytes) for p in t.plans}
    assert results["blk.0.attn_q.weight"] == ("Q5_0", _q("Q5_0", 64 * 96))  # 96 % 256 != 0, 96 % 32 == 0
    assert results["blk.0.attn_k.weight"] == ("F16", 64 * 200 * 2)  # kept: F16 already
    assert "not a multiple" in next(p.rule for p in t.plans if p.name == "blk.0.attn_q.weight")


def test_every_target_has_assumptions_and_dtypes_add_up() -> None:
    a = analyze(_model())
    for t in a.targets:
        assert t.assumptions
        assert sum(c.bytes for c in t.by_dtype.values()) == t.tensor_bytes == sum(p.bytes for p in t.plans)
        assert t.bytes == t.tensor_bytes + t.overhead_bytes


def test_plans_are_a_sequence_made_on_demand_and_shared_outcomes_keep_each_tensor_s_name() -> None:
    inventory = _model()
    a = analyze(inventory)
    int4 = next(t for t in a.targets if t.name == "int4")
    plans = list(int4.plans)
    assert len(int4.plans) == len(plans) == len(inventory.tensors)
    assert [p.name for p in plans] == [t.name for t in inventory.tensors]
    assert int4.plans[3] == plans[3] and int4.plans[-1] == plans[-1]
    assert int4.plans[1:3] == tuple(plans[1:3])
    assert int4.plans == analyze(inventory).targets[a.targets.index(int4)].plans
    # the eight q_proj tensors share one outcome but each plan names its own tensor and index
    q = [p for p in plans if p.name.endswith("q_proj.weight")]
    assert len(q) == L and len({(p.result, p.bytes, p.rule) for p in q}) == 1
    assert len({(p.name, p.index) for p in q}) == L


def test_tensors_alike_but_for_their_output_axis_are_planned_each_their_own_way() -> None:
    """Two [64, 200] weights: one read by an ONNX MatMul as its input 1 (output channels last,
    200 rows of 64), one by a Gemm (64 rows of 200). int4 g128 gives them different scale counts,
    so sharing one outcome per shape would be wrong."""
    matmul = tensor("a.weight", (64, 200), attrs={"consumers": [{"op": "MatMul", "input": 1}]})
    gemm = tensor("b.weight", (64, 200), attrs={"consumers": [{"op": "Gemm", "input": 1}]})
    filler = tensor("c.weight", (16, 16))
    int4 = _target(packed([matmul, gemm, filler]), "int4")
    by_name = {p.name: p for p in int4.plans}
    elements = 64 * 200
    assert by_name["a.weight"].bytes == elements // 2 + 2 * 200 * 1  # 200 channels of 64 inputs: one group each
    assert by_name["b.weight"].bytes == elements // 2 + 2 * 64 * 2  # 64 channels of 200 inputs: two groups each
