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
from ckptscan.safe_text import clean, json_text

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


def document_text(record_texts: Iterable[str], summary: Mapping[str, Any]) -> str:
    """``audit --json``: the scan document's shape, plus the ``audit`` section. The records come
    serialized already (see ``ModelOutcome.text``), so the document is joined, not re-encoded."""
    head = json_text({"schema_version": SCHEMA_VERSION, "tool": tool()})[:-1]
    audit = json_text(dict(summary), separators=(",", ":"))
    return f'{head},"results":[{",".join(record_texts)}],"audit":{audit}}}'


def model_line(record_text: str) -> str:
    """One ``--jsonl`` line for a model, emitted as soon as the model is read: its record, with
    ``record`` and ``schema_version`` first."""
    if record_text == "{}":
        return json_text({"record": "model", "schema_version": SCHEMA_VERSION})
    return f'{{"record":"model","schema_version":"{SCHEMA_VERSION}",{record_text[1:]}'


def summary_line(summary: Mapping[str, Any]) -> str:
    """The last ``--jsonl`` line: the totals."""
    record = {"record": "summary", "schema_version": SCHEMA_VERSION, "tool": tool(), "audit": dict(summary)}
    return json_text(record, separators=(",", ":"))


def csv_text(rows: Iterable[Mapping[str, Any]]) -> str:
    """One row per model (``Aggregate.model_rows``), with a header line."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:  # cells from files (paths, formats) cleaned: CSV is read on terminals and in sheets
        writer.writerow({k: clean(v) if isinstance(v, str) else v for k, v in row.items()})
    return out.getvalue()
