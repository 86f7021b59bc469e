"""Git LFS pointer files: what a repository cloned without ``git lfs pull`` holds instead of weights.

A pointer is a few lines of text (https://github.com/git-lfs/git-lfs/blob/main/docs/spec.md)::

    version https://git-lfs.github.com/spec/v1
    oid sha256:4d7a2146...
    size 12345
"""

from __future__ import annotations

from dataclasses import dataclass

from ckptscan.errors import MalformedFile
from ckptscan.inventory import FileRef, Finding, Inventory, Region, RegionKind, Severity
from ckptscan.source import Head, Source

FORMAT = "git-lfs-pointer"
MAGIC = b"version https://git-lfs.github.com/spec/v1"
MAX_POINTER_BYTES = 1024  # the spec caps pointer files at 1024 bytes


@dataclass(frozen=True, slots=True)
class LfsPointer:
    oid: str
    size: int


def sniff(head: Head) -> bool:
    return head.size <= MAX_POINTER_BYTES and head.data.startswith(MAGIC)


def parse_pointer(data: bytes) -> LfsPointer | None:
    """The pointer's oid and size, or None if ``data`` is not a well-formed pointer."""
    if len(data) > MAX_POINTER_BYTES or not data.startswith(MAGIC):
        return None
    fields = {}
    for line in data.decode("utf-8", errors="replace").splitlines():
        key, _, value = line.partition(" ")
        fields[key] = value.strip()
    size = fields.get("size", "")
    if not size.isdigit() or "oid" not in fields:
        return None
    return LfsPointer(fields["oid"], int(size))


def pointer_finding(pointer: LfsPointer, where: str) -> Finding:
    return Finding(
        "lfs-pointer",
        Severity.HIGH,
        f"{where} is a Git LFS pointer, not the file: its {pointer.size:,} bytes ({pointer.oid}) were "
        "never downloaded (run `git lfs pull`)",
        where=where,
    )


def read(source: Source) -> Inventory:
    data = source.read_at(0, source.size, "pointer")
    pointer = parse_pointer(data)
    if pointer is None:
        raise MalformedFile("Git LFS pointer without a valid oid and size line", where="pointer text")
    return Inventory(
        format=FORMAT,
        path=str(source.path),
        root=str(source.root),
        files=(FileRef(source.name, source.size, role="lfs-pointer"),),
        tensors=(),
        regions=(Region(source.name, RegionKind.METADATA, 0, source.size, "LFS pointer text"),),
        metadata={"lfs": {"oid": pointer.oid, "size": pointer.size}},
        findings=(pointer_finding(pointer, source.name),),
        complete=False,
    )
