"""Hugging Face Trainer checkpoint folders: one inventory of weights and training state."""

from __future__ import annotations

import ckptscan
from ckptscan import registry
from tests.conftest import TESTDATA

FOLDER = TESTDATA / "torch" / "checkpoint-4"


def test_folder_is_claimed_and_read_as_one_model() -> None:
    spec = registry.detect_folder(FOLDER)
    assert spec is not None and spec.name == "hf-trainer-checkpoint"
    assert ckptscan.model_inputs(FOLDER) == [FOLDER]
    inventory = ckptscan.read_inventory(FOLDER)
    assert inventory.format == "hf-trainer-checkpoint" and inventory.complete
    assert {f.path for f in inventory.files} == {
        "pytorch_model.bin", "optimizer.pt", "scheduler.pt", "rng_state.pth", "training_args.bin", "trainer_state.json"
    }  # fmt: skip
    keys = [s.key for s in inventory.storages]
    assert len(keys) == len(set(keys))
    structures = {t.attrs["structure"] for t in inventory.tensors}
    assert structures == {"model", "optimizer", "rng"}
    assert inventory.metadata["trainer_state"]["global_step"] == 4
    assert inventory.sidecars["trainer_state.json"]["global_step"] == 4


def test_optimizer_groups_are_mapped_to_model_names() -> None:
    inventory = ckptscan.read_inventory(FOLDER)
    model = {t.name: t.shape for t in inventory.tensors if t.attrs["structure"] == "model"}
    exp_avg = {t.attrs["param_index"]: t for t in inventory.tensors if t.attrs.get("optimizer_state") == "exp_avg"}
    assert len(exp_avg) == 8
    # AdamW in two groups (decay: the weights but BatchNorm's; no decay: the rest), as the Trainer builds it
    assert [exp_avg[i].attrs["param_name"] for i in range(8)] == [
        "0.weight", "3.weight", "4.weight", "0.bias", "1.weight", "1.bias", "3.bias", "4.bias"
    ]  # fmt: skip
    assert all(exp_avg[i].attrs["param_name_guessed"] for i in range(8))
    assert all(model[t.attrs["param_name"]] == t.shape for t in exp_avg.values())
    assert exp_avg[0].name == "optimizer.state.0.exp_avg" and exp_avg[0].section == "optimizer"


def test_training_args_object_is_reported() -> None:
    inventory = ckptscan.read_inventory(FOLDER)
    assert any(f.code == "unknown-global" and "argparse.Namespace" in f.message for f in inventory.findings)
