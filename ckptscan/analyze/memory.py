"""Memory estimates for inference and training, from the inventory alone. Every formula's source is
in docs/analysis.md; the assumptions each estimate made travel with it.

Inference: weights at each reduction target, plus the KV cache
``2 x layers x kv_heads x head_dim x context x batch x bytes`` (grouped-query attention through
``kv_heads``).

Training: weights (+ fp32 master weights under mixed precision) + gradients + optimizer states,
per parameter tensor (Adafactor's factored moments depend on the shape), for the trainable
parameters only when layers are frozen; plus the activations a transformer saves for backward,
counted per saved tensor as Korthikanti et al. (2022) do (``34sbh + 5as^2b`` bytes per layer in
their setting: 16-bit, dropout, eager attention, 4h MLP), generalized to grouped-query attention,
gated MLPs, attention kernels that keep no ``s x s`` matrix, fp32, no dropout, and gradient
checkpointing (each layer keeps its input; one layer is recomputed at a time).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ckptscan.analyze.architecture import Architecture
from ckptscan.analyze.parameters import Parameters
from ckptscan.analyze.reduction import Target
from ckptscan.errors import UsageError
from ckptscan.inventory import Inventory, Tensor


@dataclass(frozen=True, slots=True)
class Precision:
    name: str
    weight: int  # bytes per parameter of the working weights
    master: int  # bytes per trainable parameter of fp32 master weights
    grad: int
    state: int  # bytes per optimizer-state element
    activation: int  # bytes per activation element
    description: str


PRECISIONS = {
    p.name: p
    for p in (
        Precision("fp32", 4, 0, 4, 4, 4, "fp32 weights, gradients, optimizer states and activations"),
        Precision("fp16-mixed", 2, 4, 2, 4, 2, "fp16 weights and gradients, fp32 master weights and optimizer "
                  "states, fp16 activations (ZeRO / Megatron mixed precision)"),
        Precision("bf16-mixed", 2, 4, 2, 4, 2, "bf16 weights and gradients, fp32 master weights and optimizer "
                  "states, bf16 activations (ZeRO / Megatron mixed precision)"),
        Precision("bf16-true", 2, 0, 2, 2, 2, "pure bf16: weights, gradients, optimizer states and activations"),
    )
}  # fmt: skip
PRECISION_ALIASES = {"32": "fp32", "32-true": "fp32", "16-mixed": "fp16-mixed", "fp16": "fp16-mixed",
                     "bf16": "bf16-true", "pure-bf16": "bf16-true", "bf16-pure": "bf16-true"}  # fmt: skip


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
    "sdpa": "fused attention (FlashAttention / PyTorch SDPA): keeps the output and a per-head logsumexp, "
    "no s x s matrix",
    "eager": "eager attention: keeps the s x s softmax output (and its dropout) per head",
}
OPTIMIZER_IMPLS = {
    "foreach": "PyTorch foreach step (the CUDA default): Adam/AdamW hold sqrt(v) for every trainable tensor at once",
    "for-loop": "PyTorch for-loop step (foreach=False): Adam/AdamW hold two temporaries of the largest tensor",
    "fused": "fused step kernel: no temporaries",
}
BNB_BLOCK = 2048  # bitsandbytes blockwise 8-bit optimizer state block
BNB_MIN_8BIT = 4096  # bitsandbytes min_8bit_size: smaller tensors keep 32-bit state
DEFAULT_TRAINING_SEQ = 2048
DEFAULT_INFERENCE_SEQ = 4096


@dataclass(frozen=True, slots=True)
class TrainingOptions:
    optimizer: str = "adamw"
    precision: str = "bf16-mixed"
    batch: int = 1
    seq: int | None = None  # default: the model's context, at most DEFAULT_TRAINING_SEQ
    checkpointing: bool = False
    freeze: tuple[str, ...] = ()  # glob patterns over parameter names
    attention: str = "sdpa"
    optimizer_impl: str = "foreach"  # PyTorch's implementation: foreach (CUDA default), for-loop, fused

    def validated(self) -> TrainingOptions:
        """Bad values are the caller's mistake: a UsageError naming the choices (as StatsOptions)."""
        resolve_precision(self.precision)
        resolve_optimizer(self.optimizer)
        if self.attention not in ATTENTION:
            raise UsageError(f"unknown attention {self.attention!r} (choose from {', '.join(ATTENTION)})")
        if self.optimizer_impl not in OPTIMIZER_IMPLS:
            raise UsageError(
                f"unknown optimizer implementation {self.optimizer_impl!r} (choose from {', '.join(OPTIMIZER_IMPLS)})"
            )
        _check_positive(batch=self.batch, seq=self.seq)
        return self


