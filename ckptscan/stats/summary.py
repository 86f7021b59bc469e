"""From per-tensor statistics to what a user decides with: pruning potential, quantization
sensitivity, and integrity findings (NaN/Inf, all-zero tensors, tensors identical to another).

The summary is the JSON ``stats_summary`` of a result (its shape is in the published schema).
Counts of sampled tensors are scaled to the whole tensor and the summary says it is an estimate.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ckptscan.inventory import Finding, Inventory, Severity, Tensor
from ckptscan.stats.kernel import ABS_THRESHOLDS, REL_THRESHOLDS

if TYPE_CHECKING:
    from ckptscan.stats import StatsOptions, TensorStats

# Sensitivity heuristics (docs/stats.md): Gaussian weights give about 40 dB (int8 per row) and
# 19 dB (int4, groups of 128); well below that, a tensor is better kept in higher precision.
SENSITIVE_INT8_DB = 30.0
SENSITIVE_INT4_DB = 15.0
OUTLIER_RATIO = 30.0  # absmax / std; Gaussian weights of 16M values give about 6, Laplace about 12
CRUSHED_SHARE = 0.5  # non-zero values below 1% of their row's maximum: int8 keeps about one level for them
HIGH_PRECISION_ROLES = ("embedding", "output_head")
MAX_LISTED = 50  # names listed per integrity group in the summary


# -- the summary, typed (report/json.py turns it into the JSON ``stats_summary``) -------------------


@dataclass(frozen=True, slots=True)
class Amount:
    """Elements and bytes of some values."""

    elements: int
    bytes: int


@dataclass(frozen=True, slots=True)
class PruneCounts:
    """Values of some tensors at or near zero (counts of sampled tensors scaled to the whole)."""

    elements: int
    bytes: int
    zeros: Amount
    below: Mapping[str, Amount]  # |x| < threshold (repr of the threshold) -> amount
    below_rel: Mapping[str, Amount]  # |x| < r x the row's absolute maximum


@dataclass(frozen=True, slots=True)
class Structured24:
    """The tensors whose values follow the 2:4 sparsity pattern, and their size."""

    tensors: tuple[str, ...]
    elements: int
    bytes: int


@dataclass(frozen=True, slots=True)
class Pruning:
    """How much of a model is at or near zero, by role, and which tensors are 2:4 sparse."""

    counts: PruneCounts  # every floating tensor read
    by_role: Mapping[str, PruneCounts] | None  # None without roles
    structured_2_4: Structured24
    estimated: bool  # some counts come from samples


@dataclass(frozen=True, slots=True)
class SqnrTotal:
    """The quantization error (SQNR) of one scheme over the tensors it quantizes."""

    tensors: int
    sqnr_db: float | None  # energy-weighted over the tensors
    min_db: float | None
    median_db: float | None


@dataclass(frozen=True, slots=True)
class Ranked:
    """One tensor of the quantization sensitivity ranking."""

    name: str
    role: str | None
    sqnr_int8_db: float | None
    sqnr_int4_g128_db: float | None
    outlier: float | None
    bytes: int
    reasons: tuple[str, ...]  # why it is better kept in higher precision (empty: no criterion met)


@dataclass(frozen=True, slots=True)
class Quantization:
    """How well a model's values survive int8 and int4, and which tensors to keep wider."""

    int8: SqnrTotal
    int4_g128: SqnrTotal
    ranking: tuple[Ranked, ...]  # the ``top`` most sensitive
    keep_high_precision: tuple[Ranked, ...]  # every tensor meeting a criterion


@dataclass(frozen=True, slots=True)
class DuplicateGroup:
    """Tensors whose values are identical (same content hash): the bytes of each, the copies."""

    hash: str
    tensors: tuple[str, ...]
    bytes: int  # each
    copies: int


@dataclass(frozen=True, slots=True)
class Integrity:
    """Values that look like damage: NaN and Inf, tensors all zero, duplicated tensors."""

    nan_values: int
    inf_values: int
    nan_tensors: tuple[str, ...]  # at most MAX_LISTED names each
    inf_tensors: tuple[str, ...]
    all_zero_tensors: tuple[str, ...]
    duplicate_groups: tuple[DuplicateGroup, ...]


@dataclass(frozen=True, slots=True)
class Skipped:
    """A tensor the stats pass did not read, and why."""

    name: str
    reason: str


