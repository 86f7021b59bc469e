"""The analyzer scored on the labelled corpus (testdata/roles, made by tools/make_roles_corpus.py):
tiny real transformers/diffusers/timm/torchvision models whose every tensor is labelled from the
module that owns it in the live model. No torch needed: the labels are committed."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from ckptscan.analyze.analysis import analyze
from ckptscan.scan import read_inventory
from tests.conftest import TESTDATA

CORPUS = TESTDATA / "roles"
MODEL_FILES = ("model.safetensors", "diffusion_pytorch_model.safetensors", "pytorch_model.bin", "checkpoint.pt")
FOLDERS = sorted(p for p in CORPUS.iterdir() if (p / "labels.json").is_file())


def _labels(folder: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((folder / "labels.json").read_text())
    return data


def _model_file(folder: Path) -> Path:
    return next(folder / name for name in MODEL_FILES if (folder / name).is_file())


def _score(folder: Path) -> tuple[int, list[str], int, int]:
    labels = _labels(folder)
    inventory = read_inventory(_model_file(folder))
    a = analyze(inventory)
    got = {t.name: d for t, d in zip(inventory.tensors, a.decisions, strict=True)}
    assert set(got) == set(labels["tensors"]), folder.name
    wrong = [
        f"{name}: {got[name].role.value} ({got[name].rule}), "
        f"labelled {label['role']} ({label['module']}.{label['attr']})"
        for name, label in labels["tensors"].items()
        if got[name].role.value != label["role"]
    ]
    return len(labels["tensors"]), wrong, a.parameters.total, labels["parameters"]


def test_corpus_is_big_and_varied() -> None:
    docs = [_labels(f) for f in FOLDERS]
    assert len(docs) >= 25
    assert {d["library"] for d in docs} >= {"transformers", "diffusers", "timm", "torchvision"}
    assert {d["layout"] for d in docs} >= {"safetensors", "bin", "training", "gptq", "bnb4"}
    roles = Counter(label["role"] for d in docs for label in d["tensors"].values())
    assert set(roles) >= {"weight", "bias", "embedding", "output_head", "norm", "buffer", "quantization",
                          "optimizer_state"}  # fmt: skip


def test_at_least_995_permille_of_roles_right() -> None:
    total, wrong = 0, []
    for folder in FOLDERS:
        n, bad, _, _ = _score(folder)
        total += n
        wrong += [f"{folder.name}: {w}" for w in bad]
    assert total > 2000
    assert (total - len(wrong)) / total >= 0.995, "\n".join(wrong)


@pytest.mark.parametrize("folder", FOLDERS, ids=lambda p: p.name)
def test_parameter_count_is_the_live_models(folder: Path) -> None:
    """sum(p.numel() for p in model.parameters()), tied weights once; for the GPTQ and bitsandbytes
    layouts the same number: a packed weight counts as the weights it holds."""
    _, _, counted, expected = _score(folder)
    assert counted == expected


def test_quantized_layouts_report_what_is_packed() -> None:
    gptq = analyze(read_inventory(_model_file(CORPUS / "llama-gptq")))
    assert gptq.parameters.packed_bits == 4 and gptq.parameters.packed.tensors == 14
    assert gptq.parameters.excluded["quantization"].tensors == 14 * 3
    bnb = analyze(read_inventory(_model_file(CORPUS / "llama-bnb4")))
    assert bnb.parameters.packed_bits == 4 and bnb.parameters.packed.tensors == 14
