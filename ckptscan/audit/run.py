"""An audit from start to end: walk, plan, read in worker processes, group, total.

:meth:`Audit.events` yields what happens as it happens (so that the CLI can stream JSONL records
and drive a progress bar); :meth:`Audit.summary` totals whatever has been done so far, which is
also what an interrupted audit reports.
"""

from __future__ import annotations

import json
import os
import time
from collections import deque
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any

from ckptscan.audit import discover, engines, pool
from ckptscan.audit.aggregate import Aggregate
from ckptscan.audit.discover import Folder, Plan, Unit, WalkOptions, WalkStats
from ckptscan.audit.index import Index
from ckptscan.audit.model import DEFAULT_QUANTIZE, QUANTIZE_BITS
from ckptscan.audit.worker import NAMED_LIKE_A_CHECKPOINT, ModelOutcome, Skipped, WorkerOptions, stats_available
from ckptscan.errors import UsageError
from ckptscan.report.json import audit_dict

DEFAULT_TIMEOUT_S = 60.0
STATS_TIMEOUT_S = 600.0  # with --stats every byte of a model is read


@dataclass(frozen=True, slots=True)
class AuditOptions:
    """What an audit reads and how: the walk, workers, time limit, stats pass, targets, index."""

    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    hidden: bool = False
    follow_links: bool = False
    workers: int | None = None  # None: one per available CPU; 0: read in this process (no time limit)
    timeout_s: float = DEFAULT_TIMEOUT_S
    tensors: bool = False
    stats: bool = False  # the stats pass: content hashes make deduplication exact
    stats_sample: float | None = None  # with stats: read this fraction of each tensor
    quantize: str = DEFAULT_QUANTIZE
    all_targets: bool = False  # every reduction target per model (slower), not only strip/dedupe/quantize
    top: int = 10
    engine: str = "processes"  # or "dask" (ckptscan.audit.engines)
    scheduler: str | None = None  # with dask: an existing scheduler's address; None: a local cluster
    index: str | None = None  # an SQLite file of every file's record: re-runs read only what changed


@dataclass(frozen=True, slots=True)
class Discovered:
    """The event that the walk is done: how many files, bytes and units, and how many workers."""

    files: int
    bytes: int
    units: int
    workers: int


@dataclass(frozen=True, slots=True)
class ModelDone:
    """The event that one model was read: its JSON record, as the worker serialized it."""

    text: str  # the per-model JSON record, serialized
    detail: str = ""  # traceback of an internal error

    @property
    def record(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.text)
        return parsed


@dataclass(frozen=True, slots=True)
class FileSkipped:
    """The event that a file was passed over (not a checkpoint, or not one model), and why."""

    path: str
    size: int
    reason: str


Event = Discovered | ModelDone | FileSkipped | pool.Tick


@dataclass(slots=True)
class Progress:
    """Files and bytes found and done so far, and models read and failed, for a progress display."""

    files_total: int = 0
    bytes_total: int = 0
    files_done: int = 0
    bytes_done: int = 0
    models: int = 0
    failed: int = 0


