"""What an audit keeps of one model: its JSON record, and a digest for the cross-model totals.

The record is the single-scan result (``ckptscan.report.json.result_dict`` of the model's
``ModelReport``) plus the model's ``folder`` and a ``recoverable`` section. The digest is internal:
role totals, parameters and the keys that identify each tensor across files, so that the parent
process can deduplicate across thousands of models without keeping their tensor lists.

Both come from the typed ``ModelReport`` (``ckptscan.pipeline``): roles, parameters and reduction
figures are the analyzer's, computed once per model; nothing here reads a rendered record back.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING, Any

from ckptscan.dtypes import DTYPES
from ckptscan.inventory import Finding, Tensor

if TYPE_CHECKING:
    from ckptscan.analyze.analysis import Analysis
    from ckptscan.pipeline import ModelReport

# Roles whose bytes a deployment does not need: what "strip" removes (as the analyzer's target).
STRIP_ROLES = frozenset({"optimizer_state", "training_state", "ema", "master_weight"})

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
    """What the cross-model totals need of one model, without its tensor list: roles, bytes, keys."""

    roles_source: str  # "analyzer" ("inventory" was the pre-pipeline fallback; kept in the schema)
    by_role: Mapping[str, tuple[int, int, int]]  # role -> (tensors, elements, bytes), every entry
    parameters: int
    strip_bytes: int
    strip_source: str  # "files" or "analyzer"
    quantize_saving: int
    quantize_source: str  # "analyzer"
    dedupe_keys: tuple[DedupeKey, ...]  # one per stored tensor outside STRIP_ROLES


EMPTY_DIGEST = Digest("analyzer", {}, 0, 0, "analyzer", 0, "analyzer", ())


@dataclass(frozen=True, slots=True)
class Facts:
    """What the cross-model totals read of one model, typed (sent from the worker with its record)."""

    path: str
    folder: str
    format: str | None
    files: int  # files the model read
    file_bytes: int | None  # None when the model could not be read
    tensors: int | None  # None when the model could not be read
    by_dtype: Mapping[str, tuple[int, int, int]]  # dtype -> (tensors, elements, bytes)
    findings: tuple[Finding, ...]  # the reader's, then the stats pass's
    error_code: str | None
    error_message: str | None


def facts(model: ModelReport, folder: str) -> Facts:
    from ckptscan.analyze import summary

    inventory = model.inventory
    error = model.error
    by_dtype: dict[str, tuple[int, int, int]] = {}
    if inventory is not None:
        by_dtype = {n: (c.tensors, c.elements, c.bytes) for n, c in summary.by_dtype(inventory.tensors).items()}
    return Facts(
        path=model.path,
        folder=folder,
        format=inventory.format if inventory is not None else model.format,
        files=len(inventory.files) if inventory is not None else 0,
        file_bytes=inventory.file_bytes if inventory is not None else None,
        tensors=len(inventory.tensors) if inventory is not None else None,
        by_dtype=by_dtype,
        findings=tuple(model.findings()),
        error_code=error.code if error is not None else None,
        error_message=error.message if error is not None else None,
    )


def digest(model: ModelReport, quantize: str) -> Digest:
    """The digest of one model report (EMPTY_DIGEST when it could not be read)."""
    inventory, analysis = model.inventory, model.analysis
    if inventory is None or analysis is None:
        return EMPTY_DIGEST
    tensors = inventory.tensors
    roles = [d.role.value for d in analysis.decisions]
    hashes = [s.hash for s in model.stats.tensors] if model.stats is not None else [None] * len(tensors)
    strip = 0
    keys = []
    whole_files = _training_state_files(model, roles)
    for i in _unique_views(tensors):
        t, role = tensors[i], roles[i]
        if role in STRIP_ROLES:
            if t.file not in whole_files:
                strip += t.nbytes
            continue
        if t.nbytes:
            keys.append((t.name, tuple(t.shape), t.dtype.name, t.nbytes, hashes[i]))
    # Training state in files of its own (a Trainer folder's optimizer.pt...) goes with its files,
    # framing and all: their sizes on disk are exact. Otherwise the analyzer's strip target, which
    # knows ties, dead storage and framing.
    analyzer_strip = _target_saving(analysis, "strip")
    if whole_files:
        strip, strip_source = strip + sum(whole_files.values()), "files"
    elif analyzer_strip is not None:
        strip, strip_source = analyzer_strip, "analyzer"
    else:
        strip_source = "analyzer"  # no strip target asked for: its roles' unique bytes
    return Digest(
        roles_source="analyzer",
        by_role={role: (c.tensors, c.elements, c.bytes) for role, c in analysis.by_role.items()},
        parameters=analysis.parameters.total,
        strip_bytes=strip,
        strip_source=strip_source,
        quantize_saving=_target_saving(analysis, quantize) or 0,
        quantize_source="analyzer",
        dedupe_keys=tuple(keys),
    )


def _training_state_files(model: ModelReport, roles: Sequence[str]) -> dict[str, int]:
    """Files of a folder model that hold no model tensor (``optimizer.pt``, ``scheduler.pt``,
    ``rng_state.pth``, ``training_args.bin`` in a Trainer folder): stripping deletes them whole.
    Only folder models: their parts are files of their own, where a data shard of a TF checkpoint
    or a sharded index cannot go without rewriting the index."""
    from ckptscan.registry import FOLDER_FORMATS

    inventory = model.inventory
    assert inventory is not None
    if inventory.format not in {spec.name for spec in FOLDER_FORMATS}:
        return {}
    weights = [f for f in inventory.files if f.role == "weights"]
    if len(weights) < 2:
        return {}
    holding_model = {t.file for t, role in zip(inventory.tensors, roles, strict=True) if role not in STRIP_ROLES}
    return {f.path: f.size for f in weights if f.path not in holding_model}


def _unique_views(tensors: Sequence[Tensor]) -> list[int]:
    """Indices of the first entry of each distinct view (a tied weight saved twice counts once)."""
    seen: set[tuple[Any, ...]] = set()
    unique = []
    for i, t in enumerate(tensors):
        if t.storage is not None:
            key: tuple[Any, ...] = ("s", t.storage, t.storage_offset, t.dtype.name, tuple(t.shape))
            key += (tuple(t.strides or ()),)
        elif t.offset is None:
            key = ("n", t.file, t.name)
        else:
            key = ("o", t.file, t.offset, t.dtype.name, tuple(t.shape))
        if key not in seen:
            seen.add(key)
            unique.append(i)
    return unique


def _target_saving(analysis: Analysis, name: str) -> int | None:
    for target in analysis.targets:
        if target.name == name:
            return max(0, target.saving_bytes)
    return None
