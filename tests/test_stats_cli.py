"""--stats through the command line: JSON against the published schema, exit codes, the report."""

from __future__ import annotations

import io
import json
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

from ckptscan.cli import EXIT_FINDINGS, EXIT_OK, EXIT_USAGE, main
from ckptscan.cli.common import ProgressBar
from ckptscan.report.json import SCHEMA_VERSION, schema

FIXTURES = Path(__file__).resolve().parent.parent / "testdata" / "stats"


def cli(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as e:  # argparse
            code = int(e.code or 0)
    return code, out.getvalue(), err.getvalue()


def test_json_with_stats_follows_the_schema() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    code, out, _ = cli(str(FIXTURES / "integrity.safetensors"), str(FIXTURES / "quants.gguf"), "--stats", "--json")
    assert code == EXIT_OK
    doc = json.loads(out)
    jsonschema.validate(doc, schema())
    assert doc["schema_version"] == SCHEMA_VERSION
    first = doc["results"][0]
    tensor = next(t for t in first["tensors"] if t["name"] == "layers.2.nan.weight")
    assert tensor["stats"]["nan"] == 2 and tensor["stats"]["hash"].startswith(("xxh3-128:", "sha256:"))
    assert {"nan-values", "inf-values", "all-zero-tensor", "duplicate-tensor-content"} <= {
        f["code"] for f in first["findings"]
    }
    assert first["stats_summary"]["integrity"]["nan_values"] == 2
    gguf = doc["results"][1]
    assert next(t for t in gguf["tensors"] if t["name"] == "q4_k")["stats"]["sqnr_int8_db"] > 30


def test_json_without_stats_has_no_stats_fields() -> None:
    code, out, _ = cli(str(FIXTURES / "integrity.safetensors"), "--json")
    result = json.loads(out)["results"][0]
    assert code == EXIT_OK and "stats_summary" not in result and "stats" not in result["tensors"][0]


def test_stats_findings_count_for_fail_on() -> None:
    assert cli(str(FIXTURES / "integrity.safetensors"), "--stats", "--json", "--fail-on", "high")[0] == EXIT_FINDINGS
    assert cli(str(FIXTURES / "integrity.safetensors"), "--json", "--fail-on", "high")[0] == EXIT_OK
    assert cli(str(FIXTURES / "dtypes.safetensors"), "--stats", "--json", "--fail-on", "high")[0] == EXIT_OK


def test_terminal_report_shows_integrity_pruning_and_quantization() -> None:
    code, out, _ = cli(str(FIXTURES / "integrity.safetensors"), "--stats", "--tensors", "--no-color")
    assert code == EXIT_OK
    for heading in (
        "Integrity",
        "nan-values",
        "Pruning potential",
        "Quantization error",
        "Most sensitive",
        "Tensor values",
    ):
        assert heading in out


def test_sampling_from_the_command_line() -> None:
    code, out, _ = cli(str(FIXTURES / "dtypes.safetensors"), "--stats-sample", "5%", "--json")
    summary = json.loads(out)["results"][0]["stats_summary"]
    assert code == EXIT_OK and summary["sample_fraction"] == 0.05
    assert not summary["sampled"]  # every tensor of this small file is read whole


@pytest.mark.parametrize("bad", ["0", "1.5", "-3%", "half"])
def test_bad_sample_fractions_are_usage_errors(bad: str) -> None:
    code, _, err = cli(str(FIXTURES / "dtypes.safetensors"), f"--stats-sample={bad}")
    assert code == EXIT_USAGE and "fraction" in err


def test_progress_bar_waits_before_appearing() -> None:
    bar = ProgressBar("x", delay=3600)
    bar.update(1, 10)
    assert bar._progress is None
    bar.close()
