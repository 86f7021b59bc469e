"""From a container's pickles and storages to the common :class:`~ckptscan.inventory.Inventory`.

Tensors get their dotted path as name, their top-level key as ``section`` and the attrs documented
in docs/pytorch.md (``structure``, ``param_index``, ``param_name``, ``optimizer_state``, ...).
Every view is checked against its storage's declared size. Every global the pickles name is
recorded; those outside the tensor allowlist become findings (``unsafe-global`` when the safety
table matches, else ``unknown-global``).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from ckptscan.errors import MalformedFile
from ckptscan.formats.torch import optimizer as optimizer_names
from ckptscan.formats.torch.containers import Loaded, StorageData
from ckptscan.formats.torch.objects import TensorRef, canonical_dtype, storage_element_size
from ckptscan.formats.torch.safety import findings_for
from ckptscan.formats.torch.storage import sharing_summary
from ckptscan.formats.torch.tree import FoundTensor, TreeSummary, walk
from ckptscan.inventory import FileRef, Finding, Inventory, Severity, Storage, Tensor
from ckptscan.source import Source

LIGHTNING_KEYS = ("pytorch-lightning_version", "optimizer_states", "lr_schedulers", "loops", "callbacks")


def assemble(source: Source, loaded: Loaded) -> Inventory:
    storages = {key: _storage_record(key, data) for key, data in loaded.storages.items()}
    by_ref = {id(data.ref): key for key, data in loaded.storages.items()}
    by_key = {data.ref.key: key for key, data in loaded.storages.items()}
    tensors: list[Tensor] = []
    metadata: dict[str, Any] = dict(loaded.metadata)
    summaries: list[tuple[str, TreeSummary]] = []
    warnings = list(loaded.warnings)
    for pickle in loaded.pickles:
        if not pickle.tensors:
            continue
        prefix = _pickle_prefix(loaded.format, pickle.label)
        summary = walk(pickle.root)
        summaries.append((pickle.label, summary))
        if summary.repeats_not_walked:
            warnings.append(
                f"{pickle.label}: {summary.repeats_not_walked:,} references to containers already listed were not "
                "expanded again (the pickle shares containers more than its size justifies; memo bomb?)"
            )
        for found in summary.tensors:
            tensors.append(_tensor(source, found, prefix, storages, by_ref, by_key))
    main = summaries[0][1]
    fmt = loaded.format
    root = loaded.pickles[0].root
    if fmt == "pytorch" and isinstance(root, dict) and any(k in root for k in LIGHTNING_KEYS):
        fmt = "lightning"
    tensors = _label_unlabelled(tensors, main)
    optimizers = [_optimizer_meta(o) for _, s in summaries for o in s.optimizers]
    if optimizers:
        model = [t for t in tensors if t.attrs.get("structure") == "model"]
        first_section = model[0].section if model else ""
        tensors, notes = optimizer_names.name_optimizer_state(
            tensors, optimizers, [t for t in model if t.section == first_section]
        )
        for entry, note in zip(optimizers, notes, strict=True):
            entry["param_names_source"] = note.split(": ", 1)[1]
        metadata["optimizers"] = optimizers
    _tree_metadata(metadata, main, summaries)
    if fmt == "lightning":
        metadata["lightning"] = _lightning(root)
    if loaded.code_files:
        metadata["torchscript"] = {"code_files": loaded.code_files}
    findings = _global_findings(loaded) + loaded.findings
    if loaded.code_files:
        findings.append(
            Finding(
                "torchscript-code",
                Severity.MEDIUM,
                f"TorchScript archive with {len(loaded.code_files)} code files; torch.jit.load would compile and "
                "run them (not run by ckptscan)",
                loaded.code_files[0],
            )
        )
    metadata["pickle"] = _pickle_metadata(loaded)
    inventory = Inventory(
        format=fmt,
        path=str(source.path),
        root=str(source.root),
        files=(FileRef(source.name, source.size),),
        tensors=tuple(tensors),
        storages=tuple(storages.values()),
        regions=tuple(loaded.regions),
        metadata=metadata,
        warnings=tuple(warnings),
        findings=tuple(findings),
    )
    sharing = sharing_summary(inventory)
    metadata["storage_summary"] = {
        "storages": sharing.storages,
        "storage_bytes": sharing.storage_bytes,
        "dead_bytes": sharing.dead_bytes,
        "shared_storages": sharing.shared_storages,
        "tensor_entries": sharing.tensor_entries,
        "tensor_bytes": sharing.tensor_bytes,
        "unique_views": sharing.unique_views,
        "unique_view_elements": sharing.unique_view_elements,
    }
    return inventory


def _pickle_prefix(fmt: str, label: str) -> str:
    """TorchScript's extra pickles (constants.pkl...) name their tensors under the pickle's name."""
    if fmt != "torchscript":
        return ""
    stem = label.rsplit("/", 1)[-1].removesuffix(".pkl")
    return "" if stem == "data" else stem


def _storage_record(key: str, data: StorageData) -> Storage:
    ref = data.ref
    return Storage(
        key=key,
        file=data.file,
        offset=data.offset,
        nbytes=ref.nbytes,
        dtype=canonical_dtype(ref.dtype),
        encoding=data.encoding,
        attrs=dict(data.attrs),
    )


def _tensor(
    source: Source,
    found: FoundTensor,
    prefix: str,
    storages: dict[str, Storage],
    by_ref: dict[int, str],
    by_key: dict[str, str],
) -> Tensor:
    ref = found.ref
    path = (prefix, *found.path) if prefix else found.path
    name = ".".join(path)
    dtype = canonical_dtype(ref.dtype)
    elements = 1
    for dim in ref.shape:
        elements *= dim
    nbytes = _nbytes(dtype, elements, ref.dtype)
    attrs: dict[str, Any] = {"structure": prefix if prefix else found.structure or "other"}
    if ref.kind != "tensor":
        attrs["kind"] = ref.kind
    for key in ("qscheme", "scale", "zero_point", "subclass"):
        if key in ref.extra:
            attrs[key] = ref.extra[key]
    if found.optimizer_root is not None:
        _optimizer_attrs(attrs, found)
    section = path[0] if len(path) > 1 else ""
    storage_key, storage_offset, offset, encoding = None, 0, None, "meta"
    strides = None if _is_contiguous(ref.shape, ref.strides) else ref.strides
    if ref.storage is not None:
        # legacy views and tar tensors carry a fresh StorageRef naming their root storage by key
        storage_key = by_ref.get(id(ref.storage)) or by_key.get(ref.storage.key)
        if storage_key is None:
            raise MalformedFile(f"tensor {name} refers to storage {ref.storage.key}, which the file does not hold")
        storage = storages[storage_key]
        view_offset = ref.storage.view[1] * storage_element_size(ref.storage.dtype) if ref.storage.view else 0
        itemsize = storage_element_size(ref.dtype)
        storage_offset = ref.offset * itemsize + view_offset
        _check_bounds(name, ref, storage_offset, nbytes, itemsize, storage.nbytes)
        if ref.storage.location != "cpu":
            attrs["device"] = ref.storage.location
        encoding = storage.encoding
        if storage.offset is not None:
            offset = storage.offset + storage_offset
        if strides is not None and encoding.startswith("raw"):
            encoding += "-strided"
        if storage.offset is None and "zip_entry" in storage.attrs:
            attrs["zip_entry"] = storage.attrs["zip_entry"]
    return Tensor(
        name=name,
        shape=ref.shape,
        dtype=dtype,
        elements=elements,
        nbytes=nbytes,
        file=source.name,
        offset=offset,
        storage=storage_key,
        storage_offset=storage_offset,
        strides=strides,
        section=section,
        native_dtype=f"torch.{ref.dtype}",
        encoding=encoding,
        attrs=attrs,
    )


def _nbytes(dtype: Any, elements: int, torch_name: str) -> int:
    if dtype.known:
        try:
            return int(dtype.nbytes(elements))
        except ValueError:
            return int((elements * dtype.block_bits + 7) // 8)
    return elements * storage_element_size(torch_name)


def _is_contiguous(shape: tuple[int, ...], strides: tuple[int, ...]) -> bool:
    expected = 1
    for dim, stride in zip(reversed(shape), reversed(strides), strict=True):
        if dim != 1 and stride != expected:
            return False
        expected *= dim
    return True


def _check_bounds(name: str, ref: TensorRef, offset: int, nbytes: int, itemsize: int, storage_bytes: int) -> None:
    elements = 1
    for dim in ref.shape:
        elements *= dim
    if elements == 0:
        return
    if _is_contiguous(ref.shape, ref.strides):
        end = offset + nbytes
    else:
        span = 1 + sum((d - 1) * s for d, s in zip(ref.shape, ref.strides, strict=True))
        end = offset + span * itemsize
    if end > storage_bytes:
        raise MalformedFile(
            f"tensor {name} views bytes [{offset}, {end}) of a {storage_bytes:,}-byte storage", where=f"tensor {name}"
        )


def _optimizer_attrs(attrs: dict[str, Any], found: FoundTensor) -> None:
    assert found.optimizer_root is not None
    attrs["structure"] = "optimizer"
    attrs["optimizer"] = ".".join(found.optimizer_root)
    rest = found.path[len(found.optimizer_root) :]
    if len(rest) >= 3 and rest[0] == "state":
        if rest[1].lstrip("-").isdigit():
            attrs["param_index"] = int(rest[1])
        attrs["optimizer_state"] = ".".join(rest[2:])


def _label_unlabelled(tensors: list[Tensor], summary: TreeSummary) -> list[Tensor]:
    """Tensors outside any recognised structure: a model when nothing else was recognised."""
    if any(t.attrs["structure"] not in ("other", "constants") for t in tensors):
        return tensors
    return [
        replace(t, attrs={**t.attrs, "structure": "model"}) if t.attrs["structure"] == "other" else t for t in tensors
    ]


def _optimizer_meta(found: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "path": ".".join(found.path),
        "params": found.groups,
        "param_groups": found.group_settings,
        "state_entries": found.state_entries,
        "state_keys": found.state_keys,
    }
    if found.param_names is not None:
        entry["param_names"] = found.param_names
    return entry


def _tree_metadata(metadata: dict[str, Any], main: TreeSummary, summaries: list[tuple[str, TreeSummary]]) -> None:
    metadata["top_level"] = main.top_level
    metadata["values"] = main.scalars
    if main.scalars_omitted:
        metadata["values_omitted"] = main.scalars_omitted
    structures = {k: v for _, s in summaries for k, v in s.structures.items()}
    if structures:
        metadata["structures"] = structures
    arrays = [a for _, s in summaries for a in s.numpy_arrays]
    if arrays:
        metadata["numpy_arrays"] = arrays
    objects: dict[str, Any] = {}
    for _, s in summaries:
        for callee, entry in s.objects.items():
            objects.setdefault(callee, {"count": 0, "paths": []})
            objects[callee]["count"] += entry["count"]
            objects[callee]["paths"] = (objects[callee]["paths"] + entry["paths"])[:5]
    if objects:
        metadata["objects"] = objects


def _lightning(root: dict[Any, Any]) -> dict[str, Any]:
    info: dict[str, Any] = {}
    for key in ("pytorch-lightning_version", "epoch", "global_step", "hparams_name"):
        value = root.get(key)
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            info[key.replace("pytorch-lightning_", "")] = value
    for key in ("optimizer_states", "lr_schedulers"):
        value = root.get(key)
        if isinstance(value, list):
            info[key] = len(value)
    callbacks = root.get("callbacks")
    if isinstance(callbacks, dict):
        info["callbacks"] = [str(k) for k in callbacks]
    loops = root.get("loops")
    if isinstance(loops, dict):
        info["loops"] = [str(k) for k in loops]
    return info


def _global_findings(loaded: Loaded) -> list[Finding]:
    return findings_for(use for pickle in loaded.pickles for use in pickle.unpickler.all_globals())


def _pickle_metadata(loaded: Loaded) -> dict[str, Any]:
    per_pickle = {
        p.label: {
            "protocol": p.unpickler.protocol,
            "bytes": p.nbytes,
            "opcodes": p.unpickler.opcodes,
            "memo_entries": len(p.unpickler.memo),
            "globals": sorted(p.unpickler.globals),
        }
        for p in loaded.pickles
    }
    every = sorted({g for p in loaded.pickles for g in p.unpickler.globals})
    return {"globals": every, "pickles": per_pickle}
