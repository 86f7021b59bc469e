"""Turning what a user names (a file, a folder, an index) into inventories or error records.

``read_inventory`` raises :class:`~ckptscan.errors.CkptscanError`; ``scan`` never raises for a bad
input: it returns a :class:`ScanResult` with either an inventory or an error, so that one bad file
in a batch becomes a record and the rest carry on.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ckptscan import registry
from ckptscan.errors import CkptscanError, MissingFile, ReadFailure, UnsafePath
from ckptscan.inventory import Finding, Inventory, Severity
from ckptscan.safe_text import capped, clean, depth_exceeds
from ckptscan.source import Source


def is_remote(path: object) -> bool:
    """A URL (hf://, https://, s3://...) rather than a local path; see ckptscan.remote."""
    if not isinstance(path, str) or "://" not in path:
        return False  # not a URL: ckptscan.remote (threading, bisect, its dataclasses) stays unimported
    from ckptscan.remote import is_remote as remote

    return remote(path)


# Small JSON files beside a checkpoint that tell the analysis what the tensors cannot
# (tied embeddings, attention layout, training progress). Read only when present and small.
SIDECAR_FILES = ("config.json", "adapter_config.json", "quantize_config.json", "trainer_state.json")
SIDECAR_MAX_BYTES = 4 << 20

# A folder that holds one of these is one sharded model, read through its index.
INDEX_SUFFIX = ".index.json"


@dataclass(frozen=True, slots=True)
class ScanError:
    """Why an input could not be read, or is incomplete: a stable code and a one-line message."""

    code: str
    message: str
    detail: str = ""  # a traceback, only for internal errors (shown with --debug)
    # what was found before the error (dangerous globals of a truncated pickle...): a file can be
    # both unreadable and unsafe, and --fail-on / the reports see both
    findings: tuple[Finding, ...] = ()


@dataclass(frozen=True, slots=True)
class ScanResult:
    """What scanning one input gave: its inventory, an error, or both (an incomplete model)."""

    path: str
    format: str | None
    inventory: Inventory | None
    error: ScanError | None
    remote: Mapping[str, Any] | None = None  # a remote model: bytes transferred, requests, model size

    @property
    def ok(self) -> bool:
        return self.error is None


def model_inputs(path: str | os.PathLike[str]) -> list[Path]:
    """The models a path stands for: itself if a file; for a folder, its index or its checkpoints,
    or the folder itself when it is one model (a diffusers pipeline, one model stored twice)."""
    if is_remote(path):
        from ckptscan.remote.scan import model_inputs as remote_inputs

        return remote_inputs(str(path))  # type: ignore[return-value]  # URLs, not paths
    p = Path(path)
    if not p.is_dir() or registry.detect_folder(p) is not None:
        return [p]
    from ckptscan import folders

    if folders.claims(p):
        return [p]
    return checkpoint_files(p)


def checkpoint_files(p: Path) -> list[Path]:
    """A folder's index files, or else its checkpoint files (what each one is, not what they form)."""
    entries = sorted(child for child in p.iterdir() if child.is_file() and not child.name.startswith("."))
    indexes = [child for child in entries if child.name.endswith(INDEX_SUFFIX)]
    if indexes:
        return indexes
    found = []
    for child in entries:
        if not registry.could_be_model(child.name) and not registry.hides_a_pickle(child):
            continue
        try:
            with Source(child) as source:
                registry.detect(source)
        except CkptscanError:
            continue
        found.append(child)
    return found


def read_inventory(path: str | os.PathLike[str]) -> Inventory:
    """The inventory of one model file (or index). Raises CkptscanError for a bad input."""
    p = Path(path)
    if p.is_dir():
        folder_format = registry.detect_folder(p)
        if folder_format is None:
            from ckptscan import folders

            try:
                combined = folders.read_folder(p)
            except CkptscanError as e:
                e.located(path=str(p), format=folders.PIPELINE_FORMAT)
                raise
            if combined is not None:
                return combined
            raise ReadFailure("is a folder of several models; name one, or let the CLI expand it", path=str(p))
        try:
            return folder_format.load().read_folder(p)
        except CkptscanError as e:
            e.located(path=str(p), format=folder_format.name)
            raise
    if not p.exists():
        raise MissingFile("no such file", path=str(p))
    with Source(p) as source:
        inventory = registry.read_source(source)
        sidecars = _read_sidecars(source)
    if sidecars:
        inventory = replace(inventory, sidecars={**sidecars, **inventory.sidecars})
    if depth_exceeds(inventory.metadata):  # e.g. an index's free-form metadata: renderers recurse
        inventory = replace(inventory, metadata=capped(inventory.metadata))
    return inventory


def scan(path: str | os.PathLike[str]) -> ScanResult:
    """Read one model and never raise for its content: errors become part of the result."""
    shown = str(path)
    remote = None
    if is_remote(path):
        from ckptscan.remote import shown as shown_url

        shown = shown_url(shown)  # never print credentials or signed query strings
    try:
        if is_remote(path):
            from ckptscan.remote.scan import read_inventory as read_remote

            inventory, remote = read_remote(str(path))
        else:
            inventory = read_inventory(path)
    except CkptscanError as e:  # messages quote names from the file: one line, escaped (safe_text)
        message = clean(str(e.located(path=shown)))
        return ScanResult(shown, e.format, None, ScanError(e.code, message, findings=error_findings(e)))
    except (RecursionError, MemoryError) as e:
        message = clean(f"{shown}: too deeply nested or too large to read ({type(e).__name__})")
        return ScanResult(shown, None, None, ScanError("limit-exceeded", message))
    except Exception as e:  # a bug of ours must not end a batch; the traceback is kept for --debug
        import traceback

        message = clean(f"{shown}: internal error while reading ({type(e).__name__}: {e}); please report it")
        return ScanResult(shown, None, None, ScanError("internal-error", message, traceback.format_exc()))
    return ScanResult(shown, inventory.format, inventory, incomplete_error(inventory, shown), remote)


def error_findings(error: CkptscanError) -> tuple[Finding, ...]:
    """The findings a reader attached to its error (``pickle_globals``, container ``findings``)."""
    found: list[Finding] = list(getattr(error, "findings", []))
    if isinstance(error, UnsafePath):
        # a file that names a path outside its folder (ONNX external data, a shard) is an attack on
        # whoever loads it, not only a read failure
        found.append(Finding("unsafe-path", Severity.HIGH, error.what, error.where or "", subject=error.what[:80]))
    uses = getattr(error, "pickle_globals", [])
    if uses:
        from ckptscan.formats.torch.safety import findings_for

        found = findings_for(uses) + found
    return tuple(found)


def incomplete_error(inventory: Inventory, shown: str) -> ScanError | None:
    """An inventory that could not be read whole (missing shards, LFS pointers) is an error too."""
    if inventory.complete:
        return None
    reasons = [f for f in inventory.findings if f.code in _INCOMPLETE_CODES]
    code = "lfs-pointer" if inventory.format == "git-lfs-pointer" else "incomplete-model"
    if len(reasons) == 1:
        why = reasons[0].message
    else:
        by_code: dict[str, list[str]] = {}
        for f in reasons:
            by_code.setdefault(f.code, []).append(f.where)
        why = "; ".join(f"{len(where)} {_INCOMPLETE_CODES[c]}: {_listed(where)}" for c, where in by_code.items())
        pointers = inventory.metadata.get("lfs_pointers")
        if isinstance(pointers, dict):
            declared = sum(p.get("size", 0) for p in pointers.values() if isinstance(p, dict))
            why += f" ({declared:,} bytes never downloaded; run `git lfs pull`)"
    return ScanError(code, clean(f"{shown}: {inventory.format}: " + (why or "model is incomplete")))


MAX_LISTED = 10  # an error line names this many missing parts, then counts the rest


def _listed(names: list[str]) -> str:
    shown = ", ".join(names[:MAX_LISTED])
    return shown + (f" and {len(names) - MAX_LISTED:,} more" if len(names) > MAX_LISTED else "")


_INCOMPLETE_CODES = {
    "lfs-pointer": "files are Git LFS pointers",
    "missing-shard": "shards are missing",
    "missing-file": "files are missing",
    "unreadable-shard": "shards cannot be read",
}


def _read_sidecars(source: Source) -> Mapping[str, Any]:
    found: dict[str, Any] = {}
    for name in SIDECAR_FILES:
        candidate = source.root / name
        if candidate == source.path or not candidate.is_file():
            continue
        try:
            path = source.resolve(name)
            if path.stat().st_size > SIDECAR_MAX_BYTES:
                continue
            found[name] = capped(json.loads(path.read_text(encoding="utf-8")))
        except (CkptscanError, OSError, ValueError, RecursionError):
            continue  # context only: a broken sidecar never fails the scan of the weights
    return found
