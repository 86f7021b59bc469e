"""What a checkpoint becomes when reduced for inference: exact bytes per tensor, totals per target.

Targets, each starting from the previous line's result where it says so:

- ``strip``: keep only what inference needs (weights, biases, embeddings, heads, norms, quantization
  data, buffers, unrecognized model tensors); drop optimizer state, EMA/master copies, training
  state and dead storage (a fresh save writes only the bytes tensors view).
- ``dedupe``: ``strip``, and a tied head stored as a second copy is dropped.
- ``fp16`` / ``bf16``: ``dedupe``, every floating tensor wider than 16 bits cast to 16 bits.
- ``fp8``: ``dedupe``; weight matrices (2-D and up) to F8_E4M3 with one F32 scale per tensor
  (per-tensor scaling as llm-compressor / vLLM write it); the rest at 16 bits.
- ``int8`` / ``int4``: ``dedupe``; weight matrices quantized weight-only: int8 with one F16 scale per
  output channel; int4 packed two per byte with one F16 scale per group of ``group_size`` inputs
  (128 by default) per output channel, plus packed 4-bit zero points when asked. The rest at 16 bits.
- GGUF types (``Q8_0``, ``Q6_K``, ``Q5_K_M``, ``Q4_K_M``, ``Q4_0``, ``IQ4_XS``, ...): ``dedupe``,
  then llama.cpp's recipe for that file type (``llama_tensor_get_type``, simplified: see RECIPES).

Per-tensor rules shared by the targets: tensors that are not floating point are kept as they are;
a tensor is never made larger than it is (a source already at 4 bits stays so under ``int8``);
norms, biases and 1-D tensors stay at 16 bits (F32 for GGUF, as ``convert_hf_to_gguf`` writes them);
embeddings and the output head stay at 16 bits for fp8/int8/int4 (GPTQ, AWQ, bitsandbytes and FP8
recipes skip them), while GGUF recipes quantize the token embedding to the base type and the output
head to Q6_K (Q8_0 for the Q8_0 type, or when its rows are not a multiple of 256).

``bytes`` is the tensor bytes plus the source's format overhead (headers, metadata), assumed
unchanged: exact for the tensor data, an estimate for the container.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import overload

from ckptscan.analyze.layout import channels_last, output_channels
from ckptscan.analyze.overhead import Overhead
from ckptscan.analyze.parameters import Tie
from ckptscan.analyze.roles import Role, RoleDecision, name_parts
from ckptscan.analyze.summary import Count, view_key
from ckptscan.dtypes import DTYPES, DType, DTypeKind
from ckptscan.inventory import Inventory, Tensor

KEPT_ROLES = frozenset(
    {Role.WEIGHT, Role.BIAS, Role.EMBEDDING, Role.OUTPUT_HEAD, Role.NORM, Role.QUANTIZATION, Role.OTHER, Role.BUFFER}
)
QUANTIZABLE_ROLES = frozenset({Role.WEIGHT})
F16, BF16, F32 = DTYPES["F16"], DTYPES["BF16"], DTYPES["F32"]


@dataclass(frozen=True, slots=True)
class Options:
    """Choices that change the targets' plans: int4 group size, zero points, heads per KV head."""

    group_size: int = 128  # int4: inputs per scale along each output channel; 0 = one scale per channel
    zero_points: bool = False  # int4/int8: asymmetric, with zero points packed at the code width
    n_gqa: int = 1  # attention heads per key/value head (llama.cpp's attn_v rules for IQ4_XS and Q2_K)


@dataclass(frozen=True, slots=True)
class TensorPlan:
    """What one target does to one tensor: its dtype before and after, its bytes, the rule."""

    index: int  # into the inventory's tensors
    name: str
    source: str  # source dtype
    result: str  # result dtype or scheme
    bytes: int
    rule: str


@dataclass(frozen=True, slots=True)
class Target:
    """One reduction target (strip, fp16, int4, Q4_K_M...): bytes after it, saving, plan per tensor."""

    name: str
    bytes: int
    tensor_bytes: int
    overhead_bytes: int
    saving_bytes: int
    assumptions: tuple[str, ...]
    by_dtype: dict[str, Count]
    plans: Plans


