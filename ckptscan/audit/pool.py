"""Worker processes with a time limit per unit that is actually enforced.

A ``concurrent.futures`` pool cannot stop a task that hangs, so this pool keeps its own processes,
one duplex pipe each. The parent sends small batches of units (so that process start-up and pipe
round trips are amortized over many small files) and gets one outcome back per unit, in order; the
unit at the head of a worker's queue is the one it is working on, started when the previous
outcome arrived. When that unit outlives the time limit the worker is killed (SIGKILL), the unit
becomes an error record, the rest of its queue goes back to the scheduler, and a fresh worker takes
its place. A worker that dies on its own (a crash, the OOM killer) is handled the same way.

Workers are forked where the platform allows it (cheap, and they inherit the loaded modules);
they ignore SIGINT so that Ctrl-C reaches only the parent, which then kills them.
"""

from __future__ import annotations

import multiprocessing
import sys
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any, Protocol

from ckptscan.audit.discover import Unit
from ckptscan.audit.worker import Outcome, WorkerOptions, error_outcome, process, worker_main
from ckptscan.scan import ScanError

TICK_S = 0.2  # how often the caller hears from a busy pool (progress display, Ctrl-C)
MAX_BATCH = 32


class Scheduler(Protocol):
    def ready_count(self) -> int: ...

    def take(self, n: int) -> list[Unit]: ...

    def requeue(self, units: list[Unit]) -> None: ...


@dataclass(frozen=True, slots=True)
class Tick:
    """Nothing finished during the last ``TICK_S``; lets the caller refresh a progress display."""


@dataclass(slots=True)
class _Worker:
    """One worker process, its pipe, and the units sent to it that it has not answered yet."""

    process: BaseProcess
    conn: Connection
    outstanding: deque[Unit] = field(default_factory=deque)
    started: float = 0.0  # when the unit at the head of ``outstanding`` began


def run(scheduler: Scheduler, *, workers: int, timeout_s: float, options: WorkerOptions) -> Iterator[Outcome | Tick]:
    """Outcomes of every unit the scheduler hands out, as they finish (in no particular order)."""
    if workers <= 0:
        yield from _run_here(scheduler, options)
        return
    pool = _Pool(workers, timeout_s, options)
    try:
        yield from pool.run(scheduler)
    finally:
        pool.close()


def _run_here(scheduler: Scheduler, options: WorkerOptions) -> Iterator[Outcome | Tick]:
    """No worker processes (``--workers 0``): simpler to debug, but no time limit."""
    while True:
        batch = scheduler.take(1)
        if not batch:
            return
        yield process(batch[0], options)


class _Pool:
    def __init__(self, size: int, timeout_s: float, options: WorkerOptions) -> None:
        # fork: cheap, and workers inherit what the parent loaded; elsewhere spawn is the safe choice
        self.context: Any = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")
        self.size = size
        self.timeout_s = timeout_s
        self.options = options
        self.workers: list[_Worker] = []

    def run(self, scheduler: Scheduler) -> Iterator[Outcome | Tick]:
        while True:
            self._dispatch(scheduler)
            busy = [w for w in self.workers if w.outstanding]
            if not busy:
                if scheduler.ready_count() == 0:
                    return
                continue
            now = time.monotonic()
            wake = min(min(w.started + self.timeout_s for w in busy) - now, TICK_S)
            ready = wait([w.conn for w in busy] + [w.process.sentinel for w in busy], timeout=max(0.0, wake))
            if not ready:
                yield Tick()
            for w in busy:
                if w.conn in ready:
                    yield from self._receive(w)
            for w in busy:
                if w.process.sentinel in ready and w.outstanding:
                    yield from self._receive(w)  # what it sent before dying
                    if w.outstanding and not w.process.is_alive():
                        yield self._fail_head(w, scheduler, "worker-crashed", _died(w.process))
            now = time.monotonic()
            for w in busy:
                if w.outstanding and now - w.started > self.timeout_s:
                    why = f"took longer than the {self.timeout_s:g} s time limit; stopped"
                    yield self._fail_head(w, scheduler, "timeout", why)

    def _dispatch(self, scheduler: Scheduler) -> None:
        """Top up every worker's queue; start workers while there is work for them."""
        ready = scheduler.ready_count()
        if not ready:
            return
        batch = max(1, min(MAX_BATCH, ready // (self.size * 4)))
        while len(self.workers) < self.size and len(self.workers) < ready:
            self.workers.append(self._start())
        for i, w in enumerate(self.workers):
            if len(w.outstanding) >= batch:
                continue
            if not w.outstanding and not w.process.is_alive():  # died while idle: replace it
                self._stop(w, kill=True)
                w = self.workers[i] = self._start()
            units = scheduler.take(batch)
            if not units:
                return
            idle = not w.outstanding
            try:
                w.conn.send(units)
            except OSError:  # it died since we looked
                if idle:  # nothing of ours was running in it: replace it, nobody to blame
                    scheduler.requeue(units)
                    self._stop(w, kill=True)
                    self.workers[i] = self._start()
                else:  # its sentinel will fail the unit it was on and requeue the rest, these too
                    w.outstanding.extend(units)
                continue
            if idle:
                w.started = time.monotonic()
            w.outstanding.extend(units)

    def _receive(self, w: _Worker) -> Iterator[Outcome]:
        now = time.monotonic()
        try:
            while w.outstanding and w.conn.poll():
                outcome: Outcome = w.conn.recv()
                w.outstanding.popleft()
                w.started = now
                yield outcome
        except (EOFError, OSError):
            return  # the worker is gone; its sentinel says so and the head unit is failed there

    def _fail_head(self, w: _Worker, scheduler: Scheduler, code: str, why: str) -> Outcome:
        """Kill the worker, turn its current unit into an error, give the rest back, replace it."""
        unit = w.outstanding.popleft()
        self._stop(w, kill=True)
        scheduler.requeue(list(w.outstanding))
        w.outstanding.clear()
        self.workers[self.workers.index(w)] = self._start()
        return error_outcome(unit, ScanError(code, f"{unit.path}: {why}"), self.options)

    def _start(self) -> _Worker:
        parent_conn, child_conn = self.context.Pipe(duplex=True)
        proc = self.context.Process(target=worker_main, args=(child_conn, self.options), daemon=True)
        proc.start()
        child_conn.close()
        return _Worker(proc, parent_conn)

    def _stop(self, w: _Worker, *, kill: bool) -> None:
        if not kill and w.process.is_alive():
            try:
                w.conn.send(None)
            except OSError:
                kill = True
            w.process.join(timeout=1.0)
        if w.process.is_alive():
            w.process.kill()
            w.process.join(timeout=5.0)
        w.conn.close()

    def close(self) -> None:
        """Stop every worker: politely when idle, at once when busy (Ctrl-C, an error upstream)."""
        for w in self.workers:
            self._stop(w, kill=bool(w.outstanding))
        self.workers.clear()


def _died(proc: BaseProcess) -> str:
    code = proc.exitcode
    how = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
    return f"the worker process reading it died ({how}); the file may be hostile or too large for memory"
