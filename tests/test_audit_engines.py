"""``ckptscan audit --engine dask``, remote roots, and ``--index``: the same records and totals as
the embedded process pool on the same files."""

from __future__ import annotations

import io
import json
import shutil
import sqlite3
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import pytest

from ckptscan.cli import main
from tests.helpers import run_cli
from tests.remote_server import file_server, moto_s3

TESTDATA = Path(__file__).resolve().parent.parent / "testdata"
VOLATILE = ("elapsed_s", "index", "engine", "workers", "roots")


def audit(*args: str | Path) -> tuple[int, dict[str, Any]]:
    run = run_cli("audit", *args, "--json")
    assert run.out, run.err
    return run.code, json.loads(run.out)


def stable(doc: dict[str, Any], *prefixes: str) -> Any:
    summary = {k: v for k, v in doc["audit"].items() if k not in VOLATILE}
    results = [{k: v for k, v in r.items() if k != "remote"} for r in doc["results"]]
    text = json.dumps({"results": results, "audit": summary}, sort_keys=True)
    for prefix in prefixes:
        text = text.replace(prefix, "ROOT")
    return json.loads(text)


def differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """Where two stable() documents differ, by record path and field (a whole-document diff of a
    hundred records says nothing readable)."""
    found = []
    paths_a = [r["path"] for r in a["results"]]
    paths_b = [r["path"] for r in b["results"]]
    if paths_a != paths_b:
        found.append(f"records: only first {sorted(set(paths_a) - set(paths_b))}, "
                     f"only second {sorted(set(paths_b) - set(paths_a))}, same order {paths_a == paths_b}")  # fmt: skip
    by_path = {r["path"]: r for r in b["results"]}
    for record in a["results"]:
        other = by_path.get(record["path"])
        if other is not None and other != record:
            keys = sorted(k for k in record.keys() | other.keys() if record.get(k) != other.get(k))
            found += [f"{record['path']} [{k}]: {record.get(k)!r:.300} != {other.get(k)!r:.300}" for k in keys]
    for k in sorted(a["audit"].keys() | b["audit"].keys()):
        if a["audit"].get(k) != b["audit"].get(k):
            found.append(f"audit [{k}]: {a['audit'].get(k)!r:.600} != {b['audit'].get(k)!r:.600}")
    return found


@pytest.fixture(scope="module")
def process_pool_audit() -> tuple[int, dict[str, Any]]:
    return audit(TESTDATA)


def test_dask_local_cluster_equals_the_process_pool(process_pool_audit: tuple[int, dict[str, Any]]) -> None:
    pytest.importorskip("distributed")
    code, doc = audit(TESTDATA, "--engine", "dask", "--workers", "2")
    expected_code, expected = process_pool_audit
    assert code == expected_code
    assert doc["audit"]["engine"] == "dask"
    assert not differences(stable(doc), stable(expected))
    assert doc["audit"]["totals"]["models"] > 20


def usage_error(*args: str) -> tuple[object, str]:
    err = io.StringIO()
    with redirect_stderr(err), redirect_stdout(io.StringIO()), pytest.raises(SystemExit) as exit_info:
        main(list(args))
    return exit_info.value.code, err.getvalue()


def test_scheduler_needs_dask_engine() -> None:
    code, err = usage_error("audit", str(TESTDATA), "--scheduler", "tcp://127.0.0.1:1")
    assert code == 2 and "--engine dask" in err


def test_unreachable_scheduler_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("distributed")
    from ckptscan.audit import engines

    monkeypatch.setattr(engines, "CONNECT_TIMEOUT_S", 2)  # the error is the same after 30 s
    code, err = usage_error("audit", str(TESTDATA), "--engine", "dask", "--scheduler", "tcp://127.0.0.1:9")
    assert code == 2 and "Dask scheduler" in err and "Traceback" not in err