class Plans(Sequence[TensorPlan]):
    """A target's plan for each tensor, made when asked for. A target keeps the outcome of each
    tensor (shared between the tensors of one signature) rather than a TensorPlan each: seventeen
    targets of a 47,000-tensor MoE would otherwise build 800,000 records that only ``--tensors``
    and the stats pass read."""

    __slots__ = ("_items", "_outcomes")

    def __init__(self, items: Sequence[_Item], outcomes: Sequence[_Outcome]) -> None:
        self._items = items
        self._outcomes = outcomes

    def __len__(self) -> int:
        return len(self._outcomes)

    @overload
    def __getitem__(self, i: int) -> TensorPlan: ...
    @overload
    def __getitem__(self, i: slice) -> tuple[TensorPlan, ...]: ...
    def __getitem__(self, i: int | slice) -> TensorPlan | tuple[TensorPlan, ...]:
        if isinstance(i, slice):
            return tuple(_plan(item, o) for item, o in zip(self._items[i], self._outcomes[i], strict=True))
        return _plan(self._items[i], self._outcomes[i])

    def __iter__(self) -> Iterator[TensorPlan]:
        for item, outcome in zip(self._items, self._outcomes, strict=True):
            yield _plan(item, outcome)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Plans):
            return tuple(self) == tuple(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # equal by content, like the tuple it stands for

    def __repr__(self) -> str:
        return f"Plans({len(self)} tensors)"

    @property
    def tensor_bytes(self) -> int:
        return sum(o[1] for o in self._outcomes)

    def by_result(self) -> dict[str, Count]:
        """Tensors, elements and bytes per result dtype or scheme, the largest first."""
        sums: dict[str, list[int]] = {}
        for item, (result, nbytes, _) in zip(self._items, self._outcomes, strict=True):
            acc = sums.get(result)
            if acc is None:
                acc = sums[result] = [0, 0, 0]
            acc[0] += 1
            acc[1] += item.tensor.elements
            acc[2] += nbytes
        counts = {result: Count(*acc) for result, acc in sums.items()}
        return dict(sorted(counts.items(), key=lambda kv: -kv[1].bytes))


@dataclass(frozen=True, slots=True)
class _Item:
    """A tensor the targets keep (each distinct view once), with its index and role."""

    index: int
    tensor: Tensor
    role: Role
    detail: str


def _signature(item: _Item) -> tuple[object, ...]:
    """Everything a target's rule reads of a tensor but its name and place: a model repeats a few
    shapes thousands of times (a 47,000-tensor MoE has a few dozen signatures), so each signature's
    outcome is worked out once per target. What the rules read of the name and attributes is in it
    too: which axis holds the output channels (a Keras kernel, an ONNX MatMul input) and, for a 3-D
    expert bank, whether the name says it is a down projection."""
    t = item.tensor
    down = len(t.shape) == 3 and _is_down(t.name)
    return (t.dtype.name, t.shape, t.nbytes, item.role, item.detail, down, len(t.shape) >= 2 and channels_last(t))


# what a target makes of one tensor: (result dtype or scheme, bytes, rule)
_Outcome = tuple[str, int, str]


# -- target table --------------------------------------------------------------------------------

CAST_TARGETS = ("fp16", "bf16", "fp8", "int8", "int4")


@dataclass(frozen=True, slots=True)
class Recipe:
    """A llama.cpp file type: the base type and the exceptions its recipe makes (simplified)."""

    name: str
    base: str
    summary: str
    rule: Callable[[str, int, int, int, Options], str | None] | None = None  # (kind, i, n, i_v, options)


def use_more_bits(i_layer: int, n_layers: int) -> bool:
    """llama.cpp: the first and last eighth of the layers, and every third one in between."""
    return i_layer < n_layers // 8 or i_layer >= 7 * n_layers // 8 or (i_layer - n_layers // 8) % 3 == 2


def _k_m(more: str, qkv: str) -> Callable[[str, int, int, int, Options], str | None]:
    def rule(kind: str, i: int, n: int, i_v: int, options: Options) -> str | None:
        if kind in ("attn_v", "ffn_down") and use_more_bits(i if kind == "ffn_down" else i_v, n):
            return more
        return qkv if kind == "attn_qkv" else None

    return rule


def _q4_k_s(kind: str, i: int, n: int, i_v: int, options: Options) -> str | None:
    if (kind == "attn_v" and i_v < 4) or (kind == "ffn_down" and i < n // 8):
        return "Q5_K"
    return None


def _q3_k_m(kind: str, i: int, n: int, i_v: int, options: Options) -> str | None:
    if kind == "attn_v":
        return "Q5_K" if i_v < 2 else "Q4_K"
    if kind == "ffn_down":
        return "Q5_K" if i < n // 16 else "Q4_K"
    return "Q4_K" if kind in ("attn_output", "attn_qkv") else None


def _q2_k(kind: str, i: int, n: int, i_v: int, options: Options) -> str | None:
    if kind == "attn_v":
        return "Q4_K" if options.n_gqa >= 4 else "Q3_K"
    return "Q3_K" if kind in ("ffn_down", "attn_output") else None


def _iq4_xs(kind: str, i: int, n: int, i_v: int, options: Options) -> str | None:
    if kind == "attn_v" and options.n_gqa >= 4:
        return "Q5_K"
    if kind == "ffn_down" and i < n // 8:
        return "Q5_K"
    return None


RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in (
        Recipe("Q8_0", "Q8_0", "every weight matrix Q8_0, the output head too"),
        Recipe("Q6_K", "Q6_K", "every weight matrix Q6_K"),
        Recipe("Q5_K_M", "Q5_K", "Q5_K; Q6_K for attn_v and ffn_down in the first and last eighth of the layers "
               "and every third layer between, and for fused attn_qkv", _k_m("Q6_K", "Q6_K")),
        Recipe("Q5_K_S", "Q5_K", "Q5_K everywhere but the output head"),
        Recipe("Q4_K_M", "Q4_K", "Q4_K; Q6_K for attn_v and ffn_down in the first and last eighth of the layers "
               "and every third layer between; Q5_K for fused attn_qkv", _k_m("Q6_K", "Q5_K")),
        Recipe("Q4_K_S", "Q4_K", "Q4_K; Q5_K for the first 4 attn_v and the first eighth of ffn_down", _q4_k_s),
        Recipe("Q4_0", "Q4_0", "Q4_0 everywhere but the output head"),
        Recipe("IQ4_XS", "IQ4_XS", "IQ4_XS; Q5_K for attn_v with 4+ query heads per KV head and for the first "
               "eighth of ffn_down (no importance matrix)", _iq4_xs),
        Recipe("Q3_K_M", "Q3_K", "Q3_K; attn_v Q5_K for the first 2 layers then Q4_K; ffn_down Q5_K for the first "
               "sixteenth then Q4_K; attn_output and attn_qkv Q4_K", _q3_k_m),
        Recipe("Q2_K", "Q2_K", "Q2_K; attn_v Q3_K (Q4_K with 4+ query heads per KV head); ffn_down and "
               "attn_output Q3_K", _q2_k),
    )
}  # fmt: skip
GGUF_TARGETS = tuple(RECIPES)
TARGETS = ("strip", "dedupe", *CAST_TARGETS, *GGUF_TARGETS)

# llama.cpp's substitutes when a row is not a multiple of a 256-element super-block
K_FALLBACK = {"Q2_K": "IQ4_NL", "Q3_K": "IQ4_NL", "IQ4_XS": "IQ4_NL", "Q4_K": "Q5_0", "Q5_K": "Q5_1", "Q6_K": "Q8_0"}

GGUF_ATTN_V = frozenset({"attn_v", "v_proj", "value", "wv", "v"})
GGUF_ATTN_QKV = frozenset({"attn_qkv", "c_attn", "qkv_proj", "query_key_value", "wqkv", "qkv", "in_proj"})
GGUF_ATTN_OUT = frozenset({"attn_output", "o_proj", "out_proj", "dense"})
GGUF_FFN_DOWN = frozenset({"ffn_down", "down_proj", "fc2", "dense_4h_to_h", "w2", "ffn_down_exps"})
_NUMBER = re.compile(r"^\d+$")


def reduce(
    inventory: Inventory,
    decisions: Sequence[RoleDecision],
    ties: Sequence[Tie],
    overhead: Overhead,
    options: Options | None = None,
    targets: Sequence[str] = TARGETS,
) -> list[Target]:
    options = options or Options()
    copies = {t.head for t in ties if t.stored == "copy"}
    kept = _kept(inventory, decisions)
    deduped = [item for item in kept if item.tensor.name not in copies]
    has_output = any(item.role is Role.OUTPUT_HEAD and len(item.tensor.shape) >= 2 for item in deduped)
    half = BF16 if any(item.tensor.dtype.name == "BF16" for item in deduped) else F16
    # what the reader could not describe (HDF5 internals, the files of a model not downloaded) is
    # no saving: it stays, like the format's own overhead
    undescribed = max(0, overhead.bytes_of("unaccounted"))
    fixed = overhead.bytes_of("format_overhead") + undescribed
    kept_note = f"format overhead kept as in the source ({fixed:,} bytes"
    kept_note += f", {undescribed:,} of them not described by the reader)" if undescribed else ")"
    hidden = _hidden_size(deduped)
    out = []
    layout: _GgufLayout | None = None
    signatures = [_signature(item) for item in deduped]
    memo: dict[tuple[object, ...], _Outcome] = {}
    for name in targets:
        items: Sequence[_Item] = deduped
        if name == "strip":
            items = kept
            outcomes = [_keep(item, "kept: needed for inference") for item in kept]
            assumptions = ["drops optimizer state, EMA/master copies, training state, dead storage and any second "
                           "copy of the model stored in another file"]  # fmt: skip
        elif name == "dedupe":
            outcomes = [_keep(item, "kept") for item in deduped]
            assumptions = ["as strip, and a tied output head stored as a second copy is dropped"]
        elif name in CAST_TARGETS:
            outcomes = []
            for item, signature in zip(deduped, signatures, strict=True):
                key = (name, signature)
                outcome = memo.get(key)
                if outcome is None:
                    outcome = memo[key] = _cast_plan(name, item, half, options, hidden)
                outcomes.append(outcome)
            assumptions = list(_cast_assumptions(name, half, options))
        else:
            if layout is None:
                layout = _GgufLayout.of(deduped, signatures, has_output)
            outcomes = _gguf_outcomes(RECIPES[name], layout, options, memo)
            assumptions = list(_gguf_assumptions(RECIPES[name], options))
        assumptions.append(kept_note)
        plans = Plans(items, outcomes)
        tensor_bytes = plans.tensor_bytes
        total = tensor_bytes + fixed
        out.append(
            Target(
                name=name,
                bytes=total,
                tensor_bytes=tensor_bytes,
                overhead_bytes=fixed,
                saving_bytes=overhead.file_bytes - total,
                assumptions=tuple(assumptions),
                by_dtype=plans.by_result(),
                plans=plans,
            )
        )
    return out


def _kept(inventory: Inventory, decisions: Sequence[RoleDecision]) -> list[_Item]:
    seen: set[tuple[object, ...]] = set()
    kept = []
    for i, (t, d) in enumerate(zip(inventory.tensors, decisions, strict=True)):
        if d.role not in KEPT_ROLES:
            continue
        key = view_key(t)
        if key in seen:
            continue
        seen.add(key)
        kept.append(_Item(i, t, d.role, d.detail))
    return kept


def _plan(item: _Item, outcome: _Outcome) -> TensorPlan:
    t = item.tensor
    return TensorPlan(item.index, t.name, t.dtype.name, *outcome)


def _keep(item: _Item, rule: str) -> _Outcome:
    t = item.tensor
    return t.dtype.name, t.nbytes, rule


def _as(item: _Item, dtype: DType, rule: str) -> _Outcome:
    """``item`` converted to ``dtype``, unless that would make it larger (then kept)."""
    t = item.tensor
    nbytes = _bytes_as(t, dtype)
    if nbytes is None or nbytes >= t.nbytes:
        return _keep(item, "kept: already as small" if nbytes is not None else "kept: size not known")
    return dtype.name, nbytes, rule


def _bytes_as(t: Tensor, dtype: DType) -> int | None:
    try:
        return dtype.nbytes(t.elements)
    except ValueError:
        return None


def _floating(t: Tensor) -> bool:
    return t.dtype.kind is DTypeKind.FLOAT and t.dtype.known


# -- fp16 / bf16 / fp8 / int8 / int4 -------------------------------------------------------------


def _hidden_size(items: Sequence[_Item]) -> int | None:
    """The model width, from the token embedding (the smaller side of its table)."""
    for item in items:
        if item.role is Role.EMBEDDING and item.detail.startswith(("token", "lookup")) and len(item.tensor.shape) == 2:
            return min(item.tensor.shape)
    return None


def bank_channels(t: Tensor, hidden: int | None) -> tuple[int, int, int]:
    """(output channels, inputs per channel, input axis) of a 3-D MoE expert bank. transformers 5
    stores Mixtral/Qwen/DeepSeek banks as [experts, out, in] (like nn.Linear), GPT-OSS and Llama 4 as
    [experts, in, out]: the input axis is the one the model width sits on for gate/up projections
    and the other one for the down projection; [experts, out, in] when the width does not tell."""
    experts, a, b = t.shape
    down = _is_down(t.name)
    inputs_first = hidden is not None and a != b and ((a == hidden) != down)
    if inputs_first:
        return experts * b, a, 1
    return experts * a, b, 2


def _is_down(name: str) -> bool:
    leaf = name_parts(name)[-1]
    return "down" in leaf or "w2" in leaf


def _cast_plan(target: str, item: _Item, half: DType, options: Options, hidden: int | None = None) -> _Outcome:
    t = item.tensor
    if not _floating(t):
        return _keep(item, "kept: not floating point")
    if target in ("fp16", "bf16"):
        return _as(item, F16 if target == "fp16" else BF16, "cast to 16 bits")
    if item.role not in QUANTIZABLE_ROLES or len(t.shape) < 2:
        why = {Role.EMBEDDING: "embedding", Role.OUTPUT_HEAD: "output head", Role.NORM: "norm", Role.BIAS: "bias"}
        return _as(item, half, f"{why.get(item.role, '1-D or not a weight')} kept at 16 bits")
    bank = item.detail == "expert bank" and len(t.shape) == 3
    if target == "fp8":
        scales = t.shape[0] if bank else 1  # one scale per expert, as per-tensor scaling of each expert
        nbytes = t.elements + 4 * scales
        if nbytes >= t.nbytes:
            return _keep(item, "kept: already as small")
        how = f"FP8 E4M3, one scale per expert ({scales})" if bank else "FP8 E4M3, per-tensor scale"
        return "F8_E4M3+F32 scale", nbytes, how
    bits = 8 if target == "int8" else 4
    group = 0 if target == "int8" else options.group_size
    axis = None
    if bank:
        rows, row_length, axis = bank_channels(t, hidden)
    else:
        rows, row_length = output_channels(t)
    groups = rows * (-(-row_length // group) if group else 1)
    nbytes = -(-t.elements * bits // 8) + 2 * groups
    if options.zero_points:
        nbytes += -(-groups * bits // 8)
    if nbytes >= t.nbytes:
        return _keep(item, "kept: already as small")
    scheme = f"I{bits} {'g' + str(group) if group else 'per-channel'}"
    rule = f"int{bits} weight-only, {groups:,} F16 scales" + (" and zero points" if options.zero_points else "")
    if axis is not None:
        per_expert = rows // t.shape[0]
        rule += f"; expert bank: {t.shape[0]} experts x {per_expert:,} output channels, groups along axis {axis}"
    return scheme, nbytes, rule


def _cast_assumptions(target: str, half: DType, options: Options) -> list[str]:
    if target in ("fp16", "bf16"):
        return ["every floating tensor wider than 16 bits cast to 16 bits (norms and buffers too, as model.half())"]
    kept = f"embeddings, output head, norms, biases and 1-D tensors at 16 bits ({half.name})"
    if target == "fp8":
        return ["weight matrices as F8_E4M3 with one F32 scale per tensor", kept]
    if target == "int8":
        scheme = "int8 weight-only, one F16 scale per output channel"
    else:
        group = f"groups of {options.group_size} inputs" if options.group_size else "one group per output channel"
        scheme = f"int4 weight-only packed two per byte, one F16 scale per {group}"
    if options.zero_points:
        scheme += ", zero points at the code width"
    return [scheme, kept]


# -- GGUF ------------------------------------------------------------------------------------------


def gguf_kind(t: Tensor, role: Role) -> str:
    """The llama.cpp tensor kind a recipe looks at: output, token_embd, attn_v, attn_qkv, ffn_down..."""
    if role is Role.OUTPUT_HEAD:
        return "output"
    parts = name_parts(t.name)
    parts = parts if len(t.shape) == 3 else parts[:-1]  # an expert bank's leaf names its projection
    for part in reversed(parts):
        if part in GGUF_ATTN_V:
            return "attn_v"
        if part in GGUF_ATTN_QKV:
            return "attn_qkv"
        if part in GGUF_FFN_DOWN:
            return "ffn_down"
        if part == "c_proj":  # GPT-2 names both projections c_proj
            return "ffn_down" if "mlp" in parts else "attn_output"
        if part == "wo":  # Meta Llama attention.wo, T5 DenseReluDense.wo
            return "attn_output" if "attention" in parts else "ffn_down"
        if part in GGUF_ATTN_OUT and (part != "dense" or "attention" in parts):
            return "attn_output"
    return "other"


def _layer(t: Tensor) -> int | None:
    return next((int(p) for p in name_parts(t.name) if _NUMBER.match(p)), None)


@dataclass(frozen=True, slots=True)
class _GgufPlace:
    """What a GGUF recipe looks at for one tensor besides its signature: which branch of the recipe
    it takes (``keep``, ``f32``, ``head``, ``f16`` or ``weight``), its llama.cpp kind, the rank of
    its layer among the layers that have an ffn_down, and how many attn_v weights come before it."""

    item: _Item
    signature: tuple[object, ...]
    branch: str
    kind: str
    i_layer: int
    i_v: int


@dataclass(frozen=True, slots=True)
class _GgufLayout:
    """What every GGUF recipe looks at, computed once per reduction. Tensors whose signature and
    place are the same get the same outcome from every recipe, so a recipe decides once per group
    (a 47,000-tensor MoE has a few hundred) and each tensor takes its group's outcome."""

    groups: list[int]  # per item, an index into places
    places: list[_GgufPlace]  # one per group: its first item's
    n_layers: int

    @classmethod
    def of(cls, items: Sequence[_Item], signatures: Sequence[tuple[object, ...]], has_output: bool) -> _GgufLayout:
        kinds = [gguf_kind(item.tensor, item.role) for item in items]
        numbers = [_layer(item.tensor) for item in items]
        layers = sorted({n for n, k in zip(numbers, kinds, strict=True) if k == "ffn_down" and n is not None})
        rank = {n: i for i, n in enumerate(layers)}
        index: dict[tuple[object, ...], int] = {}
        groups: list[int] = []
        places: list[_GgufPlace] = []
        i_v = 0
        for item, signature, kind, number in zip(items, signatures, kinds, numbers, strict=True):
            branch = _gguf_branch(item, kind, has_output)
            i_layer = rank.get(number or 0, 0)
            key = (signature, branch, kind, i_layer, i_v)
            group = index.get(key)
            if group is None:
                group = index[key] = len(places)
                places.append(_GgufPlace(item, signature, branch, kind, i_layer, i_v))
            groups.append(group)
            if branch == "weight" and kind == "attn_v":
                i_v += 1
        return cls(groups, places, len(layers) or 1)


def _gguf_branch(item: _Item, kind: str, has_output: bool) -> str:
    """The part of a recipe that decides a tensor's type (the same for every recipe)."""
    t = item.tensor
    if not _floating(t) and t.dtype.kind is not DTypeKind.QUANTIZED:
        return "keep"
    if len(t.shape) < 2 or item.role in (Role.NORM, Role.BIAS, Role.BUFFER):
        return "f32"
    token = item.role is Role.EMBEDDING and item.detail.startswith(("token", "lookup"))
    if kind == "output" or (token and not has_output):
        return "head"
    if item.role not in (Role.WEIGHT, Role.EMBEDDING) or (item.role is Role.EMBEDDING and not token):
        return "f16"
    return "weight"


def _gguf_outcomes(
    recipe: Recipe, layout: _GgufLayout, options: Options, memo: dict[tuple[object, ...], _Outcome]
) -> list[_Outcome]:
    decided = []
    for place in layout.places:
        wanted, rule = _gguf_choice(recipe, place, layout.n_layers, options)
        key = (place.signature, wanted, rule)
        outcome = memo.get(key)
        if outcome is None:
            outcome = memo[key] = _keep(place.item, rule) if wanted is None else _as_gguf(place.item, wanted, rule)
        decided.append(outcome)
    return [decided[group] for group in layout.groups]


def _gguf_choice(recipe: Recipe, place: _GgufPlace, n_layers: int, options: Options) -> tuple[str | None, str]:
    """The ggml type the recipe wants for a tensor (None: kept as it is) and why."""
    if place.branch == "keep":
        return None, "kept: not floating point"
    if place.branch == "f32":
        return "F32", "1-D, norm, bias or buffer: F32 as convert_hf_to_gguf writes it"
    if place.branch == "head":
        base = recipe.base
        wanted = base if base == "Q8_0" else "Q6_K"
        if place.item.tensor.shape[-1] % 256:
            wanted = "Q8_0"
        why = "output head" if place.kind == "output" else "token embedding that also serves as the output head"
        return wanted, f"{why}: {wanted}"
    if place.branch == "f16":
        return "F16", "not quantized by llama.cpp (position/type embeddings, others): F16"
    kind = place.kind
    special = recipe.rule(kind, place.i_layer, n_layers, place.i_v, options) if recipe.rule else None
    wanted = special or recipe.base
    return wanted, f"{kind}: {wanted}" if special else f"base type {wanted}"


def _as_gguf(item: _Item, type_name: str, rule: str) -> _Outcome:
    """``item`` as a ggml type, with llama.cpp's fallback when its rows do not fill whole blocks."""
    t = item.tensor
    row = t.shape[-1] if t.shape else 1
    dtype = DTYPES[type_name]
    if row % dtype.block_elements:
        fallback = K_FALLBACK.get(type_name)
        if fallback is not None and row % DTYPES[fallback].block_elements == 0:
            dtype, rule = DTYPES[fallback], f"{rule} -> {fallback}: row of {row} is not a multiple of 256"
        else:
            dtype, rule = F16, f"{rule} -> F16: row of {row} is not a multiple of {dtype.block_elements}"
    return _as(item, dtype, rule)


def _gguf_assumptions(recipe: Recipe, options: Options) -> list[str]:
    return [
        f"llama.cpp {recipe.name} recipe, simplified: {recipe.summary}",
        "output head Q6_K (Q8_0 for Q8_0, or when its rows are not a multiple of 256); token embedding at the "
        "base type (as the head when the model has no separate head)",
        "1-D tensors, norms and biases F32; position/type embeddings F16; no MoE, 70B or importance-matrix rules",
        "rows that are not a multiple of the block fall back as llama.cpp does (Q4_K->Q5_0, Q5_K->Q5_1, "
        "Q6_K->Q8_0, Q2_K/Q3_K/IQ4_XS->IQ4_NL), else F16",
        f"attn_v rules assume {options.n_gqa} query head(s) per key/value head",
    ]
