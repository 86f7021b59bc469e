"""Memory estimates for inference and training, from the inventory alone. Every formula's source is
in docs/memory.md; the assumptions each estimate made travel with it.

The fixed parts are exact: weights, master weights, gradients and optimizer state per parameter
tensor (Adafactor's factored moments depend on the shape; frozen and LoRA-base tensors have neither
gradients nor state). The dynamic parts reproduce what the real implementations keep, tensor by
tensor, rather than an idealised network:

- training activations: what autograd saves for backward in the transformers implementations
  (HF RMSNorm's fp32 upcast, composite activations such as GPT-2's ``gelu_new``, SwiGLU products,
  dropout masks, the residual stream's dtype, the fp32 log-softmax of HF's causal-LM loss), for the
  attention kernel PyTorch's SDPA would choose (``select_kernel``), and under autocast the
  per-consumer low-precision copies of each linear layer's input and of each weight;
- inference: a prefill forward: weights, the KV cache in the dtype actually used, the full-sequence
  logits, and the largest transient of one layer.

``training`` and ``inference`` return frozen records; `ckptscan.report.json` writes their JSON.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from ckptscan.analyze.architecture import Architecture
from ckptscan.analyze.parameters import Parameters
from ckptscan.analyze.reduction import Target
from ckptscan.errors import UsageError
from ckptscan.inventory import Inventory, Tensor

GIB = 1 << 30


@dataclass(frozen=True, slots=True)
class Precision:
    """A training precision: bytes per element of weights, master, gradients, states, activations."""

    name: str
    weight: int  # bytes per parameter of the weights the model holds
    master: int  # bytes per trainable parameter of a separate fp32 master copy (ZeRO-style)
    grad: int
    state: int  # bytes per optimizer-state element
    compute: int  # bytes per element of matmul inputs and outputs (activations)
    residual: int  # bytes per element of the residual stream (fp32 under autocast)
    autocast: bool  # torch.autocast: low-precision copies of weights and linear inputs are saved
    description: str


PRECISIONS = {
    p.name: p
    for p in (
        Precision("fp32", 4, 0, 4, 4, 4, 4, False, "fp32 weights, gradients, optimizer states and activations"),
        Precision("bf16-mixed", 4, 0, 4, 4, 2, 4, True,
                  "mixed precision (torch.autocast bf16; HF Trainer --bf16, Lightning bf16-mixed): fp32 weights, "
                  "gradients and optimizer states; matmuls in bf16, each saving bf16 copies of its weight and input"),
        Precision("fp16-mixed", 4, 0, 4, 4, 2, 4, True,
                  "mixed precision (torch.autocast fp16 + GradScaler; HF Trainer --fp16, Lightning 16-mixed): fp32 "
                  "weights, gradients and optimizer states; matmuls in fp16, saving fp16 copies of weight and input"),
        Precision("bf16-true", 2, 0, 2, 2, 2, 2, False,
                  "pure bf16 (Lightning bf16-true, model.to(bfloat16)): weights, gradients, optimizer states and "
                  "activations in bf16"),
        Precision("bf16-master", 2, 4, 2, 4, 2, 2, False,
                  "bf16 weights and gradients with fp32 master weights and fp32 optimizer states (DeepSpeed ZeRO "
                  "bf16, Megatron)"),
        Precision("fp16-master", 2, 4, 2, 4, 2, 2, False,
                  "fp16 weights and gradients with fp32 master weights and fp32 optimizer states (DeepSpeed ZeRO "
                  "fp16, Megatron)"),
    )
}  # fmt: skip
PRECISION_ALIASES = {"32": "fp32", "32-true": "fp32", "bf16": "bf16-mixed", "fp16": "fp16-mixed",
                     "16-mixed": "fp16-mixed", "pure-bf16": "bf16-true", "bf16-pure": "bf16-true",
                     "zero-bf16": "bf16-master", "deepspeed-bf16": "bf16-master", "zero-fp16": "fp16-master",
                     "deepspeed-fp16": "fp16-master"}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Optimizer:
    """How an optimizer's state is sized (per trainable tensor of n elements, state_bytes per element)."""

    name: str
    moments: int  # full-size state tensors per parameter (dense layout)
    step_bytes: int  # per-tensor step counter (PyTorch keeps a 4-byte step for Adam-family optimizers)
    layout: str  # "dense", "blockwise-8bit" (bitsandbytes) or "factored" (Adafactor)
    description: str


OPTIMIZER_TABLE = {
    o.name: o
    for o in (
        Optimizer("sgd", 0, 0, "dense", "SGD without momentum: no state"),
        Optimizer("sgd-momentum", 1, 0, "dense", "SGD with momentum: one momentum buffer per parameter"),
        Optimizer("adam", 2, 4, "dense", "Adam: two moments per parameter, plus a 4-byte step per tensor (PyTorch)"),
        Optimizer("adamw", 2, 4, "dense", "AdamW: two moments per parameter, plus a 4-byte step per tensor (PyTorch)"),
        Optimizer("adam-8bit", 2, 0, "blockwise-8bit", "8-bit Adam (bitsandbytes): two 1-byte states plus an fp32 "
                  "absmax per 2048-element block; tensors under 4096 elements keep 32-bit states"),
        Optimizer("adafactor", 1, 4, "factored", "Adafactor: factored second moment (rows + columns) for matrices, "
                  "full for vectors, no first moment; a 4-byte step per tensor (PyTorch)"),
        Optimizer("lion", 1, 0, "dense", "Lion: one momentum per parameter"),
    )
}  # fmt: skip
OPTIMIZERS = {name: o.description for name, o in OPTIMIZER_TABLE.items()}
OPTIMIZER_ALIASES = {"adamw-8bit": "adam-8bit", "adam8bit": "adam-8bit", "adamw8bit": "adam-8bit",
                     "paged-adamw-8bit": "adam-8bit", "momentum": "sgd-momentum"}  # fmt: skip
ATTENTION = {
    "auto": "the kernel PyTorch's scaled_dot_product_attention selects for this dtype, head layout, mask and device",
    "flash": "SDPA flash kernel: keeps q, k, v, the output and a per-head logsumexp; no s x s matrix",
    "efficient": "SDPA memory-efficient kernel: keeps q, k, v, the output and a per-head logsumexp; no s x s matrix",
    "math": "SDPA math path: keeps scaled q, head-expanded k and v, and the heads x s x s softmax",
    "eager": "transformers eager attention: keeps q, head-expanded k and v, the fp32 heads x s x s softmax (and its "
    "low-precision copy)",
}
ATTENTION_ALIASES = {"sdpa": "auto"}
OPTIMIZER_IMPLS = {
    "foreach": "PyTorch foreach step (the CUDA default): Adam/AdamW hold sqrt(v) for every trainable tensor at once",
    "for-loop": "PyTorch for-loop step (foreach=False): Adam/AdamW hold two temporaries of the largest tensor",
    "fused": "fused step kernel: no temporaries",
}
SHARDING = {
    "ddp": "DDP: every GPU holds all weights, gradients and optimizer state, plus gradient buckets of the same size",
    "zero1": "ZeRO-1: optimizer state (and master weights) sharded over the GPUs",
    "zero2": "ZeRO-2: optimizer state, master weights and gradients sharded",
    "zero3": "ZeRO-3 / FSDP full shard: weights, gradients, optimizer state sharded; one layer gathered at a time",
}
SHARDING_ALIASES = {"fsdp": "zero3", "fsdp-full": "zero3", "fsdp-grad-op": "zero2", "none": "ddp"}
DEVICES = ("cuda", "cpu")
BNB_BLOCK = 2048  # bitsandbytes blockwise 8-bit optimizer state block
BNB_MIN_8BIT = 4096  # bitsandbytes min_8bit_size: smaller tensors keep 32-bit state
NF4_BLOCK = 64  # bitsandbytes 4-bit blocks; absmax double-quantized to 8 bit in groups of 256
NF4_GROUP = 256
DEFAULT_TRAINING_SEQ = 2048
DEFAULT_INFERENCE_SEQ = 4096
LORA_DEFAULT_TARGETS = ("q_proj", "v_proj")  # peft's default for the Llama family
# activations implemented as Python composites in transformers keep several tensors of the MLP width;
# fused ones keep their input (and the next layer keeps their output); ReLU keeps only its output
ACTIVATION_TENSORS = {"relu": 1, "gelu_new": 5, "gelu_fast": 5, "gelu_python": 4, "quick_gelu": 3, "gated-gelu": 5}
HF_RMSNORM_TYPES = ("t5", "mt5", "umt5")  # besides every rmsnorm model: HF's RMSNorm upcasts to fp32
# attention whose output projection gets a fresh contiguous copy of the kernel's output (reshape of a view)
OUTPUT_COPY_TYPES = frozenset({"whisper"})
# encoders whose LayerNorm comes after the residual add (BERT): the layer input is the previous norm's output
POST_NORM_TYPES = frozenset(
    {
        "bert",
        "roberta",
        "distilbert",
        "electra",
        "xlm-roberta",
        "camembert",
        "albert",
        "deberta",
        "deberta-v2",
        "mpnet",
        "ernie",
        "data2vec-text",
        "nomic_bert",
    }
)


