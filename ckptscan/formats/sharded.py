"""Sharded models: an index JSON (``model.safetensors.index.json``, ``pytorch_model.bin.index.json``)
whose ``weight_map`` sends each tensor name to a shard file beside it. Read as ONE model.

Each shard is read by whichever reader its content calls for. What the index and the shards say is
cross-checked: a shard that is missing, an LFS pointer or unreadable, a tensor listed in the index
but absent from its shard, a tensor in a shard that the index does not list, and a tensor found in
a different shard than the index says are all findings; the inventory is marked incomplete when
shard content is missing.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from ckptscan import registry
from ckptscan.errors import CkptscanError, LimitExceeded, MalformedFile
from ckptscan.formats import lfs
from ckptscan.inventory import FileRef, Finding, Inventory, Region, RegionKind, Severity, Tensor, combine
from ckptscan.source import Head, Source

MAX_INDEX_BYTES = 64 << 20
SUFFIX = ".index.json"


def sniff(head: Head) -> bool:
    text = head.data.lstrip()
    if not text.startswith(b"{"):
        return False
    return b'"weight_map"' in head.data or head.name.endswith(SUFFIX)


def read(source: Source) -> Inventory:
    if source.size > MAX_INDEX_BYTES:
        raise LimitExceeded(f"index is {source.size:,} bytes; the limit is {MAX_INDEX_BYTES:,}")
    raw = source.read_at(0, source.size, "index")
    try:
        index = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise MalformedFile(f"index is not valid JSON: {e}") from e
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items()
    ):
        raise MalformedFile("index has no weight_map of tensor name -> shard file", where="weight_map")

    shard_names = list(dict.fromkeys(weight_map.values()))
    files = [FileRef(source.name, source.size, role="index")]
    findings: list[Finding] = []
    parts: list[Inventory] = []
    shard_metadata: dict[str, Any] = {}
    lfs_pointers: dict[str, Any] = {}
    complete = True

    per_shard = Counter(weight_map.values())  # one pass: counting per missing shard would be O(N^2)
    for shard in shard_names:
        path = source.resolve(shard)  # raises UnsafePath for names outside the folder
        if not path.is_file():
            files.append(FileRef(shard, 0, role="missing"))
            listed = per_shard[shard]
            findings.append(
                Finding("missing-shard", Severity.HIGH, f"shard {shard} is missing ({listed} tensors)", shard)
            )
            complete = False
            continue
        with source.open_related(shard) as shard_source:
            pointer = lfs.parse_pointer(shard_source.read_up_to(0, lfs.MAX_POINTER_BYTES + 1))
            if pointer is not None:
                files.append(FileRef(shard, shard_source.size, role="lfs-pointer"))
                findings.append(lfs.pointer_finding(pointer, shard))
                lfs_pointers[shard] = {"oid": pointer.oid, "size": pointer.size}
                complete = False
                continue
            try:
                part = registry.read_source(shard_source)
            except CkptscanError as e:
                files.append(FileRef(shard, shard_source.size, role="unreadable"))
                findings.append(Finding("unreadable-shard", Severity.HIGH, str(e), shard))
                complete = False
                continue
        parts.append(replace(part, warnings=tuple(f"{shard}: {w}" for w in part.warnings)))
        if part.metadata:
            shard_metadata[shard] = dict(part.metadata)

    tensors = [t for p in parts for t in p.tensors]
    read_shards = {f.path for p in parts for f in p.files}
    findings.extend(_cross_check(weight_map, tensors, read_shards))
    metadata: dict[str, Any] = {
        "index": index.get("metadata", {}),
        "shards": len(shard_names),
        "tensors_in_index": len(weight_map),
    }
    if shard_metadata:
        metadata["shard_metadata"] = shard_metadata
    if lfs_pointers:
        metadata["lfs_pointers"] = lfs_pointers
    warnings = _check_total_size(index.get("metadata"), tensors, complete)

    return combine(
        parts,
        format=f"{_shard_format([p.format for p in parts], source.name)}-sharded",
        path=str(source.path),
        root=str(source.root),
        files=tuple(files),
        regions=(Region(source.name, RegionKind.METADATA, 0, source.size, "shard index"),),
        metadata=metadata,
        warnings=warnings,
        findings=tuple(findings),
        complete=complete,
    )


def _cross_check(weight_map: Mapping[str, str], tensors: list[Tensor], read_shards: set[str]) -> list[Finding]:
    findings = []
    where_found: dict[str, str] = {}
    for t in tensors:
        if t.name in where_found:
            findings.append(
                Finding(
                    "duplicate-tensor",
                    Severity.MEDIUM,
                    f"tensor {t.name} is stored in both {where_found[t.name]} and {t.file}",
                    t.name,
                )
            )
        where_found.setdefault(t.name, t.file)
    for name, shard in weight_map.items():
        if shard not in read_shards:
            continue  # its shard is missing: reported once, as a missing shard
        found = where_found.get(name)
        if found is None:
            findings.append(
                Finding("missing-tensor", Severity.HIGH, f"index lists {name} in {shard}, which lacks it", name)
            )
        elif found != shard:
            findings.append(
                Finding("misplaced-tensor", Severity.LOW, f"index lists {name} in {shard}, found in {found}", name)
            )
    for name, found in where_found.items():
        if name not in weight_map:
            findings.append(
                Finding("unlisted-tensor", Severity.MEDIUM, f"{found} holds {name}, which the index omits", name)
            )
    return findings


def _check_total_size(index_meta: Any, tensors: list[Tensor], complete: bool) -> tuple[str, ...]:
    declared = index_meta.get("total_size") if isinstance(index_meta, dict) else None
    if not complete or not isinstance(declared, int) or isinstance(declared, bool):
        return ()
    actual = sum(t.nbytes for t in tensors)
    if declared != actual:
        return (f"index metadata total_size is {declared:,} but the shards hold {actual:,} tensor bytes",)
    return ()


def _shard_format(read_formats: list[str], index_name: str) -> str:
    if read_formats:
        return read_formats[0]
    lower = index_name.lower()
    if ".safetensors" in lower:
        return "safetensors"
    if ".bin" in lower or ".pt" in lower:
        return "pytorch"
    return "unknown"
