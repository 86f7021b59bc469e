"""Mixture-of-experts figures: total vs active parameters per token, expert vs shared bytes.

A parameter tensor belongs to the routed experts when its path goes through ``experts`` (a fused
3-D bank ``mlp.experts.gate_up_proj`` [experts, out, in], or one expert's ``experts.3.w1.weight``)
or is a GGUF ``ffn_*_exps`` bank. Everything else is shared: attention, embeddings, head, norms,
the router, and the shared experts (``shared_expert``/``shared_experts``, which every token uses).

``active = shared + routed x experts_per_token / experts``: each token runs the shared parameters
and ``experts_per_token`` of the ``experts`` routed experts of every MoE layer. The expert counts
come from the architecture (``config.json``: ``num_local_experts``/``num_experts``/
``n_routed_experts``, ``num_experts_per_tok``/``moe_top_k``; GGUF ``expert_count``/
``expert_used_count``), or from the banks' shapes (experts only; then active is not known).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ckptscan.analyze.architecture import Architecture, hf_config
from ckptscan.analyze.parameters import Parameters
from ckptscan.analyze.roles import name_parts
from ckptscan.inventory import Inventory, Tensor

EXPERT_PARTS = frozenset({"experts"})
SHARED_EXPERT_PARTS = frozenset({"shared_expert", "shared_experts", "shared_mlp"})
EXPERT_KEYS = ("num_local_experts", "num_experts", "n_routed_experts", "moe_num_experts", "num_routed_experts")
TOP_K_KEYS = ("num_experts_per_tok", "num_experts_per_token", "moe_top_k", "top_k", "num_selected_experts")
SHARED_KEYS = ("n_shared_experts", "num_shared_experts")


@dataclass(frozen=True, slots=True)
class MoE:
    """A mixture-of-experts model's figures: expert counts, total vs active parameters, expert bytes."""

    experts: int  # routed experts per MoE layer
    experts_per_token: int | None  # routed experts each token uses
    shared_experts: int | None  # experts every token uses (None: not declared)
    source: str  # where the counts come from
    total: int  # parameters, every expert
    active: int | None  # parameters one token uses
    expert_parameters: int  # the routed experts' parameters
    shared_parameters: int  # everything else
    expert_bytes: int
    shared_bytes: int
    expert_tensors: int
    assumptions: tuple[str, ...] = ()


def is_expert(tensor: Tensor) -> bool:
    """A routed expert's tensor (a fused bank or one expert's matrix), not a shared expert's."""
    parts = name_parts(tensor.name)
    if SHARED_EXPERT_PARTS & set(parts):
        return False
    return bool(EXPERT_PARTS & set(parts[:-1])) or any(p.endswith("_exps") for p in parts)


def detect(inventory: Inventory, params: Parameters, architecture: Architecture | None = None) -> MoE | None:
    """The MoE figures, or None when the model has no routed experts."""
    tensors = inventory.tensors
    expert_idx = [i for i in params.counted if is_expert(tensors[i])]
    if not expert_idx:
        return None
    held = dict(zip(params.counted, params.elements or [tensors[i].elements for i in params.counted], strict=True))
    expert_parameters = sum(held[i] for i in expert_idx)
    expert_bytes = sum(tensors[i].nbytes for i in expert_idx)
    experts, per_token, shared, source = _counts(inventory, architecture)
    assumptions: list[str] = []
    if architecture is not None and architecture.experts and source == architecture.source:
        assumptions += [a for a in architecture.assumptions if "expert" in a]
    if experts is None:
        experts = _experts_from_shapes(inventory, expert_idx)
        source = "tensor shapes"
        assumptions.append("expert count read from the banks' shapes; experts per token not recorded")
    active = None
    if per_token is not None and experts:
        active = params.total - expert_parameters + expert_parameters * per_token // experts
    elif per_token is None:
        assumptions.append("experts per token unknown: active parameters not computed")
    return MoE(
        experts=experts or 0,
        experts_per_token=per_token,
        shared_experts=shared,
        source=source,
        total=params.total,
        active=active,
        expert_parameters=expert_parameters,
        shared_parameters=params.total - expert_parameters,
        expert_bytes=expert_bytes,
        shared_bytes=params.bytes - expert_bytes,
        expert_tensors=len(expert_idx),
        assumptions=tuple(assumptions),
    )


def _positive(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _counts(inventory: Inventory, architecture: Architecture | None) -> tuple[int | None, int | None, int | None, str]:
    """The architecture's counts when it read them from config.json or GGUF metadata; else the raw keys
    (a config without layer counts, a GGUF without block_count); else the architecture's guess."""
    known = architecture is not None and bool(architecture.experts)
    if architecture is not None and known and not architecture.guessed:
        return architecture.experts, architecture.experts_per_token, architecture.shared_experts, architecture.source
    config = hf_config(inventory)
    experts = next((v for k in EXPERT_KEYS if (v := _positive(config.get(k))) is not None), None)
    if experts is not None:
        per_token = next((v for k in TOP_K_KEYS if (v := _positive(config.get(k))) is not None), None)
        shared_value = next((config.get(k) for k in SHARED_KEYS if isinstance(config.get(k), int)), None)
        if shared_value is None and any(k.startswith("shared_expert") for k in config):
            shared_value = 1  # Qwen2-MoE: one shared expert (shared_expert_intermediate_size)
        return experts, per_token, shared_value, "config.json"
    kv = inventory.metadata.get("kv") if inventory.format == "gguf" else None
    if isinstance(kv, Mapping):
        arch = kv.get("general.architecture")
        experts = _positive(kv.get(f"{arch}.expert_count"))
        if experts is not None:
            per_token = _positive(kv.get(f"{arch}.expert_used_count"))
            shared_value = _positive(kv.get(f"{arch}.expert_shared_count"))
            return experts, per_token, shared_value, "gguf metadata"
    if architecture is not None and known:
        return architecture.experts, architecture.experts_per_token, architecture.shared_experts, architecture.source
    return None, None, None, ""


def _experts_from_shapes(inventory: Inventory, expert_idx: Sequence[int]) -> int | None:
    tensors = inventory.tensors
    for i in expert_idx:
        if len(tensors[i].shape) == 3:  # a bank: [experts, ...]
            return tensors[i].shape[0]
    indices = set()
    for i in expert_idx:
        parts = name_parts(tensors[i].name)
        for k, p in enumerate(parts[:-1]):
            if p in EXPERT_PARTS and k + 1 < len(parts) and parts[k + 1].isdigit():
                indices.add(int(parts[k + 1]))
    return len(indices) or None
