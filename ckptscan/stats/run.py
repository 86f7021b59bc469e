"""Running the stats pass: tasks across workers, partial results merged per tensor in task order.

Tasks are submitted largest first, a bounded number at a time; tensors that need a first sweep
(long rows, channels-last weights) get it in an earlier phase. Workers are forked processes for
big jobs and threads otherwise (see :func:`_pool`); either way a task is pure: it reads its bytes,
computes a :class:`~ckptscan.stats.kernel.Partial`, and hands it back. A tensor whose bytes cannot
be read (truncated file, unsupported encoding) is reported as skipped with the reason; the others
carry on.
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor, wait
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from ckptscan.errors import CkptscanError, MissingDependency
from ckptscan.inventory import Inventory
from ckptscan.stats import ProgressFn, StatsOptions, StatsResult, TensorStats
from ckptscan.stats import plan as planning
from ckptscan.stats.hashing import LeafHasher, algorithm, content_hash
from ckptscan.stats.kernel import (
    ABS_THRESHOLDS,
    REL_THRESHOLDS,
    Partial,
    Workspace,
    absmax_of,
    block_stats,
    column_absmax_of,
)
from ckptscan.stats.plan import Block, Task, TensorPlan, plan_tensor, tasks_for

if TYPE_CHECKING:
    from ckptscan.data import TensorBytes

# what a first sweep hands the main pass: long rows' maxima by row, or output channels' maxima
Sweep = Any

_local = threading.local()


class TaskFailed(Exception):
    """A task could not read or decode its bytes; the tensor is then skipped with this reason."""


def run(
    inventory: Inventory, options: StatsOptions, progress: ProgressFn | None, roles: Mapping[str, str] | None
) -> StatsResult:
    from ckptscan.stats.summary import summarize

    try:
        import numpy  # noqa: F401
    except ImportError as e:
        raise MissingDependency("value statistics need numpy (pip install 'ckptscan[stats]')") from e
    started = time.perf_counter()
    workers = options.workers or os.cpu_count() or 1
    plans = [plan_tensor(inventory, i, options.sample) for i in range(len(inventory.tensors))]
    tasks = [task for number, plan in enumerate(plans) for task in tasks_for(plan, number, options.sample)]
    partials: list[Partial] = [Partial() for _ in plans]
    failures: dict[int, str] = {}
    total = sum(t.read_bytes for t in tasks)
    done = 0

    def report(task: Task) -> None:
        nonlocal done
        done += task.read_bytes
        if progress is not None:
            progress(done, total)

    if progress is not None:
        progress(0, total)
    sweeps = [t for t in tasks if t.kind == "absmax"]
    main = [t for t in tasks if t.kind != "absmax"]
    with _pool(options.executor, workers, total, inventory, plans) as pool:
        for phase in (sweeps, main):
            _run_phase(pool, workers, inventory, plans, phase, partials, failures, report)
    stats = tuple(_finish(plan, partials[i], failures.get(i)) for i, plan in enumerate(plans))
    seconds = time.perf_counter() - started
    summary, findings = summarize(inventory, stats, options, roles)
    bytes_read = sum(s.bytes_read for s in stats)
    summary = replace(
        summary, seconds=round(seconds, 3), workers=workers, bytes_read=bytes_read, hash_algorithm=algorithm()[0]
    )
    return StatsResult(
        tensors=stats,
        summary=summary,
        findings=tuple(findings),
        seconds=seconds,
        workers=workers,
        bytes_read=bytes_read,
        sampled=any(s.sampled for s in stats),
        hash_algorithm=algorithm()[0],
    )


def _run_phase(
    pool: Executor,
    workers: int,
    inventory: Inventory,
    plans: list[TensorPlan],
    tasks: list[Task],
    partials: list[Partial],
    failures: dict[int, str],
    report: Callable[[Task], None],
) -> None:
    """Run tasks largest first; merge their results in task order, so sums do not depend on timing."""
    results: dict[int, Partial] = {}
    pending: dict[Future[Partial], int] = {}
    order = sorted(range(len(tasks)), key=lambda i: -tasks[i].read_bytes)
    queue = iter(order)
    limit = 4 * workers  # a bounded queue: an interrupt does not wait for thousands of tasks
    try:
        for number in _take(queue, limit):
            pending[_submit(pool, inventory, plans, partials, tasks[number])] = number
        while pending:
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                number = pending.pop(future)
                task = tasks[number]
                try:
                    results[number] = future.result()
                except TaskFailed as e:
                    failures.setdefault(task.plan, str(e))
                report(task)
            for number in _take(queue, limit - len(pending)):
                pending[_submit(pool, inventory, plans, partials, tasks[number])] = number
    except BaseException:
        for future in pending:
            future.cancel()
        raise
    for number in sorted(results):
        partials[tasks[number].plan].merge(results[number])


def _take(queue: Iterable[int], count: int) -> list[int]:
    out: list[int] = []
    for item in queue:
        out.append(item)
        if len(out) >= count:
            break
    return out


def _submit(
    pool: Executor, inventory: Inventory, plans: list[TensorPlan], partials: list[Partial], task: Task
) -> Future[Partial]:
    plan = plans[task.plan]
    swept: Sweep = None
    if task.kind == "stats" and plan.sweep:
        partial = partials[task.plan]
        swept = partial.column_absmax if plan.features.channels_last else dict(partial.row_absmax)
    if isinstance(pool, ProcessPoolExecutor):
        return pool.submit(_run_task_in_process, task, swept)
    return pool.submit(run_task, inventory, plan, task, swept)


# -- worker pools ----------------------------------------------------------------------------------------

# What forked worker processes inherit: the inventory and the plans (set just before the fork, so
# that tasks travel as a few integers and results as small Partial records).
_SHARED: tuple[Inventory, list[TensorPlan]] | None = None
PROCESS_MIN_BYTES = 256 << 20  # below this, starting processes costs more than the GIL


@contextlib.contextmanager
def _pool(kind: str, workers: int, total: int, inventory: Inventory, plans: list[TensorPlan]) -> Iterator[Executor]:
    """Threads, or forked processes ("auto": processes for big jobs on several cores where fork exists).

    Both scale: the kernel's numpy loops, reads and hashing release the GIL. Processes avoid the rest
    (the Python between numpy calls, about a tenth of the time), which measures 5-10% faster on
    2 cores; threads start instantly and need no fork.
    """
    global _SHARED
    forking = "fork" in multiprocessing.get_all_start_methods()
    use_processes = kind == "process" or (kind == "auto" and workers > 1 and total >= PROCESS_MIN_BYTES)
    if not (use_processes and forking):
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ckptscan-stats") as threads:
            yield threads
        return
    _SHARED = (inventory, plans)
    try:
        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_worker_start) as processes:
            yield processes
    finally:
        _SHARED = None


def _worker_start() -> None:
    """Ctrl-C is the parent's to handle: it cancels what is queued and waits for running tasks."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _run_task_in_process(task: Task, swept: Sweep) -> Partial:
    assert _SHARED is not None, "worker processes are forked after the plans are shared"
    inventory, plans = _SHARED
    return run_task(inventory, plans[task.plan], task, swept)