def _resolve(name: str, table: Mapping[str, Any], aliases: Mapping[str, str], what: str) -> str:
    key = aliases.get(name.lower(), name.lower())
    if key not in table:
        raise UsageError(f"unknown {what} {name!r} (choose from {', '.join([*table, *aliases])})")
    return key


def resolve_precision(name: str) -> Precision:
    return PRECISIONS[_resolve(name, PRECISIONS, PRECISION_ALIASES, "precision")]


def resolve_optimizer(name: str) -> str:
    return _resolve(name, OPTIMIZERS, OPTIMIZER_ALIASES, "optimizer")


def resolve_attention(name: str) -> str:
    return _resolve(name, ATTENTION, ATTENTION_ALIASES, "attention kernel")


def resolve_sharding(name: str) -> str:
    return _resolve(name, SHARDING, SHARDING_ALIASES, "sharding")


# -- options --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LoraOptions:
    """A LoRA (or QLoRA) fine-tune to estimate: rank, alpha, the modules it adapts, a 4-bit base."""

    rank: int = 8
    alpha: int = 16
    targets: tuple[str, ...] = LORA_DEFAULT_TARGETS  # module names (the last name component before .weight)
    quantized_base: bool = False  # QLoRA: the frozen base in 4-bit NF4 (bitsandbytes, double-quantized)


@dataclass(frozen=True, slots=True)
class TrainingOptions:
    """The training run to estimate: optimizer, precision, batch, sequence, kernel, sharding..."""

    optimizer: str = "adamw"
    precision: str = "bf16-mixed"
    batch: int = 1  # per GPU
    seq: int | None = None  # default: the model's context, at most DEFAULT_TRAINING_SEQ
    checkpointing: bool = False
    freeze: tuple[str, ...] = ()  # glob patterns over parameter names
    attention: str = "auto"  # auto (PyTorch's choice), flash, efficient, math, eager
    optimizer_impl: str = "foreach"  # PyTorch's implementation: foreach (CUDA default), for-loop, fused
    device: str = "cuda"  # cuda or cpu: kernel rules and dropout-mask width differ
    padded: bool = False  # batches carry a padding mask (no flash kernel; HF expands K/V heads)
    lora: LoraOptions | None = None
    gpus: int = 1
    sharding: str = "ddp"
    use_cache: bool = True  # HF models build a KV cache in training unless told not to (copies K and V)

    def validated(self) -> TrainingOptions:
        """Bad values are the caller's mistake: a UsageError naming the choices (as StatsOptions)."""
        resolve_precision(self.precision)
        resolve_optimizer(self.optimizer)
        resolve_attention(self.attention)
        resolve_sharding(self.sharding)
        if self.optimizer_impl not in OPTIMIZER_IMPLS:
            raise UsageError(
                f"unknown optimizer implementation {self.optimizer_impl!r} (choose from {', '.join(OPTIMIZER_IMPLS)})"
            )
        _check_positive(batch=self.batch, seq=self.seq)
        return self


@dataclass(frozen=True, slots=True)
class InferenceOptions:
    """The inference run to estimate: batch, sequence, KV-cache and compute widths, kernel."""

    batch: int = 1
    seq: int | None = None  # default: the model's context length (DEFAULT_INFERENCE_SEQ when unknown)
    kv_bytes: int | None = None  # bytes per cached key/value element; default: the compute dtype's
    compute_bytes: int | None = None  # default: the stored weights' float width (fp32 models compute in fp32)
    attention: str = "auto"
    device: str = "cuda"
    last_token_logits: bool = False  # generate() computes logits for the last position only
    padded: bool = False

    def validated(self) -> InferenceOptions:
        _check_positive(batch=self.batch, seq=self.seq, kv_bytes=self.kv_bytes, compute_bytes=self.compute_bytes)
        resolve_attention(self.attention)
        return self


def _check_positive(**values: int | None) -> None:
    for name, value in values.items():
        if value is not None and value < 1:
            raise UsageError(f"{name} must be 1 or more, not {value}")


@dataclass(frozen=True, slots=True)
class Line:
    """One line of an estimate: what it is, its bytes, and the formula that gave them."""

    name: str
    bytes: int
    formula: str


# -- the attention kernel -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Kernel:
    """The attention kernel an estimate assumes, whether K and V are repeated per head, and why."""

    name: str  # flash, efficient, math, eager
    expanded_kv: bool  # K and V repeated to every query head before the kernel (HF repeat_kv)
    reason: str


def select_kernel(
    device: str,
    compute_bytes: int,
    head_dim: int,
    grouped: bool,
    mask: bool,
    mask_requires_grad: bool = False,
    dropout: bool = False,
    requested: str = "auto",
) -> Kernel:
    """The SDPA backend PyTorch picks, as transformers calls it (integrations/sdpa_attention.py).

    transformers passes ``enable_gqa=True`` when there is no mask (and head_dim <= 256), else repeats
    K/V to every head. CUDA (aten/src/ATen/native/transformers/cuda/sdp_utils.cpp) tries flash, then
    memory-efficient, then math: flash needs fp16/bf16, head_dim <= 256 and a multiple of 8, and no
    attn_mask; memory-efficient takes fp32 too and masks, but not ``enable_gqa`` (the documented rule:
    grouped-query attention runs on flash or math only); math takes anything. CPU (sdp_utils_cpp.cpp)
    has flash (fp32/bf16/fp16, grouped heads, masks) and math; its flash kernel takes no dropout and
    no mask that needs a gradient (T5's learned position bias).
    """
    native_gqa = grouped and not mask and head_dim <= 256
    expanded = grouped and not native_gqa
    if requested == "eager":
        return Kernel("eager", grouped, "requested: transformers eager attention")
    if requested in ("flash", "efficient", "math"):
        return Kernel(requested, expanded, f"requested: SDPA {requested}")
    half = compute_bytes == 2
    if device == "cpu":
        if dropout:
            return Kernel("math", expanded, "CPU: the flash kernel takes no attention dropout")
        if mask_requires_grad:
            return Kernel("math", expanded, "CPU: the flash kernel takes no mask that needs a gradient")
        return Kernel("flash", expanded, "CPU flash kernel (fp32/bf16, grouped heads and masks supported)")
    why = []
    if not half:
        why.append("flash needs fp16/bf16")
    elif head_dim > 256 or head_dim % 8:
        why.append(f"flash needs head_dim <= 256 and a multiple of 8 (got {head_dim})")
    elif mask:
        why.append("flash takes no attention mask")
    else:
        return Kernel("flash", expanded, "CUDA flash: fp16/bf16, no mask" + (", grouped heads" if grouped else ""))
    if native_gqa:
        why.append("memory-efficient does not take grouped-query attention (enable_gqa)")
    elif head_dim % (8 if half else 4):
        why.append(f"memory-efficient needs head_dim aligned to 16 bytes (got {head_dim})")
    else:
        return Kernel("efficient", expanded, "CUDA memory-efficient: " + "; ".join(why))
    return Kernel("math", expanded, "CUDA math path: " + "; ".join(why))


