"""What a worker process does with a unit: recognize the file by content, scan it, render it.

Everything here runs in a worker process (or in the parent with ``--workers 0``). A unit never
raises: a file that cannot be read becomes a record with ``error`` set, exactly as ``ckptscan
scan`` would report it; a file whose first bytes match no format is skipped.
"""

from __future__ import annotations

import os
import signal
import traceback
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

from ckptscan import pipeline, registry
from ckptscan.analyze.analysis import AnalysisOptions
from ckptscan.audit.discover import Unit, normalized
from ckptscan.audit.model import Digest, Facts, digest, facts
from ckptscan.errors import CkptscanError, UnrecognizedFormat
from ckptscan.report.json import recoverable_dict, result_dict
from ckptscan.safe_text import json_text
from ckptscan.scan import ScanError, ScanResult, scan


@dataclass(frozen=True, slots=True)
class WorkerOptions:
    """What a worker computes for each model (tensor records, stats pass, reduction targets)."""

    tensors: bool = False  # keep every tensor record in the output
    stats: bool = False  # run the stats pass (content hashes for exact deduplication)
    stats_sample: float | None = None  # with ``stats``: the fraction of each tensor read
    quantize: str = "int8"
    all_targets: bool = False  # every reduction target per model, not only strip, dedupe and ``quantize``

    def analysis(self) -> AnalysisOptions:
        """The analyzer computes only the reduction targets the audit reports (it is most of the
        analysis time on small files), unless every target was asked for; memory estimates are
        `ckptscan memory`'s (the record's `memory` is null)."""
        if self.all_targets:
            return AnalysisOptions(memory=False)
        return AnalysisOptions(targets=("strip", "dedupe", self.quantize), memory=False)

    def pipeline(self) -> pipeline.Options:
        """One thread for the stats pass: the audit's workers are the parallelism."""
        stats = None
        if self.stats:
            from ckptscan.stats import StatsOptions

            stats = StatsOptions(workers=1, sample=self.stats_sample, executor="thread")
        return pipeline.Options(analysis=self.analysis(), stats=stats)


@dataclass(frozen=True, slots=True)
class ModelOutcome:
    """A model, as the parent needs it: the record already serialized (JSON text is cheaper to
    send, keep and print than the dict it comes from), the typed facts and digest the totals read
    (taken from the model's ``ModelReport``, never parsed back from the record), its members."""

    unit_id: int
    text: str  # the per-model JSON record, compact
    facts: Facts
    members: tuple[str, ...]  # normalized paths of every file the model read
    digest: Digest
    detail: str = ""  # traceback of an internal error, for --debug


@dataclass(frozen=True, slots=True)
class Skipped:
    """A unit a worker did not report as a model, and why."""

    unit_id: int
    reason: str  # NOT_A_CHECKPOINT, NAMED_LIKE_A_CHECKPOINT or NOT_ONE_MODEL


Outcome = ModelOutcome | Skipped

NOT_A_CHECKPOINT = "not-a-checkpoint"
NAMED_LIKE_A_CHECKPOINT = "unrecognized-content"  # a checkpoint's extension, content unrecognized
NOT_ONE_MODEL = "not-one-model"  # a folder unit whose weights in two formats are two models: read its files


def process(unit: Unit, options: WorkerOptions) -> Outcome:
    """Read one unit; never raises."""
    if (
        unit.kind == "file"
        and not registry.could_be_model(os.path.basename(unit.path))
        and not registry.hides_a_pickle(unit.path)
    ):
        return Skipped(unit.id, NOT_A_CHECKPOINT)  # the registry's policy: configs, tokenizers, text
    if unit.kind == "folder" and not _one_model(unit.path):
        return Skipped(unit.id, NOT_ONE_MODEL)
    result = scan(unit.path)
    if unit.kind == "file" and _unrecognized(result):
        reason = NAMED_LIKE_A_CHECKPOINT if _has_checkpoint_extension(unit.path) else NOT_A_CHECKPOINT
        return Skipped(unit.id, reason)
    try:
        return model_outcome(unit, result, options)
    except Exception as e:  # a bug in rendering must not lose the unit
        message = f"{unit.path}: internal error while reporting ({type(e).__name__}: {e}); please report it"
        return error_outcome(unit, ScanError("internal-error", message, traceback.format_exc()), options)


def _one_model(folder: str) -> bool:
    """The planner groups a folder by names only; a folder format, a pipeline, or copies of one model
    (checked here, in the worker, under the time limit) is what `ckptscan DIR` reads as one."""
    from ckptscan import folders

    path = Path(folder)
    if registry.detect_folder(path) is not None:
        return True
    try:
        return folders.claims(path)
    except CkptscanError:
        return True  # a pipeline or copies that fail to read: the folder's error record says why


def _unrecognized(result: ScanResult) -> bool:
    """No format's sniff accepted the file's first bytes (a reader failing inside a recognized
    file has its format set by ``registry.read_source``, so it is not mistaken for this)."""
    return result.error is not None and result.error.code == UnrecognizedFormat.code and result.format is None


def model_outcome(unit: Unit, result: ScanResult, options: WorkerOptions) -> ModelOutcome:
    model = pipeline.build(result, options.pipeline())
    record = result_dict(model)
    if model.stats_problem:
        record["warnings"].append(model.stats_problem)
    record["folder"] = unit.folder
    d = digest(model, options.quantize)
    record["recoverable"] = recoverable_dict(d, options.quantize)
    if not options.tensors:
        record["tensors"] = []
    inventory = result.inventory
    if inventory is not None:
        members = tuple(normalized(os.path.join(inventory.root, f.path)) for f in inventory.files)
    else:
        members = (unit.key,)
    claimed = set(members)
    companions = [{"path": c.name, "size": c.size} for c in unit.companions if c.key not in claimed]
    if companions:
        record["companions"] = companions
    detail = result.error.detail if result.error is not None else ""
    text = json_text(record, separators=(",", ":"))
    return ModelOutcome(unit.id, text, facts(model, unit.folder), members, d, detail)


def error_outcome(unit: Unit, error: ScanError, options: WorkerOptions) -> ModelOutcome:
    """A unit that produced no scan result of its own: timed out, crashed its worker, unopenable."""
    result = ScanResult(unit.path, None, None, error)
    return model_outcome(unit, result, options)


def stats_available() -> bool:
    """Whether the stats pass (per-tensor content hashes) can run: in the build, numpy installed."""
    import importlib.util

    return all(importlib.util.find_spec(name) is not None for name in ("ckptscan.stats", "numpy"))


def _has_checkpoint_extension(path: str) -> bool:
    name = Path(path).name.lower()
    return any(name.endswith(ext) for spec in registry.FORMATS for ext in spec.extensions)


# -- the worker process --------------------------------------------------------------------------


def worker_main(conn: Connection, options: WorkerOptions) -> None:
    """Receive batches of units, send one outcome per unit, until told to stop (None) or orphaned."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    while True:
        try:
            batch: list[Unit] | None = conn.recv()
        except (EOFError, OSError):
            return
        if batch is None:
            return
        for unit in batch:
            conn.send(process(unit, options))
