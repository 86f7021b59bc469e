"""Audit outputs as data: the ``--json`` document, ``--jsonl`` records and ``--csv`` text.

Pure functions over the per-model records and the ``audit`` summary section (see
``ckptscan.audit``); printing them is the CLI's job. Each per-model record is a single-scan
result (``ckptscan.report.json.result_dict``) plus ``folder``, ``recoverable`` and, in a HF model
folder, ``companions``; all of it is described in the published schema.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping
from typing import Any

from ckptscan._version import __version__
from ckptscan.report.json import SCHEMA_VERSION

CSV_COLUMNS = (
    "path",
    "folder",
    "format",
    "status",
    "error_code",
    "files",
    "file_bytes",
    "tensors",
    "parameters",
    "strip_bytes",
    "duplicate_bytes",
    "quantize_target",
    "quantize_saving_bytes",
)


def tool() -> dict[str, str]:
    return {"name": "ckptscan", "version": __version__}


def document(records: Iterable[Mapping[str, Any]], summary: Mapping[str, Any]) -> dict[str, Any]:
    """``audit --json``: the scan document's shape, plus the ``audit`` section."""
    return {
        "schema_version": SCHEMA_VERSION,
        "tool": tool(),
        "results": [dict(r) for r in records],
        "audit": dict(summary),
    }


def model_record(record: Mapping[str, Any]) -> dict[str, Any]:
    """One ``--jsonl`` line for a model, emitted as soon as the model is read."""
    return {"record": "model", "schema_version": SCHEMA_VERSION, **record}


def summary_record(summary: Mapping[str, Any]) -> dict[str, Any]:
    """The last ``--jsonl`` line: the totals."""
    return {"record": "summary", "schema_version": SCHEMA_VERSION, "tool": tool(), "audit": dict(summary)}


def csv_text(rows: Iterable[Mapping[str, Any]]) -> str:
    """One row per model (``Aggregate.model_rows``), with a header line."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(row)
    return out.getvalue()
