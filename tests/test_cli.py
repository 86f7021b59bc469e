"""The command line: reports, --json against the published schema, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from ckptscan.report.json import SCHEMA_VERSION, schema
from tests.conftest import REAL_MODELS, TESTDATA
from tests.helpers import run_cli

REPO = Path(__file__).resolve().parent.parent
ALL_FIXTURES = sorted(p for p in TESTDATA.rglob("*") if p.is_file() and p.suffix in (".safetensors", ".gguf"))


def validate(doc: object) -> None:
    jsonschema.Draft202012Validator.check_schema(schema())
    jsonschema.validate(doc, schema(), cls=jsonschema.Draft202012Validator)


def test_json_document_validates_for_every_fixture() -> None:
    run = run_cli("--json", *ALL_FIXTURES)
    assert run.code == 0, run.err
    doc = run.json()
    validate(doc)
    assert doc["schema_version"] == SCHEMA_VERSION
    assert len(doc["results"]) == len(ALL_FIXTURES)
    for result in doc["results"]:
        tensors = result["tensors"]
        assert result["totals"]["tensors"] == len(tensors)
        assert result["totals"]["elements"] == sum(t["elements"] for t in tensors)
        assert result["totals"]["bytes"] == sum(t["bytes"] for t in tensors)
        assert sum(d["bytes"] for d in result["by_dtype"].values()) == result["totals"]["bytes"]
        assert sum(m["bytes"] for m in result["modules"]) == result["totals"]["bytes"]
        assert result["file_bytes"] == sum(f["size"] for f in result["files"])


def test_json_validates_on_real_models_including_errors() -> None:
    if not REAL_MODELS.is_dir():
        pytest.skip("real models not present")
    run = run_cli("--json", *sorted(p for p in REAL_MODELS.rglob("*") if p.is_file() and p.name != "MANIFEST.json"))
    validate(run.json())


def test_failed_input_does_not_stop_the_others(tmp_path: Path) -> None:
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x05\0\0\0\0\0\0\0{oops")
    run = run_cli(
        "--json", TESTDATA / "gguf" / "llama-tiny-q8_0.gguf", bad, TESTDATA / "safetensors" / "all_dtypes.safetensors"
    )
    assert run.code == 1
    doc = run.json()
    validate(doc)
    assert [r["error"] is None for r in doc["results"]] == [True, False, True]
    assert doc["results"][1]["error"]["code"] == "malformed"
    assert doc["results"][1]["totals"] is None


def test_terminal_report_shows_the_summary() -> None:
    run = run_cli("--no-color", TESTDATA / "safetensors" / "llama-tiny" / "model.safetensors")
    assert run.code == 0
    for text in ("safetensors", "tensors", "BF16", "model.layers.[0-1]", "Largest tensors", "non-tensor bytes"):
        assert text in run.out, text


def test_full_tensor_table() -> None:
    run = run_cli("--no-color", "--tensors", TESTDATA / "gguf" / "llama-tiny-q8_0.gguf")
    assert run.code == 0
    assert "blk.1.ffn_down.weight" in run.out and "Q8_0" in run.out and "offset" in run.out


def test_fail_on_findings(tmp_path: Path) -> None:
    pointer_free = TESTDATA / "safetensors" / "sharded-tiny"
    copy = tmp_path / "m"
    import shutil

    shutil.copytree(pointer_free, copy)
    index = json.loads((copy / "model.safetensors.index.json").read_text())
    del index["weight_map"]["model.norm.weight"]  # an unlisted tensor: a medium finding
    (copy / "model.safetensors.index.json").write_text(json.dumps(index))
    assert run_cli("--json", copy).code == 0
    assert run_cli("--json", "--fail-on", "medium", copy).code == 3
    assert run_cli("--json", "--fail-on", "unsafe", copy).code == 0


def test_usage_errors_exit_2() -> None:
    with pytest.raises(SystemExit) as e:
        run_cli()
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        run_cli("--fail-on", "sometimes", "x")
    assert e.value.code == 2


def test_schema_and_formats_commands() -> None:
    run = run_cli("schema")
    assert run.code == 0 and json.loads(run.out)["title"].startswith("ckptscan")
    run = run_cli("formats")
    assert run.code == 0 and "safetensors" in run.out and "gguf" in run.out


def test_help_documents_exit_codes() -> None:
    with pytest.raises(SystemExit):
        run_cli("--help")
    proc = subprocess.run([sys.executable, "-m", "ckptscan", "--help"], capture_output=True, text=True, cwd=REPO)
    assert "exit codes" in proc.stdout and "130" in proc.stdout


def test_module_entry_point_prints_one_line_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF\x03\0\0\0" + b"\xff" * 16)
    proc = subprocess.run([sys.executable, "-m", "ckptscan", str(bad)], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stdout + proc.stderr
    assert "limit-exceeded" in proc.stdout