# -- what a layer keeps for backward --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Term:
    """One kind of tensor a layer keeps: ``per_token`` bytes per token, plus ``per_token_s`` bytes per
    token per key position (attention matrices), plus ``fixed`` bytes per sequence."""

    name: str
    per_token: int = 0
    per_token_s: int = 0
    fixed: int = 0

    def bytes(self, batch: int, seq: int, keys: int | None = None) -> int:
        return batch * (seq * self.per_token + seq * (keys or seq) * self.per_token_s + self.fixed)


@dataclass(frozen=True, slots=True)
class _Ctx:
    """What a layer's saved tensors depend on besides the architecture (widths, kernel, trainable)."""

    compute: int
    residual: int
    autocast: bool
    mask: int  # bytes per dropout-mask element: 1 on CUDA (native_dropout), the tensor's width on CPU
    dropout: bool
    kernel: Kernel
    trainable: Callable[[str], bool]  # does this module (q_proj, gate_proj, ...) have a trainable weight?
    lora: LoraOptions | None
    norms_trainable: bool
    cache_copies: bool


def _family(arch: Architecture) -> str:
    if arch.model_type in ("gpt2",):
        return "gpt2"
    if arch.model_type in HF_RMSNORM_TYPES or arch.norm == "rmsnorm":
        return "rmsnorm"
    return "layernorm"


def _norm_terms(arch: Architecture, ctx: _Ctx, what: str) -> list[Term]:
    h = arch.hidden
    if arch.norm == "rmsnorm" or arch.model_type in HF_RMSNORM_TYPES:
        # HF RMSNorm: x.to(fp32) (saved by pow), rsqrt (per token), x * rsqrt (saved by the weight's mul)
        terms = [Term(f"{what} input (fp32)", 4 * h), Term(f"{what} rsqrt", 4)]
        if ctx.norms_trainable:
            terms.append(Term(f"{what} normalized", ctx.residual * h))
        return terms
    return [Term(f"{what} input", ctx.residual * h), Term(f"{what} mean + rstd", 8)]


def _inputs(ctx: _Ctx, h: int, consumers: Sequence[str], what: str) -> list[Term]:
    """A linear layer saves its input only when its weight needs a gradient; under autocast each one
    saves its own low-precision copy (autocast caches casts of weights, never of activations)."""
    terms: list[Term] = []
    saving = [c for c in consumers if ctx.trainable(c)]
    lora = [c for c in consumers if ctx.lora is not None and c in ctx.lora.targets]
    copies = len(set(saving) | set(lora)) if ctx.autocast else min(1, len(saving) + len(lora))
    if copies:
        terms.append(Term(f"{what} input" + (f" x {copies} casts" if copies > 1 else ""), copies * h * ctx.compute))
    if lora and ctx.lora is not None:
        terms.append(Term(f"LoRA A outputs ({len(lora)} modules)", len(lora) * ctx.lora.rank * ctx.compute))
    return terms


def _attention_terms(arch: Architecture, ctx: _Ctx, keys_from_encoder: bool = False) -> list[Term]:
    c, a, q, kv = ctx.compute, arch.heads, arch.q_dim, arch.kv_dim
    k = ctx.kernel
    kv_w = q if k.expanded_kv or k.name in ("math", "eager") else kv
    terms: list[Term] = []
    fused = _family(arch) == "gpt2"
    if fused:  # GPT-2's c_attn: q, k and v are views of one (q + 2kv) output
        terms.append(Term("fused q/k/v output", (q + 2 * kv) * c))
        if ctx.cache_copies:
            terms.append(Term("k, v copies (HF cache in training)", 2 * kv * c))
        if k.name in ("math", "eager"):
            terms.append(Term("head-expanded / scaled k, v", 2 * q * c))
    else:
        terms.append(Term("q (after rotary)" if arch.norm == "rmsnorm" else "q", q * c))
        kv_per = "k, v from the encoder" if keys_from_encoder else "k, v"
        if keys_from_encoder:
            terms.append(Term(kv_per, 0, 0))  # counted per encoder token by the caller
        else:
            terms.append(Term(kv_per + (" (expanded to every head)" if kv_w != kv else ""), 2 * kv_w * c))
    if k.name in ("flash", "efficient"):
        terms.append(Term("logsumexp (fp32)", 4 * a))
    elif k.name == "math":
        terms.append(Term("softmax (heads x s)", 0, a * c))
    else:
        terms.append(Term("softmax (fp32, heads x s)", 0, 4 * a))
        if c != 4:
            terms.append(Term("softmax cast", 0, a * c))
    if arch.attention_dropout > 0 and k.name in ("math", "eager"):
        terms.append(Term("attention dropout (mask + output)", 0, a * (ctx.mask + c)))
    terms.append(Term("attention output", q * c))
    if arch.model_type in OUTPUT_COPY_TYPES:
        terms.append(Term("attention output copy (output-projection input)", q * c))
    return terms


def _mlp_terms(arch: Architecture, ctx: _Ctx, ffn: int, prefix: str = "") -> list[Term]:
    c = ctx.compute
    act = arch.activation.lower()
    count = ACTIVATION_TENSORS.get(act, 2)
    down = "down_proj" if arch.gated_mlp else "fc2"
    if arch.gated_mlp:
        # act(gate) * up: gate output, act output, up output, and the product (the down projection's input)
        count = max(count, 2) + 2
    if not ctx.trainable(down) and not (ctx.lora and down in ctx.lora.targets) and count > 1 and act != "relu":
        count -= 1  # a frozen down projection does not keep its input
    return [Term(f"{prefix}MLP ({count} x ffn {ffn})", count * ffn * c)]


def _moe_terms(arch: Architecture, ctx: _Ctx) -> list[Term]:
    """transformers' grouped experts: per routed token slot, the gathered input, gate/up output, act
    output, product, down output and its routing weight, plus three int64 index vectors; the router
    keeps its fp32 softmax and the top-k indices and weights."""
    # under autocast the grouped experts compute in fp32 (grouped_mm is not on autocast's list)
    c, h, k = (4 if ctx.autocast else ctx.compute), arch.hidden, arch.experts_per_token or 1
    f = arch.expert_ffn or arch.ffn
    experts = arch.experts or 1
    terms = [
        Term(f"router (softmax over {experts} experts, top-{k})", 4 * experts + 8 * k + 4 + 4 * k),
        Term(f"experts ({k} per token: input, gate/up, act, product, output)", k * ((2 * h + 4 * f) * c + 4 + 24)),
    ]
    if arch.shared_experts and arch.shared_expert_ffn:
        terms += _mlp_terms(replace(arch, gated_mlp=True), ctx, arch.shared_expert_ffn, "shared-expert ")
        terms.append(Term("shared-expert gate", 2 * c))
    return terms


