"""Model parameters, each counted once: tied and shared tensors deduplicated.

A parameter tensor is one whose role is weight, bias, embedding, output head or norm. It is counted
once however often the file names it:

- entries that view the same bytes (one storage saved under two names, as PyTorch does for a tied
  ``lm_head``; two ONNX initializers pointing at one external-data range) count once;
- an output head the file stores as a separate copy of the token embedding counts zero when the
  evidence says they are one tensor: ``tie_word_embeddings: true`` in a ``config.json`` beside the
  file. Its bytes are then ``duplicates`` in the overhead split;
- an output head the file does not store at all (safetensors ``save_model`` drops ``lm_head``; GGUF
  omits ``output.weight`` and llama.cpp reuses ``token_embd.weight``; an ONNX graph that reads one
  initializer both as the Gather table and as the output MatMul's weight) is the embedding, counted once.

Two tensors of the same shape and dtype are not assumed to be one: Llama 2 has an untied head of
the embedding's shape. When nothing else tells, the report says it cannot tell.

Two further rules make the count the one ``sum(p.numel() for p in model.parameters())`` gives:

- a packed quantized weight (GPTQ/AWQ ``qweight``, bitsandbytes 4-bit ``weight``, compressed-tensors
  ``weight_packed``, HQQ ``W_q``, MXFP4 ``*_blocks``) counts as the weights it holds: its stored bits
  divided by the bit width the quantization config declares (``quantization_config.bits``/``num_bits``/
  ``nbits``, ``load_in_4bit``; 4 assumed, and said, when nothing declares it). Its scales, zero points
  and group indices are quantization data, not parameters;
- a floating-point tensor of the model that no rule recognizes (role ``other``) counts as a parameter:
  the model holds it and it is not a known buffer. It is listed as ``uncertain`` so that the doubt is
  reported, never hidden by dropping it from the count.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from ckptscan.analyze import modules
from ckptscan.analyze.architecture import hf_config, tie_word_embeddings
from ckptscan.analyze.roles import PARAMETER_ROLES, Role, RoleDecision
from ckptscan.analyze.summary import Count, view_key
from ckptscan.dtypes import DTypeKind
from ckptscan.inventory import Inventory, Tensor

TIE_READERS = frozenset({"MatMul", "Gemm", "Transpose", "FusedMatMul"})


@dataclass(frozen=True, slots=True)
class Tie:
    """An output head tied to the token embedding: how the file stores the head, and the evidence."""

    embedding: str  # the token embedding's name
    head: str  # the output head's name; "" when the file does not store one
    stored: str  # "shared": one copy in the file; "copy": stored twice; "absent": head not stored
    evidence: str


@dataclass(frozen=True, slots=True)
class Parameters:
    """The model's parameters, each counted once, by role, dtype and module; what was left out."""

    total: int  # elements, each parameter once
    tensors: int
    bytes: int
    by_role: dict[str, int]  # role -> elements
    by_dtype: dict[str, int]  # dtype -> elements
    groups: list[modules.ModuleGroup]  # per module, repeated blocks collapsed
    ties: list[Tie]
    repeated_entries: int  # entries that view bytes already counted
    duplicate_copies: tuple[str, ...]  # tensors stored twice (a tied head's copy): not counted
    excluded: dict[str, Count]  # model tensors that are not parameters, by role (buffer, quantization, other)
    counted: tuple[int, ...]  # indices of the inventory's tensors that were counted
    notes: tuple[str, ...]
    uncertain: Count = field(default_factory=Count)  # counted, though no rule says what they are (role other)
    uncertain_names: tuple[str, ...] = ()
    # packed quantized weights: entries, the weights they hold, their stored bytes
    packed: Count = field(default_factory=Count)
    packed_bits: int | None = None  # the bit width that turned packed words into weights
    elements: tuple[int, ...] = ()  # per counted tensor (same order as ``counted``): the parameters it holds
    by_component: dict[str, int] = field(default_factory=dict)  # pipeline component -> parameters (ckptscan.folders)


# roles a model's tensor may have and still not be a parameter
NOT_PARAMETER_RULES = frozenset({"object-graph"})


def is_uncertain_parameter(tensor: Tensor, decision: RoleDecision) -> bool:
    """A model tensor no rule recognizes, floating point: counted as a parameter, with the doubt said."""
    return (
        decision.role is Role.OTHER
        and decision.rule not in NOT_PARAMETER_RULES
        and tensor.dtype.kind is DTypeKind.FLOAT
        and tensor.dtype.known
    )