def run_task(inventory: Inventory, plan: TensorPlan, task: Task, swept: Sweep) -> Partial:
    """Read and compute one task (in a worker thread)."""
    from ckptscan.data import open_tensor

    ws: Workspace | None = getattr(_local, "workspace", None)
    if ws is None:
        ws = _local.workspace = Workspace()
    partial = Partial()
    try:
        stream = open_tensor(inventory, plan.tensor)
    except CkptscanError as e:
        raise TaskFailed(e.what) from e
    try:
        with _quiet():
            _read_and_compute(stream, plan, task, swept, partial, ws)
    except CkptscanError as e:
        raise TaskFailed(e.what) from e
    except Exception as e:  # a bug or a library failure must not end the pass for other tensors
        raise TaskFailed(f"internal error while computing ({type(e).__name__}: {e})") from e
    finally:
        stream.close()
    return partial


def _sweep(partial: Partial, plan: TensorPlan, block: Block, values: Any) -> None:
    """First pass: each output channel's maximum (channels-last), or each long row's."""
    if plan.features.channels_last:
        top = column_absmax_of(values, plan.row_elements)
        partial.merge(Partial(column_absmax=top))
        return
    assert block.row is not None
    partial.row_absmax[block.row] = max(partial.row_absmax.get(block.row, 0.0), absmax_of(values))


def _quiet() -> Any:
    import numpy as np

    return np.errstate(all="ignore")  # NaN, Inf and overflow are counted, not warned about


