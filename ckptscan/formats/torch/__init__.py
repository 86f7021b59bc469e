"""PyTorch checkpoints of every kind, read without torch and without running their pickles.

Formats (``Inventory.format``): ``pytorch`` (the zip format of ``torch.save`` since 1.6, whatever
the extension: .pt .pth .bin .ckpt), ``lightning`` (a zip checkpoint with PyTorch Lightning's
keys), ``torchscript`` (``torch.jit.save`` archives), ``pytorch-legacy``
(``_use_new_zipfile_serialization=False``) and ``pytorch-legacy-tar`` (torch < 0.4).

The pickles are interpreted by our own restricted unpickler (``unpickler.py``), which imports and
calls nothing; the containers (``containers.py``, zips through :mod:`ckptscan.formats._zip`) locate
storage bytes without reading them; ``assemble.py`` names tensors by their path and records
findings. See docs/pytorch.md.
"""

from __future__ import annotations

from ckptscan.errors import MalformedFile
from ckptscan.formats.torch import containers
from ckptscan.formats.torch.assemble import assemble
from ckptscan.formats.torch.unpickler import Unpickler
from ckptscan.inventory import Inventory
from ckptscan.source import Head, Source

FORMATS = ("pytorch", "lightning", "torchscript", "pytorch-legacy", "pytorch-legacy-tar")
TAR_MEMBER_NAMES = frozenset({"sys_info", "pickle", "storages", "tensors"})


def sniff(head: Head) -> bool:
    return _container(head) is not None


def read(source: Source) -> Inventory:
    kind = _container(source.head())
    if kind == "zip":
        loaded = containers.load_zip(source)
    elif kind == "legacy":
        loaded = containers.load_legacy(source)
    elif kind == "tar":
        loaded = containers.load_legacy_tar(source)
    else:
        raise MalformedFile("not a PyTorch checkpoint (no zip data.pkl, legacy magic number or legacy tar)")
    return assemble(source, loaded)


def _container(head: Head) -> str | None:
    data = head.data
    if data.startswith(b"PK\x03\x04"):
        names = head.zip_names()
        if any(n == "data.pkl" or n.endswith("/data.pkl") or n.endswith("/constants.pkl") for n in names):
            return "zip"
        return None
    if _is_legacy(data):
        return "legacy"
    if len(data) >= 512 and data[257:262] == b"ustar":
        name = data[:100].split(b"\0")[0].decode("latin-1")
        if name in TAR_MEMBER_NAMES:
            return "tar"
    return None


def _is_legacy(data: bytes) -> bool:
    """The file starts with the pickled legacy magic number (any protocol)."""
    if data[:1] not in (b"\x80", b"L", b"I", b"\x8a"):
        return False
    try:
        value = Unpickler(data[:64]).load()
    except Exception:  # any failure just means "not this format"
        return False
    return bool(value == containers.LEGACY_MAGIC)
