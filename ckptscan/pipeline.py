"""From what a user names to one finished, typed result per model: ``ModelReport``.

    path -> Source -> read -> Inventory -> analyze -> (stats pass) -> ModelReport -> render

This module is the only caller of :func:`ckptscan.analyze.analysis.analyze` and of the stats pass
(:func:`ckptscan.stats.compute`) outside tests. Each model is analysed exactly once; the renderers
(``ckptscan.report``) and the audit's totals read the ``ModelReport`` and compute nothing of their
own, so the terminal report, ``--json`` and ``ckptscan audit`` cannot disagree.

Pure apart from reading the model: no printing. The stats pass reports progress through a callback
the CLI supplies; a stats pass that cannot run (numpy missing) leaves the report standing with
``stats_problem`` saying why.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ckptscan.analyze.analysis import Analysis, AnalysisOptions, analyze
from ckptscan.errors import CkptscanError
from ckptscan.inventory import Finding, Inventory
from ckptscan.scan import ScanError, ScanResult, model_inputs, scan

if TYPE_CHECKING:
    from ckptscan.stats import ProgressFn, StatsOptions, StatsResult
    from ckptscan.stats.summary import MeasuredError


@dataclass(frozen=True, slots=True)
class Options:
    """What to compute for each model."""

    analysis: AnalysisOptions = field(default_factory=AnalysisOptions)
    stats: StatsOptions | None = None  # None: no stats pass (header only)


# Called once per model whose values are read: (model path) -> (progress callback, close) or None.
ProgressFactory = Callable[[str], "tuple[ProgressFn, Callable[[], None]] | None"]


@dataclass(frozen=True, slots=True)
class ModelReport:
    """Everything known about one model, computed once. Renderers only format it.

    ``analysis`` is None exactly when ``scan.inventory`` is None (the model could not be read).
    ``stats`` is None without a stats pass, or when it could not run (``stats_problem`` says why).
    Memory estimates are the analyzer's (``analysis.inference``/``analysis.training``; None when
    ``AnalysisOptions.memory`` is off); ``inference``/``training`` below are shortcuts to them.
    """

    scan: ScanResult
    analysis: Analysis | None = None
    stats: StatsResult | None = None
    # the quantization error measured by the stats pass for each int8/int4 reduction target
    measured: Mapping[str, MeasuredError] = field(default_factory=dict)
    stats_problem: str = ""  # why the stats pass asked for did not run ("" when it ran or was not asked)

    @property
    def path(self) -> str:
        return self.scan.path

    @property
    def format(self) -> str | None:
        return self.scan.format

    @property
    def inventory(self) -> Inventory | None:
        return self.scan.inventory

    @property
    def error(self) -> ScanError | None:
        return self.scan.error

    @property
    def inference(self) -> Any:
        return self.analysis.inference if self.analysis is not None else None

    @property
    def training(self) -> Any:
        return self.analysis.training if self.analysis is not None else None

    @property
    def roles(self) -> dict[str, str]:
        """Tensor name -> role, from the analysis (empty without an inventory)."""
        if self.analysis is None or self.inventory is None:
            return {}
        return {t.name: d.role.value for t, d in zip(self.inventory.tensors, self.analysis.decisions, strict=True)}

    def findings(self) -> list[Finding]:
        """The reader's findings (or those kept with its error), then the stats pass's."""
        found = list(self.inventory.findings) if self.inventory is not None else []
        if self.scan.error is not None:
            found += self.scan.error.findings
        if self.stats is not None:
            found += self.stats.findings
        return found


def expand(path: str) -> list[ScanResult]:
    """Results for one argument; a folder may hold several models (or none, which is an error)."""
    from ckptscan.scan import is_remote

    if is_remote(path):
        try:
            urls = model_inputs(path)
        except CkptscanError as e:
            return [ScanResult(path, None, None, ScanError(e.code, str(e.located(path=path))))]
        if not urls:
            return [ScanResult(path, None, None, ScanError("unrecognized-format", f"{path}: no checkpoint found"))]
        return [scan(str(url)) for url in urls]
    p = Path(path)
    if p.is_dir():
        found = model_inputs(p)
        if not found:
            message = f"{path}: no checkpoint found in this folder"
            return [ScanResult(path, None, None, ScanError("unrecognized-format", message))]
        return [scan(child) for child in found]
    return [scan(path)]


def run(
    paths: Iterable[str], options: Options | None = None, progress: ProgressFactory | None = None
) -> Iterator[ModelReport]:
    """One report per model the paths stand for, in order, each built as soon as it is read."""
    options = options or Options()
    for path in paths:
        for result in expand(path):
            yield build(result, options, progress)


def build(result: ScanResult, options: Options | None = None, progress: ProgressFactory | None = None) -> ModelReport:
    """The report of one scanned model: one analysis, and the stats pass when asked for."""
    options = options or Options()
    inventory = result.inventory
    if inventory is None:
        return ModelReport(result)
    analysis = analyze(inventory, options.analysis)
    if options.stats is None:
        return ModelReport(result, analysis)
    if result.remote is not None:  # the pass reads every value: not over the network
        return ModelReport(result, analysis, stats_problem="--stats reads every value; download remote models first")
    stats, problem = _stats(result.path, inventory, analysis, options.stats, progress)
    if stats is None:
        return ModelReport(result, analysis, stats_problem=problem)
    from ckptscan.stats.summary import measured_targets

    return ModelReport(result, analysis, stats, measured_targets(analysis.targets, stats.tensors))


def _stats(
    path: str, inventory: Inventory, analysis: Analysis, options: StatsOptions, progress: ProgressFactory | None
) -> tuple[StatsResult | None, str]:
    from ckptscan.stats import compute

    roles = {t.name: d.role.value for t, d in zip(inventory.tensors, analysis.decisions, strict=True)}
    bar = progress(path) if progress is not None else None
    try:
        return compute(inventory, options, progress=bar[0] if bar is not None else None, roles=roles), ""
    except CkptscanError as e:  # e.g. numpy missing: the inventory and its analysis still stand
        return None, f"--stats: {e}"
    finally:
        if bar is not None:
            bar[1]()
