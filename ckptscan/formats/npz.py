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

from ckptscan.errors import CkptscanError, TruncatedFile
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
    directory = _zip.read_directory(source)  # refuses duplicate names
    tensors: list[Tensor] = []
    regions: list[Region] = _zip.framing_regions(source, directory)
    findings: list[Finding] = _zip.name_findings(directory)
    warnings: list[str] = []
    for entry in directory.entries:
        if entry.name.endswith("/"):
            continue
        if not entry.name.endswith(SUFFIX):
            warnings.append(f"member {entry.name!r} is not a .npy array; skipped")
            if entry.stored:
                regions.append(
                    Region(source.name, RegionKind.OTHER, entry.data_offset, entry.compressed_size, entry.name)
                )
            continue
        tensor, member_regions, member_findings = _read_member(source, entry, entry.name[: -len(SUFFIX)])
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


def _read_member(source: Source, entry: _zip.ZipEntry, name: str) -> tuple[Tensor, list[Region], list[Finding]]:
    where = f"zip member {entry.name!r}"
    attrs: dict[str, Any] = {"zip_entry": entry.name}
    try:
        header = _member_header(source, entry)
    except CkptscanError as e:
        e.what = f"{entry.name}: {e.what}"
        e.where = e.where or where
        raise
    if entry.stored:
        described = describe(
            header,
            source.name,
            data_start=entry.data_offset,
            available=entry.uncompressed_size,
            name=name,
            attrs=attrs,
            where=where,
        )
    else:
        attrs.update(entry_data_offset=header.data_offset, stored_bytes=entry.compressed_size, compression="deflate")
        described = describe(
            header, source.name, data_start=None, available=entry.uncompressed_size, name=name, attrs=attrs, where=where
        )
    if header.has_objects:
        from ckptscan.formats.numpy import object_pickle_findings
        from ckptscan.formats.torch.unpickler import ChunkStream

        stream = ChunkStream(_zip.iter_content(source, entry))
        skipped = 0
        while skipped < header.data_offset:  # the .npy header, already parsed
            piece = stream.read(header.data_offset - skipped)
            if not piece:
                break
            skipped += len(piece)
        described[2].extend(object_pickle_findings(stream, name))
    return described


def _member_header(source: Source, entry: _zip.ZipEntry) -> NpyHeader:
    prefix = _zip.read_entry_prefix(source, entry, 12)

    def read_at(offset: int, length: int) -> bytes:
        if offset + length > entry.uncompressed_size:
            raise TruncatedFile(
                f".npy header needs {offset + length:,} bytes; the member has {entry.uncompressed_size:,}"
            )
        if entry.stored:
            return source.read_at(entry.data_offset + offset, length, ".npy header")
        data = _zip.read_entry_prefix(source, entry, offset + length)
        if len(data) < offset + length:
            raise TruncatedFile(f"the deflated member ends inside its .npy header ({len(data):,} bytes)")
        return data[offset:]

    return parse_header(prefix, read_at)
