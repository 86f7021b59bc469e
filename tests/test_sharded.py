"""Sharded safetensors read as one model; every way an index and its shards can disagree."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from safetensors import safe_open

import ckptscan
from tests.conftest import REAL_MODELS, TESTDATA
from tests.helpers import assert_one_line_error, run_cli

SHARDED = TESTDATA / "safetensors" / "sharded-tiny"
INDEX = SHARDED / "model.safetensors.index.json"


def test_read_as_one_model_matching_every_shard() -> None:
    inventory = ckptscan.read_inventory(INDEX)
    assert inventory.format == "safetensors-sharded" and inventory.complete
    index = json.loads(INDEX.read_text())
    assert {t.name for t in inventory.tensors} == set(index["weight_map"])
    total = 0
    for t in inventory.tensors:
        assert t.file == index["weight_map"][t.name]
        with safe_open(str(SHARDED / t.file), framework="numpy") as f:
            array = f.get_tensor(t.name)
        assert list(t.shape) == list(array.shape) and t.nbytes == array.nbytes
        assert (SHARDED / t.file).read_bytes()[t.offset : t.offset + t.nbytes] == array.tobytes()
        total += t.nbytes
    assert total == index["metadata"]["total_size"]
    assert [f.role for f in inventory.files] == ["index", "weights", "weights"]
    assert inventory.file_bytes == sum(p.stat().st_size for p in SHARDED.iterdir() if p.name != "config.json")
    assert not inventory.findings and not inventory.warnings


def test_folder_is_read_through_its_index() -> None:
    run = run_cli("--json", SHARDED)
    assert run.code == 0
    [result] = run.json()["results"]
    assert result["format"] == "safetensors-sharded" and result["totals"]["tensors"] == 21


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    target = tmp_path / "model"
    shutil.copytree(SHARDED, target)
    return target


def edit_index(folder: Path, change: Any) -> Path:
    index_path = folder / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    change(index)
    index_path.write_text(json.dumps(index))
    return index_path


def codes(inventory: ckptscan.Inventory) -> list[str]:
    return sorted(f.code for f in inventory.findings)


def test_missing_shard(copy: Path) -> None:
    (copy / "model-00002-of-00002.safetensors").unlink()
    result = ckptscan.scan(copy / "model.safetensors.index.json")
    assert result.error is not None and result.error.code == "incomplete-model"
    assert result.inventory is not None and not result.inventory.complete
    assert codes(result.inventory) == ["missing-shard"]
    assert len(result.inventory.tensors) == 10  # what the first shard holds is still reported


def test_tensor_listed_but_absent_and_unlisted_tensor(copy: Path) -> None:
    def change(index: dict[str, Any]) -> None:
        wm = index["weight_map"]
        wm["ghost.weight"] = "model-00001-of-00002.safetensors"
        del wm["model.norm.weight"]

    inventory = ckptscan.read_inventory(edit_index(copy, change))
    assert codes(inventory) == ["missing-tensor", "unlisted-tensor"]
    assert inventory.complete


def test_misplaced_tensor(copy: Path) -> None:
    def change(index: dict[str, Any]) -> None:
        index["weight_map"]["model.norm.weight"] = "model-00001-of-00002.safetensors"

    inventory = ckptscan.read_inventory(edit_index(copy, change))
    assert "misplaced-tensor" in codes(inventory)


def test_lfs_pointer_shard(copy: Path) -> None:
    (copy / "model-00002-of-00002.safetensors").write_text(
        "version https://git-lfs.github.com/spec/v1\noid sha256:" + "ab" * 32 + "\nsize 214880\n"
    )
    result = ckptscan.scan(copy / "model.safetensors.index.json")
    assert result.error is not None and "Git LFS pointer" in result.error.message
    assert result.inventory is not None
    assert [f.role for f in result.inventory.files].count("lfs-pointer") == 1


def test_corrupt_shard_is_a_finding(copy: Path) -> None:
    (copy / "model-00001-of-00002.safetensors").write_bytes(b"\x10\0\0\0\0\0\0\0{not json}     ")
    result = ckptscan.scan(copy / "model.safetensors.index.json")
    assert result.error is not None and result.inventory is not None
    assert "unreadable-shard" in codes(result.inventory)


@pytest.mark.parametrize("shard", ["../outside.safetensors", "/etc/passwd", "sub/../../x.safetensors"])
def test_shard_paths_out_of_the_folder_are_refused(copy: Path, shard: str) -> None:
    (copy.parent / "outside.safetensors").write_bytes(b"")

    def change(index: dict[str, Any]) -> None:
        index["weight_map"]["model.norm.weight"] = shard

    error = assert_one_line_error(edit_index(copy, change), "refused")
    assert error["code"] == "unsafe-path"


def test_shard_link_out_of_the_folder_is_refused(copy: Path, tmp_path: Path) -> None:
    outside = tmp_path / "secret.safetensors"
    shutil.copy(SHARDED / "model-00002-of-00002.safetensors", outside)
    (copy / "model-00002-of-00002.safetensors").unlink()
    (copy / "model-00002-of-00002.safetensors").symlink_to(outside)
    error = assert_one_line_error(copy / "model.safetensors.index.json", "link")
    assert error["code"] == "unsafe-path"


def test_index_without_weight_map(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors.index.json"
    path.write_text('{"metadata": {}}')
    assert_one_line_error(path, "weight_map")


def test_real_lfs_sharded_model_says_what_is_missing() -> None:
    folder = REAL_MODELS / "safetensors_sharded_lfs" / "granite-3.1-1b-a400m-instruct"
    if not folder.is_dir():
        pytest.skip("real models not present")
    run = run_cli("--json", folder)
    assert run.code == 1
    [result] = run.json()["results"]
    assert result["error"]["code"] == "incomplete-model"
    assert "2 files are Git LFS pointers" in result["error"]["message"]
    assert "5,338,539,672 bytes never downloaded" in result["error"]["message"]
    assert result["metadata"]["tensors_in_index"] == 218
    assert result["complete"] is False
    assert [f["role"] for f in result["files"]] == ["index", "lfs-pointer", "lfs-pointer"]
    assert sorted(f["code"] for f in result["findings"]) == ["lfs-pointer", "lfs-pointer"]
    human = run_cli(folder)
    assert "unknown: the tensor data is not here" in human.out