@dataclass(frozen=True, slots=True)
class InferenceOptions:
    batch: int = 1
    seq: int | None = None  # default: the model's context length (DEFAULT_INFERENCE_SEQ when unknown)
    kv_bytes: int = 2  # bytes per cached key/value element (F16/BF16)

    def validated(self) -> InferenceOptions:
        _check_positive(batch=self.batch, seq=self.seq, kv_bytes=self.kv_bytes)
        return self


def _check_positive(**values: int | None) -> None:
    for name, value in values.items():
        if value is not None and value < 1:
            raise UsageError(f"{name} must be 1 or more, not {value}")


def resolve_precision(name: str) -> Precision:
    key = PRECISION_ALIASES.get(name.lower(), name.lower())
    if key not in PRECISIONS:
        raise UsageError(f"unknown precision {name!r} (choose from {', '.join([*PRECISIONS, *PRECISION_ALIASES])})")
    return PRECISIONS[key]


def resolve_optimizer(name: str) -> str:
    key = OPTIMIZER_ALIASES.get(name.lower(), name.lower())
    if key not in OPTIMIZERS:
        raise UsageError(f"unknown optimizer {name!r} (choose from {', '.join([*OPTIMIZERS, *OPTIMIZER_ALIASES])})")
    return key


@dataclass(frozen=True, slots=True)
class Line:
    name: str
    bytes: int
    formula: str

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "bytes": self.bytes, "formula": self.formula}


# -- inference ------------------------------------------------------------------------------------


def inference(
    arch: Architecture | None, targets: Sequence[Target], options: InferenceOptions | None = None
) -> dict[str, Any]:
    options = (options or InferenceOptions()).validated()
    weights = {t.name: t.tensor_bytes for t in targets if t.name not in ("strip",)}
    stored = weights.pop("dedupe", None)
    assumptions = ["weights: tensor bytes at each target (reduction section); runtime buffers, activations of "
                   "one forward pass and framework overhead not included"]  # fmt: skip
    kv: dict[str, Any] | None = None
    if arch is not None:
        seq = options.seq or arch.context or DEFAULT_INFERENCE_SEQ
        per_token = 2 * arch.layers * arch.kv_dim * options.kv_bytes
        kv = {
            "bytes": per_token * seq * options.batch,
            "per_token_bytes": per_token,
            "batch": options.batch,
            "context": seq,
            "bytes_per_element": options.kv_bytes,
            "formula": f"2 x {arch.layers} layers x {arch.kv_heads} kv heads x {arch.head_dim} head dim x "
            f"{seq:,} tokens x {options.batch} x {options.kv_bytes} B",
        }
        if options.seq is None and arch.context is None:
            assumptions.append(f"context length unknown: KV cache for {DEFAULT_INFERENCE_SEQ} tokens")
        assumptions.extend(arch.assumptions)
    else:
        assumptions.append("architecture unknown (no config.json, GGUF metadata or transformer tensor names): "
                           "no KV cache estimate")  # fmt: skip
    kv_bytes = kv["bytes"] if kv else 0
    return {
        "weights_bytes": stored,
        "kv_cache": kv,
        "total_bytes": (stored or 0) + kv_bytes,
        "by_target": {name: nbytes + kv_bytes for name, nbytes in weights.items()},
        "architecture": arch.as_dict() if arch else None,
        "assumptions": assumptions,
    }


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


_NUMBER = re.compile(r"[./](\d+)[./]")