def quantization_bits(inventory: Inventory) -> int | None:
    """The weight bit width the quantization config beside the model declares, if it does."""
    config = hf_config(inventory).get("quantization_config")
    sidecar = inventory.sidecars.get("quantize_config.json")
    for source in (config, sidecar):
        if not isinstance(source, Mapping):
            continue
        for key in ("bits", "w_bit", "nbits", "weight_bits"):
            value = source.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and 0 < value <= 16:
                return value
        if source.get("load_in_4bit") is True:
            return 4
        if source.get("load_in_8bit") is True:
            return 8
        if str(source.get("quant_method", "")).lower() == "mxfp4":
            return 4
        groups = source.get("config_groups")  # compressed-tensors
        if isinstance(groups, Mapping):
            for group in groups.values():
                weights = group.get("weights") if isinstance(group, Mapping) else None
                bits = weights.get("num_bits") if isinstance(weights, Mapping) else None
                if isinstance(bits, int) and not isinstance(bits, bool) and 0 < bits <= 16:
                    return bits
    return None


def held_weights(tensor: Tensor, bits: int) -> int:
    """The weights a packed tensor holds at ``bits`` per weight."""
    return tensor.nbytes * 8 // bits


def count_parameters(inventory: Inventory, decisions: Sequence[RoleDecision], ties: Sequence[Tie]) -> Parameters:
    copies = {t.head for t in ties if t.stored == "copy"}
    seen: set[tuple[object, ...]] = set()
    counted: list[int] = []
    elements: list[int] = []
    repeated = 0
    excluded: dict[str, Count] = {}
    by_role: dict[str, int] = {}
    by_dtype: dict[str, int] = {}
    by_component: dict[str, int] = {}
    uncertain, uncertain_names = Count(), []
    packed, packed_tensors = Count(), []
    declared = quantization_bits(inventory)
    bits = declared or 4
    for i, (tensor, decision) in enumerate(zip(inventory.tensors, decisions, strict=True)):
        doubt = is_uncertain_parameter(tensor, decision)
        if decision.role not in PARAMETER_ROLES and not doubt:
            if decision.role in (Role.BUFFER, Role.QUANTIZATION, Role.OTHER):
                excluded[decision.role.value] = excluded.get(decision.role.value, Count()).add(tensor)
            continue
        key = view_key(tensor)
        if key in seen:
            repeated += 1
            continue
        seen.add(key)
        if tensor.name in copies:
            continue
        held = tensor.elements
        if decision.role is Role.WEIGHT and decision.detail == "packed":
            held = held_weights(tensor, bits)
            packed = Count(packed.tensors + 1, packed.elements + held, packed.bytes + tensor.nbytes)
            packed_tensors.append(tensor)
        if doubt:
            uncertain = Count(uncertain.tensors + 1, uncertain.elements + held, uncertain.bytes + tensor.nbytes)
            uncertain_names.append(tensor.name)
        counted.append(i)
        elements.append(held)
        by_role[decision.role.value] = by_role.get(decision.role.value, 0) + held
        by_dtype[tensor.dtype.name] = by_dtype.get(tensor.dtype.name, 0) + held
        component = tensor.attrs.get("component")
        if isinstance(component, str):
            by_component[component] = by_component.get(component, 0) + held
    chosen = [inventory.tensors[i] for i in counted]
    notes = _notes(inventory, decisions, ties)
    if packed.tensors:
        stored = sum(t.elements for t in packed_tensors)
        width = (
            f"at {declared} bits, as the quantization config declares"
            if declared
            else ("at 4 bits: ASSUMED, no quantization config beside the file declares the bit width")
        )
        notes.append(
            f"{packed.tensors} packed quantized weights ({stored:,} stored elements) hold "
            f"{packed.elements:,} weights {width}; their scales and zero points are not parameters"
        )
    if uncertain.tensors:
        shown = ", ".join(uncertain_names[:3]) + (", ..." if len(uncertain_names) > 3 else "")
        notes.append(
            f"{uncertain.tensors} model tensors ({uncertain.elements:,} elements) that no rule recognizes "
            f"are counted as parameters (uncertain: {shown})"
        )
    return Parameters(
        total=sum(elements),
        tensors=len(chosen),
        bytes=sum(t.nbytes for t in chosen),
        by_role=by_role,
        by_dtype=dict(sorted(by_dtype.items(), key=lambda kv: -kv[1])),
        groups=modules.rollup(chosen),
        ties=list(ties),
        repeated_entries=repeated,
        duplicate_copies=tuple(sorted(copies)),
        excluded=excluded,
        counted=tuple(counted),
        notes=tuple(notes),
        uncertain=uncertain,
        uncertain_names=tuple(uncertain_names),
        packed=packed,
        packed_bits=declared if packed.tensors and declared else (4 if packed.tensors else None),
        elements=tuple(elements),
        by_component=by_component,
    )