def layer_terms(arch: Architecture, ctx: _Ctx, moe: bool = False, cross: bool = False) -> list[Term]:
    """What one transformer layer keeps for backward, per token (see docs/memory.md for each line)."""
    h, c = arch.hidden, ctx.compute
    mask = [Term("dropout mask", h * ctx.mask)] if ctx.dropout else []
    post_norm = arch.model_type in POST_NORM_TYPES
    fused = _family(arch) == "gpt2"
    attn_in = ("c_attn",) if fused else ("q_proj", "k_proj", "v_proj")
    mlp_in = ("gate_proj", "up_proj") if arch.gated_mlp else ("fc1",)
    terms: list[Term] = []
    if not post_norm:
        terms += _norm_terms(arch, ctx, "attention norm")
    terms += _inputs(ctx, h, attn_in, "q/k/v projection")
    terms += _attention_terms(arch, ctx)
    terms += mask
    if post_norm:
        terms += _norm_terms(arch, ctx, "attention norm")
    if cross:
        if not post_norm:
            terms += _norm_terms(arch, ctx, "cross-attention norm")
        terms += _inputs(ctx, h, ("q_proj",), "cross-attention q projection")
        terms.append(Term("cross-attention q", arch.q_dim * c))
        copies = 2 if arch.model_type in OUTPUT_COPY_TYPES else 1
        terms.append(Term("cross-attention logsumexp / output", 4 * arch.heads + copies * arch.q_dim * c))
        terms += mask
    if not post_norm:
        terms += _norm_terms(arch, ctx, "MLP norm")
    if moe:
        terms += _inputs(ctx, h, ("router",), "router")
        terms += _moe_terms(arch, ctx)
    else:
        terms += _inputs(ctx, h, mlp_in, "MLP")
        terms += _mlp_terms(arch, ctx, arch.ffn)
    terms += mask
    if post_norm:
        terms += _norm_terms(arch, ctx, "MLP norm")
    return terms


def _sum(terms: Sequence[Term], batch: int, seq: int, keys: int | None = None) -> int:
    return sum(t.bytes(batch, seq, keys) for t in terms)


# -- records ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KVCache:
    """The KV cache of an inference estimate: bytes, per token, batch, context, element width."""

    bytes: int
    per_token_bytes: int
    batch: int
    context: int
    bytes_per_element: int
    formula: str
    cross_attention_bytes: int = 0


@dataclass(frozen=True, slots=True)
class ActivationEstimate:
    """What a training step keeps for backward: in total, per layer, and by kind."""

    bytes: int
    per_layer_bytes: int
    layers: int
    logits_bytes: int
    loss_gradient_bytes: int
    held_at_loss_bytes: int
    held_late_bytes: int
    formula: str
    korthikanti_per_layer_bytes: int
    backward_transient_bytes: int  # gradients in flight in the last layer's MLP when backward starts
    kernel: Kernel
    terms: tuple[Line, ...]  # every kind of saved tensor, summed over the layers
    assumptions: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Fit:
    """Whether an estimate fits a GPU, and the largest batch and sequence that do."""

    gpu: str
    capacity_bytes: int
    reserve_bytes: int  # CUDA context, library workspaces and allocator slack kept aside
    needed_bytes: int
    fits: bool
    margin_bytes: int  # usable - needed (negative when it does not fit)
    max_batch: int | None  # at the chosen sequence; None when even batch 1 does not fit
    max_seq: int | None  # at the chosen batch; None when even 1 token does not fit
    seq_limit: int  # the largest sequence searched (the model's context, or the option)


@dataclass(frozen=True, slots=True)
class InferenceEstimate:
    """An inference memory estimate (one prefill forward), per reduction target."""

    weights_bytes: int | None
    kv_cache: KVCache | None
    activations_bytes: int  # logits + the largest transient of one layer during prefill
    logits_bytes: int
    total_bytes: int
    by_target: dict[str, int]
    batch: int
    seq: int | None
    compute_bytes: int
    kernel: str | None
    assumptions: tuple[str, ...]
    fit: Fit | None = None


@dataclass(frozen=True, slots=True)
class TrainingEstimate:
    """A training memory estimate: every line, the peak, and the run it assumes."""

    optimizer: str
    precision: str
    batch: int
    seq: int | None
    checkpointing: bool
    attention: str  # the kernel assumed (flash, efficient, math, eager)
    attention_requested: str
    freeze: tuple[str, ...]
    parameters: int
    trainable_parameters: int
    lines: tuple[Line, ...]
    total_bytes: int  # the peak
    peak_formula: str
    optimizer_impl: str
    step_temporaries_bytes: int
    activations: ActivationEstimate | None
    gpus: int
    sharding: str
    lora: LoraOptions | None
    device: str
    assumptions: tuple[str, ...]
    fit: Fit | None = None

    @property
    def sum_bytes(self) -> int:
        return sum(line.bytes for line in self.lines)

    def line(self, name: str) -> int:
        return sum(line.bytes for line in self.lines if line.name == name)


# -- inference ------------------------------------------------------------------------------------


def _stored_float_bytes(targets: Sequence[Target]) -> int:
    """The width the model computes in: its stored weights' most common float dtype."""
    dedupe = next((t for t in targets if t.name == "dedupe"), None)
    if dedupe is None:
        return 2
    widths = {"F32": 4, "F64": 4, "F16": 2, "BF16": 2}
    ranked = sorted(((c.bytes, widths[name]) for name, c in dedupe.by_dtype.items() if name in widths), reverse=True)
    return ranked[0][1] if ranked else 2


def inference(
    arch: Architecture | None, targets: Sequence[Target], options: InferenceOptions | None = None
) -> InferenceEstimate:
    """A prefill forward (``model(input_ids, use_cache=True)`` under no_grad): weights + the KV cache of
    every layer + the larger of one layer's transient tensors and the logits stage."""
    options = (options or InferenceOptions()).validated()
    weights = {t.name: t.tensor_bytes for t in targets if t.name not in ("strip",)}
    stored = weights.pop("dedupe", None)
    c = options.compute_bytes or _stored_float_bytes(targets)
    kv_el = options.kv_bytes or c
    assumptions = [f"prefill forward in {c * 8}-bit compute; weights: tensor bytes at each target (reduction "
                   "section); allocator rounding and the CUDA context not included"]  # fmt: skip
    kv: KVCache | None = None
    activations = logits = 0
    seq = None
    kernel_name = None
    if arch is not None:
        default_seq = arch.encoder_seq if arch.kind == "encoder-only" and arch.encoder_seq else None
        seq = options.seq or default_seq or arch.context or DEFAULT_INFERENCE_SEQ
        b = options.batch
        if arch.kind != "encoder-only":
            per_token = 2 * arch.layers * arch.kv_dim * kv_el
            cross = 0
            if arch.kind == "encoder-decoder":
                enc = arch.encoder_seq or seq
                cross = 2 * arch.layers * arch.kv_dim * kv_el * enc * b
            kv = KVCache(
                bytes=per_token * seq * b + cross,
                per_token_bytes=per_token,
                batch=b,
                context=seq,
                bytes_per_element=kv_el,
                formula=f"2 x {arch.layers} layers x {arch.kv_heads} kv heads x {arch.head_dim} head dim x "
                f"{seq:,} tokens x {b} x {kv_el} B" + (" + the cross-attention cache" if cross else ""),
                cross_attention_bytes=cross,
            )
        grouped = arch.kv_heads < arch.heads
        kernel = select_kernel(options.device, c, arch.head_dim, grouped, options.padded,
                               requested=resolve_attention(options.attention))  # fmt: skip
        kernel_name = kernel.name
        transient, logits = _prefill_transient(arch, c, b, seq, kernel, options.last_token_logits)
        activations = max(transient, logits)
        if options.seq is None and arch.context is None and default_seq is None:
            assumptions.append(f"context length unknown: {DEFAULT_INFERENCE_SEQ} tokens")
        if options.seq and arch.context and options.seq > arch.context:
            assumptions.append(f"--seq {options.seq:,} exceeds the model's context ({arch.context:,})")
        if arch.vocab and arch.kind != "encoder-only":
            assumptions.append(
                "logits for the last token only (generate()'s logits_to_keep=1)" if options.last_token_logits
                else f"logits for every position (b x s x vocab at {c} B), as model(input_ids) returns them; "
                "generate() keeps only the last token's (--last-token-logits)"
            )  # fmt: skip
        assumptions.append(f"attention: {kernel.name} ({kernel.reason})")
        assumptions.extend(arch.assumptions)
    else:
        assumptions.append("architecture unknown (no config.json, GGUF metadata or transformer tensor names): "
                           "no KV cache or activation estimate")  # fmt: skip
    dynamic = (kv.bytes if kv else 0) + activations
    return InferenceEstimate(
        weights_bytes=stored,
        kv_cache=kv,
        activations_bytes=activations,
        logits_bytes=logits,
        total_bytes=(stored or 0) + dynamic,
        by_target={name: nbytes + dynamic for name, nbytes in weights.items()},
        batch=options.batch,
        seq=seq,
        compute_bytes=c,
        kernel=kernel_name,
        assumptions=tuple(assumptions),
    )


