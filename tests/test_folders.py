"""Folders that are one model: one model stored twice, and diffusers pipelines (ckptscan.folders)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from ckptscan import folders
from ckptscan.analyze.analysis import analyze
from ckptscan.cli import main
from ckptscan.errors import CkptscanError
from ckptscan.scan import model_inputs, read_inventory, scan
from tests.conftest import TESTDATA

TWO = TESTDATA / "folders" / "two-formats"
PIPELINE = TESTDATA / "folders" / "pipeline"


def test_one_model_stored_twice_is_one_model() -> None:
    assert model_inputs(TWO) == [TWO]
    result = scan(TWO)
    assert result.ok and result.inventory is not None
    inventory = result.inventory
    assert inventory.format == "safetensors"  # the preferred copy
    bin_size = (TWO / "pytorch_model.bin").stat().st_size
    assert [(f.path, f.role) for f in inventory.files if f.role == folders.DUPLICATE_FILE_ROLE] == [
        ("pytorch_model.bin", "duplicate-copy")
    ]
    a = analyze(inventory)
    alone = analyze(read_inventory(TWO / "model.safetensors"))
    assert a.parameters.total == alone.parameters.total == 6224
    assert a.overhead.parts["duplicates"].bytes == bin_size
    assert a.overhead.exact
    strip = next(t for t in a.targets if t.name == "strip")
    assert strip.saving_bytes >= bin_size
    assert any("the same model" in w and "recoverable" in w for w in inventory.warnings)
    assert inventory.metadata["duplicate_copies"][0]["format"] == "pytorch"


def test_two_different_models_stay_two(tmp_path: Path) -> None:
    shutil.copy(TESTDATA / "roles" / "llama" / "model.safetensors", tmp_path / "a.safetensors")
    shutil.copy(TESTDATA / "roles" / "gpt2" / "model.safetensors", tmp_path / "b.safetensors")
    assert not folders.claims(tmp_path)
    assert len(model_inputs(tmp_path)) == 2


def test_cli_reports_one_result_for_the_folder(capsys: pytest.CaptureFixture[str]) -> None:
    main(["scan", str(TWO), "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert len(doc["results"]) == 1
    assert doc["results"][0]["overhead"]["parts"]["duplicates"] == (TWO / "pytorch_model.bin").stat().st_size


def test_pipeline_is_one_report_with_a_row_per_component(capsys: pytest.CaptureFixture[str]) -> None:
    assert model_inputs(PIPELINE) == [PIPELINE]
    inventory = read_inventory(PIPELINE)
    assert inventory.format == folders.PIPELINE_FORMAT
    a = analyze(inventory)
    by_component = a.parameters.by_component
    assert set(by_component) == {"text_encoder", "unet", "vae"}
    assert sum(by_component.values()) == a.parameters.total
    for name, path in (("text_encoder", "text_encoder/model.safetensors"),
                       ("vae", "vae/diffusion_pytorch_model.safetensors"),
                       ("unet", "unet/diffusion_pytorch_model.safetensors")):  # fmt: skip
        assert by_component[name] == analyze(read_inventory(PIPELINE / path)).parameters.total
    # the UNet's fp16 variant is the same component stored again
    variant = (PIPELINE / "unet" / "diffusion_pytorch_model.fp16.safetensors").stat().st_size
    assert a.overhead.parts["duplicates"].bytes == variant
    assert a.overhead.exact
    main(["scan", str(PIPELINE), "--json"])
    doc = json.loads(capsys.readouterr().out)
    (result,) = doc["results"]
    rows = {row["name"]: row for row in result["components"]}
    assert set(rows) == {"text_encoder", "unet", "vae"}
    assert rows["unet"]["class"] == "UNet2DConditionModel" and rows["text_encoder"]["library"] == "transformers"
    assert sum(row["parameters"] for row in rows.values()) == result["parameters"]["total"]
    main(["scan", str(PIPELINE)])
    text = capsys.readouterr().out
    assert "Components" in text and "pipeline" in text


def test_pipeline_counts_match_the_libraries() -> None:
    """Each component's parameters as diffusers/transformers load it."""
    diffusers = pytest.importorskip("diffusers")
    transformers = pytest.importorskip("transformers")
    counts = analyze(read_inventory(PIPELINE)).parameters.by_component
    unet = diffusers.UNet2DConditionModel.from_pretrained(PIPELINE / "unet")
    vae = diffusers.AutoencoderKL.from_pretrained(PIPELINE / "vae")
    text = transformers.CLIPTextModel.from_pretrained(PIPELINE / "text_encoder")
    for name, model in (("unet", unet), ("vae", vae), ("text_encoder", text)):
        assert counts[name] == sum(p.numel() for p in model.parameters()), name


def test_pipeline_component_outside_the_folder_is_ignored(tmp_path: Path) -> None:
    pipe = tmp_path / "pipe"
    shutil.copytree(PIPELINE / "vae", pipe / "vae")
    shutil.copytree(PIPELINE / "unet", tmp_path / "outside")
    index = {"_class_name": "X", "vae": ["diffusers", "AutoencoderKL"], "../outside": ["diffusers", "UNet"]}
    (pipe / "model_index.json").write_text(json.dumps(index))
    inventory = read_inventory(pipe)
    assert [c["name"] for c in inventory.metadata["components"]] == ["vae"]
    assert all(not t.file.startswith("..") for t in inventory.tensors)


def test_bad_model_index_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "model_index.json").write_text("{not json")
    result = scan(tmp_path)
    assert result.error is not None and "model_index.json is not valid JSON" in result.error.message
    (tmp_path / "model_index.json").write_text(json.dumps({"unet": ["diffusers", "UNet"]}))
    with pytest.raises(CkptscanError, match="names no component folder"):
        read_inventory(tmp_path)
