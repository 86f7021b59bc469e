"""The value statistics pass: what a checkpoint's numbers say (``ckptscan PATH --stats``).

    from ckptscan.stats import StatsOptions, compute
    result = compute(inventory, StatsOptions(workers=2))
    result.tensors[i]        # TensorStats for inventory.tensors[i]
    result.summary           # pruning potential, quantization sensitivity, integrity
    result.findings          # nan-values, inf-values, all-zero-tensor, duplicate-tensor-content

Reads each tensor's bytes where its reader recorded them (:mod:`ckptscan.data`), in bounded blocks
across worker processes or threads, and never keeps a tensor in memory. Pure data in and out apart
from those reads: no printing; ``progress`` is called from the calling thread. numpy (and, for GGUF
quantized blocks, gguf) are imported only here, never by a plain scan. Definitions: docs/stats.md.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ckptscan.errors import UsageError
from ckptscan.inventory import Finding, Inventory

if TYPE_CHECKING:
    from ckptscan.stats.summary import StatsSummary

ProgressFn = Callable[[int, int], None]  # (bytes done, bytes in all)


@dataclass(frozen=True, slots=True)
class StatsOptions:
    """How the stats pass reads the values: workers, sampling, ranking length, executor."""

    workers: int = 0  # 0: one per CPU core
    sample: float | None = None  # read this fraction of each tensor (evenly spaced windows)
    top: int = 10  # length of the quantization sensitivity ranking
    executor: str = "auto"  # "thread", "process" (forked), or "auto": processes for big jobs

    def validated(self) -> StatsOptions:
        if self.workers < 0:
            raise UsageError(f"workers must be 0 (one per core) or more, not {self.workers}")
        if self.sample is not None and not (0 < self.sample <= 1):  # NaN fails the comparison too
            raise UsageError(f"the sample fraction must be in (0, 1], not {self.sample}")
        if self.executor not in ("auto", "thread", "process"):
            raise UsageError(f"executor must be auto, thread or process, not {self.executor!r}")
        return self


@dataclass(frozen=True, slots=True)
class TensorStats:
    """Statistics of one tensor's values (None where a value does not apply; ``notes`` says why)."""

    name: str
    elements: int = 0  # values examined
    sampled: bool = False
    fraction: float = 1.0  # examined / all values
    min: float | None = None
    max: float | None = None
    mean: float | None = None
    std: float | None = None  # population standard deviation (ddof=0) of the finite values
    absmax: float | None = None
    l2: float | None = None
    zeros: int = 0
    near_zero: Mapping[str, int] | None = None  # |x| < threshold -> count
    near_zero_rel: Mapping[str, int] | None = None  # |x| < r * row absmax -> count
    nan: int = 0
    inf: int = 0
    outlier: float | None = None  # absmax / std
    sqnr_int8_db: float | None = None
    sqnr_int4_g128_db: float | None = None
    structured_2_4: bool | None = None
    hash: str | None = None
    notes: Mapping[str, str] = field(default_factory=dict)
    skipped: str | None = None  # why no statistics at all
    bytes_read: int = 0
    # sums behind the SQNR values, for energy-weighted totals over many tensors
    signal: float = 0.0
    err_int8: float | None = None
    err_int4: float | None = None


@dataclass(frozen=True, slots=True)
class StatsResult:
    """What the stats pass measured: per-tensor statistics, the summary, findings, the cost."""

    tensors: tuple[TensorStats, ...]  # one per inventory tensor, same order
    summary: StatsSummary  # pruning, quantization sensitivity, integrity (the JSON ``stats_summary``)
    findings: tuple[Finding, ...]
    seconds: float
    workers: int
    bytes_read: int
    sampled: bool
    hash_algorithm: str


def compute(
    inventory: Inventory,
    options: StatsOptions | None = None,
    *,
    progress: ProgressFn | None = None,
    roles: Mapping[str, str] | None = None,
) -> StatsResult:
    """Statistics of every tensor of ``inventory``; ``roles`` (tensor name -> role) groups totals."""
    from ckptscan.stats.run import run

    return run(inventory, (options or StatsOptions()).validated(), progress, roles)


__all__ = ["StatsOptions", "StatsResult", "TensorStats", "compute"]