class Audit:
    def __init__(self, paths: Sequence[str], options: AuditOptions | None = None) -> None:
        self.paths = list(paths)
        self.options = options or AuditOptions()
        if self.options.quantize not in QUANTIZE_BITS:
            raise UsageError(
                f"unknown quantization target {self.options.quantize!r}; one of {', '.join(QUANTIZE_BITS)}"
            )
        if self.options.timeout_s <= 0:
            raise UsageError("the time limit must be positive")
        if self.options.engine not in engines.ENGINES:
            raise UsageError(f"unknown engine {self.options.engine!r}; one of {', '.join(engines.ENGINES)}")
        if self.options.engine == "dask" and not engines.dask_available():
            raise UsageError(f"--engine dask needs dask.distributed ({engines.EXTRA})")
        if self.options.scheduler and self.options.engine != "dask":
            raise UsageError("--scheduler needs --engine dask")
        if self.options.stats and not stats_available():
            raise UsageError("--stats needs the stats pass and numpy (pip install 'ckptscan[stats]')")
        self.aggregate = Aggregate(quantize=self.options.quantize, top=self.options.top)
        self.texts: list[str] = []  # every model's record as JSON text, in completion order
        self._paths: list[str] = []
        self.progress = Progress()
        self.walk_stats = WalkStats()
        self.workers = 0
        self.interrupted = False
        self._started = 0.0
        self._finished: float | None = None
        self._sizes: dict[str, int] = {}  # normalized path -> size, every file found
        self._settled: set[str] = set()
        self._emitted: dict[str, str] = {}  # normalized path of a model's own file -> its record path
        self._folders: list[Folder] = []
        self._index: Index | None = None

    # -- running -------------------------------------------------------------------------------

    def events(self) -> Generator[Event, None, None]:
        self._started = time.monotonic()
        walk_options = WalkOptions(
            self.options.include, self.options.exclude, self.options.hidden, self.options.follow_links
        )
        engine = engines.make(
            self.options.engine, self.options.scheduler, _worker_count(self.options.workers, 1 << 30) or 1
        )
        index: Index | None = None
        try:
            self._folders, self.walk_stats = discover.walk(self.paths, walk_options, engine.list_remote)
            found = {f.key: f for folder in self._folders for f in folder.files}
            for key, f in found.items():
                self._sizes[key] = f.size
            the_plan = discover.plan(self._folders)
            schedule = _Schedule(the_plan)
            self.progress.files_total = self.walk_stats.files
            self.progress.bytes_total = self.walk_stats.bytes
            self.workers = _worker_count(self.options.workers, len(the_plan.units))
            if self.options.engine == "dask":
                self.workers = max(1, self.workers)
            yield Discovered(self.walk_stats.files, self.walk_stats.bytes, len(the_plan.units), self.workers)
            worker_options = WorkerOptions(
                tensors=self.options.tensors,
                stats=self.options.stats,
                stats_sample=self.options.stats_sample,
                quantize=self.options.quantize,
                all_targets=self.options.all_targets,
            )
            if self.options.index:
                index = self._index = Index(self.options.index, self._fingerprint())
            cached = _Remembered(schedule, index, found)
            while True:
                yield from self._settle_cached(the_plan, schedule, cached)
                if not schedule.ready_count():
                    break
                outcomes = engine.run(
                    cached, workers=self.workers, timeout_s=self.options.timeout_s, options=worker_options
                )
                for outcome in outcomes:
                    if not isinstance(outcome, pool.Tick) and index is not None:
                        index.store(the_plan.units[outcome.unit_id], outcome, found)
                    yield from self._outcome(the_plan, schedule, outcome)
                    yield from self._settle_cached(the_plan, schedule, cached)
        except KeyboardInterrupt:
            self.interrupted = True
            raise
        finally:
            self._finished = time.monotonic()
            if index is not None:
                index.close()
            engine.__exit__(None, None, None)

    def _settle_cached(self, the_plan: Plan, schedule: _Schedule, cached: _Remembered) -> Generator[Event, None, None]:
        """Outcomes remembered by the index, for units now ready (they may release others)."""
        while True:
            outcome = cached.next()
            if outcome is None:
                return
            yield from self._outcome(the_plan, schedule, outcome)

    def _outcome(
        self, the_plan: Plan, schedule: _Schedule, outcome: ModelOutcome | Skipped | pool.Tick
    ) -> Generator[Event, None, None]:
        if isinstance(outcome, pool.Tick):
            yield outcome
            return
        unit = the_plan.units[outcome.unit_id]
        if isinstance(outcome, Skipped) and unit.kind == "folder":
            self._settle(unit.key)  # not one model after all: its files, released below, are read alone
        elif isinstance(outcome, Skipped):
            self._settle(unit.key)
            self.aggregate.add_skipped(
                unit.path,
                unit.size,
                outcome.reason,
                named_like_checkpoint=outcome.reason == NAMED_LIKE_A_CHECKPOINT,
            )
            yield FileSkipped(unit.path, unit.size, outcome.reason)
        else:
            done = self._model_done(unit, outcome, schedule)
            if done is not None:
                yield done
        for member in schedule.finished(unit):
            self._settle(member.key)

    def _fingerprint(self) -> dict[str, Any]:
        """What a record depends on besides the file: an index written otherwise is stale."""
        o = self.options
        return {
            "tensors": o.tensors,
            "stats": o.stats,
            "stats_sample": o.stats_sample,
            "quantize": o.quantize,
            "all_targets": o.all_targets,
        }

    def _model_done(self, unit: Unit, outcome: ModelOutcome, schedule: _Schedule) -> ModelDone | None:
        own = unit.key
        if unit.kind == "file" and own in schedule.claimed:
            self._settle(own)  # read as part of another model that finished first
            return None
        path = outcome.facts.path
        for member in outcome.members:
            if member != own and member in self._emitted:
                self.aggregate.note(f"{self._emitted[member]} was audited as a model and is also part of {path}")
            schedule.claimed.add(member)
            self._settle(member)
        self._settle(own)
        self._emitted[own] = path
        self.aggregate.add_model(outcome.facts, outcome.digest, unit.size)
        self.texts.append(outcome.text)
        self._paths.append(path)
        self.progress.models += 1
        if outcome.facts.error_code is not None:
            self.progress.failed += 1
        return ModelDone(outcome.text, outcome.detail)

    def _settle(self, key: str) -> None:
        if key in self._settled or key not in self._sizes:
            return
        self._settled.add(key)
        self.progress.files_done += 1
        self.progress.bytes_done += self._sizes[key]

    # -- results -------------------------------------------------------------------------------

    @property
    def elapsed_s(self) -> float:
        if not self._started:
            return 0.0
        return (self._finished or time.monotonic()) - self._started

    @property
    def index(self) -> Index | None:
        """The --index file this run reads and writes (None without --index)."""
        return self._index

    def summary(self) -> dict[str, Any]:
        """The ``audit`` section: totals over every model read so far."""
        return audit_dict(self, self.aggregate.summary())

    @property
    def records(self) -> list[dict[str, Any]]:
        """Every model's record, in completion order (parsed on each call)."""
        return [json.loads(text) for text in self.texts]

    def sorted_texts(self) -> list[str]:
        """Every model's record as JSON text, in path order (the --json document's order)."""
        order = sorted(range(len(self.texts)), key=self._paths.__getitem__)
        return [self.texts[i] for i in order]


