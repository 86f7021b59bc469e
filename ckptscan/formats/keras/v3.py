"""Keras 3 ``.keras`` (format ``keras-v3``): a zip of ``config.json``, ``metadata.json`` and ``model.weights.h5``.

The zip is read in place (:mod:`ckptscan.formats._zip`). ``config.json`` (the model, its layers,
``compile_config`` with the optimizer) and ``metadata.json`` (``keras_version``, ``date_saved``)
are parsed with ``json.loads`` under a size cap, and the config is checked for serialized code
(:func:`ckptscan.formats.keras.config_findings`). ``model.weights.h5`` is read as HDF5 without
extracting it when it is stored (Keras writes it stored): h5py gets a read-only window over the
member's bytes, and each tensor's ``offset`` is absolute in the ``.keras`` file (member data offset
+ offset inside the HDF5 image). A deflated member is inflated into a temporary file (at most
``MAX_INFLATED_BYTES``, refused beyond) and its tensors get ``offset=None``,
``encoding="zip-deflated"`` plus ``attrs`` ``zip_entry``, ``image_offset`` (offset inside the
inflated HDF5 image) and ``hdf5_path``.

Variables are named from ``config.json`` as for ``.weights.h5`` (:mod:`.weights`).
"""

from __future__ import annotations

import tempfile
from dataclasses import replace
from typing import Any

from ckptscan.errors import MalformedFile, UnsupportedFeature
from ckptscan.formats import _bounded, _zip, hdf5
from ckptscan.formats.keras import config_findings, model_summary, optimizer_summary, parse_json
from ckptscan.formats.keras.weights import Keras3Mapping, vars_names
from ckptscan.inventory import FileRef, Inventory, Region, RegionKind, Tensor
from ckptscan.source import Head, Source

FORMAT = "keras-v3"
CONFIG, METADATA, WEIGHTS = "config.json", "metadata.json", "model.weights.h5"
MAX_CONFIG_BYTES = 16 << 20
MAX_METADATA_BYTES = 1 << 20
MAX_INFLATED_BYTES = 8 << 30
# A deflated weights file is inflated to disk to read its HDF5 metadata: at most this many times
# its compressed size (plus the slack), so that the work stays linear in the input. Weights
# compress about 1.1:1; only a bomb (or all-zero weights) inflates 64-fold.
MAX_INFLATE_RATIO = 64
MAX_INFLATE_SLACK = 64 << 20


def sniff(head: Head) -> bool:
    names = set(head.zip_names())
    return CONFIG in names and (WEIGHTS in names or METADATA in names)


def read(source: Source) -> Inventory:
    """libhdf5 runs in a bounded worker (time, memory, files it may open): see ``formats/_bounded.py``."""
    return _bounded.call(_read, source, what="Keras HDF5")


def _read(source: Source) -> Inventory:
    directory = _zip.read_directory(source)
    config_entry, weights = directory.get(CONFIG), directory.get(WEIGHTS)
    if config_entry is None:
        raise MalformedFile(f"a .keras archive needs {CONFIG}", where="zip directory")
    if weights is None:
        other = [e.name for e in directory.entries if e.name.startswith("model.weights")]
        if other:
            raise UnsupportedFeature(f"weights stored as {other[0]!r} (sharded or non-HDF5) are not read yet")
        raise MalformedFile(f"a .keras archive needs {WEIGHTS}", where="zip directory")
    config = parse_json(_zip.read_entry(source, config_entry, MAX_CONFIG_BYTES), CONFIG)
    meta_entry = directory.get(METADATA)
    saved = parse_json(_zip.read_entry(source, meta_entry, MAX_METADATA_BYTES), METADATA) if meta_entry else {}
    optimizer = _compile_optimizer(config)

    tensors, walk, mapping = _read_weights(source, weights, config, optimizer)
    regions = _zip.framing_regions(source, directory)
    regions += _entry_regions(source, directory, walk, weights)
    keras_info: dict[str, Any] = {"model": model_summary(config), **mapping.metadata()}
    if isinstance(saved, dict):
        keras_info.update({k: saved[k] for k in ("keras_version", "date_saved") if isinstance(saved.get(k), str)})
    summary = optimizer_summary(optimizer)
    if summary is not None:
        keras_info["optimizer_config"] = summary
    return Inventory(
        format=FORMAT,
        path=str(source.path),
        root=str(source.root),
        files=(FileRef(source.name, source.size),),
        tensors=tuple(tensors),
        regions=tuple(sorted(regions, key=lambda r: r.offset)),
        metadata={
            "keras": keras_info,
            "hdf5": hdf5.summary(walk),
            "zip_members": [e.name for e in directory.entries][:1000],
        },
        findings=tuple(
            dict.fromkeys([*_zip.name_findings(directory), *walk.findings, *config_findings(config, CONFIG)])
        ),
        warnings=tuple(walk.warnings + mapping.warnings),
    )


def _compile_optimizer(config: Any) -> Any:
    compile_config = config.get("compile_config") if isinstance(config, dict) else None
    return compile_config.get("optimizer") if isinstance(compile_config, dict) else None


def _read_weights(
    source: Source, entry: _zip.ZipEntry, config: Any, optimizer: Any
) -> tuple[list[Tensor], hdf5.Walk, Keras3Mapping]:
    extra = {"zip_entry": entry.name}
    if entry.stored:
        with hdf5.open_file(source, window=(entry.data_offset, entry.uncompressed_size)) as h5:
            walk = hdf5.walk_file(h5)
            names = vars_names(walk)
        hdf5.check_extents(walk, entry.uncompressed_size)
        mapping = Keras3Mapping(walk, names, model_config=config, optimizer_config=optimizer)
        return mapping.tensors(source.name, base=entry.data_offset, extra=extra), walk, mapping
    with tempfile.TemporaryFile(prefix="ckptscan-") as inflated:
        cap = min(MAX_INFLATED_BYTES, MAX_INFLATE_RATIO * entry.compressed_size + MAX_INFLATE_SLACK)
        size = _zip.extract_entry(source, entry, inflated, cap)
        inflated.seek(0)
        with hdf5.open_fileobj(inflated) as h5:
            walk = hdf5.walk_file(h5)
            names = vars_names(walk)
    hdf5.check_extents(walk, size)
    mapping = Keras3Mapping(walk, names, model_config=config, optimizer_config=optimizer)
    tensors = mapping.tensors(source.name, addressable=False, extra={**extra, "compression": "deflate"})
    return [replace(t, encoding="zip-deflated") if t.encoding.startswith("raw") else t for t in tensors], walk, mapping


def _entry_regions(
    source: Source, directory: _zip.ZipDirectory, walk: hdf5.Walk, weights: _zip.ZipEntry
) -> list[Region]:
    regions: list[Region] = []
    for entry in directory.entries:
        if entry is weights and entry.stored:
            image = hdf5.structure_regions(walk, source.name, entry.uncompressed_size, base=entry.data_offset)
            regions.extend(image)
            continue
        kind, label = {
            CONFIG: (RegionKind.GRAPH, "Keras config.json"),
            METADATA: (RegionKind.METADATA, "Keras metadata.json"),
        }.get(entry.name, (RegionKind.OTHER, entry.name))
        if entry is weights:
            label = f"{WEIGHTS} (deflated; tensors are not addressable in place)"
        if entry.compressed_size:
            regions.append(Region(source.name, kind, entry.data_offset, entry.compressed_size, label))
    return regions
