"""Where an audit's per-model work runs: the embedded process pool (the default) or Dask.

``--engine dask`` submits one task per unit (``worker.process``) to a Dask cluster: a
``LocalCluster`` of worker processes on this machine, or an existing scheduler (``--scheduler
tcp://host:8786``) whose workers have ckptscan installed and can reach the files (shared storage,
or remote roots such as ``s3://bucket/prefix``, which are also listed on a worker). The records,
events and exit codes are the process pool's: the same ``Outcome`` objects come back, in completion
order. A unit over the time limit becomes an error record and its task is cancelled (Dask cannot
kill a running task: its worker thread finishes it in the background); a worker that dies makes the
unit an error record as the pool does.
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from types import TracebackType
from typing import Any

from ckptscan.audit import pool
from ckptscan.audit.discover import Unit
from ckptscan.audit.worker import Outcome, WorkerOptions, error_outcome, process
from ckptscan.errors import MissingDependency, UsageError
from ckptscan.scan import ScanError

ENGINES = ("processes", "dask")
EXTRA = "pip install 'ckptscan[dask]'"


def dask_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("distributed") is not None


def list_remote(url: str) -> Any:
    """A remote root's files (runs on a Dask worker for distributed audits)."""
    from ckptscan.remote import list_tree

    return list_tree(url)


class Engine(AbstractContextManager["Engine"]):
    """The process pool: listing here, units in forked worker processes (``pool.run``)."""

    name = "processes"

    def list_remote(self, url: str) -> Any:
        return list_remote(url)

    def run(
        self, scheduler: pool.Scheduler, *, workers: int, timeout_s: float, options: WorkerOptions
    ) -> Iterator[Outcome | pool.Tick]:
        return pool.run(scheduler, workers=workers, timeout_s=timeout_s, options=options)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None


CONNECT_TIMEOUT_S = 30  # Dask retries a refused connection until then


class DaskEngine(Engine):
    name = "dask"

    def __init__(self, address: str | None, workers: int) -> None:
        try:
            distributed: Any = importlib.import_module("distributed")
        except ImportError:
            raise MissingDependency(f"--engine dask needs dask.distributed ({EXTRA})") from None
        self.cluster: Any = None
        try:
            if address:
                self.client: Any = distributed.Client(address, timeout=CONNECT_TIMEOUT_S)
            else:
                self.cluster = distributed.LocalCluster(
                    n_workers=max(1, workers),
                    threads_per_worker=1,
                    processes=True,
                    dashboard_address=None,
                    silence_logs=logging.ERROR,
                )
                self.client = distributed.Client(self.cluster)
        except (OSError, TimeoutError, ValueError) as e:
            raise UsageError(f"cannot reach the Dask scheduler {address or '(local cluster)'}: {e}") from None
        self.slots = max(1, sum(self.client.nthreads().values()) if address else max(1, workers))

    def list_remote(self, url: str) -> Any:
        return self.client.submit(list_remote, url, pure=False).result()

    def run(
        self, scheduler: pool.Scheduler, *, workers: int, timeout_s: float, options: WorkerOptions
    ) -> Iterator[Outcome | pool.Tick]:
        wait: Any = importlib.import_module("distributed").wait

        pending: dict[Any, tuple[Unit, float]] = {}
        try:
            while True:
                while len(pending) < self.slots * 4 and scheduler.ready_count():
                    (unit,) = scheduler.take(1)
                    future = self.client.submit(
                        process, unit, options, pure=False, key=f"ckptscan-{unit.id}-{time.time_ns()}"
                    )
                    pending[future] = (unit, time.monotonic())
                if not pending:
                    return
                try:
                    done, _ = wait(list(pending), timeout=pool.TICK_S, return_when="FIRST_COMPLETED")
                except TimeoutError:
                    done = set()
                    yield pool.Tick()
                for future in done:
                    unit, _started = pending.pop(future)
                    yield self._outcome(future, unit, options)
                now = time.monotonic()
                for future, (unit, started) in list(pending.items()):
                    if now - started > timeout_s:
                        del pending[future]
                        future.cancel()
                        why = f"took longer than the {timeout_s:g} s time limit; stopped"
                        yield error_outcome(unit, ScanError("timeout", f"{unit.path}: {why}"), options)
        finally:
            for future in pending:
                future.cancel()

    @staticmethod
    def _outcome(future: Any, unit: Unit, options: WorkerOptions) -> Outcome:
        try:
            result: Outcome = future.result()
            return result
        except Exception as e:  # a worker died (KilledWorker) or the task could not run
            why = f"the Dask task reading it failed ({type(e).__name__}: {e})"
            return error_outcome(unit, ScanError("worker-crashed", f"{unit.path}: {why}"), options)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()


def make(engine: str, address: str | None, workers: int) -> Engine:
    if engine == "dask":
        return DaskEngine(address, workers)
    if address:
        raise UsageError("--scheduler needs --engine dask")
    return Engine()
