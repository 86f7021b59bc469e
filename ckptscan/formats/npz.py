"""NumPy ``.npz``: a zip archive of ``.npy`` members (``np.savez`` stores, ``np.savez_compressed`` deflates).

Each member's ``.npy`` header is parsed like a ``.npy`` file (:mod:`ckptscan.formats.numpy`).
Stored members are addressable in place: the tensor's offset is the member's data offset (from its
local header) plus the ``.npy`` header length. Deflated members are not: only the first bytes of the
stream are inflated, enough to read the ``.npy`` header, and the tensor gets ``offset=None``,
``encoding="zip-deflated"`` and ``attrs`` ``zip_entry`` (member name), ``entry_data_offset`` (where
the values start in the inflated member) and ``stored_bytes`` (the compressed size of the member).
Tensor names are the member names without ``.npy``. Object arrays are findings, never unpickled.
"""

from __future__ import annotations

from typing import Any

from ckptscan.errors import CkptscanError, MalformedFile, TruncatedFile
from ckptscan.formats import _zip
from ckptscan.formats.numpy import NpyHeader, describe, parse_header
from ckptscan.inventory import FileRef, Finding, Inventory, Region, RegionKind, Tensor
from ckptscan.source import Head, Source

FORMAT = "npz"
SUFFIX = ".npy"


def sniff(head: Head) -> bool:
    names = [n for n in head.zip_names() if not n.endswith("/")]
    return bool(names) and all(n.endswith(SUFFIX) for n in names)


def read(source: Source) -> Inventory:
    layout = _zip.read_layout(source)
    tensors: list[Tensor] = []
    regions: list[Region] = _zip.framing_regions(source, layout)
    findings: list[Finding] = []
    warnings: list[str] = []
    names: set[str] = set()
    for member in layout.members:
        if member.name.endswith("/"):
            continue
        if not member.name.endswith(SUFFIX):
            warnings.append(f"member {member.name!r} is not a .npy array; skipped")
            if member.stored:
                regions.append(
                    Region(source.name, RegionKind.OTHER, member.data_offset, member.compress_size, member.name)
                )
            continue
        name = member.name[: -len(SUFFIX)]
        if name in names:
            raise MalformedFile(f"member {member.name!r} appears twice", where=f"zip member {member.name!r}")
        names.add(name)
        tensor, member_regions, member_findings = _read_member(source, member, name)
        tensors.append(tensor)
        regions.extend(member_regions)
        findings.extend(member_findings)
    return Inventory(
        format=FORMAT,
        path=str(source.path),
        root=str(source.root),
        files=(FileRef(source.name, source.size),),
        tensors=tuple(tensors),
        regions=tuple(sorted(regions, key=lambda r: r.offset)),
        findings=tuple(findings),
        warnings=tuple(warnings),
    )


def _read_member(source: Source, member: _zip.ZipMember, name: str) -> tuple[Tensor, list[Region], list[Finding]]:
    where = f"zip member {member.name!r}"
    attrs: dict[str, Any] = {"zip_entry": member.name}
    try:
        header = _member_header(source, member)
    except CkptscanError as e:
        e.what = f"{member.name}: {e.what}"
        e.where = e.where or where
        raise
    if member.stored:
        return describe(
            header,
            source.name,
            data_start=member.data_offset,
            available=member.file_size,
            name=name,
            attrs=attrs,
            where=where,
        )
    attrs.update(entry_data_offset=header.data_offset, stored_bytes=member.compress_size, compression="deflate")
    return describe(
        header, source.name, data_start=None, available=member.file_size, name=name, attrs=attrs, where=where
    )


def _member_header(source: Source, member: _zip.ZipMember) -> NpyHeader:
    prefix = _zip.inflate_prefix(source, member, 12)

    def read_at(offset: int, length: int) -> bytes:
        if offset + length > member.file_size:
            raise TruncatedFile(f".npy header needs {offset + length:,} bytes; the member has {member.file_size:,}")
        if member.stored:
            return source.read_at(member.data_offset + offset, length, ".npy header")
        data = _zip.inflate_prefix(source, member, offset + length)
        if len(data) < offset + length:
            raise TruncatedFile(f"the deflated member ends inside its .npy header ({len(data):,} bytes)")
        return data[offset:]

    return parse_header(prefix, read_at)