def _prefill_transient(arch: Architecture, c: int, b: int, s: int, kernel: Kernel, last_token: bool) -> tuple[int, int]:
    """(the largest transient of one layer, the logits stage), in bytes. Under no_grad a tensor lives
    until its last use: the MLP holds act(gate), up and their product at once; attention holds q, k, v
    and the output, and on the math path the heads x s x s scores and softmax; the residual stream and
    the norm's output (with HF RMSNorm's fp32 copy) live throughout."""
    h, f, a = arch.hidden, arch.ffn, arch.heads
    if arch.moe:
        f = (arch.expert_ffn or f) * (arch.experts_per_token or 1) + (arch.shared_expert_ffn or 0)
    # the layer's input (its caller still holds it), the residual after attention, the norm's output and
    # the sublayer's output before its residual add
    base = 4 * h * c + (4 * h if arch.norm == "rmsnorm" else 0)
    mlp = (3 * f if arch.gated_mlp else 2 * f) * c
    attention = (2 * arch.q_dim + 2 * arch.kv_dim) * c
    if kernel.expanded_kv or kernel.name in ("math", "eager"):
        attention += 2 * (arch.q_dim - arch.kv_dim) * c
    square = 0
    if kernel.name == "math":
        square = 2 * a * c
    elif kernel.name == "eager":
        square = a * (c + 4 + (c if c != 4 else 0))
    layer = b * s * (base + max(mlp, attention)) + b * s * s * square
    if arch.modality == "vision" and arch.image_size:
        # the images stay alive (the caller holds them) and the patch embedding briefly holds two copies
        images = b * 3 * arch.image_size**2 * 4
        layer = images + max(layer, 2 * b * s * h * c)
    positions = 1 if last_token else s
    # beside the logits: the final hidden states; an MLM head's transform, or an encoder-decoder's encoder
    # output (kept for cross-attention) and the decoder's last residual
    hidden = 1 if arch.kind == "decoder-only" else 2
    logits = b * positions * arch.vocab * c + b * s * hidden * h * c if arch.vocab else 0
    if logits and arch.kind == "encoder-decoder":
        logits += b * (arch.encoder_seq or s) * h * c
    return layer, logits


# -- training -------------------------------------------------------------------------------------


