"""Folders that are one model although they hold several checkpoints.

- **One model stored twice**: ``model.safetensors`` beside ``pytorch_model.bin`` (or their sharded
  indexes, or a ``.fp16`` variant) hold the same tensors: same names and shapes, give or take a tied
  head that ``save_pretrained`` drops. The folder is read as the preferred copy (safetensors first,
  the non-variant first) and the other files join its inventory as ``duplicate-copy`` files: their
  bytes are ``duplicates`` in the overhead split and recoverable by every reduction target.
- **A diffusers pipeline**: ``model_index.json`` names components (``unet``/``transformer``,
  ``vae``, ``text_encoder``...), each a sub-folder holding one model. The pipeline is read as one
  inventory whose tensor names are prefixed by their component (``unet/conv_in.weight``) the way a
  sharded model spans files, with ``metadata["components"]`` listing them; each tensor records its
  component in ``attrs["component"]``.

Reading is header-only like every reader; paths never leave the folder (components are sub-folders
named by ``model_index.json``, checked to resolve inside it).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ckptscan.errors import CkptscanError, ReadFailure
from ckptscan.inventory import FileRef, Inventory, Region, RegionKind, combine

MODEL_INDEX = "model_index.json"
PIPELINE_FORMAT = "diffusers-pipeline"
DUPLICATE_FILE_ROLE = "duplicate-copy"  # as ckptscan.analyze.overhead.DUPLICATE_FILE_ROLE
MODEL_INDEX_MAX_BYTES = 1 << 20
# the share of tensor names two files must have in common (same shapes) to be one model
SAME_MODEL_SHARE = 0.9


@dataclass(frozen=True, slots=True)
class Copies:
    """One model stored in several files of a folder: the copy to read and the others."""

    primary: Path
    duplicates: tuple[Path, ...]


def claims(folder: Path) -> bool:
    """A folder this module reads as one model: a diffusers pipeline, or one model stored twice."""
    return is_pipeline(folder) or copies(folder) is not None


def read_folder(folder: Path) -> Inventory | None:
    """The one inventory of a pipeline or of a model stored twice; None for any other folder."""
    if is_pipeline(folder):
        return read_pipeline(folder)
    found = copies(folder)
    if found is None:
        return None
    return read_copies(folder, found)


# -- one model stored twice ------------------------------------------------------------------------


def copies(folder: Path) -> Copies | None:
    """The folder's checkpoints, when they are all one model; None when they are not (or just one)."""
    from ckptscan.scan import checkpoint_files

    candidates = checkpoint_files(folder)
    if len(candidates) < 2:
        return None
    shapes = []
    for path in candidates:
        inventory = _read(path)
        if inventory is None:
            return None
        shapes.append({t.name: t.shape for t in inventory.tensors})
    first = shapes[0]
    if not first or not all(_same_model(first, other) for other in shapes[1:]):
        return None
    ordered = sorted(candidates, key=_preference)
    return Copies(ordered[0], tuple(ordered[1:]))


def _same_model(a: Mapping[str, tuple[int, ...]], b: Mapping[str, tuple[int, ...]]) -> bool:
    common = a.keys() & b.keys()
    if not common or any(a[name] != b[name] for name in common):
        return False
    return len(common) >= SAME_MODEL_SHARE * max(len(a), len(b))


def _preference(path: Path) -> tuple[int, int, str]:
    """safetensors before anything else; the plain file before a variant (``.fp16.``)."""
    name = path.name.lower()
    variant = any(f".{v}." in name for v in ("fp16", "bf16", "fp32", "ema", "non_ema"))
    return (0 if ".safetensors" in name else 1, int(variant), name)


@functools.lru_cache(maxsize=8)  # claims() then read_folder() ask for the same headers
def _read_cached(path: Path, mtime_ns: int, size: int) -> Inventory | None:
    from ckptscan.scan import read_inventory

    try:
        inventory = read_inventory(path)
    except CkptscanError:
        return None
    return inventory if inventory.complete else None


def _read(path: Path) -> Inventory | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return _read_cached(path, stat.st_mtime_ns, stat.st_size)


def read_copies(folder: Path, found: Copies) -> Inventory:
    from ckptscan.scan import read_inventory

    inventory = read_inventory(found.primary)
    root = Path(inventory.root)
    extra: list[FileRef] = []
    described = []
    for path in found.duplicates:
        other = read_inventory(path)
        for f in other.files:
            absolute = (Path(other.root) / f.path).resolve()
            relative = absolute.relative_to(root.resolve()).as_posix()
            extra.append(FileRef(relative, f.size, DUPLICATE_FILE_ROLE))
        described.append(
            {
                "path": path.relative_to(folder).as_posix(),
                "format": other.format,
                "bytes": other.file_bytes,
                "tensors": len(other.tensors),
            }
        )
    names = ", ".join(d["path"] for d in described)  # type: ignore[misc]
    note = (
        f"{names}: the same model as {found.primary.name} (same tensor names and shapes) stored again; "
        f"{sum(f.size for f in extra):,} bytes recoverable by keeping one copy"
    )
    return replace(
        inventory,
        files=inventory.files + tuple(extra),
        metadata={**inventory.metadata, "duplicate_copies": described},
        warnings=(*inventory.warnings, note),
    )


# -- diffusers pipelines ---------------------------------------------------------------------------


def is_pipeline(folder: Path) -> bool:
    return folder.is_dir() and (folder / MODEL_INDEX).is_file()


