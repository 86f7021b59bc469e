"""Issue 13, hard bounds: work driven by file content stays linear with a documented cap
(docs/limits.md); libhdf5 runs in a bounded worker; the audit stays inside its folders."""

from __future__ import annotations

import faulthandler
import io
import json
import os
import pickle
import signal
import sys
import time
import zipfile
from pathlib import Path

import pytest

import ckptscan
from ckptscan.errors import CkptscanError, LimitExceeded, MalformedFile
from ckptscan.formats import _bounded
from ckptscan.source import Source
from tests.helpers import int_field, len_field
from tests.hostile import assert_safe_output, run_strict, safetensors

SECONDS = 2.0  # the bound per hostile case


def timed(path: Path | str) -> tuple[ckptscan.ScanResult, float]:
    started = time.monotonic()
    result = ckptscan.scan(path)
    return result, time.monotonic() - started


# -- case 6: libhdf5 in a bounded worker ---------------------------------------------------------------

needs_fork = pytest.mark.skipif(not hasattr(os, "fork"), reason="the bounded worker needs fork")


def _bounded_error(tmp_path: Path, read: object) -> CkptscanError:
    path = tmp_path / "f.h5"
    path.write_bytes(b"x")
    with Source(path) as source, pytest.raises(CkptscanError) as caught:
        _bounded.call(read, source)  # type: ignore[arg-type]
    return caught.value


@needs_fork
def test_worker_stops_a_spinning_library(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_bounded, "TIMEOUT_S", 0.5)

    def spin(source: Source) -> None:
        while True:
            pass

    started = time.monotonic()
    error = _bounded_error(tmp_path, spin)
    assert isinstance(error, LimitExceeded) and "took more than" in str(error)
    assert time.monotonic() - started < SECONDS


@needs_fork
def test_worker_stuck_in_one_library_call_is_stopped_at_the_stall_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_bounded, "TIMEOUT_S", 60.0)

    def stuck(source: Source) -> None:
        sum(range(1 << 62))  # one C call that keeps the GIL, as libhdf5 does under h5py

    started = time.monotonic()
    error = _bounded_error(tmp_path, stuck)
    assert isinstance(error, LimitExceeded) and "stuck" in str(error)
    assert time.monotonic() - started < SECONDS


@needs_fork
def test_worker_busy_in_python_longer_than_the_stall_limit_is_not_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_bounded, "STALL_S", 0.3)

    def slow(source: Source) -> None:
        until = time.monotonic() + 1.0
        while time.monotonic() < until:  # a large healthy file: long, but never stuck
            pass
        raise MalformedFile("read to the end")

    error = _bounded_error(tmp_path, slow)
    assert isinstance(error, MalformedFile) and str(error).startswith("read to the end")


@needs_fork
def test_worker_refuses_a_huge_allocation(tmp_path: Path) -> None:
    def allocate(source: Source) -> None:
        bytearray(4 << 30)  # what a 4-byte change in a vlen attribute asked libhdf5 for

    error = _bounded_error(tmp_path, allocate)
    assert isinstance(error, LimitExceeded) and "MiB" in str(error)


@needs_fork
def test_worker_translates_library_errors_and_crashes(tmp_path: Path) -> None:
    def internal(source: Source) -> None:
        raise RuntimeError("internal error")

    def crash(source: Source) -> None:
        faulthandler.disable()  # pytest's handler would print this intended crash's stack into the test log
        os.kill(os.getpid(), signal.SIGSEGV)

    error = _bounded_error(tmp_path, internal)
    assert isinstance(error, MalformedFile) and "RuntimeError: internal error" in str(error)
    error = _bounded_error(tmp_path, crash)
    assert isinstance(error, MalformedFile) and "crashed" in str(error)


@needs_fork
def test_worker_results_are_unpickled_by_allow_list() -> None:
    hostile = pickle.dumps(("ok", os.system))
    with pytest.raises(pickle.UnpicklingError):
        _bounded._AllowList(io.BytesIO(hostile)).load()


@needs_fork
def test_virtual_dataset_source_outside_the_folder_is_never_opened(tmp_path: Path) -> None:
    h5py = pytest.importorskip("h5py")
    outside, model = tmp_path / "outside", tmp_path / "model"
    outside.mkdir()
    model.mkdir()
    source = outside / "src.h5"
    with h5py.File(source, "w") as f:
        f.create_dataset("data", shape=(10,), maxshape=(None,), dtype="f4")
    layout = h5py.VirtualLayout(shape=(10,), maxshape=(None,), dtype="f4")
    vsource = h5py.VirtualSource(str(source), "data", shape=(10,), maxshape=(None,))
    layout[: h5py.h5s.UNLIMITED] = vsource[: h5py.h5s.UNLIMITED]
    with h5py.File(model / "vds.h5", "w", libver="latest") as f:
        f.create_virtual_dataset("v", layout, fillvalue=0)
    source.unlink()
    os.mkfifo(source)  # libhdf5 opening it in-process would block forever
    result, seconds = timed(model / "vds.h5")
    if _bounded.landlock_abi() >= 1:
        assert result.error is None, result.error
        assert any(f.code == "hdf5-virtual-dataset" for f in result.inventory.findings)  # type: ignore[union-attr]
        assert seconds < SECONDS
    else:  # without Landlock the worker's wall-time limit ends it
        assert seconds < _bounded.TIMEOUT_S + 5