@dataclass(frozen=True, slots=True)
class StatsSummary:
    """What a model's values say as a whole: the JSON ``stats_summary`` (schema), typed."""

    tensors: int  # tensors read
    skipped: tuple[Skipped, ...]
    elements: int
    sampled: bool
    sample_fraction: float | None
    integrity: Integrity
    pruning: Pruning
    quantization: Quantization
    # how the pass ran
    seconds: float = 0.0
    workers: int = 0
    bytes_read: int = 0
    hash_algorithm: str = ""


# the sensitivity criteria, as the JSON ``quantization.thresholds`` reports them
THRESHOLDS: Mapping[str, Any] = {
    "int8_db": SENSITIVE_INT8_DB,
    "int4_g128_db": SENSITIVE_INT4_DB,
    "outlier": OUTLIER_RATIO,
    "crushed_share": CRUSHED_SHARE,
    "roles": list(HIGH_PRECISION_ROLES),
}


def summarize(
    inventory: Inventory,
    stats: Sequence[TensorStats],
    options: StatsOptions,
    roles: Mapping[str, str] | None,
) -> tuple[StatsSummary, list[Finding]]:
    tensors = inventory.tensors
    read = [(t, s) for t, s in zip(tensors, stats, strict=True) if s.skipped is None]
    findings: list[Finding] = []
    findings += _nonfinite(read)
    findings += _all_zero(read)
    duplicates, found = _duplicates(read)
    findings += found
    integrity = Integrity(
        nan_values=sum(s.nan for _, s in read),
        inf_values=sum(s.inf for _, s in read),
        nan_tensors=tuple(s.name for _, s in read if s.nan)[:MAX_LISTED],
        inf_tensors=tuple(s.name for _, s in read if s.inf)[:MAX_LISTED],
        all_zero_tensors=tuple(s.name for t, s in read if _all_zero_tensor(t, s))[:MAX_LISTED],
        duplicate_groups=tuple(duplicates),
    )
    summary = StatsSummary(
        tensors=len(read),
        skipped=tuple(Skipped(s.name, s.skipped) for s in stats if s.skipped is not None),
        elements=sum(s.elements for _, s in read),
        sampled=any(s.sampled for _, s in read),
        sample_fraction=options.sample,
        integrity=integrity,
        pruning=pruning(read, roles),
        quantization=quantization(read, roles, options.top),
    )
    return summary, findings


# -- pruning -------------------------------------------------------------------------------------------


def pruning(read: Sequence[tuple[Tensor, TensorStats]], roles: Mapping[str, str] | None) -> Pruning:
    floating = [(t, s) for t, s in read if s.near_zero is not None and s.elements]
    by_role = None
    if roles is not None:
        grouped: dict[str, list[tuple[Tensor, TensorStats]]] = defaultdict(list)
        for t, s in floating:
            grouped[roles.get(t.name, "other")].append((t, s))
        by_role = {role: _prune_counts(members) for role, members in sorted(grouped.items())}
    patterned = [(t, s) for t, s in floating if s.structured_2_4 and s.zeros < s.elements]  # all-zero: reported
    return Pruning(
        counts=_prune_counts(floating),
        by_role=by_role,
        structured_2_4=Structured24(
            tensors=tuple(t.name for t, _ in patterned),
            elements=sum(t.elements for t, _ in patterned),
            bytes=sum(t.nbytes for t, _ in patterned),
        ),
        estimated=any(s.sampled for _, s in floating),
    )


def _prune_counts(members: Iterable[tuple[Tensor, TensorStats]]) -> PruneCounts:
    elements = total_bytes = zeros = zero_bytes = 0
    below = [[0, 0] for _ in ABS_THRESHOLDS]
    below_rel = [[0, 0] for _ in REL_THRESHOLDS]
    for t, s in members:
        scale = t.elements / s.elements  # 1 unless sampled
        elements += t.elements
        total_bytes += t.nbytes
        count = round(s.zeros * scale)
        zeros += count
        zero_bytes += _bytes(t, count)
        for pair, value in zip(below, (s.near_zero or {}).values(), strict=False):
            pair[0] += round(value * scale)
            pair[1] += _bytes(t, round(value * scale))
        for pair, value in zip(below_rel, (s.near_zero_rel or {}).values(), strict=False):
            pair[0] += round(value * scale)
            pair[1] += _bytes(t, round(value * scale))
    return PruneCounts(
        elements=elements,
        bytes=total_bytes,
        zeros=Amount(zeros, zero_bytes),
        below={repr(th): Amount(e, b) for th, (e, b) in zip(ABS_THRESHOLDS, below, strict=True)},
        below_rel={repr(r): Amount(e, b) for r, (e, b) in zip(REL_THRESHOLDS, below_rel, strict=True)},
    )