class _Remembered:
    """The scheduler the engine sees when an index is in use: ready units whose outcome the index
    remembers are held back (``next`` hands their outcomes to the audit) and never reach a worker.
    Units only become ready at the right end of the queue (a folder's stage B, released) and are
    requeued at the left, so the units not yet looked up are always a suffix of it."""

    def __init__(self, schedule: _Schedule, index: Index | None, found: dict[str, discover.FoundFile]) -> None:
        self.schedule = schedule
        self.index = index
        self.found = found
        self.checked: set[int] = set()
        self.outcomes: deque[ModelOutcome | Skipped] = deque()

    def _sift(self) -> None:
        if self.index is None:
            return
        ready = self.schedule.ready
        fresh: list[Unit] = []
        while ready and ready[-1].id not in self.checked:
            unit = ready.pop()
            self.checked.add(unit.id)
            remembered = self.index.lookup(unit, self.found)
            if remembered is None:
                fresh.append(unit)
            else:
                self.outcomes.appendleft(remembered)
        ready.extend(reversed(fresh))

    def next(self) -> ModelOutcome | Skipped | None:
        self._sift()
        return self.outcomes.popleft() if self.outcomes else None

    def ready_count(self) -> int:
        self._sift()
        return self.schedule.ready_count()

    def take(self, n: int) -> list[Unit]:
        self._sift()
        return self.schedule.take(n)

    def requeue(self, units: list[Unit]) -> None:
        self.schedule.requeue(units)


class _Schedule:
    """Units ready to read; a folder's stage-B units wait until its stage-A units are done."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        waiting = {i for ids in plan.waiting.values() for i in ids}
        self.ready: deque[Unit] = deque(u for u in plan.units if u.id not in waiting)
        self.claimed: set[str] = set()  # normalized paths of files some model has read

    def ready_count(self) -> int:
        return len(self.ready)

    def take(self, n: int) -> list[Unit]:
        taken: list[Unit] = []
        while self.ready and len(taken) < n:
            taken.append(self.ready.popleft())
        return taken

    def requeue(self, units: list[Unit]) -> None:
        self.ready.extendleft(reversed(units))

    def finished(self, unit: Unit) -> list[Unit]:
        """Release the folder's waiting units once ``unit`` was its last stage-A unit; return the
        released units that a model already claimed (members, not models)."""
        pending = self.plan.pending_a
        if unit.stage != "A" or unit.group not in pending:
            return []
        pending[unit.group] -= 1
        if pending[unit.group]:
            return []
        del pending[unit.group]
        members = []
        for unit_id in self.plan.waiting.pop(unit.group, []):
            waiting = self.plan.units[unit_id]
            if waiting.key in self.claimed:
                members.append(waiting)
            else:
                self.ready.append(waiting)
        return members


def _worker_count(requested: int | None, units: int) -> int:
    if requested is not None and requested <= 0:
        return 0
    if requested is None:
        try:
            requested = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            requested = os.cpu_count() or 1
    return max(1, min(requested, units)) if units else 0
