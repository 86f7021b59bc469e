"""What an audit keeps of one model: its JSON record, and a digest for the cross-model totals.

The record is the single-scan result (``ckptscan.report.json.result_dict``) plus the model's
``folder`` and a ``recoverable`` section. The digest is internal: role totals, parameters and the
keys that identify each tensor across files, so that the parent process can deduplicate across
thousands of models without keeping their tensor lists.

Roles, parameters and reduction figures come from the analyzer's sections of the record
(``by_role``, ``parameters``, ``reduction``; docs/contracts.md) when they are there. Without them
they are derived from the inventory alone and labelled ``"inventory"``: a tensor's role is then
what its reader recorded in ``attrs["structure"]`` (``optimizer``, ``ema``, ``scheduler``...), and
every other tensor is ``model``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from ckptscan.dtypes import DTYPES, lookup

# Roles whose bytes a deployment does not need: what "strip" removes (as the analyzer's target).
STRIP_ROLES = frozenset({"optimizer_state", "training_state", "ema", "master_weight"})
# Roles that are not model parameters (for the inventory-only parameter count).
NON_PARAMETER_ROLES = STRIP_ROLES | {"quantization", "buffer"}

# attrs["structure"] (set by readers) -> role, for when the analyzer is absent
STRUCTURE_ROLES = {
    "optimizer": "optimizer_state",
    "optimizer_states": "optimizer_state",
    "ema": "ema",
    "scheduler": "training_state",
    "lr_scheduler": "training_state",
    "lr_schedulers": "training_state",
    "rng": "training_state",
    "training": "training_state",
    "hyper_parameters": "training_state",
    "callbacks": "training_state",
    "loops": "training_state",
    "scaler": "training_state",
}
FALLBACK_MODEL_ROLE = "model"

# Quantization targets: bits per element of the stored values (scales included for block types).
QUANTIZE_BITS: dict[str, Fraction] = {
    "fp16": Fraction(16),
    "bf16": Fraction(16),
    "fp8": Fraction(8),
    "int8": Fraction(8),
    "int4": Fraction(4),
    "Q8_0": DTYPES["Q8_0"].bits_per_element,
    "Q6_K": DTYPES["Q6_K"].bits_per_element,
    "Q5_K_M": DTYPES["Q5_K"].bits_per_element,
    "Q4_K_M": DTYPES["Q4_K"].bits_per_element,
    "Q4_0": DTYPES["Q4_0"].bits_per_element,
    "IQ4_XS": DTYPES["IQ4_XS"].bits_per_element,
}
DEFAULT_QUANTIZE = "int8"

DedupeKey = tuple[str, tuple[int, ...], str, int, "str | None"]


@dataclass(frozen=True, slots=True)
class Digest:
    roles_source: str  # "analyzer" or "inventory"
    by_role: Mapping[str, tuple[int, int, int]]  # role -> (tensors, elements, bytes), every entry
    parameters: int
    strip_bytes: int
    strip_source: str  # "files", "analyzer" or "inventory"
    quantize_saving: int
    quantize_source: str  # "analyzer" or "inventory"
    dedupe_keys: tuple[DedupeKey, ...]  # one per stored tensor outside STRIP_ROLES


EMPTY_DIGEST = Digest("inventory", {}, 0, 0, "inventory", 0, "inventory", ())


def digest(record: Mapping[str, Any], quantize: str) -> Digest:
    """The digest of a record that still holds its tensor list."""
    tensors: list[Mapping[str, Any]] = record.get("tensors") or []
    analyzed = isinstance(record.get("by_role"), Mapping)
    roles = [tensor_role(t, analyzed) for t in tensors]
    unique = _unique_views(tensors)

    if analyzed:
        by_role = {
            str(role): (int(c.get("tensors", 0)), int(c.get("elements", 0)), int(c.get("bytes", 0)))
            for role, c in record["by_role"].items()
            if isinstance(c, Mapping)
        }
    else:
        by_role = _count_roles(tensors, roles)

    # the analyzer's figures, when it ran, are the ones to trust (ties, dead storage, quantization
    # layouts); the inventory-level estimates below stand in for them otherwise
    analyzer_parameters = _analyzer_parameters(record)
    analyzer_strip = _target_saving(record, "strip")
    analyzer_saving = _target_saving(record, quantize)
    target_bits = None if analyzer_saving is not None else QUANTIZE_BITS.get(quantize)
    estimate_parameters = analyzer_parameters is None

    parameters = strip = saving = 0
    keys = []
    whole_files = _training_state_files(record, tensors, roles)
    for i in unique:
        t, role = tensors[i], roles[i]
        nbytes = t["bytes"]
        if role in STRIP_ROLES:
            if t["file"] not in whole_files:
                strip += nbytes
            continue
        if nbytes:
            keys.append(_dedupe_key(t))
        if role not in NON_PARAMETER_ROLES:
            if estimate_parameters:
                parameters += t["elements"]
            if target_bits is not None:
                saving += _quantize_saving(t, target_bits)

    # Training state in files of its own (a Trainer folder's optimizer.pt...) goes with its files,
    # framing and all: their sizes on disk are exact.
    if whole_files:
        strip, strip_source = strip + sum(whole_files.values()), "files"
    elif analyzer_strip is not None:
        strip, strip_source = analyzer_strip, "analyzer"
    else:
        strip_source = "inventory"
    return Digest(
        roles_source="analyzer" if analyzed else "inventory",
        by_role=by_role,
        parameters=parameters if analyzer_parameters is None else analyzer_parameters,
        strip_bytes=strip,
        strip_source=strip_source,
        quantize_saving=saving if analyzer_saving is None else analyzer_saving,
        quantize_source="inventory" if analyzer_saving is None else "analyzer",
        dedupe_keys=tuple(keys),
    )


def recoverable_section(d: Digest, quantize: str) -> dict[str, Any]:
    """The per-model ``recoverable`` field: what stripping or quantizing this model alone saves."""
    return {
        "strip": {"bytes": d.strip_bytes, "source": d.strip_source},
        "quantize": {"target": quantize, "saving_bytes": d.quantize_saving, "source": d.quantize_source},
    }


def _training_state_files(
    record: Mapping[str, Any], tensors: list[Mapping[str, Any]], roles: list[str]
) -> dict[str, int]:
    """Files of a folder model that hold no model tensor (``optimizer.pt``, ``scheduler.pt``,
    ``rng_state.pth``, ``training_args.bin`` in a Trainer folder): stripping deletes them whole.
    Only folder models: their parts are files of their own, where a data shard of a TF checkpoint
    or a sharded index cannot go without rewriting the index."""
    from ckptscan.registry import FOLDER_FORMATS

    if record.get("format") not in {spec.name for spec in FOLDER_FORMATS}:
        return {}
    weights = [f for f in record.get("files") or () if f.get("role") == "weights"]
    if len(weights) < 2:
        return {}
    holding_model = {t.get("file") for t, role in zip(tensors, roles, strict=True) if role not in STRIP_ROLES}
    return {f["path"]: int(f["size"]) for f in weights if f["path"] not in holding_model}


def tensor_role(tensor: Mapping[str, Any], analyzed: bool) -> str:
    role = tensor.get("role")
    if analyzed and isinstance(role, str):
        return role
    attrs = tensor.get("attrs")
    structure = attrs.get("structure") if isinstance(attrs, Mapping) else None
    if isinstance(structure, str):
        return STRUCTURE_ROLES.get(structure, FALLBACK_MODEL_ROLE)
    return FALLBACK_MODEL_ROLE


def _count_roles(tensors: list[Mapping[str, Any]], roles: list[str]) -> dict[str, tuple[int, int, int]]:
    counts: dict[str, tuple[int, int, int]] = {}
    for t, role in zip(tensors, roles, strict=True):
        n, elements, nbytes = counts.get(role, (0, 0, 0))
        counts[role] = (n + 1, elements + int(t.get("elements", 0)), nbytes + int(t.get("bytes", 0)))
    return counts


def _unique_views(tensors: Iterable[Mapping[str, Any]]) -> list[int]:
    """Indices of the first entry of each distinct view (a tied weight saved twice counts once)."""
    seen: set[tuple[Any, ...]] = set()
    unique = []
    for i, t in enumerate(tensors):
        if "storage" in t:
            key: tuple[Any, ...] = ("s", t["storage"], t.get("storage_offset", 0), t["dtype"], tuple(t["shape"]))
            key += (tuple(t.get("strides") or ()),)
        elif t.get("offset") is None:
            key = ("n", t.get("file"), t["name"])
        else:
            key = ("o", t.get("file"), t["offset"], t["dtype"], tuple(t["shape"]))
        if key not in seen:
            seen.add(key)
            unique.append(i)
    return unique


def _dedupe_key(t: Mapping[str, Any]) -> DedupeKey:
    stats = t.get("stats")
    content = stats.get("hash") if isinstance(stats, Mapping) else None
    return (t["name"], tuple(t["shape"]), t["dtype"], int(t["bytes"]), content if isinstance(content, str) else None)


def _analyzer_parameters(record: Mapping[str, Any]) -> int | None:
    parameters = record.get("parameters")
    total = parameters.get("total") if isinstance(parameters, Mapping) else None
    return total if isinstance(total, int) and not isinstance(total, bool) else None


def _target_saving(record: Mapping[str, Any], name: str) -> int | None:
    reduction = record.get("reduction")
    targets = reduction.get("targets") if isinstance(reduction, Mapping) else None
    if not isinstance(targets, list):
        return None
    for target in targets:
        if isinstance(target, Mapping) and target.get("name") == name:
            saving = target.get("saving_bytes")
            if isinstance(saving, int) and not isinstance(saving, bool):
                return max(0, saving)
    return None


def _quantize_saving(t: Mapping[str, Any], bits: Fraction) -> int:
    """Bytes saved by storing a floating matrix at ``bits`` per element (an estimate)."""
    current = _float_bits(t["dtype"])
    if current is None or len(t["shape"]) < 2 or current[0] * bits.denominator <= bits.numerator * current[1]:
        return 0
    elements = int(t.get("elements", 0))
    after = -(-(elements * bits.numerator) // (8 * bits.denominator))  # ceil, exact
    return max(0, int(t.get("bytes", 0)) - after)


_FLOAT_BITS: dict[str, tuple[int, int] | None] = {}


def _float_bits(name: str) -> tuple[int, int] | None:
    """Bits per element (numerator, denominator) of a floating dtype of known size, else None."""
    if name not in _FLOAT_BITS:
        dtype = lookup(name)
        bits = dtype.bits_per_element
        _FLOAT_BITS[name] = (bits.numerator, bits.denominator) if dtype.is_floating and dtype.known else None
    return _FLOAT_BITS[name]