# -- case 8: work linear in the input ---------------------------------------------------------------------


def test_sharded_index_with_many_missing_shards(tmp_path: Path) -> None:
    n = 20_000
    weight_map = {f"t{i}": f"model-{i:05d}-of-{n:05d}.safetensors" for i in range(n)}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    result, seconds = timed(tmp_path / "model.safetensors.index.json")
    assert result.error is not None and result.error.code == "incomplete-model"
    assert "and 19,990 more" in result.error.message  # the error line names 10, then counts
    assert seconds < SECONDS


def _sstable_with_growing_keys(entries: int) -> bytes:
    from tests.helpers import varint
    from tests.test_tf_checkpoint import _header
    from tests.test_tf_checkpoint import tf_checkpoint as tf

    _, header_value = _header()
    body = varint(0) + varint(0) + varint(len(header_value)) + header_value
    value = b""  # the cap trips while the table is parsed, before any value is decoded
    for i in range(entries):  # each entry shares the whole previous key and adds one byte
        body += varint(i) + varint(1) + varint(len(value)) + b"a" + value
    block = body + (0).to_bytes(4, "little") + (1).to_bytes(4, "little")
    out = block + b"\0" * 5
    handle = varint(0) + varint(len(block))
    index = varint(0) + varint(1) + varint(len(handle)) + b"\xff" + handle
    index += (0).to_bytes(4, "little") + (1).to_bytes(4, "little")
    index_offset = len(out)
    out += index + b"\0" * 5
    meta = (0).to_bytes(4, "little") + (1).to_bytes(4, "little")
    meta_offset = len(out)
    out += meta + b"\0" * 5
    handles = varint(meta_offset) + varint(len(meta)) + varint(index_offset) + varint(len(index))
    return out + handles.ljust(40, b"\0") + tf.TABLE_MAGIC.to_bytes(8, "little")


def test_tf_prefix_compressed_keys_are_capped(tmp_path: Path) -> None:
    from ckptscan.formats import tf_checkpoint

    index = tmp_path / "ckpt.index"
    index.write_bytes(_sstable_with_growing_keys(3_000))  # 12 KB of entries, 4.5 MB of keys
    (tmp_path / "ckpt.data-00000-of-00001").write_bytes(b"\0" * 64)
    assert tf_checkpoint.MAX_KEY_BYTES_PER_FILE_BYTE * index.stat().st_size + (1 << 20) < 3_000**2 // 2
    result, seconds = timed(index)
    assert result.error is not None and result.error.code == "limit-exceeded" and "prefix" in result.error.message
    assert seconds < SECONDS


def test_tf_slot_name_parsing_is_linear() -> None:
    from ckptscan.formats.tf_checkpoint import _tf2_slot

    key = "a/" * 200_000 + "x"
    started = time.monotonic()
    assert _tf2_slot(key) is None
    assert _tf2_slot("v/.OPTIMIZER_SLOT/opt/m/.ATTRIBUTES/VARIABLE_VALUE") == ("v", "m")
    assert time.monotonic() - started < 0.5


def test_tf_object_graph_with_shared_children_is_bounded() -> None:
    from ckptscan.formats.tf_checkpoint import _classify_from_graph, _Node

    n = 3_000
    variables = _Node(children=[(i, "") for i in range(n)])
    slots = _Node(children=[(i, "") for i in range(n)])
    nodes = [variables, slots]
    for _ in range(n):  # every optimizer node shares the same two n-long lists
        nodes.append(_Node(children=[(0, "_trainable_variables"), (1, "_momentums")]))
    warnings: list[str] = []
    started = time.monotonic()
    _classify_from_graph([], nodes, warnings)
    assert time.monotonic() - started < SECONDS
    assert any("work limit" in w for w in warnings)


def test_tf_header_declaring_many_shards_reports_quickly(tmp_path: Path) -> None:
    from tests.test_tf_checkpoint import _bundle, _entry, _header

    entries = [(b"", int_field(1, 100_000) + len_field(3, int_field(1, 1))), (b"w", _entry([2]))]
    assert _header()[0] == b""
    path = _bundle(tmp_path, entries, data_size=None)
    started = time.monotonic()
    run = run_strict(path)
    assert_safe_output(run)
    assert time.monotonic() - started < 10 * SECONDS  # 100,000 missing data files are stat'ed
    assert len(run.out.splitlines()) < 400  # the report stays short: findings and lists are capped