def training(
    inventory: Inventory,
    parameters: Parameters,
    arch: Architecture | None,
    options: TrainingOptions | None = None,
    embeddings: frozenset[str] = frozenset(),
) -> dict[str, Any]:
    """``embeddings``: names of the embedding tensors (they sit before the first layer)."""
    options = (options or TrainingOptions()).validated()
    precision = resolve_precision(options.precision)
    optimizer = resolve_optimizer(options.optimizer)
    tensors = [inventory.tensors[i] for i in parameters.counted]
    frozen = frozen_names([t.name for t in tensors], options.freeze)
    trainable = [t for t in tensors if t.name not in frozen]
    n_all = sum(t.elements for t in tensors)
    n_train = sum(t.elements for t in trainable)
    lines = [
        Line("weights", n_all * precision.weight, f"{n_all:,} parameters x {precision.weight} B"),
    ]
    if precision.master:
        lines.append(Line("master_weights", n_train * precision.master,
                          f"{n_train:,} trainable x {precision.master} B (fp32 copy)"))  # fmt: skip
    lines.append(Line("gradients", n_train * precision.grad, f"{n_train:,} trainable x {precision.grad} B"))
    state = sum(optimizer_state_bytes(optimizer, t, precision.state) for t in trainable)
    width = "" if optimizer in ("sgd", "adam-8bit") else f"; states at {precision.state} B"
    lines.append(Line("optimizer_state", state, OPTIMIZERS[optimizer] + width))
    temporaries = step_temporaries(optimizer, options.optimizer_impl, trainable, precision.state)
    assumptions = [precision.description, OPTIMIZERS[optimizer]]
    if optimizer in ("adam", "adamw"):
        assumptions.append(OPTIMIZER_IMPLS[options.optimizer_impl])
    if options.freeze:
        assumptions.append(f"frozen by {', '.join(options.freeze)}: {len(frozen):,} tensors, "
                           f"{n_all - n_train:,} parameters without gradients or optimizer state")  # fmt: skip
    activations = None
    seq = options.seq
    if arch is not None and trainable:
        seq = seq or min(arch.context or DEFAULT_TRAINING_SEQ, DEFAULT_TRAINING_SEQ)
        first = _first_trainable_layer(trainable, embeddings, arch.layers)
        layers = max(0, arch.layers - first)
        activations = activation_bytes(arch, options.batch, seq, precision.activation, options.attention,
                                       options.checkpointing, layers)  # fmt: skip
        lines.append(Line("activations", activations["bytes"], activations["formula"]))
        if activations["loss_gradient_bytes"]:
            lines.append(Line("loss_gradients", activations["loss_gradient_bytes"],
                              "2 x 4*s*b*V: the fp32 gradients of the log-softmax and of the logits, alive at "
                              "the start of backward"))  # fmt: skip
        assumptions.extend(activations["assumptions"])
        assumptions.extend(arch.assumptions)
    elif arch is None:
        assumptions.append("architecture unknown (no config.json, GGUF metadata or transformer tensor names): "
                           "activations not estimated")  # fmt: skip
    by_name = {line.name: line.bytes for line in lines}
    static = by_name["weights"] + by_name.get("master_weights", 0) + by_name["optimizer_state"]
    if activations is not None:
        at_loss = activations["held_at_loss_bytes"] + activations["loss_gradient_bytes"]
        late = by_name["gradients"] + max(activations["held_late_bytes"], temporaries)
        peak = static + max(at_loss, late)
        peak_formula = ("weights + master + optimizer state + max(activations held when backward starts + loss "
                        "gradients, gradients + max(what backward holds at its end, "
                        "optimizer-step temporaries))")  # fmt: skip
    else:
        peak = static + by_name["gradients"] + temporaries
        peak_formula = (
            "weights + master + optimizer state + gradients + optimizer-step temporaries (activations unknown)"
        )
    assumptions.append("peak: backward frees each layer's activations as its gradients appear, so the peak is when "
                       "backward starts, when it ends, or during the optimizer step; allocator rounding, library "
                       "workspaces and the CUDA context not included")  # fmt: skip
    return {
        "optimizer": optimizer,
        "precision": precision.name,
        "batch": options.batch,
        "seq": seq,
        "checkpointing": options.checkpointing,
        "attention": options.attention,
        "freeze": list(options.freeze),
        "parameters": n_all,
        "trainable_parameters": n_train,
        "lines": [line.as_dict() for line in lines],
        "total_bytes": peak,
        "peak_formula": peak_formula,
        "sum_bytes": sum(line.bytes for line in lines),
        "optimizer_impl": options.optimizer_impl,
        "step_temporaries_bytes": temporaries,
        "activations": activations,
        "assumptions": assumptions,
    }


