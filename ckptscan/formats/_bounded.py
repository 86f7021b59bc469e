"""Run a reader that cannot be bounded in-process (libhdf5) in a forked worker with hard limits.

libhdf5 can spin forever on a corrupted global heap, allocate gigabytes because one length field
changed, raise errors h5py does not classify, and open other files (virtual-dataset sources,
external storage) on its own. None of that can be stopped from inside the process, so
:func:`call` forks, and the child, before it reads anything:

- gets an address-space limit (``RLIMIT_AS``: what it uses now plus :data:`MEMORY_BYTES`) and a
  CPU-time limit (``RLIMIT_CPU``); the parent also kills it after :data:`TIMEOUT_S` seconds of wall time,
  and as soon as it has been stuck for :data:`STALL_S`: a thread in the child beats every
  :data:`BEAT_S` while Python runs, and h5py keeps the GIL while libhdf5 works, so a library
  spinning on a corrupted structure silences the beat within a second or two, however big the
  file, while a large healthy file may take up to :data:`TIMEOUT_S`;
- on Linux with Landlock (5.13+), may open files only inside the model's folder (read-only) and
  a private temporary folder (for a ``.keras`` member inflated to disk): a virtual dataset whose
  source lies elsewhere cannot be opened, whatever libhdf5 decides.

The child sends back the inventory (or the CkptscanError) pickled; the parent unpickles it with
an allow-list of ckptscan's own classes. A crash, a kill or an unexpected exception becomes one
clear CkptscanError. Without ``os.fork`` (Windows) the reader runs in-process.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import io
import os
import pickle
import resource
import select
import shutil
import signal
import sys
import tempfile
import threading
import time
import types
from collections.abc import Callable
from typing import Any

from ckptscan.errors import CkptscanError, LimitExceeded, MalformedFile
from ckptscan.inventory import Inventory
from ckptscan.source import Source

TIMEOUT_S = 30.0  # wall time for one file's metadata
STALL_S = 1.5  # no heartbeat for this long: the library is stuck in one call
BEAT_S = 0.05
_BEAT, _RESULT = b".", b"R"  # the child's pipe carries beats, then R and the pickled result
MEMORY_BYTES = 1 << 30  # address space the child may add to what it has at the fork
# modules the readers may import lazily: the child cannot open module files once fenced in
PRELOAD = (
    "numpy", "h5py", "h5py._hl.attrs", "h5py._hl.dataset", "h5py._hl.group", "h5py._hl.vds", "h5py._hl.base",
    "h5py._hl.datatype", "h5py._hl.selections", "encodings.ascii", "encodings.latin_1", "encodings.utf_8",
    "encodings.utf_16", "encodings.utf_32", "json", "zlib", "ckptscan.formats.keras", "ckptscan.formats.keras.v3",
    "ckptscan.formats.keras.weights", "ckptscan.formats.keras.legacy", "ckptscan.formats.hdf5",
    "ckptscan.formats.pickle", "ckptscan.formats.torch.safety", "ckptscan.formats.torch.unpickler",
)  # fmt: skip

_in_worker = False  # set in the child: a bounded reader calling another runs it directly


# Inventories hold read-only mappings; pickling them needs this (applies to our own pickles only)
def _mapping(items: dict[Any, Any]) -> types.MappingProxyType[Any, Any]:
    return types.MappingProxyType(items)


def _dumps(value: Any) -> bytes:
    """Pickle with our own reducers only: the process-wide copyreg table may hold other libraries'
    (distributed installs tblib's for exceptions), which the parent's allow-list would refuse."""
    out = io.BytesIO()
    pickler = pickle.Pickler(out, protocol=pickle.HIGHEST_PROTOCOL)
    pickler.dispatch_table = {types.MappingProxyType: lambda m: (_mapping, (dict(m),))}
    pickler.dump(value)
    return out.getvalue()


def call(read: Callable[[Source], Inventory], source: Source, *, what: str = "HDF5") -> Inventory:
    """``read(source)`` in a bounded child process (in-process when fork is unavailable)."""
    # A remote source reads through the parent's connections and threads, which a forked child
    # does not have: remote HDF5 is read in-process (its reads are capped by the remote budget).
    in_process = _in_worker or source.is_remote or os.environ.get("CKPTSCAN_IN_PROCESS") == "1"
    if in_process or not hasattr(os, "fork"):
        return read(source)
    for name in PRELOAD:  # imported before the child is fenced in: it may not open module files
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    scratch = tempfile.mkdtemp(prefix="ckptscan-worker-")
    try:
        return _fork(read, source, what, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _fork(read: Callable[[Source], Inventory], source: Source, what: str, scratch: str) -> Inventory:
    readable, writable = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        os.close(readable)
        _child(read, source, writable, scratch)
    os.close(writable)
    try:
        data, stopped = _collect(readable, TIMEOUT_S, STALL_S)
    finally:
        os.close(readable)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
    if stopped == "stalled":
        raise LimitExceeded(f"the {what} library was stuck for {STALL_S:g} s in one call (a looping structure)")
    if stopped == "timeout":
        raise LimitExceeded(f"reading the {what} metadata took more than {TIMEOUT_S:g} s; stopped")
    if not data:
        if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGXCPU:
            raise LimitExceeded(f"reading the {what} metadata used more than {TIMEOUT_S:g} s of CPU; stopped")
        code = f"signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status) else f"status {os.WEXITSTATUS(status)}"
        raise MalformedFile(f"the {what} library crashed reading this file ({code})")
    kind, value = _AllowList(io.BytesIO(data)).load()
    if kind == "ok" and isinstance(value, Inventory):
        return value
    if kind == "error" and isinstance(value, CkptscanError):
        raise value
    if kind == "memory":
        raise LimitExceeded(f"reading the {what} metadata needs more than {MEMORY_BYTES >> 20:,} MiB; stopped")
    raise MalformedFile(f"the {what} library failed on this file ({value})")


def _collect(fd: int, timeout: float, stall: float) -> tuple[bytes, str | None]:
    """The result the child writes after its beats, or (b"", "timeout" | "stalled") when it must stop."""
    chunks: list[bytes] = []
    started = heard = time.monotonic()
    result = False
    while True:
        now = time.monotonic()
        if now >= started + timeout:
            return b"", "timeout"
        if now >= heard + stall:
            return b"", "stalled"
        ready, _, _ = select.select([fd], [], [], min(started + timeout, heard + stall) - now)
        if not ready:
            continue
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            return b"".join(chunks), None
        heard = time.monotonic()
        if not result:
            chunk = chunk.lstrip(_BEAT)
            result = chunk.startswith(_RESULT)
            chunk = chunk[1:]
        if result:
            chunks.append(chunk)


def _beat(fd: int, done: threading.Event, pipe: threading.Lock) -> None:
    """Tell the parent the child is alive, as long as this thread gets the GIL."""
    while not done.wait(BEAT_S):
        with pipe:
            if done.is_set():
                return
            try:
                os.write(fd, _BEAT)
            except OSError:
                return


def _child(read: Callable[[Source], Inventory], source: Source, fd: int, scratch: str) -> None:
    global _in_worker
    _in_worker = True
    status = 0
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides; Ctrl-C reaches both
        _limit_resources()
        _fence(source, scratch)
        tempfile.tempdir = scratch
        done, pipe = threading.Event(), threading.Lock()
        threading.Thread(target=_beat, args=(fd, done, pipe), daemon=True).start()
        try:
            result: tuple[str, Any] = ("ok", read(source))
        except CkptscanError as e:
            result = ("error", e)
        except MemoryError:
            result = ("memory", None)
        except RecursionError:
            result = ("error", LimitExceeded("HDF5 structure is nested too deeply"))
        except Exception as e:  # libhdf5 errors h5py did not classify ("internal error")
            result = ("failed", f"{type(e).__name__}: {e}"[:500])
        payload = _dumps(result)
        done.set()
        with pipe:  # no beat may land inside the result
            view = memoryview(_RESULT + payload)
            while view:
                view = view[os.write(fd, view) :]
    except BaseException:
        status = 1
    finally:
        os._exit(status)


def _limit_resources() -> None:
    try:
        with open("/proc/self/statm") as f:
            used = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        used = 0
    limit = used + MEMORY_BYTES
    with contextlib.suppress(ValueError, OSError):
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        if hard == resource.RLIM_INFINITY or hard > limit:
            resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    cpu = int(TIMEOUT_S) + 1
    with contextlib.suppress(ValueError, OSError):
        _, hard = resource.getrlimit(resource.RLIMIT_CPU)
        if hard == resource.RLIM_INFINITY or hard > cpu:
            resource.setrlimit(resource.RLIMIT_CPU, (cpu, hard))


# -- Landlock (Linux): open files only under the model's folder --------------------------------------

_SYS_CREATE_RULESET, _SYS_ADD_RULE, _SYS_RESTRICT_SELF = 444, 445, 446  # same on x86_64 and arm64
_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH = 1
_PR_SET_NO_NEW_PRIVS = 38
_EXECUTE, _WRITE_FILE, _READ_FILE, _READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
_ALL_ABI1 = (1 << 13) - 1  # execute .. make_sym
_REFER, _TRUNCATE = 1 << 13, 1 << 14


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64)]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def landlock_abi() -> int:
    """The kernel's Landlock ABI version; 0 when Landlock is unavailable."""
    if not sys.platform.startswith("linux"):
        return 0
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        abi = int(libc.syscall(_SYS_CREATE_RULESET, None, ctypes.c_size_t(0), _CREATE_RULESET_VERSION))
    except (OSError, AttributeError):
        return 0
    return max(abi, 0)


def _fence(source: Source, scratch: str) -> bool:
    """Restrict this process to reading under the model's folder (and using ``scratch``)."""
    abi = landlock_abi()
    if abi < 1:
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    handled = _ALL_ABI1 | (_REFER if abi >= 2 else 0) | (_TRUNCATE if abi >= 3 else 0)
    attr = _RulesetAttr(handled)
    ruleset = int(libc.syscall(_SYS_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr)), 0))
    if ruleset < 0:
        return False
    try:
        read_tree = _READ_FILE | _READ_DIR
        scratch_tree = handled & ~_EXECUTE
        allowed = [(str(source.root), read_tree), (scratch, scratch_tree)]
        if os.path.isfile(source.path):
            allowed.append((os.path.realpath(source.path), _READ_FILE))
        for path, access in allowed:
            try:
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                if not os.path.isdir(path):
                    access &= _EXECUTE | _WRITE_FILE | _READ_FILE | (_TRUNCATE if abi >= 3 else 0)
                rule = _PathBeneathAttr(access, fd)
                libc.syscall(_SYS_ADD_RULE, ruleset, _RULE_PATH_BENEATH, ctypes.byref(rule), 0)
            finally:
                os.close(fd)
        if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            return False
        return int(libc.syscall(_SYS_RESTRICT_SELF, ruleset, 0)) == 0
    finally:
        os.close(ruleset)


class _AllowList(pickle.Unpickler):
    """Only ckptscan's own classes and plain builtins come back from the child."""

    def find_class(self, module: str, name: str) -> Any:
        if module == "ckptscan" or module.startswith("ckptscan."):
            return super().find_class(module, name)
        if (module, name) in {("builtins", "frozenset"), ("builtins", "set"), ("types", "MappingProxyType")}:
            return super().find_class(module, name)
        if (module, name) == ("copyreg", "_reconstructor"):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"unexpected {module}.{name} from the worker")