def optimizer_state_bytes(optimizer: str, tensor: Tensor, state_bytes: int) -> int:
    spec = OPTIMIZER_TABLE.get(optimizer)
    if spec is None:
        raise UsageError(f"unknown optimizer {optimizer!r} (choose from {', '.join(OPTIMIZER_TABLE)})")
    n = tensor.elements
    if spec.layout == "blockwise-8bit":
        if n < BNB_MIN_8BIT:
            return spec.moments * n * 4
        return spec.moments * n + spec.moments * 4 * -(-n // BNB_BLOCK)
    if spec.layout == "factored" and len(tensor.shape) >= 2:
        shape = tensor.shape
        rows = _product(shape[:-1])
        cols = _product(shape[:-2]) * shape[-1]
        return (rows + cols) * state_bytes + spec.step_bytes
    return spec.moments * n * state_bytes + spec.step_bytes


def step_temporaries(optimizer: str, impl: str, trainable: Sequence[Tensor], state_bytes: int) -> int:
    """Bytes PyTorch's Adam/AdamW step allocates for a moment (torch/optim/adam.py): the foreach path
    computes ``sqrt(exp_avg_sq)`` for every tensor at once; the for-loop path ``exp_avg_sq.sqrt() /
    bias_correction`` (two temporaries) for one tensor at a time. Other optimizers update in place."""
    if optimizer not in ("adam", "adamw") or impl == "fused" or not trainable:
        return 0
    if impl == "foreach":
        return sum(t.elements for t in trainable) * state_bytes
    return 2 * max(t.elements for t in trainable) * state_bytes


def _product(values: Sequence[int]) -> int:
    out = 1
    for v in values:
        out *= v
    return out


def frozen_names(names: Sequence[str], patterns: Sequence[str]) -> set[str]:
    return {n for n in names if any(fnmatch.fnmatchcase(n, p) for p in patterns)}


def nf4_bytes(elements: int) -> int:
    """bitsandbytes NF4 with double quantization: 4 bits per weight, an 8-bit absmax per 64 weights,
    an fp32 scale and offset per 256 absmax values."""
    blocks = -(-elements // NF4_BLOCK)
    return -(-elements // 2) + blocks + 8 * -(-blocks // NF4_GROUP)


_NUMBER = re.compile(r"[./](\d+)[./]")


def _module(name: str) -> str:
    """The module a parameter belongs to: ``model.layers.0.self_attn.q_proj.weight`` -> ``q_proj``."""
    parts = name.split(".")
    return parts[-2] if len(parts) >= 2 else name


def _lora_tensors(tensors: Sequence[Tensor], lora: LoraOptions) -> list[tuple[str, int]]:
    """The adapters peft adds: for each target linear, A (rank x in) and B (out x rank)."""
    out = []
    for t in tensors:
        if len(t.shape) == 2 and t.name.endswith(".weight") and _module(t.name) in lora.targets:
            rows, cols = t.shape
            out += [(t.name + ".lora_A", lora.rank * cols), (t.name + ".lora_B", rows * lora.rank)]
    return out


@dataclass(frozen=True, slots=True)
class _Static:
    """The parts of a training estimate that batch and sequence do not change."""

    lines: tuple[Line, ...]
    n_all: int
    n_train: int
    temporaries: int
    trainable: tuple[Tensor, ...]
    assumptions: tuple[str, ...]


def training(
    inventory: Inventory,
    parameters: Parameters,
    arch: Architecture | None,
    options: TrainingOptions | None = None,
    embeddings: frozenset[str] = frozenset(),
    roles: Mapping[str, str] | None = None,
) -> TrainingEstimate:
    """``embeddings``: names of the embedding tensors; ``roles``: parameter name -> role (weight,
    output_head, norm, ...), to find the weights a matmul uses (autocast copies them)."""
    options = (options or TrainingOptions()).validated()
    precision = resolve_precision(options.precision)
    optimizer = resolve_optimizer(options.optimizer)
    sharding = resolve_sharding(options.sharding)
    requested = resolve_attention(options.attention)
    tensors = [inventory.tensors[i] for i in parameters.counted]
    static = _static(tensors, arch, options, precision, optimizer, sharding, roles or {})
    lines = list(static.lines)
    assumptions = list(static.assumptions)
    activations = None
    seq = options.seq
    kernel_name = requested
    trainable_names = {t.name for t in static.trainable}
    if arch is not None and (static.trainable or options.lora):
        seq = seq or min(arch.context or DEFAULT_TRAINING_SEQ, DEFAULT_TRAINING_SEQ)
        if arch.context and seq > arch.context:
            assumptions.append(f"--seq {seq:,} exceeds the model's context ({arch.context:,})")
        first = _first_trainable_layer(static.trainable, embeddings, arch.layers, options.lora is not None)
        activations = activation_estimate(arch, options.batch, seq, precision, options, tensors, trainable_names,
                                          embeddings, max(0, arch.layers - first))  # fmt: skip
        kernel_name = activations.kernel.name
        lines.append(Line("activations", activations.bytes, activations.formula))
        if activations.loss_gradient_bytes:
            lines.append(Line("loss_gradients", activations.loss_gradient_bytes,
                              "2 x 4*s*b*V: the fp32 gradients of the log-softmax and of the logits, alive at "
                              "the start of backward"))  # fmt: skip
        assumptions.extend(activations.assumptions)
        assumptions.extend(arch.assumptions)
    elif arch is None:
        assumptions.append("architecture unknown (no config.json, GGUF metadata or transformer tensor names): "
                           "activations not estimated")  # fmt: skip
    peak, peak_formula = _peak(lines, activations, static.temporaries)
    assumptions.append("peak: backward frees each layer's activations as its gradients appear, so the peak is when "
                       "backward starts, when it ends, or during the optimizer step; allocator rounding, library "
                       "workspaces and the CUDA context not included")  # fmt: skip
    return TrainingEstimate(
        optimizer=optimizer,
        precision=precision.name,
        batch=options.batch,
        seq=seq,
        checkpointing=options.checkpointing,
        attention=kernel_name,
        attention_requested=requested,
        freeze=tuple(options.freeze),
        parameters=static.n_all,
        trainable_parameters=static.n_train,
        lines=tuple(lines),
        total_bytes=peak,
        peak_formula=peak_formula,
        optimizer_impl=options.optimizer_impl,
        step_temporaries_bytes=static.temporaries,
        activations=activations,
        gpus=options.gpus,
        sharding=sharding,
        lora=options.lora,
        device=options.device,
        assumptions=tuple(assumptions),
    )


def _peak(lines: Sequence[Line], activations: ActivationEstimate | None, temporaries: int) -> tuple[int, str]:
    by_name: dict[str, int] = {}
    for line in lines:
        by_name[line.name] = by_name.get(line.name, 0) + line.bytes
    static = sum(by_name.get(n, 0) for n in ("weights", "master_weights", "optimizer_state", "gathered_layer"))
    grads = by_name.get("gradients", 0) + by_name.get("gradient_buckets", 0)
    copies = by_name.get("weight_copies", 0)
    if activations is not None:
        start = max(activations.loss_gradient_bytes, activations.backward_transient_bytes)
        at_loss = activations.held_at_loss_bytes + start + copies
        late = grads + max(activations.held_late_bytes, temporaries)
        return static + max(at_loss, late), (
            "weights + master + optimizer state + max(activations and weight copies held when backward starts + "
            "max(loss gradients, the last MLP's gradients in flight), "
            "gradients + max(what backward holds at its end, optimizer-step temporaries))"
        )
    return static + grads + temporaries, (
        "weights + master + optimizer state + gradients + optimizer-step temporaries (activations unknown)"
    )


def _static(
    tensors: Sequence[Tensor],
    arch: Architecture | None,
    options: TrainingOptions,
    precision: Precision,
    optimizer: str,
    sharding: str,
    roles: Mapping[str, str],
) -> _Static:
    lora = options.lora
    frozen = frozen_names([t.name for t in tensors], options.freeze)
    if arch is not None and arch.model_type == "whisper":  # sinusoidal encoder positions: requires_grad=False
        frozen |= {t.name for t in tensors if "encoder.embed_positions" in t.name}
    if lora is not None:
        frozen = {t.name for t in tensors}  # peft freezes the whole base model
    trainable = [t for t in tensors if t.name not in frozen]
    n_all = sum(t.elements for t in tensors)
    n = max(1, options.gpus)
    shard = {"ddp": (1, 1, 1), "zero1": (1, 1, n), "zero2": (1, n, n), "zero3": (n, n, n)}[sharding]
    assumptions = [precision.description, OPTIMIZERS[optimizer]]
    lines: list[Line] = []
    train_tensors: list[Tensor] = list(trainable)
    adapters: list[tuple[str, int]] = []
    if lora is not None:
        adapters = _lora_tensors(tensors, lora)
        if lora.quantized_base:
            linear = [t for t in tensors if _linear(t, roles)]
            other = [t for t in tensors if not _linear(t, roles)]
            q = sum(nf4_bytes(t.elements) for t in linear)
            lines.append(Line("weights", q // shard[0], f"{sum(t.elements for t in linear):,} linear weights in NF4 "
                              "(4 bit + double-quantized absmax per 64)"))  # fmt: skip
            n_other = sum(t.elements for t in other)
            lines.append(Line("weights", n_other * 2 // shard[0],
                              f"{n_other:,} embedding/norm/head parameters in bf16"))  # fmt: skip
        else:
            lines.append(Line("weights", n_all * precision.weight // shard[0],
                              f"{n_all:,} frozen base parameters x {precision.weight} B"))  # fmt: skip
        n_adapt = sum(e for _, e in adapters)
        lines.append(Line("weights", n_adapt * precision.weight,
                          f"{n_adapt:,} LoRA parameters (rank {lora.rank}, {', '.join(lora.targets)}) x "
                          f"{precision.weight} B"))  # fmt: skip
        train_tensors = [replace(tensors[0], name=n, shape=(e,), elements=e, nbytes=e) for n, e in adapters]
    else:
        split = f" / {n} GPUs" if shard[0] > 1 else ""
        lines.append(Line("weights", n_all * precision.weight // shard[0],
                          f"{n_all:,} parameters x {precision.weight} B{split}"))  # fmt: skip
    n_train = sum(t.elements for t in train_tensors)
    if precision.master:
        lines.append(Line("master_weights", n_train * precision.master // shard[2],
                          f"{n_train:,} trainable x {precision.master} B (fp32 copy)"
                          + (f" / {n} GPUs" if shard[2] > 1 else "")))  # fmt: skip
    per_gpu = f" / {n} GPUs" if shard[1] > 1 else ""
    lines.append(Line("gradients", n_train * precision.grad // shard[1],
                      f"{n_train:,} trainable x {precision.grad} B{per_gpu}"))  # fmt: skip
    if sharding == "ddp" and n > 1:
        lines.append(Line("gradient_buckets", n_train * precision.grad,
                          "DDP reduction buckets (gradient_as_bucket_view=False, the default)"))  # fmt: skip
    state = sum(optimizer_state_bytes(optimizer, t, precision.state) for t in train_tensors)
    width = "" if optimizer in ("sgd", "adam-8bit") else f"; states at {precision.state} B"
    lines.append(Line("optimizer_state", state // shard[2], OPTIMIZERS[optimizer] + width
                      + (f" / {n} GPUs" if shard[2] > 1 else "")))  # fmt: skip
    if sharding == "zero3" and n > 1 and arch is not None and arch.layers:
        per_layer = n_all * precision.weight // max(1, arch.layers + arch.encoder_layers)
        lines.append(Line("gathered_layer", 2 * per_layer, "ZeRO-3/FSDP: one layer's full weights gathered, and the "
                          "next one prefetched"))  # fmt: skip
    if precision.autocast and arch is not None:
        # transformers' grouped experts (3-D expert weights) run outside autocast's op list: no copies
        matmul = sum(t.elements for t in tensors if _linear(t, roles) and not _expert(t))
        if (
            arch.tie_embeddings is not False
            and arch.vocab
            and not any(
                roles.get(t.name) == "output_head" and len(t.shape) >= 2 and arch.vocab in t.shape for t in tensors
            )
        ):
            matmul += arch.vocab * arch.hidden  # the tied head's matmul casts the embedding
        if lora is not None:
            matmul += sum(e for _, e in adapters)
        lines.append(Line("weight_copies", matmul * precision.compute,
                          f"{matmul:,} matmul weights x {precision.compute} B: autocast's low-precision copies, "
                          "saved for backward"))  # fmt: skip
    temporaries = step_temporaries(optimizer, options.optimizer_impl, train_tensors, precision.state) // shard[2]
    if optimizer in ("adam", "adamw"):
        assumptions.append(OPTIMIZER_IMPLS[options.optimizer_impl])
    if n > 1 or sharding != "ddp":
        assumptions.append(f"{n} GPUs, per-GPU figures; {SHARDING[sharding]}; --batch is per GPU")
    if lora is not None:
        assumptions.append(f"LoRA rank {lora.rank} (alpha {lora.alpha}) on {', '.join(lora.targets)}: the base is "
                           "frozen (no gradients or state); adapters train" + (", base in 4-bit NF4 (QLoRA)"
                           if lora.quantized_base else ""))  # fmt: skip
    elif options.freeze:
        assumptions.append(f"frozen by {', '.join(options.freeze)}: {len(frozen):,} tensors, "
                           f"{n_all - n_train:,} parameters without gradients or optimizer state")  # fmt: skip
    return _Static(tuple(lines), n_all, n_train, temporaries, tuple(train_tensors), tuple(assumptions))


def _expert(t: Tensor) -> bool:
    return ".experts." in f".{t.name}"


def _linear(t: Tensor, roles: Mapping[str, str]) -> bool:
    role = roles.get(t.name, "weight")
    return role in ("weight", "output_head") and len(t.shape) >= 2


def _first_trainable_layer(trainable: Sequence[Tensor], embeddings: frozenset[str], n_layers: int, lora: bool) -> int:
    """Layers before the first trainable one keep no activations: no gradient flows into them."""
    if lora:
        return 0  # adapters in every layer
    firsts = []
    for t in trainable:
        found = _NUMBER.search(f".{t.name}.")
        if found:
            firsts.append(int(found.group(1)))
        elif t.name in embeddings:
            return 0  # a trainable embedding needs the gradient through every layer
    return min(firsts, default=n_layers)


def _dropout_active(arch: Architecture) -> bool:
    return arch.dropout > 0


def activation_estimate(
    arch: Architecture,
    batch: int,
    seq: int,
    precision: Precision,
    options: TrainingOptions,
    tensors: Sequence[Tensor] = (),
    trainable_names: set[str] | frozenset[str] = frozenset(),
    embeddings: frozenset[str] = frozenset(),
    layers: int | None = None,
) -> ActivationEstimate:
    """Bytes the model keeps for backward, tensor kind by tensor kind (docs/memory.md)."""
    b, s = batch, seq
    layers = arch.layers if layers is None else layers
    c, r = precision.compute, precision.residual
    dropout = _dropout_active(arch)
    mask = 1 if options.device == "cuda" else c
    lora = options.lora
    by_module: dict[str, bool] = {}
    for t in tensors:
        if len(t.shape) >= 2:
            m = _module(t.name)
            by_module[m] = by_module.get(m, False) or t.name in trainable_names
    known = bool(by_module)

    def trainable(module: str) -> bool:
        if lora is not None:
            return False
        if module in by_module:
            return by_module[module]
        return not known or bool(trainable_names)

    norms = lora is None and (not known or any(t.name in trainable_names and len(t.shape) == 1 for t in tensors))
    grouped = arch.kv_heads < arch.heads
    t5 = arch.model_type in HF_RMSNORM_TYPES
    attn_dropout = arch.attention_dropout > 0
    kernel = select_kernel(options.device, c, arch.head_dim, grouped, options.padded or t5, t5, attn_dropout,
                           resolve_attention(options.attention))  # fmt: skip
    ctx = _Ctx(c, r, precision.autocast, mask, dropout, kernel, trainable, lora, norms,
               options.use_cache and not options.checkpointing and arch.kind != "encoder-only")  # fmt: skip
    dense_layers = min(layers, arch.dense_layers) if arch.moe else layers
    moe_layers = layers - dense_layers if arch.moe else 0
    dense = layer_terms(arch, ctx)
    moe = layer_terms(arch, ctx, moe=True) if moe_layers else []
    per_layer = _sum(moe or dense, b, s)
    encoder: list[Term] = []
    enc_seq = s
    cross_kv = 0
    if arch.kind == "encoder-decoder":
        enc_seq = arch.encoder_seq or s
        enc_ctx = replace(ctx, cache_copies=False, kernel=select_kernel(
            options.device, c, arch.head_dim, grouped, options.padded or t5, t5, arch.attention_dropout > 0,
            resolve_attention(options.attention)))  # fmt: skip
        encoder = layer_terms(arch, enc_ctx)
        dec = layer_terms(arch, ctx, cross=True)
        dense = dec
        # cross-attention K and V: per decoder layer, over the encoder's tokens
        cross_kv = arch.layers * b * enc_seq * 2 * arch.kv_dim * c
    terms_total: dict[str, int] = {}
    for term in dense:
        terms_total[term.name] = terms_total.get(term.name, 0) + term.bytes(b, s) * dense_layers
    for term in moe:
        terms_total[term.name] = terms_total.get(term.name, 0) + term.bytes(b, s) * moe_layers
    for term in encoder:
        key = "encoder " + term.name
        terms_total[key] = terms_total.get(key, 0) + term.bytes(b, enc_seq) * arch.encoder_layers
    if cross_kv:
        terms_total["cross-attention k, v (over encoder tokens)"] = cross_kv
    outside = _outside_terms(arch, ctx, b, s, enc_seq, embeddings, trainable_names, tensors)
    for name, nbytes in outside:
        terms_total[name] = terms_total.get(name, 0) + nbytes
    logits = 4 * b * s * arch.vocab if arch.vocab else 0
    layers_bytes = _sum(dense, b, s) * dense_layers + _sum(moe, b, s) * moe_layers
    enc_bytes = _sum(encoder, b, enc_seq) * arch.encoder_layers + cross_kv
    emb_frozen = lora is not None or (bool(tensors) and not any(n in trainable_names for n in embeddings))
    if emb_frozen and (arch.norm == "rmsnorm" or t5) and layers == arch.layers:
        # the first norm's input comes from a frozen embedding: nothing upstream needs its fp32 copy or rsqrt
        outside.append(("first norm: input and rsqrt not kept (frozen embedding)", -b * s * (4 * arch.hidden + 4)))
    outside_bytes = sum(nbytes for _, nbytes in outside)
    layer_input = b * s * arch.hidden * r
    if options.checkpointing:
        n_ckpt = layers + (arch.encoder_layers if encoder else 0)
        recompute = max(per_layer, _sum(encoder, b, enc_seq) if encoder else 0)
        held_at_loss = n_ckpt * layer_input + outside_bytes
        held_late = n_ckpt * layer_input + recompute
        total = held_at_loss + recompute
        formula = (f"{n_ckpt} layers x s*b*h*{r} (checkpointed inputs) + one layer recomputed ({recompute:,} B) + "
                   "embeddings, final norm, head input and the fp32 log-softmax")  # fmt: skip
        terms_total = {"checkpointed layer inputs": n_ckpt * layer_input, "one layer recomputed": recompute,
                       **dict(outside)}  # fmt: skip
    else:
        total = held_at_loss = layers_bytes + enc_bytes + outside_bytes
        held_late = 0
        formula = f"{layers} layers x {per_layer:,} B" + (f" + encoder {enc_bytes:,} B" if encoder else "") + (
            " + embeddings, final norm, head input and the fp32 log-softmax")  # fmt: skip
    h, a = arch.hidden, arch.heads
    korthikanti = b * s * h * 34 + 5 * a * s * s * b
    assumptions = [
        f"attention kernel: {kernel.name} ({kernel.reason})",
        f"activations in {c * 8}-bit, residual stream in {r * 8}-bit; " + (
            "HF RMSNorm keeps an fp32 copy of its input, the rsqrt and the normalized input"
            if arch.norm == "rmsnorm" or t5 else "LayerNorm keeps its input, mean and rstd"),
        (f"dropout masks counted ({mask} B each, {'CUDA native_dropout' if mask == 1 else 'CPU: the tensor width'})"
         if dropout else "no dropout (the config sets none)"),
        f"batch {batch}, sequence {seq:,}" + (", gradient checkpointing per layer" if options.checkpointing else ""),
    ]  # fmt: skip
    if precision.autocast:
        assumptions.append("autocast: each linear layer saves its own low-precision copy of its input")
    if ctx.cache_copies and _family(arch) == "gpt2":
        assumptions.append("HF builds a KV cache in training (use_cache): K and V copies kept")
    return ActivationEstimate(
        bytes=total,
        per_layer_bytes=per_layer,
        layers=layers,
        logits_bytes=logits,
        loss_gradient_bytes=2 * logits,
        held_at_loss_bytes=held_at_loss,
        held_late_bytes=held_late,
        formula=formula,
        korthikanti_per_layer_bytes=korthikanti,
        backward_transient_bytes=b * s * (2 if arch.gated_mlp else 1) * (arch.expert_ffn or arch.ffn) * c
        if layers
        else 0,
        kernel=kernel,
        terms=tuple(Line(name, nbytes, "") for name, nbytes in terms_total.items() if nbytes),
        assumptions=tuple(assumptions),
    )


def _outside_terms(
    arch: Architecture,
    ctx: _Ctx,
    b: int,
    s: int,
    enc_seq: int,
    embeddings: frozenset[str],
    trainable_names: set[str] | frozenset[str],
    tensors: Sequence[Tensor],
) -> list[tuple[str, int]]:
    """Embeddings, the final norm, the head and the loss."""
    h, c, r = arch.hidden, ctx.compute, ctx.residual
    out: list[tuple[str, int]] = []
    tokens = b * s
    emb_trainable = not tensors or any(n in trainable_names for n in embeddings)
    if arch.vocab and emb_trainable:
        out.append(("input ids (int64)", 8 * tokens))
    if ctx.dropout:
        out.append(("embedding dropout mask", tokens * h * ctx.mask))
    if arch.model_type in POST_NORM_TYPES:
        # BERT: embeddings summed, LayerNorm, dropout; the dropout's output is layer 0's input
        out.append(("embedding norm input + mean/rstd", tokens * (r * h + 8)))
        out.append(("layer 0 input", tokens * h * c))
        if arch.vocab:  # masked-LM head: dense, gelu, LayerNorm, decoder
            head = tokens * (3 * h * c + r * h + 8)
            out.append(("MLM head (dense in/out, gelu out, norm stats, decoder input)", head))
            out.append(("log-softmax (fp32)", 4 * tokens * arch.vocab))
        return out
    if arch.modality == "vision" and arch.image_size:
        # ViT: the patch convolution keeps the images; the final LayerNorm its input and statistics, and
        # its output stays alive through the classifier's view of the class token
        out.append(("images (patch-embedding input)", b * 3 * arch.image_size**2 * r))
        out.append(("final norm + output", tokens * (r * h + 8 + h * c)))
        return out
    if arch.kind == "encoder-decoder":
        enc_tokens = b * enc_seq
        rms = arch.norm == "rmsnorm" or arch.model_type in HF_RMSNORM_TYPES
        out.append(
            (
                "encoder final norm + output",
                enc_tokens * ((4 * h + 4 + r * h) if rms else (r * h + 8)) + enc_tokens * h * c,
            )
        )
        if arch.model_type == "whisper":
            # two convolutions over the mel frames (80 bins assumed), each with a GELU: the features, each
            # convolution's output (kept by its GELU) and each GELU's output (kept by the next layer)
            out.append(("audio front-end (mel features, 2 convolutions + GELU)",
                        b * 2 * enc_seq * 80 * r + 2 * b * 2 * enc_seq * h * c + enc_tokens * h * c))  # fmt: skip
    if arch.model_type in HF_RMSNORM_TYPES:
        # T5: relative-position buckets (int64 s x s) per stack; the cross-attention's zero position bias
        # (fp32 heads x s x s_enc, shared by the layers) is the mask its kernel keeps
        out.append(("relative-position buckets (int64)", 8 * (s * s + enc_seq * enc_seq)))
        out.append(("cross-attention position bias (fp32)", 4 * arch.heads * s * enc_seq))
    head_trainable = not tensors or any(
        n in trainable_names for n in (t.name for t in tensors) if "lm_head" in n or n in embeddings
    )
    if arch.vocab:
        if arch.norm == "rmsnorm" or arch.model_type in HF_RMSNORM_TYPES:
            norm = 4 * h + 4 + (r * h if ctx.norms_trainable else 0)
        else:
            norm = r * h + 8
        out.append(("final norm", tokens * norm))
        if head_trainable or ctx.lora is None:
            out.append(("LM head input", tokens * h * c))
        out.append(("labels (int64)", 8 * tokens))
        out.append(("log-softmax (fp32)", 4 * tokens * arch.vocab))
    return out


def activation_bytes(
    arch: Architecture,
    batch: int,
    seq: int,
    element_bytes: int,
    attention: str = "auto",
    checkpointing: bool = False,
    layers: int | None = None,
    device: str = "cuda",
) -> ActivationEstimate:
    """Activations with every weight trainable, at one width (4: fp32, 2: pure bf16/fp16)."""
    precision = PRECISIONS["fp32" if element_bytes == 4 else "bf16-true"]
    options = TrainingOptions(precision=precision.name, attention=attention, checkpointing=checkpointing,
                              device=device)  # fmt: skip
    return activation_estimate(arch, batch, seq, precision, options, layers=layers)


# -- will it fit? ----------------------------------------------------------------------------------

# total memory as nvidia-smi / torch.cuda.get_device_properties report it (MiB)
GPUS_MIB = {
    "H100": 81559, "H100-80GB": 81559, "H100-94GB": 95830, "H200": 143771, "A100": 81920, "A100-80GB": 81920,
    "A100-40GB": 40960, "A10G": 23028, "A10": 23028, "L4": 23034, "L40S": 46068, "L40": 46068, "T4": 15360,
    "V100": 16384, "V100-32GB": 32768, "RTX4090": 24564, "RTX3090": 24576, "RTX4080": 16376, "RTX3080": 10240,
    "A6000": 49140, "RTX6000ADA": 49140, "MI300X": 196592, "MI250X": 65520, "B200": 183359,
}  # fmt: skip
DEFAULT_RESERVE = GIB // 2  # CUDA context, cuBLAS workspace and allocator slack (measured ~0.4-0.6 GiB)
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b?|b)?\s*$", re.IGNORECASE)


def parse_gpu(text: str) -> tuple[str, int]:
    """``24GiB``, ``24GB`` (10^9), ``24`` (GiB) or a known name (``H100``, ``A10G``, ``RTX4090``...) ->
    (label, bytes)."""
    key = text.strip().upper().replace(" ", "").replace("_", "-").replace("NVIDIA", "").replace("GEFORCE", "")
    if key in GPUS_MIB:
        return key, GPUS_MIB[key] << 20
    found = _SIZE.match(text)
    if not found:
        raise UsageError(f"unknown GPU {text!r}: give a size (24GiB, 80GB) or one of {', '.join(GPUS_MIB)}")
    value = float(found.group(1))
    unit = (found.group(2) or "gib").lower()
    scale = {"b": 1, "k": 1 << 10, "kb": 10**3, "kib": 1 << 10, "m": 1 << 20, "mb": 10**6, "mib": 1 << 20,
             "g": GIB, "gb": 10**9, "gib": GIB, "t": 1 << 40, "tb": 10**12, "tib": 1 << 40}[unit]  # fmt: skip
    return text.strip(), int(value * scale)


def fit(
    gpu: str, capacity: int, needed: int, estimate_at: Callable[[int, int], int], batch: int, seq: int, seq_limit: int,
    reserve: int = DEFAULT_RESERVE,
) -> Fit:  # fmt: skip
    """``estimate_at(batch, seq)`` -> bytes; memory grows with both, so a doubling-then-bisection search
    finds the largest batch (at ``seq``) and the largest sequence (at ``batch``, up to ``seq_limit``)."""
    usable = capacity - reserve

    def largest(f: Callable[[int], int], limit: int) -> int | None:
        if f(1) > usable:
            return None
        lo, hi = 1, 2
        while hi <= limit and f(hi) <= usable:
            lo, hi = hi, hi * 2
        hi = min(hi, limit + 1)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if f(mid) <= usable else (lo, mid)
        return lo

    return Fit(
        gpu=gpu,
        capacity_bytes=capacity,
        reserve_bytes=reserve,
        needed_bytes=needed,
        fits=needed <= usable,
        margin_bytes=usable - needed,
        max_batch=largest(lambda n: estimate_at(n, seq), 1 << 16),
        max_seq=largest(lambda n: estimate_at(batch, n), seq_limit),
        seq_limit=seq_limit,
    )
