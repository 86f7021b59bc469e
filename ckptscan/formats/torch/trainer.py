"""Hugging Face Trainer checkpoint folders (``checkpoint-N/``), read as one model.

A folder is claimed when it holds ``trainer_state.json``, or ``optimizer.pt`` beside model
weights. The model weights are read through the registry (any format, sharded indexes included);
``optimizer.pt``, ``scheduler.pt``, ``scaler.pt``, ``rng_state*.pth`` and ``training_args.bin``
through the PyTorch reader. Tensors of the training-state files get the file's component as a
name prefix (``optimizer.state.3.exp_avg``) and a structure label; optimizer indices are mapped to
the model's parameter names where the order can be established (see ``optimizer.py``; the
Trainer splits parameters into decay / no-decay groups, so names are usually a guess).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from ckptscan import registry
from ckptscan.errors import CkptscanError
from ckptscan.formats.torch import optimizer as optimizer_names
from ckptscan.inventory import FileRef, Finding, Inventory, Region, RegionKind, Severity, combine
from ckptscan.source import Source

FORMAT = "hf-trainer-checkpoint"
MODEL_FILES = (
    "model.safetensors.index.json",
    "model.safetensors",
    "pytorch_model.bin.index.json",
    "pytorch_model.bin",
    "adapter_model.safetensors",
    "adapter_model.bin",
)
# training-state files: name -> (component prefix, structure label)
STATE_FILES = {
    "optimizer.pt": ("optimizer", "optimizer"),
    "optimizer.bin": ("optimizer", "optimizer"),
    "scheduler.pt": ("scheduler", "scheduler"),
    "scaler.pt": ("scaler", "scaler"),
    "training_args.bin": ("training_args", "hyper_parameters"),
}
MAX_TRAINER_STATE_BYTES = 16 << 20


def claims(folder: Path) -> bool:
    if (folder / "trainer_state.json").is_file():
        return True
    return (folder / "optimizer.pt").is_file() and any((folder / m).is_file() for m in MODEL_FILES)


def read_folder(folder: Path) -> Inventory:
    parts: list[Inventory] = []
    findings: list[Finding] = []
    files: list[FileRef] = []
    model_name = next((m for m in MODEL_FILES if (folder / m).is_file()), None)
    if model_name is None:
        findings.append(Finding("missing-file", Severity.HIGH, "no model weights in the trainer folder", str(folder)))
    else:
        parts.append(_read(folder, model_name, prefix="", structure=None))
    for name in _state_files(folder):
        prefix, structure = _component(name)
        part = _read(folder, name, prefix=prefix, structure=structure)
        parts.append(part)
    model = list(parts[0].tensors) if model_name is not None else []
    parts = [_name_optimizer(p, model) for p in parts]
    trainer_state = _trainer_state(folder, files)
    metadata: dict[str, Any] = {
        "model_file": model_name,
        "components": {Path(p.path).name: {"format": p.format, "tensors": len(p.tensors)} for p in parts},
        "parts_metadata": {Path(p.path).name: dict(p.metadata) for p in parts},
    }
    if trainer_state is not None:
        metadata["trainer_state"] = _summary(trainer_state)
    regions = tuple(Region(f.path, RegionKind.METADATA, 0, f.size, f.path) for f in files)
    inventory = combine(
        parts,
        format=FORMAT,
        path=str(folder),
        root=str(folder),
        files=tuple(files),
        regions=regions,
        metadata=metadata,
        findings=tuple(findings),
        complete=model_name is not None,
    )
    if trainer_state is not None:
        inventory = replace(inventory, sidecars={"trainer_state.json": trainer_state})
    return inventory


def _state_files(folder: Path) -> list[str]:
    names = [n for n in STATE_FILES if (folder / n).is_file()]
    names += sorted(p.name for p in folder.glob("rng_state*.pth") if p.is_file())
    return names


def _component(name: str) -> tuple[str, str]:
    if name in STATE_FILES:
        return STATE_FILES[name]
    return name.removesuffix(".pth"), "rng"


def _read(folder: Path, name: str, *, prefix: str, structure: str | None) -> Inventory:
    with Source(folder / name, root=folder) as source:
        try:
            part = registry.read_source(source)
        except CkptscanError as e:
            e.located(path=str(folder / name))
            raise
    if not prefix:
        return part
    tensors = []
    for t in part.tensors:
        attrs = dict(t.attrs)
        if structure is not None and attrs.get("structure") in (None, "model", "other"):
            attrs["structure"] = structure
        if "optimizer" in attrs:
            attrs["optimizer"] = f"{prefix}.{attrs['optimizer']}".rstrip(".")
        tensors.append(replace(t, name=f"{prefix}.{t.name}", section=prefix, attrs=attrs))
    metadata = dict(part.metadata)
    for entry in metadata.get("optimizers", []):
        entry["path"] = f"{prefix}.{entry['path']}".rstrip(".")
    return replace(part, tensors=tuple(tensors), metadata=metadata)


def _name_optimizer(part: Inventory, model: list[Any]) -> Inventory:
    optimizers = part.metadata.get("optimizers")
    if not optimizers or not model:
        return part
    tensors, notes = optimizer_names.name_optimizer_state(part.tensors, optimizers, model)
    for entry, note in zip(optimizers, notes, strict=True):
        entry["param_names_source"] = note.split(": ", 1)[1]
    return replace(part, tensors=tuple(tensors))


def _trainer_state(folder: Path, files: list[FileRef]) -> Any:
    path = folder / "trainer_state.json"
    if not path.is_file():
        return None
    size = path.stat().st_size
    files.append(FileRef("trainer_state.json", size, role="metadata"))
    if size > MAX_TRAINER_STATE_BYTES:
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None


def _summary(state: Any) -> dict[str, Any]:
    if not isinstance(state, dict):
        return {}
    keep = ("global_step", "epoch", "max_steps", "num_train_epochs", "best_metric", "best_model_checkpoint")
    summary = {k: state[k] for k in keep if k in state}
    history = state.get("log_history")
    if isinstance(history, list):
        summary["log_history_entries"] = len(history)
    return summary
