"""Scanning a remote model: what a URL stands for, its inventory, and what reading it cost."""

from __future__ import annotations

import json
import posixpath
from dataclasses import replace
from typing import Any

from ckptscan import registry
from ckptscan.errors import CkptscanError, ReadFailure
from ckptscan.inventory import Inventory
from ckptscan.remote import Location, RemoteSource, Session, locate


def _is_folder(location: Location) -> bool:
    session, key = location.session, location.key
    listing = session.folder(posixpath.dirname(key)) if key else None
    if listing is not None and posixpath.basename(key) in listing:
        return False
    return session.backend.is_dir(key, session.transfer)


def model_inputs(url: str) -> list[str]:
    """The models a remote path stands for: itself if a file; for a folder (a Hub repository, an S3
    prefix), its index or its checkpoints, recognized by content as for a local folder."""
    from ckptscan.scan import INDEX_SUFFIX, SIDECAR_FILES

    location = locate(url)
    if not _is_folder(location):
        return [url]
    session, key = location.session, location.key
    listing = session.folder(key) or {}
    names = sorted(name for name in listing if not name.startswith("."))
    url_of = session.backend.url
    indexes = [name for name in names if name.endswith(INDEX_SUFFIX)]
    if indexes:
        return [url_of(posixpath.join(key, name)) for name in indexes]
    found = []
    for name in names:
        if name in SIDECAR_FILES or posixpath.splitext(name)[1] in (".json", ".txt", ".md", ".py", ".model"):
            continue
        child = posixpath.join(key, name)
        try:
            with RemoteSource(session, child, key) as source:
                registry.detect(source)
        except CkptscanError:
            continue
        found.append(url_of(child))
    return found


def read_inventory(url: str) -> tuple[Inventory, dict[str, Any]]:
    """The inventory of one remote model file (or index), and the ``remote`` section: what was
    transferred and how many requests it took, against the model's size."""
    location = locate(url)
    session, key = location.session, location.key
    if _is_folder(location):
        raise ReadFailure("is a folder; name a file in it, or let the CLI expand it", path=location.shown)
    root = posixpath.dirname(key)
    source = RemoteSource(session, key, root)
    try:
        inventory = registry.read_source(source)
        sidecars = _read_sidecars(session, source)
    finally:
        source.close()
    if sidecars:
        inventory = replace(inventory, sidecars={**sidecars, **inventory.sidecars})
    model_bytes = sum(f.size for f in inventory.files)
    section = {
        "url": location.shown,
        "bytes_transferred": session.transfer.bytes,
        "requests": session.transfer.requests,
        "model_bytes": model_bytes,
        "download": session.options.download,
    }
    return inventory, section


def _read_sidecars(session: Session, source: RemoteSource) -> dict[str, Any]:
    """config.json & co beside the model, when the folder listing shows them (plain HTTP cannot
    list: there only config.json is asked for, one small request)."""
    from ckptscan.scan import SIDECAR_FILES, SIDECAR_MAX_BYTES

    listing = session.folder(source.root_key)
    names = [n for n in SIDECAR_FILES if n in listing] if listing is not None else ["config.json"]
    found: dict[str, Any] = {}
    for name in names:
        key = posixpath.join(source.root_key, name) if source.root_key else name
        if key == source.key:
            continue
        try:
            with RemoteSource(session, key, source.root_key) as sidecar:
                if sidecar.size > SIDECAR_MAX_BYTES:
                    continue
                found[name] = json.loads(sidecar.read_at(0, sidecar.size, name).decode("utf-8"))
        except (CkptscanError, ValueError):
            continue  # context only: a missing or broken sidecar never fails the scan
    return found