def test_gguf_unknown_types_are_sized_in_n_log_n(tmp_path: Path) -> None:
    from tests.test_gguf import Builder

    b = Builder()
    b.tensors = [(f"t{i}", [1], 9999, 32 * i) for i in range(20_000)]
    b.data = bytes(32 * 20_000)
    result, seconds = timed(b.write(tmp_path))
    assert result.error is None and len(result.inventory.tensors) == 20_000  # type: ignore[union-attr]
    assert seconds < SECONDS


def test_pickle_memo_sharing_stays_linear(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    inner = {f"t{i}": torch.zeros(1) for i in range(256)}
    torch.save({f"k{i}": inner for i in range(1024)}, tmp_path / "memo.pt")
    result, seconds = timed(tmp_path / "memo.pt")
    inventory = result.inventory
    assert inventory is not None and len(inventory.tensors) < 50_000  # not 262,144
    assert any("memo bomb" in w for w in inventory.warnings)
    assert seconds < SECONDS


def test_keras_bomb_is_not_inflated(tmp_path: Path) -> None:
    path = tmp_path / "bomb.keras"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("config.json", json.dumps({"class_name": "Sequential", "config": {"layers": []}}))
        archive.writestr("metadata.json", json.dumps({"keras_version": "3.0.0"}))
        with archive.open("model.weights.h5", "w", force_zip64=True) as member:
            chunk = b"\0" * (1 << 20)
            for _ in range(256):  # 256 MiB of zeros, about 256 KB deflated
                member.write(chunk)
    result, seconds = timed(path)
    assert result.error is not None and result.error.code == "limit-exceeded", result.error
    assert seconds < SECONDS


# -- case 9: audit -------------------------------------------------------------------------------------------


def test_audit_never_follows_links_out_of_the_tree(tmp_path: Path) -> None:
    outside, tree = tmp_path / "outside", tmp_path / "tree"
    outside.mkdir()
    tree.mkdir()
    safetensors(outside / "secret.safetensors", ["w"])
    safetensors(tree / "mine.safetensors", ["w"])
    (tree / "folder-link").symlink_to(outside, target_is_directory=True)
    (tree / "file-link.safetensors").symlink_to(outside / "secret.safetensors")
    (tree / "inside-link.safetensors").symlink_to(tree / "mine.safetensors")
    run = run_strict("audit", tree, "--follow-links", "--json", "--workers", "0")
    doc = run.json()
    paths = [r["path"] for r in doc["results"]]
    assert len(paths) == 1 and "secret" not in paths[0], paths  # mine, reached once (maybe via the inside link)
    assert doc["audit"]["discovery"]["links_outside"] == 2


def test_text_files_are_not_safetensors(tmp_path: Path) -> None:
    (tmp_path / "tool.py").write_text('CONFIG = {\n    "a": 1,\n}\n')
    (tmp_path / "notes.txt").write_text('12345678{"a": 1}')
    safetensors(tmp_path / "model.safetensors", ["w"])
    doc = run_strict("audit", tmp_path, "--json", "--workers", "0").json()
    assert doc["audit"]["totals"]["failed"] == 0
    assert [Path(r["path"]).name for r in doc["results"]] == ["model.safetensors"]


def test_interrupted_jsonl_line_is_ended_before_the_next(monkeypatch: pytest.MonkeyPatch) -> None:
    from ckptscan.cli import common as cli

    class Blocked(io.StringIO):
        calls = 0

        def write(self, text: str) -> int:
            Blocked.calls += 1
            if Blocked.calls == 1:
                super().write(text[: len(text) // 2])
                raise KeyboardInterrupt  # Ctrl-C while a slow reader blocks the pipe
            return super().write(text)

    out = Blocked()
    monkeypatch.setattr(sys, "stdout", out)
    with pytest.raises(KeyboardInterrupt):
        cli.emit_line('{"record":"model","path":"a"}')
    cli.emit_line('{"record":"summary"}')
    lines = out.getvalue().splitlines()
    assert lines[-1] == '{"record":"summary"}'  # never glued to half a record
    assert len(lines) == 2


def test_a_named_file_too_long_for_any_file_system_is_refused_not_crashed(tmp_path: Path) -> None:
    # found by tools/fuzz.py: a shard name of 300 bytes made the OS raise ENAMETOOLONG (internal error)
    weight_map = {"w": "mo" + "\x7f" * 300 + "del-00001-of-00002.safetensors"}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    result, seconds = timed(tmp_path / "model.safetensors.index.json")
    assert result.error is not None and result.error.code == "unsafe-path", result.error
    assert "too long for any file system" in result.error.message and "\n" not in result.error.message
    assert seconds < SECONDS