def _read_and_compute(
    stream: TensorBytes,
    plan: TensorPlan,
    task: Task,
    swept: Sweep,
    partial: Partial,
    ws: Workspace,
) -> None:
    decoder = plan.decoder
    assert decoder is not None
    hasher = None
    if task.hash_range is not None:
        start, stop = task.hash_range
        hasher = LeafHasher(start, stop, planning.TASK_BYTES)
        first = min(task.blocks[0].start, stop) if task.blocks else stop
        if first > start:  # the rest of a row that an earlier task computes: hashed here
            prefix = ws.raw_buffer(first - start)
            stream.read_into(start, prefix)
            hasher.feed(start, prefix)
            partial.bytes_read += len(prefix)
    for block in task.blocks:
        raw = ws.raw_buffer(block.stop - block.start)
        stream.read_into(block.start, raw)
        partial.bytes_read += len(raw)
        if hasher is not None:
            hasher.feed(block.start, raw)
        values = decoder.decode(raw, ws)
        first = block.start // decoder.granule_bytes * decoder.granule_elements
        if first + values.size > plan.tensor.elements:  # the padding of a part-filled last byte
            values = values[: plan.tensor.elements - first]
        if task.kind == "absmax":
            _sweep(partial, plan, block, values)
            continue
        if plan.features.channels_last:
            block_stats(partial, values, block.rows, plan.features, ws, columns=swept)
            continue
        known = swept.get(block.row) if isinstance(swept, dict) and block.row is not None else None
        block_stats(partial, values, block.rows, plan.features, ws, known)
    if hasher is not None:
        partial.leaves = hasher.finish()


# -- per-tensor results ------------------------------------------------------------------------------


def _finish(plan: TensorPlan, p: Partial, failure: str | None) -> TensorStats:
    tensor = plan.tensor
    if plan.skipped is not None or failure is not None or plan.decoder is None:
        return TensorStats(name=tensor.name, skipped=plan.skipped or failure or "not read")
    features = plan.features
    notes = dict(plan.notes)
    finite = p.count > 0
    std = math.sqrt(p.m2 / p.count) if finite else None
    absmax = max(abs(p.minimum), abs(p.maximum)) if finite else None
    signal = p.m2 + p.count * p.mean * p.mean if finite else 0.0
    elements = p.elements
    fraction = elements / tensor.elements if tensor.elements else 1.0
    leaves = [digest for _, digest in sorted(p.leaves)]
    content = None
    if plan.hashed:
        content = content_hash(tensor.dtype.name, plan.nbytes, leaves)
    two_four = None
    if features.two_four and p.two_four_groups:
        two_four = not p.two_four_broken and p.two_four_ok == p.two_four_groups
    return TensorStats(
        name=tensor.name,
        elements=elements,
        sampled=plan.sampled,
        fraction=fraction,
        min=p.minimum if finite else None,
        max=p.maximum if finite else None,
        mean=p.mean if finite else None,
        std=std,
        absmax=absmax,
        l2=math.sqrt(signal) if finite else None,
        zeros=p.zeros,
        near_zero=dict(zip(map(_key, ABS_THRESHOLDS), p.below, strict=True)) if features.floating else None,
        near_zero_rel=dict(zip(map(_key, REL_THRESHOLDS), p.below_rel, strict=True)) if features.relative else None,
        nan=p.nan,
        inf=p.posinf + p.neginf,
        outlier=absmax / std if absmax is not None and std else None,
        sqnr_int8_db=_sqnr(signal, p.err8, features.int8, "int8", notes),
        sqnr_int4_g128_db=_sqnr(signal, p.err4, features.int4, "int4_g128", notes),
        structured_2_4=two_four,
        hash=content,
        notes=notes,
        bytes_read=p.bytes_read,
        signal=signal,
        err_int8=p.err8 if features.int8 else None,
        err_int4=p.err4 if features.int4 else None,
    )


def _sqnr(signal: float, error: float, applies: bool, key: str, notes: dict[str, str]) -> float | None:
    if not applies:
        return None
    if signal <= 0:
        notes[key] = "all values are zero"
        return None
    if error <= 0:
        notes[key] = "lossless: every value is exactly representable"
        return None
    return 10 * math.log10(signal / error)


def _key(threshold: float) -> str:
    return repr(threshold)
