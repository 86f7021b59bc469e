"""``ckptscan audit`` reads the folders that `ckptscan DIR` reads as one model the same way: a
diffusers pipeline is one record (its components are not audited again), and a folder holding the
same weights as safetensors and as a PyTorch ``.bin`` is one model stored twice. Weights in two
formats that are two different models stay two records."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from ckptscan import pipeline
from ckptscan.audit import Audit, AuditOptions
from ckptscan.audit.discover import WalkOptions, plan, walk
from ckptscan.report.json import result_dict
from ckptscan.scan import scan

TESTDATA = Path(__file__).resolve().parent.parent / "testdata"
FOLDERS = TESTDATA / "folders"


def audit(root: Path, workers: int = 2) -> Audit:
    run = Audit([str(root)], AuditOptions(workers=workers, timeout_s=60))
    for _ in run.events():
        pass
    return run


def records(run: Audit, root: Path) -> dict[str, dict[str, Any]]:
    return {os.path.relpath(r["path"], root): r for r in run.records}


def single(path: Path) -> dict[str, Any]:
    return result_dict(pipeline.build(scan(path)))


def test_pipeline_and_copies_are_one_record_each_as_in_a_single_scan(tmp_path: Path) -> None:
    shutil.copytree(FOLDERS, tmp_path / "folders")
    root = tmp_path / "folders"
    for workers in (0, 2):
        run = audit(root, workers)
        found = records(run, root)
        assert sorted(found) == ["pipeline", "two-formats"]
        for name, record in found.items():
            alone = single(root / name)
            assert record["format"] == alone["format"]
            assert record["parameters"]["total"] == alone["parameters"]["total"] > 0
            assert record["overhead"]["file_bytes"] == alone["overhead"]["file_bytes"]
        assert found["pipeline"]["format"] == "diffusers-pipeline"
        summary = run.summary()
        assert summary["totals"]["models"] == 2
        assert summary["totals"]["parameters"] == sum(r["parameters"]["total"] for r in found.values())
        assert "not-one-model" not in summary["skipped"]["files"]


def test_pipeline_components_wait_for_the_pipeline() -> None:
    folders, _ = walk([str(FOLDERS / "pipeline")], WalkOptions())
    the_plan = plan(folders)
    first = [u for u in the_plan.units if u.stage == "A"]
    assert [(u.kind, Path(u.path).name) for u in first] == [("folder", "pipeline")]
    component = [u for u in the_plan.units if "/unet/" in u.path.replace(os.sep, "/")]
    assert component and all(u.id in the_plan.waiting[first[0].group] for u in component)


def test_a_file_the_pipeline_did_not_read_is_audited_alone(tmp_path: Path) -> None:
    root = tmp_path / "pipeline"
    shutil.copytree(FOLDERS / "pipeline", root)
    shutil.copy(TESTDATA / "safetensors/all_dtypes.safetensors", root / "unet" / "extra.safetensors")
    found = records(audit(root), tmp_path)
    # unet/ now holds three checkpoints: the pipeline reads the one diffusers loads, and says so
    assert sorted(found) == [
        "pipeline",
        "pipeline/unet/diffusion_pytorch_model.fp16.safetensors",
        "pipeline/unet/extra.safetensors",
    ]
    assert found["pipeline"]["parameters"]["total"] == single(FOLDERS / "pipeline")["parameters"]["total"]
    assert any("unet: read diffusion_pytorch_model.safetensors" in w for w in found["pipeline"]["warnings"])


def test_two_formats_of_two_models_are_two_records(tmp_path: Path) -> None:
    root = tmp_path / "mixed"
    root.mkdir()
    shutil.copy(FOLDERS / "two-formats/model.safetensors", root / "model.safetensors")
    shutil.copy(TESTDATA / "torch/tied.bin", root / "pytorch_model.bin")
    run = audit(root)
    found = records(run, tmp_path)
    assert sorted(found) == ["mixed/model.safetensors", "mixed/pytorch_model.bin"]
    assert found["mixed/pytorch_model.bin"]["parameters"]["total"] == single(root / "pytorch_model.bin")[
        "parameters"]["total"]  # fmt: skip
    assert run.summary()["totals"]["models"] == 2
    assert "not-one-model" not in run.summary()["skipped"]["files"]