def model_index(folder: Path) -> dict[str, Any]:
    path = folder / MODEL_INDEX
    if path.stat().st_size > MODEL_INDEX_MAX_BYTES:
        raise ReadFailure(f"{MODEL_INDEX} is larger than {MODEL_INDEX_MAX_BYTES:,} bytes", path=str(path))
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise ReadFailure(f"{MODEL_INDEX} is not valid JSON: {e}", path=str(path)) from e
    if not isinstance(data, dict):
        raise ReadFailure(f"{MODEL_INDEX} is not a JSON object", path=str(path))
    return data


def components(folder: Path) -> list[tuple[str, str, str]]:
    """(name, library, class) of each component ``model_index.json`` names that is a sub-folder here."""
    found = []
    resolved = folder.resolve()
    for name, value in model_index(folder).items():
        if name.startswith("_") or not isinstance(value, list) or len(value) != 2:
            continue
        library, cls = (str(v) if v is not None else "" for v in value)
        sub = (folder / name).resolve()
        if sub.parent != resolved or not sub.is_dir():  # never a path out of the pipeline's folder
            continue
        found.append((name, library, cls))
    return found


def read_pipeline(folder: Path) -> Inventory:
    from ckptscan.scan import checkpoint_files, read_inventory

    parts: list[Inventory] = []
    listed: list[dict[str, Any]] = []
    warnings: list[str] = []
    for name, library, cls in components(folder):
        sub = folder / name
        inputs = checkpoint_files(sub)
        found = copies(sub)
        if found is not None:
            inventory = read_copies(sub, found)
            chosen = found.primary
        elif len(inputs) == 1:
            inventory = read_inventory(inputs[0])
            chosen = inputs[0]
        elif (canonical := _canonical_weights(inputs)) is not None:
            inventory = read_inventory(canonical)
            chosen = canonical
            others = ", ".join(p.name for p in inputs if p != canonical)
            warnings.append(
                f"{name}: read {canonical.name}, the file diffusers loads; not part of the pipeline: {others}"
            )
        else:
            if inputs:
                names = ", ".join(p.name for p in inputs)
                warnings.append(f"{name}: several checkpoints and none diffusers would load ({names}); not counted")
            continue  # a tokenizer, a scheduler: configs only
        part = _prefixed(inventory, name, folder)
        parts.append(part)
        listed.append(
            {
                "name": name,
                "library": library,
                "class": cls,
                "path": chosen.relative_to(folder).as_posix(),
                "format": inventory.format,
                "files": len(part.files),
                "file_bytes": part.file_bytes,
                "tensors": len(part.tensors),
            }
        )
    if not parts:
        raise ReadFailure(f"{MODEL_INDEX} names no component folder holding a model", path=str(folder))
    index_size = (folder / MODEL_INDEX).stat().st_size
    return combine(
        parts,
        format=PIPELINE_FORMAT,
        path=str(folder),
        root=str(folder),
        files=(FileRef(MODEL_INDEX, index_size, "index"),),
        regions=(Region(MODEL_INDEX, RegionKind.METADATA, 0, index_size, "diffusers model index"),),
        metadata={"components": listed, "model_index": model_index(folder)},
        warnings=tuple(warnings),
    )


# the weight files Hugging Face libraries write and, without a `variant`, load: best first
_CANONICAL_WEIGHTS = (
    *(
        f"{stem}{suffix}"
        for stem in ("diffusion_pytorch_model", "model", "pytorch_model")
        for suffix in (".safetensors.index.json", ".safetensors", ".bin.index.json", ".bin")
    ),
    "tf_model.h5",
    "tf_model.h5.index.json",
)


def may_hold_copies(names: Iterable[str]) -> bool:
    """From file names alone (nothing read): Hugging Face weights in two formats, which
    :func:`copies` then confirms or not from their headers."""
    formats = {_weights_format(n) for n in names if n in _CANONICAL_WEIGHTS}
    return len(formats) >= 2


def _weights_format(name: str) -> str:
    return "safetensors" if ".safetensors" in name else "keras" if name.startswith("tf_model.") else "pytorch"


def _canonical_weights(inputs: list[Path]) -> Path | None:
    by_name = {p.name: p for p in inputs}
    return next((by_name[n] for n in _CANONICAL_WEIGHTS if n in by_name), None)


def _prefixed(inventory: Inventory, component: str, folder: Path) -> Inventory:
    """The component's inventory re-rooted at the pipeline folder, its names prefixed by the component."""
    base = Path(inventory.root).resolve().relative_to(folder.resolve()).as_posix()

    def rel(path: str) -> str:
        return f"{base}/{path}" if base not in ("", ".") else path

    def key(storage: str | None) -> str | None:
        return f"{component}/{storage}" if storage is not None else None

    tensors = tuple(
        replace(
            t,
            name=f"{component}/{t.name}",
            file=rel(t.file),
            storage=key(t.storage),
            attrs={**t.attrs, "component": component},
        )
        for t in inventory.tensors
    )
    return replace(
        inventory,
        root=str(folder),
        files=tuple(replace(f, path=rel(f.path)) for f in inventory.files),
        tensors=tensors,
        storages=tuple(replace(s, key=f"{component}/{s.key}", file=rel(s.file)) for s in inventory.storages),
        regions=tuple(replace(r, file=rel(r.file)) for r in inventory.regions),
        warnings=tuple(f"{component}: {w}" for w in inventory.warnings),
        findings=tuple(
            replace(f, where=f"{component}/{f.where}" if f.where else component) for f in inventory.findings
        ),
    )
