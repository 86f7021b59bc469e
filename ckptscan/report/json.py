"""The JSON document: a contract with dashboards.

Field names are fixed once published: add fields freely, bump ``SCHEMA_VERSION`` (minor for
additions, major for anything removed or changed), and never rename silently. The schema ships in
the package (``ckptscan/schema/ckptscan.schema.json``) and ``ckptscan schema`` prints it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from importlib import resources
from typing import Any

from ckptscan._version import __version__
from ckptscan.analyze import modules, summary
from ckptscan.inventory import Finding, Inventory, Tensor
from ckptscan.scan import ScanResult

SCHEMA_VERSION = "1.3"
SCHEMA_RESOURCE = "ckptscan.schema.json"


def document(results: Iterable[ScanResult]) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "tool": {"name": "ckptscan", "version": __version__},
        "results": [result_dict(r) for r in results],
    }


def result_dict(result: ScanResult, *, include_tensors: bool = True) -> dict[str, Any]:
    inventory = result.inventory
    error = {"code": result.error.code, "message": result.error.message} if result.error else None
    if inventory is None:
        return {
            "path": result.path,
            "format": result.format,
            "files": [],
            "file_bytes": None,
            "complete": False,
            "totals": None,
            "by_dtype": {},
            "modules": [],
            "tensors": [],
            "metadata": {},
            "warnings": [],
            "findings": [],
            "error": error,
        }
    return {
        "path": result.path,
        "format": inventory.format,
        "files": [{"path": f.path, "size": f.size, "role": f.role} for f in inventory.files],
        "file_bytes": inventory.file_bytes,
        "complete": inventory.complete,
        "totals": totals_dict(inventory),
        "by_dtype": {
            name: {"tensors": c.tensors, "elements": c.elements, "bytes": c.bytes}
            for name, c in summary.by_dtype(inventory.tensors).items()
        },
        "modules": [
            {"name": g.name, "blocks": g.blocks, "tensors": g.tensors, "elements": g.elements, "bytes": g.bytes}
            for g in modules.rollup(inventory.tensors)
        ],
        "tensors": [tensor_dict(t) for t in inventory.tensors] if include_tensors else [],
        "metadata": jsonable(dict(inventory.metadata)),
        "warnings": list(inventory.warnings),
        "findings": [finding_dict(f) for f in inventory.findings],
        "error": error,
    }


def finding_dict(f: Finding) -> dict[str, str]:
    record = {"code": f.code, "severity": f.severity.value, "message": f.message, "where": f.where}
    if f.subject:
        record["subject"] = f.subject
    return record


def totals_dict(inventory: Inventory) -> dict[str, int]:
    t = summary.totals(inventory)
    return {
        "tensors": t.every.tensors,
        "elements": t.every.elements,
        "bytes": t.every.bytes,
        "unique_tensors": t.unique.tensors,
        "unique_elements": t.unique.elements,
        "unique_bytes": t.unique.bytes,
        "stored_bytes": t.stored_bytes,
    }


def tensor_dict(t: Tensor) -> dict[str, Any]:
    record: dict[str, Any] = {
        "name": t.name,
        "shape": list(t.shape),
        "dtype": t.dtype.name,
        "elements": t.elements,
        "bytes": t.nbytes,
        "offset": t.offset,
        "file": t.file,
    }
    if t.native_dtype and t.native_dtype != t.dtype.name:
        record["native_dtype"] = t.native_dtype
    if t.section:
        record["section"] = t.section
    if t.storage is not None:
        record["storage"] = t.storage
        record["storage_offset"] = t.storage_offset
    if t.strides is not None:
        record["strides"] = list(t.strides)
    if t.encoding != "raw":
        record["encoding"] = t.encoding
    if t.attrs:
        record["attrs"] = jsonable(dict(t.attrs))
    return record


def jsonable(value: Any) -> Any:
    """Plain JSON values only: non-finite floats and bytes become descriptive strings."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in value]
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"<{len(value)} bytes>"
    if hasattr(value, "value") and isinstance(value.value, str):  # enums
        return value.value
    return repr(value)


def schema() -> dict[str, Any]:
    import json

    text = resources.files("ckptscan.schema").joinpath(SCHEMA_RESOURCE).read_text(encoding="utf-8")
    loaded: dict[str, Any] = json.loads(text)
    return loaded
