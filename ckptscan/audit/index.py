"""``ckptscan audit --index FILE``: an SQLite table of every file audited, so that a re-run reads
only new or changed files and reports the same totals.

One row per file (docs/audit.md, "The index", documents the table for dashboards)::

    files(path PRIMARY KEY, size, mtime_ns, etag, content_hash, status, model, record, members,
          digest, audited_at)

A model's own file (``status = 'model'``) holds its JSON record; the other files it read (shards,
external data) are ``'member'`` rows pointing at it; files that are not checkpoints are
``'skipped'``. A row is reused when the file's size and mtime (local) or ETag (remote) are those
recorded and, for a model, every member's are too. Records depend on the audit's options
(quantization target, --tensors, --stats, --all-targets) and on the ckptscan version: when they
differ from those the index was written with, every row is stale and the files are read again.
Transient failures (time limits, crashed workers, network errors) are not remembered.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

from ckptscan._version import __version__
from ckptscan.audit.discover import FoundFile, Unit
from ckptscan.audit.model import Digest, Facts
from ckptscan.audit.worker import ModelOutcome, Outcome, Skipped
from ckptscan.errors import ReadFailure
from ckptscan.inventory import Finding, Severity

SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    path TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    mtime_ns INTEGER,
    etag TEXT,
    content_hash TEXT,
    status TEXT NOT NULL,
    model TEXT,
    record TEXT,
    members TEXT,
    digest TEXT,
    audited_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS files_model ON files(model);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

# error codes that say something about this run, not about the file: never remembered
TRANSIENT = frozenset({"timeout", "worker-crashed", "internal-error", "remote-error", "io-error", "interrupted"})


class Index:
    def __init__(self, path: str, fingerprint: Mapping[str, Any]) -> None:
        self.path = path
        try:
            self.db = sqlite3.connect(path)
            self.db.executescript(SCHEMA)
            wanted = json.dumps({**fingerprint, "ckptscan": __version__}, sort_keys=True)
            row = self.db.execute("SELECT value FROM meta WHERE key = 'fingerprint'").fetchone()
            if row is None or row[0] != wanted:
                self.db.execute("DELETE FROM files")  # written with other options: every record is stale
                self.db.execute("INSERT OR REPLACE INTO meta VALUES ('fingerprint', ?)", (wanted,))
                self.db.commit()
        except sqlite3.Error as e:
            raise ReadFailure(f"cannot use the index: {e}", path=path) from None
        self.reused = 0
        self.stored = 0
        self._cache: dict[str, tuple[Any, ...]] | None = None

    # -- reading -------------------------------------------------------------------------------

    def _rows(self) -> dict[str, tuple[Any, ...]]:
        """Every row, read once (one query is far cheaper than one per file on a re-run)."""
        if self._cache is None:
            query = "SELECT path, size, mtime_ns, etag, status, record, members, digest FROM files"
            self._cache = {row[0]: row[1:] for row in self.db.execute(query)}
        return self._cache

    def lookup(self, unit: Unit, found: Mapping[str, FoundFile]) -> Outcome | None:
        """The outcome remembered for ``unit``, if it and every file it read are unchanged."""
        rows = self._rows()
        row = rows.get(unit.key)
        if row is None:
            return None
        size, mtime_ns, etag, status, record, members, digest = row
        if unit.kind == "file" and not _unchanged(found.get(unit.key), size, mtime_ns, etag):
            return None
        if status == "skipped":
            self.reused += 1
            return Skipped(unit.id, str(json.loads(record)["reason"]))
        if status != "model":
            return None
        member_keys: list[str] = json.loads(members)
        for key in member_keys:
            if key == unit.key:
                continue
            member = rows.get(key)
            if member is None or not _unchanged(found.get(key), *member[:3]):
                return None
        saved = json.loads(digest)  # the totals' digest and the record's few fields they read (small)
        self.reused += 1
        return ModelOutcome(unit.id, record, _facts(saved["facts"]), tuple(member_keys), _digest(saved["digest"]))

    # -- writing -------------------------------------------------------------------------------

    def store(self, unit: Unit, outcome: Outcome, found: Mapping[str, FoundFile]) -> None:
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        own = found.get(unit.key)
        size = own.size if own is not None else unit.size
        mtime = own.mtime_ns if own is not None else None
        etag = own.etag if own is not None else None
        if isinstance(outcome, Skipped) and unit.kind == "folder":
            return  # a grouping decision, re-made from the files each run
        if isinstance(outcome, Skipped):
            reason = json.dumps({"reason": outcome.reason})
            self._put(unit.key, size, mtime, etag, None, "skipped", None, reason, None, None, now)
            return
        if outcome.facts.error_code in TRANSIENT:
            return
        content = _content_hash(outcome.digest)
        digest = json.dumps({"digest": asdict(outcome.digest), "facts": _facts_json(outcome.facts)})
        members = json.dumps(list(outcome.members))
        self._put(unit.key, size, mtime, etag, content, "model", unit.key, outcome.text, members, digest, now)
        for key in outcome.members:
            member = found.get(key)
            if key != unit.key and member is not None:
                self._put(
                    key, member.size, member.mtime_ns, member.etag, None, "member", unit.key, None, None, None, now
                )

    def _put(self, *row: Any) -> None:
        self.db.execute("INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", row)
        self.stored += 1

    def close(self) -> None:
        try:
            self.db.commit()
        finally:
            self.db.close()


def _unchanged(now: FoundFile | None, size: int, mtime_ns: int | None, etag: str | None) -> bool:
    if now is None or now.size != size:
        return False
    if now.etag is not None or etag is not None:
        return now.etag == etag
    return now.mtime_ns == mtime_ns


def _content_hash(digest: Digest) -> str | None:
    """With --stats every stored tensor has a content hash: the model's is a hash of those."""
    hashes = [key[4] for key in digest.dedupe_keys]
    if not hashes or any(h is None for h in hashes):
        return None
    return hashlib.sha256("\n".join(sorted(str(h) for h in hashes)).encode()).hexdigest()


def _facts_json(facts: Facts) -> dict[str, Any]:
    data = asdict(facts)
    data["by_dtype"] = {k: list(v) for k, v in facts.by_dtype.items()}
    data["findings"] = [[f.code, f.severity.value, f.message, f.where, f.subject] for f in facts.findings]
    return data


def _facts(data: dict[str, Any]) -> Facts:
    return Facts(
        path=data["path"],
        folder=data["folder"],
        format=data["format"],
        files=data["files"],
        file_bytes=data["file_bytes"],
        tensors=data["tensors"],
        by_dtype={k: (int(v[0]), int(v[1]), int(v[2])) for k, v in data["by_dtype"].items()},
        findings=tuple(Finding(c, Severity(s), m, w, subj) for c, s, m, w, subj in data["findings"]),
        error_code=data["error_code"],
        error_message=data["error_message"],
    )


def _digest(data: dict[str, Any]) -> Digest:
    return Digest(
        roles_source=data["roles_source"],
        by_role={k: (int(v[0]), int(v[1]), int(v[2])) for k, v in data["by_role"].items()},
        parameters=data["parameters"],
        strip_bytes=data["strip_bytes"],
        strip_source=data["strip_source"],
        quantize_saving=data["quantize_saving"],
        quantize_source=data["quantize_source"],
        dedupe_keys=tuple((k[0], tuple(k[1]), k[2], k[3], k[4]) for k in data["dedupe_keys"]),
    )