def test_s3_prefix_with_dask_matches_the_local_audit(tmp_path: Path) -> None:
    pytest.importorskip("moto")
    pytest.importorskip("s3fs")
    pytest.importorskip("distributed")
    tree = tmp_path / "tree"
    shutil.copytree(TESTDATA / "safetensors", tree / "safetensors")
    shutil.copytree(TESTDATA / "gguf", tree / "gguf")
    shutil.copytree(TESTDATA / "onnx", tree / "onnx")
    local_code, local = audit(tree)
    with moto_s3("audits", tree, "runs/2026"):
        code, doc = audit("s3://audits/runs/2026", "--engine", "dask", "--workers", "2")
    assert code == local_code
    assert doc["audit"]["totals"]["models"] == local["audit"]["totals"]["models"] > 5
    assert not differences(stable(doc, "s3://audits/runs/2026"), stable(local, str(tree)))


def test_remote_failures_become_records_and_the_audit_goes_on(tmp_path: Path) -> None:
    for name in ("bad.safetensors", "good.safetensors"):
        shutil.copy(TESTDATA / "safetensors/all_dtypes.safetensors", tmp_path / name)
    with file_server(tmp_path) as s:
        s.behaviour.ignore_range.add("bad")
        code, doc = audit(f"{s.url}/bad.safetensors", f"{s.url}/good.safetensors", "--workers", "1")
    assert code == 1
    by_path = {r["path"]: r for r in doc["results"]}
    assert by_path[f"{s.url}/bad.safetensors"]["error"]["code"] == "remote-error"
    assert by_path[f"{s.url}/good.safetensors"]["error"] is None
    assert doc["audit"]["totals"]["failed"] == 1


# -- the index -------------------------------------------------------------------------------------


def units(doc: dict[str, Any]) -> int:
    """Models plus files skipped as not checkpoints: what a re-run of an unchanged tree reuses."""
    return int(doc["audit"]["totals"]["models"]) + sum(doc["audit"]["skipped"]["files"].values())


def test_index_second_run_reads_nothing_and_reports_the_same(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    shutil.copytree(TESTDATA, tree)
    index = tmp_path / "audit.sqlite"
    code1, first = audit(tree, "--index", str(index))
    code2, second = audit(tree, "--index", str(index))
    assert code1 == code2
    jsonschema = pytest.importorskip("jsonschema")
    from ckptscan.report.json import schema

    jsonschema.Draft202012Validator(schema()).validate(second)
    assert first["audit"]["index"]["reused"] == 0 and first["audit"]["index"]["stored"] > 0
    assert second["audit"]["index"]["stored"] == 0
    assert second["audit"]["index"]["reused"] == units(first)
    assert not differences(stable(second), stable(first))

    db = sqlite3.connect(index)
    columns = [row[1] for row in db.execute("PRAGMA table_info(files)")]
    assert columns == ["path", "size", "mtime_ns", "etag", "content_hash", "status", "model", "record", "members",
                       "digest", "audited_at"]  # fmt: skip
    statuses = dict(db.execute("SELECT status, COUNT(*) FROM files GROUP BY status").fetchall())
    assert statuses["model"] == first["audit"]["totals"]["models"]
    shard = str(tree / "safetensors/sharded-tiny/model-00001-of-00002.safetensors")
    (status, model) = db.execute("SELECT status, model FROM files WHERE path = ?", (shard,)).fetchone()
    assert status == "member" and model.endswith("model.safetensors.index.json")
    record = json.loads(db.execute("SELECT record FROM files WHERE path = ?", (model,)).fetchone()[0])
    assert record["format"] == "safetensors-sharded"
    db.close()


def test_index_rereads_changed_files_and_their_models(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    shutil.copytree(TESTDATA / "safetensors", tree)
    index = tmp_path / "audit.sqlite"
    _, first = audit(tree, "--index", str(index))
    shard = tree / "sharded-tiny/model-00002-of-00002.safetensors"
    shard.write_bytes(shard.read_bytes()[:100])  # truncated: its model is now broken
    _, second = audit(tree, "--index", str(index))
    assert second["audit"]["index"]["stored"] >= 1
    assert second["audit"]["index"]["reused"] == units(first) - 1
    broken = [r for r in second["results"] if r["path"].endswith("model.safetensors.index.json")]
    assert broken and broken[0]["error"] is not None
    _, third = audit(tree, "--index", str(index), "--quantize", "int4")  # other options: all stale
    assert third["audit"]["index"]["reused"] == 0