def _first_trainable_layer(trainable: Sequence[Tensor], embeddings: frozenset[str], n_layers: int) -> int:
    """Layers before the first trainable one keep no activations: no gradient flows into them."""
    firsts = []
    for t in trainable:
        found = _NUMBER.search(f".{t.name}.")
        if found:
            firsts.append(int(found.group(1)))
        elif t.name in embeddings:
            return 0  # a trainable embedding needs the gradient through every layer
    return min(firsts, default=n_layers)


def activation_bytes(
    arch: Architecture,
    batch: int,
    seq: int,
    element_bytes: int,
    attention: str = "sdpa",
    checkpointing: bool = False,
    layers: int | None = None,
) -> dict[str, Any]:
    """Bytes a transformer keeps for backward: per saved tensor, as Korthikanti et al. (2022) count them."""
    s, b = seq, batch
    sb = s * b
    h, f, a = arch.hidden, arch.ffn, arch.heads
    dropout = arch.dropout > 0
    layers = arch.layers if layers is None else layers
    elements = sb * (
        h  # norm-1 input
        + h  # Q/K/V projection input (norm-1 output)
        + arch.q_dim
        + 2 * arch.kv_dim  # Q, K, V
        + arch.q_dim  # attention output = output-projection input
        + h  # norm-2 input
        + h  # MLP input (norm-2 output)
        + (4 * f if arch.gated_mlp else 2 * f)  # gated: gate out, act out, up out, product; else act in, act out
    )
    stats_per_norm = 2 if arch.norm == "layernorm" else 1
    fp32 = 2 * stats_per_norm * sb * 4  # per-token mean / rstd of the two norms
    masks = 0
    if attention == "eager":
        elements += a * s * s * b  # softmax output
        if dropout:
            elements += a * s * s * b  # attention-dropout output
            masks += a * s * s * b
    else:
        fp32 += a * s * b * 4  # logsumexp per head and token
    if dropout:
        masks += 2 * sb * h  # residual dropouts after attention and MLP
    per_layer = elements * element_bytes + masks + fp32
    layer_input = sb * h * element_bytes
    outside = (2 * sb * h * element_bytes + stats_per_norm * sb * 4) if arch.vocab else 0  # final norm, head input
    logits = 4 * sb * arch.vocab  # fp32 log-softmax output kept by the cross-entropy
    if dropout:
        outside += sb * h  # embedding-dropout mask
    recompute = per_layer if layers else 0
    if checkpointing:
        held_at_loss = layers * layer_input + outside + logits
        held_late = layers * layer_input + recompute
        total = held_at_loss + recompute
        formula = (f"{layers} layers x s*b*h*{element_bytes} (checkpointed inputs) + one layer recomputed "
                   f"({per_layer:,} B) + final norm/head inputs + 4*s*b*V logits")  # fmt: skip
    else:
        total = held_at_loss = layers * per_layer + outside + logits
        held_late = 0
        formula = f"{layers} layers x {per_layer:,} B + final norm/head inputs + 4*s*b*V logits"
    korthikanti = sb * h * 34 + 5 * a * s * s * b
    assumptions = [
        ATTENTION.get(attention, attention),
        f"activations at {element_bytes} B per element; norms keep their input and per-token statistics "
        "(fused kernels; HF eager RMSNorm keeps an extra fp32 copy)",
        "dropout masks counted (1 B each)" if dropout else "no dropout (the config sets none)",
        f"batch {batch}, sequence {seq:,}" + (", gradient checkpointing per layer" if checkpointing else ""),
    ]
    return {
        "bytes": total,
        "per_layer_bytes": per_layer,
        "layers": layers,
        "logits_bytes": logits,
        "loss_gradient_bytes": 2 * logits,
        "held_at_loss_bytes": held_at_loss,
        "held_late_bytes": held_late,
        "formula": formula,
        "korthikanti_per_layer_bytes": korthikanti,
        "assumptions": assumptions,
    }