def _bytes(t: Tensor, elements: int) -> int:
    """Bytes that ``elements`` values of this tensor occupy (rounded down for sub-byte types)."""
    if not t.dtype.known:
        return 0
    bits = t.dtype.bits_per_element * elements
    return int(bits // 8)


# -- quantization --------------------------------------------------------------------------------------


def quantization(read: Sequence[tuple[Tensor, TensorStats]], roles: Mapping[str, str] | None, top: int) -> Quantization:
    measured = [(t, s) for t, s in read if s.sqnr_int4_g128_db is not None or s.sqnr_int8_db is not None]
    entries = [(_ranked(t, s, roles), s) for t, s in measured]
    # tensors meeting a criterion first, then the lowest int4 error
    entries.sort(key=lambda es: (not es[0].reasons, _rank_key(es[1]), es[1].name))
    return Quantization(
        int8=_sqnr_totals([s for _, s in read], "int8"),
        int4_g128=_sqnr_totals([s for _, s in read], "int4"),
        ranking=tuple(entry for entry, _ in entries[:top]),
        keep_high_precision=tuple(entry for entry, _ in entries if entry.reasons),
    )


def _rank_key(s: TensorStats) -> float:
    return s.sqnr_int4_g128_db if s.sqnr_int4_g128_db is not None else (s.sqnr_int8_db or 0.0) - 20.0


def _ranked(t: Tensor, s: TensorStats, roles: Mapping[str, str] | None) -> Ranked:
    role = roles.get(t.name) if roles is not None else None
    reasons = []
    if s.sqnr_int4_g128_db is not None and s.sqnr_int4_g128_db < SENSITIVE_INT4_DB:
        reasons.append(f"int4 g128 SQNR {s.sqnr_int4_g128_db:.1f} dB < {SENSITIVE_INT4_DB:g}")
    if s.sqnr_int8_db is not None and s.sqnr_int8_db < SENSITIVE_INT8_DB:
        reasons.append(f"int8 SQNR {s.sqnr_int8_db:.1f} dB < {SENSITIVE_INT8_DB:g}")
    if s.outlier is not None and s.outlier >= OUTLIER_RATIO:
        reasons.append(f"outliers: absmax is {s.outlier:.0f} x std")
    crushed = _crushed_share(s)
    if crushed is not None and crushed >= CRUSHED_SHARE:
        reasons.append(f"{crushed:.0%} of non-zero values are below 1% of their row's max")
    if role in HIGH_PRECISION_ROLES:
        reasons.append(f"role {role}")
    return Ranked(t.name, role, s.sqnr_int8_db, s.sqnr_int4_g128_db, s.outlier, t.nbytes, tuple(reasons))


def _crushed_share(s: TensorStats) -> float | None:
    """Share of the non-zero values that lie below 1% of their row's absolute maximum."""
    if s.near_zero_rel is None or s.sqnr_int8_db is None:
        return None
    nonzero = s.elements - s.zeros - s.nan - s.inf
    below = s.near_zero_rel.get(repr(0.01), 0) - s.zeros
    return below / nonzero if nonzero > 0 else None


def _db(signal: float, error: float) -> float | None:
    """10 log10(signal / error), or None when either is zero or the ratio overflows (huge values)."""
    if not (signal > 0 and error > 0):
        return None
    ratio = signal / error
    return 10 * math.log10(ratio) if math.isfinite(ratio) and ratio > 0 else None


def _sqnr_totals(stats: Sequence[TensorStats], which: str) -> SqnrTotal:
    measured = [
        (s, s.err_int8 if which == "int8" else s.err_int4)
        for s in stats
        if (s.err_int8 if which == "int8" else s.err_int4) is not None
    ]
    values = [v for s in stats if (v := (s.sqnr_int8_db if which == "int8" else s.sqnr_int4_g128_db)) is not None]
    signal = sum(s.signal for s, _ in measured)
    error = sum(e or 0.0 for _, e in measured)
    return SqnrTotal(
        tensors=len(measured),
        sqnr_db=_db(signal, error),
        min_db=min(values) if values else None,
        median_db=statistics.median(values) if values else None,
    )


# -- integrity --------------------------------------------------------------------------------------


def _nonfinite(read: Sequence[tuple[Tensor, TensorStats]]) -> list[Finding]:
    found = []
    for _, s in read:
        of = f"of {s.elements:,} values" + (" sampled" if s.sampled else "")
        if s.nan:
            found.append(Finding("nan-values", Severity.HIGH, f"{s.nan:,} NaN values ({of})", s.name))
        if s.inf:
            found.append(Finding("inf-values", Severity.HIGH, f"{s.inf:,} infinite values ({of})", s.name))
    return found


def _all_zero_tensor(t: Tensor, s: TensorStats) -> bool:
    return not s.sampled and s.elements > 0 and s.zeros == s.elements


def _all_zero(read: Sequence[tuple[Tensor, TensorStats]]) -> list[Finding]:
    found = []
    for t, s in read:
        if not _all_zero_tensor(t, s):
            continue
        weight_like = t.dtype.is_floating and len(t.shape) >= 2
        severity = Severity.MEDIUM if weight_like else Severity.LOW
        what = "a weight matrix" if weight_like else "a tensor"
        found.append(Finding("all-zero-tensor", severity, f"{what} whose {s.elements:,} values are all zero", s.name))
    return found


def _duplicates(read: Sequence[tuple[Tensor, TensorStats]]) -> tuple[list[DuplicateGroup], list[Finding]]:
    """Tensors with equal content hashes stored in different places (shared views are not copies)."""
    groups: dict[str, list[Tensor]] = defaultdict(list)
    for t, s in read:
        if s.hash is not None and s.elements:
            groups[s.hash].append(t)
    out: list[DuplicateGroup] = []
    found: list[Finding] = []
    for content, members in groups.items():
        places = {_place(t) for t in members}
        if len(places) < 2:
            continue
        names = [t.name for t in members]
        each = members[0].nbytes
        out.append(DuplicateGroup(content, tuple(names), each, len(places)))
        shown = ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")
        message = f"{len(names)} tensors hold identical values ({each:,} bytes each, {len(places)} copies): {shown}"
        found.append(Finding("duplicate-tensor-content", Severity.INFO, message, names[0]))
    return out, found


def _place(t: Tensor) -> tuple[Any, ...]:
    if t.storage is not None:
        return ("storage", t.storage, t.storage_offset, t.shape, t.strides)
    return ("file", t.file, t.offset, t.shape)


# -- the analyzer's reduction targets ----------------------------------------------------------------------

# what the stats pass measures, by the analyzer's per-tensor scheme name (reduction.TensorPlan.result)
MEASURED_SCHEMES = {"I8 per-channel": "int8", "I4 g128": "int4"}


@dataclass(frozen=True, slots=True)
class MeasuredError:
    """The quantization error the stats pass measured on the tensors one reduction target quantizes."""

    sqnr_db: float | None  # energy-weighted: 10 log10(total signal / total error)
    min_db: float | None  # the worst tensor's SQNR
    tensors: int  # tensors measured
    of: int  # tensors the target quantizes
    sampled: bool
    note: str


MEASURED_NOTE = "symmetric absmax scales, one per row of the first dimension (groups of 128 along it for int4)"


def measured_targets(targets: Sequence[Any], stats: Sequence[TensorStats]) -> dict[str, MeasuredError]:
    """For each reduction target that quantizes tensors to int8 per channel or int4 in groups of 128:
    the error measured on those tensors (energy-weighted SQNR), as ``{target name: record}``.

    Measured symmetric, one scale per row of the first dimension (docs/stats.md); a target with zero
    points does no worse, and one whose channel is the last dimension (Keras kernels, ONNX MatMul
    weights) is measured on the other axis: ``note`` says so.
    """
    out: dict[str, MeasuredError] = {}
    for target in targets:
        quantized = [p for p in getattr(target, "plans", ()) if p.result in MEASURED_SCHEMES]
        if not quantized:
            continue
        which = MEASURED_SCHEMES[quantized[0].result]
        signal = error = 0.0
        values: list[float] = []
        measured = 0
        for plan in quantized:
            s = stats[plan.index]
            err = s.err_int8 if which == "int8" else s.err_int4
            if s.skipped is not None or err is None:
                continue
            measured += 1
            signal += s.signal
            error += err
            value = s.sqnr_int8_db if which == "int8" else s.sqnr_int4_g128_db
            if value is not None:
                values.append(value)
        out[target.name] = MeasuredError(
            sqnr_db=_db(signal, error),
            min_db=min(values) if values else None,
            tensors=measured,
            of=len(quantized),
            sampled=any(stats[p.index].sampled for p in quantized),
            note=MEASURED_NOTE,
        )
    return out