# -- ties ----------------------------------------------------------------------------------------


def find_ties(inventory: Inventory, decisions: Sequence[RoleDecision]) -> tuple[list[Tie], list[RoleDecision]]:
    """The output head's tie to the token embedding, from the best evidence; decisions updated to say so."""
    tensors = inventory.tensors
    embedding = _token_embedding(tensors, decisions)
    if embedding is None:
        return [], list(decisions)
    emb = tensors[embedding]
    heads = [
        i
        for i, d in enumerate(decisions)
        if d.role is Role.OUTPUT_HEAD and len(tensors[i].shape) == 2 and _same_or_transposed(tensors[i], emb)
    ]
    ties: list[Tie] = []
    for i in heads:
        if view_key(tensors[i]) == view_key(emb):
            ties.append(Tie(emb.name, tensors[i].name, "shared", "both names view the same stored bytes"))
    readers = {str(c.get("op")) for c in emb.attrs.get("consumers", ()) if isinstance(c, Mapping)}
    if not ties and readers & TIE_READERS and "Gather" in readers:
        ties.append(Tie(emb.name, "", "shared", "the ONNX graph reads one initializer as the embedding table "
                        f"and as the output projection ({', '.join(sorted(readers & TIE_READERS))})"))  # fmt: skip
    tied_config = tie_word_embeddings(inventory)
    if not ties and tied_config:
        evidence = "config.json beside the file says tie_word_embeddings: true"
        if heads:
            ties.extend(Tie(emb.name, tensors[i].name, "copy", evidence) for i in heads)
        else:
            ties.append(Tie(emb.name, "", "absent", evidence + "; the file stores no output head"))
    if not ties and inventory.format == "gguf" and not heads and _gguf_is_llm(inventory):
        ties.append(Tie(emb.name, "", "absent", "the GGUF file has no output.weight: llama.cpp then uses "
                        "token_embd.weight as the output head"))  # fmt: skip
    return ties, _mark_ties(tensors, decisions, ties, embedding)


def _token_embedding(tensors: Sequence[Tensor], decisions: Sequence[RoleDecision]) -> int | None:
    candidates = [
        i
        for i, d in enumerate(decisions)
        if d.role is Role.EMBEDDING and d.detail in ("token", "lookup") and len(tensors[i].shape) == 2
    ]
    return max(candidates, key=lambda i: tensors[i].elements, default=None)


def _same_or_transposed(a: Tensor, b: Tensor) -> bool:
    return a.shape == b.shape or a.shape == tuple(reversed(b.shape))


def _gguf_is_llm(inventory: Inventory) -> bool:
    kv = inventory.metadata.get("kv")
    return isinstance(kv, dict) and isinstance(kv.get("general.architecture"), str)


def _mark_ties(
    tensors: Sequence[Tensor], decisions: Sequence[RoleDecision], ties: Sequence[Tie], embedding: int
) -> list[RoleDecision]:
    marked = list(decisions)
    by_head = {t.head: t for t in ties if t.head}
    for i, t in enumerate(tensors):
        tie = by_head.get(t.name)
        if tie is not None and marked[i].role is Role.OUTPUT_HEAD:
            what = "stored twice" if tie.stored == "copy" else "same bytes"
            marked[i] = replace(
                marked[i],
                detail=f"tied to {tie.embedding}",
                reason=f"{marked[i].reason}; tied to `{tie.embedding}` ({what}: {tie.evidence})",
            )
    if any(not t.head for t in ties):
        tie = next(t for t in ties if not t.head)
        marked[embedding] = replace(
            marked[embedding],
            detail=f"{marked[embedding].detail}, also the output head",
            reason=f"{marked[embedding].reason}; also serves as the output head ({tie.evidence})",
        )
    return marked


def _notes(inventory: Inventory, decisions: Sequence[RoleDecision], ties: Sequence[Tie]) -> list[str]:
    notes: list[str] = []
    tensors = inventory.tensors
    embedding = _token_embedding(tensors, decisions)
    if not ties and embedding is not None:
        emb = tensors[embedding]
        for i, d in enumerate(decisions):
            head = tensors[i]
            if d.role is Role.OUTPUT_HEAD and head.dtype == emb.dtype and _same_or_transposed(head, emb):
                config = tie_word_embeddings(inventory)
                if config is None:
                    notes.append(
                        f"{head.name} has the shape of {emb.name} but the file does not say whether they are "
                        "tied (no config.json with tie_word_embeddings): counted as two tensors"
                    )
    return notes
