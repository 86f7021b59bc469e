"""The four PyTorch containers, each read into a :class:`Loaded`: pickles, storages and framing.

* zip (``torch.save`` since 1.6; also ``.bin``/``.ckpt``): ``<root>/data.pkl`` plus one entry
  ``<root>/data/<key>`` per storage; any root folder name. TorchScript archives add
  ``constants.pkl`` (storages under ``constants/``), ``code/`` and other ``*.pkl`` files.
* legacy (``_use_new_zipfile_serialization=False``): pickled magic number, protocol version and
  sys info, the object pickle, the pickled list of storage keys, then each storage as an 8-byte
  little-endian element count followed by its raw bytes, in that key order.
* legacy tar (torch < 0.4): a tar with ``storages`` (count, then per storage a pickled
  ``(key, location, storage class)``, a count and raw bytes, then pickled views), ``tensors`` (count,
  then per tensor a pickled ``(key, storage key, type)`` and its ndim/sizes/strides/offset) and
  ``pickle`` (the object tree, whose persistent ids are tensor and storage keys).

Storage bytes are located, never read. Every declared count and size is checked against the file.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

from ckptscan.errors import CkptscanError, LimitExceeded, MalformedFile, TruncatedFile
from ckptscan.formats import _zip
from ckptscan.formats.torch.objects import Global, Opaque, StorageRef, TensorRef
from ckptscan.formats.torch.rebuild import storage_dtype
from ckptscan.formats.torch.unpickler import MAX_PICKLE_BYTES, ChunkStream, SourceStream, Unpickler
from ckptscan.inventory import Finding, Region, RegionKind, Severity
from ckptscan.source import Source

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001
MAX_LEGACY_STORAGES = 10_000_000
MAX_TAR_MEMBERS = 10_000
TAR_BLOCK = 512


@dataclass(slots=True)
class StorageData:
    """Where a storage's bytes are: ``offset`` in ``file`` (None when compressed), what is available."""

    ref: StorageRef
    file: str
    offset: int | None
    available: int  # bytes the container holds for it (>= ref.nbytes once checked)
    encoding: str = "raw"
    attrs: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class PickleRead:
    label: str  # e.g. "archive/data.pkl"
    root: Any
    unpickler: Unpickler
    nbytes: int
    tensors: bool = True  # False for TorchScript's traced_inputs.pkl and the like: scanned, not inventoried


@dataclass
class Loaded:
    format: str
    pickles: list[PickleRead] = field(default_factory=list)
    storages: dict[str, StorageData] = field(default_factory=dict)  # by storage key
    regions: list[Region] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    code_files: list[str] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)  # container findings (zip names, trailing pickles)


def keep_globals(error: CkptscanError, loaded: Loaded) -> CkptscanError:
    """Findings survive errors: the globals of the pickles read before ``error`` travel with it."""
    earlier = [use for p in loaded.pickles for use in p.unpickler.all_globals()]
    error.pickle_globals = [*earlier, *getattr(error, "pickle_globals", [])]  # type: ignore[attr-defined]
    if loaded.findings:
        error.findings = [*getattr(error, "findings", []), *loaded.findings]  # type: ignore[attr-defined]
    return error


def _text(value: Any) -> str:
    return value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)


class _StorageTable:
    """Persistent-id handler shared by the containers: one StorageRef per key, dtype checked."""

    def __init__(self) -> None:
        self.refs: dict[str, StorageRef] = {}

    def get(self, key: str, dtype: str, location: str, numel: int, where: str) -> StorageRef:
        ref = self.refs.get(key)
        if ref is None:
            ref = StorageRef(key, dtype, location, numel)
            self.refs[key] = ref
        elif ref.numel != numel and ref.dtype == dtype:
            raise MalformedFile(f"storage {key} is declared with {ref.numel:,} and {numel:,} elements", where=where)
        return ref


def _storage_pid(pid: Any, table: _StorageTable, where: str, *, legacy: bool) -> StorageRef:
    if not isinstance(pid, tuple) or not pid or _text(pid[0]) != "storage":
        raise MalformedFile(f"persistent id {_short(pid)} is not a storage reference", where=where)
    expected = 6 if legacy else 5
    if len(pid) != expected:
        raise MalformedFile(f"storage persistent id has {len(pid)} fields, not {expected}", where=where)
    dtype = storage_dtype(pid[1])
    if dtype is None:
        raise MalformedFile(f"storage persistent id names an unknown storage type {_short(pid[1])}", where=where)
    key, location, numel = pid[2], _text(pid[3]), pid[4]
    if not isinstance(key, str | int | bytes) or not isinstance(numel, int) or isinstance(numel, bool) or numel < 0:
        raise MalformedFile(f"storage persistent id {_short(pid)} has a bad key or size", where=where)
    ref = table.get(_text(key), dtype, location, numel, where)
    if legacy and pid[5] is not None:
        view = pid[5]
        if not (isinstance(view, tuple) and len(view) == 3 and all(isinstance(v, int | str) for v in view)):
            raise MalformedFile("legacy storage view metadata is malformed", where=where)
        view_key, offset, size = _text(view[0]), view[1], view[2]
        if not isinstance(offset, int) or not isinstance(size, int) or offset < 0 or size < 0 or offset + size > numel:
            raise MalformedFile(f"legacy storage view {view_key} lies outside storage {ref.key}", where=where)
        return StorageRef(ref.key, dtype, location, numel, view=(view_key, offset, size))
    return ref


def _short(value: Any) -> str:
    if isinstance(value, Global):
        return value.qualname
    return f"{type(value).__name__}"


def read_pickle(data: bytes, label: str, persistent: Any = None, start: int = 0) -> tuple[Any, Unpickler]:
    unpickler = Unpickler(data, persistent_load=persistent, start=start, label=label)
    return unpickler.load(), unpickler


def pickle_at(
    source: Source, offset: int, end: int, label: str, persistent: Any = None, loaded: Loaded | None = None
) -> tuple[Any, int, Unpickler]:
    """The pickle at ``offset`` (ending before ``end``) and the offset after it.

    The file is streamed in chunks, so a small pickle in front of gigabytes of storage data costs
    one small read and a large pickle costs bounded memory. With ``loaded``, the pickle is
    recorded there (scanned for globals, not inventoried) even when it fails.
    """
    unpickler = Unpickler(persistent_load=persistent, label=label, stream=SourceStream(source, offset, end, label))
    if loaded is not None:
        loaded.pickles.append(PickleRead(label, None, unpickler, 0, tensors=False))
    value = unpickler.load()
    if loaded is not None:
        loaded.pickles[-1].nbytes = unpickler.end
    return value, offset + unpickler.end, unpickler


def stream_entry(source: Source, entry: _zip.ZipEntry, label: str, persistent: Any = None) -> tuple[Any, Unpickler]:
    """The pickle in a zip entry, inflated and interpreted in bounded chunks (never whole in memory)."""
    if entry.uncompressed_size > MAX_PICKLE_BYTES:
        raise LimitExceeded(f"{label} is {entry.uncompressed_size:,} bytes; the limit is {MAX_PICKLE_BYTES:,}")
    stream = ChunkStream(_zip.iter_content(source, entry, label))
    unpickler = Unpickler(persistent_load=persistent, label=label, stream=stream)
    value = unpickler.load()
    while stream.read(1 << 16):  # what follows STOP (normally nothing): read so that the CRC is checked
        pass
    return value, unpickler


# -- zip -------------------------------------------------------------------------------------------


def load_zip(source: Source) -> Loaded:
    directory = _zip.read_directory(source)
    by_name = directory.by_name()
    root = _archive_root(by_name)
    prefix = f"{root}/" if root else ""
    is_torchscript = f"{prefix}constants.pkl" in by_name or any(n.startswith(f"{prefix}code/") for n in by_name)
    loaded = Loaded("torchscript" if is_torchscript else "pytorch")
    loaded.findings.extend(_zip.name_findings(directory))
    try:
        _load_zip(source, directory, by_name, prefix, is_torchscript, loaded)
    except CkptscanError as e:
        raise keep_globals(e, loaded) from None
    loaded.metadata["zip"] = {
        "root": root,
        "entries": len(directory.entries),
        "byteorder": _small_text(source, by_name.get(f"{prefix}byteorder")) or "little",
        "version": _small_text(source, by_name.get(f"{prefix}version")) or None,
    }
    return loaded


def _load_zip(
    source: Source,
    directory: _zip.ZipDirectory,
    by_name: dict[str, _zip.ZipEntry],
    prefix: str,
    is_torchscript: bool,
    loaded: Loaded,
) -> None:
    loaded.regions.extend(_zip.framing_regions(source, directory))  # with the bytes outside every entry
    byteorder = _small_text(source, by_name.get(f"{prefix}byteorder"))
    encoding = "raw-big-endian" if byteorder == "big" else "raw"
    pickle_names = [f"{prefix}data.pkl"]
    if is_torchscript:
        pickle_names += sorted(
            n for n in by_name if n.startswith(prefix) and n.endswith(".pkl") and "/" not in n[len(prefix) :]
        )
    used: set[str] = set()
    for name in dict.fromkeys(pickle_names):
        folder = name[: -len(".pkl")]
        table = _StorageTable()
        where = f"{name}"

        def persistent(pid: Any, table: _StorageTable = table, where: str = where) -> StorageRef:
            return _storage_pid(pid, table, where, legacy=False)

        entry = by_name[name]
        root_value, unpickler = stream_entry(source, entry, name, persistent)
        # TorchScript saves traced example inputs with empty storages: their globals are checked,
        # their tensors are not part of the model
        inventoried = name in (f"{prefix}data.pkl", f"{prefix}constants.pkl")
        loaded.pickles.append(PickleRead(name, root_value, unpickler, entry.uncompressed_size, inventoried))
        loaded.regions.append(Region(source.name, RegionKind.PICKLE, entry.data_offset, entry.compressed_size, name))
        used.add(name)
        if not inventoried:
            continue
        for ref in table.refs.values():
            entry_name = f"{folder}/{ref.key}"
            loaded.storages[f"{source.name}:{entry_name}"] = _zip_storage(source, by_name, entry_name, ref, encoding)
            used.add(entry_name)
            storage_entry = by_name[entry_name]
            if storage_entry.stored and storage_entry.compressed_size > ref.nbytes:
                loaded.regions.append(
                    Region(
                        source.name,
                        RegionKind.UNREFERENCED,
                        storage_entry.data_offset + ref.nbytes,
                        storage_entry.compressed_size - ref.nbytes,
                        f"{entry_name} bytes past its storage",
                    )
                )
    for entry in directory.entries:
        if entry.name in used:
            continue
        kind, label = _entry_kind(entry.name, prefix)
        if kind is RegionKind.CODE:
            loaded.code_files.append(entry.name[len(prefix) :])
        if _member_is_pickle(source, entry):
            # every other member that is a pickle by content (extra .pkl files, debug_pkl, a pickle
            # under any name) could be loaded by code that ships with the model: scan it too
            scan_member(source, entry, loaded)
            if kind is RegionKind.OTHER or kind is RegionKind.UNREFERENCED:
                kind = RegionKind.PICKLE
        loaded.regions.append(Region(source.name, kind, entry.data_offset, entry.compressed_size, label))


def _member_is_pickle(source: Source, entry: _zip.ZipEntry) -> bool:
    from ckptscan.formats.pickle import looks_like_pickle

    if entry.uncompressed_size < 2 or entry.name.endswith("/"):
        return False
    try:
        head = _zip.read_entry_prefix(source, entry, 256)
    except CkptscanError:
        return False
    return looks_like_pickle(head, entry.uncompressed_size)


def scan_member(source: Source, entry: _zip.ZipEntry, loaded: Loaded) -> None:
    """Scan a pickle member for globals only; a failure is a finding, not an error of the file."""
    unpickler = Unpickler(label=entry.name, stream=ChunkStream(_zip.iter_content(source, entry, entry.name)))
    loaded.pickles.append(PickleRead(entry.name, None, unpickler, entry.uncompressed_size, tensors=False))
    try:
        unpickler.load()
    except CkptscanError as e:
        loaded.findings.append(
            Finding("pickle-unreadable", Severity.MEDIUM, f"pickle member could not be read whole: {e.what}",
                    entry.name.encode("unicode_escape").decode("ascii"))
        )  # fmt: skip


def _archive_root(by_name: dict[str, _zip.ZipEntry]) -> str:
    roots = sorted(n[: -len("/data.pkl")] for n in by_name if n.endswith("/data.pkl") and n.count("/") == 1)
    if roots:
        return roots[0]
    if "data.pkl" in by_name:
        return ""
    raise MalformedFile("zip archive has no <folder>/data.pkl entry (not a PyTorch checkpoint)")


def _small_text(source: Source, entry: _zip.ZipEntry | None) -> str:
    if entry is None or entry.uncompressed_size > 64:
        return ""
    return _zip.read_entry(source, entry, 64, entry.name).decode("ascii", "replace").strip()


def _zip_storage(
    source: Source, by_name: dict[str, _zip.ZipEntry], name: str, ref: StorageRef, encoding: str
) -> StorageData:
    entry = by_name.get(name)
    if entry is None:
        raise MalformedFile(f"storage {ref.key} has no zip entry {name}", where=name)
    if entry.uncompressed_size < ref.nbytes:
        raise TruncatedFile(
            f"storage {ref.key} declares {ref.nbytes:,} bytes ({ref.numel:,} x {ref.dtype}) but {name} holds "
            f"{entry.uncompressed_size:,}",
            where=name,
        )
    attrs: dict[str, Any] = {"zip_entry": name, "torch_key": ref.key, "location": ref.location}
    if entry.stored:
        return StorageData(ref, source.name, entry.data_offset, entry.compressed_size, encoding, attrs)
    attrs["compressed_size"] = entry.compressed_size
    attrs["data_offset"] = entry.data_offset
    return StorageData(ref, source.name, None, entry.uncompressed_size, "zip-deflated", attrs)


def _entry_kind(name: str, prefix: str) -> tuple[RegionKind, str]:
    inner = name[len(prefix) :] if name.startswith(prefix) else name
    if inner.startswith("code/"):
        return RegionKind.CODE, name
    if inner.endswith(".pkl"):
        return RegionKind.PICKLE, name
    if inner in ("version", "byteorder", ".format_version", ".storage_alignment") or inner.startswith(".data/"):
        return RegionKind.METADATA, name
    if inner.startswith("data/") or inner.startswith("constants/"):
        return RegionKind.UNREFERENCED, f"{name} (no pickle refers to it)"
    return RegionKind.OTHER, name


def _tar_padding(source: Source, regions: list[Region], storages: Any) -> list[Region]:
    """Bytes that neither a region nor a storage covers: a tar pads every member to 512-byte blocks
    and ends with zero blocks. (A zip's bytes outside its entries come with its framing regions.)"""
    spans = sorted(
        [(r.offset, r.offset + r.nbytes) for r in regions if r.file == source.name]
        + [(s.offset, s.offset + s.ref.nbytes) for s in storages if s.offset is not None and s.file == source.name]
    )
    gaps = []
    position = 0
    for start, end in spans:
        if start > position:
            gaps.append(Region(source.name, RegionKind.PADDING, position, start - position, "tar block padding"))
        position = max(position, end)
    if position < source.size:
        gaps.append(Region(source.name, RegionKind.PADDING, position, source.size - position, "trailing bytes"))
    return gaps


# -- legacy ----------------------------------------------------------------------------------------


def load_legacy(source: Source) -> Loaded:
    loaded = Loaded("pytorch-legacy")
    try:
        _load_legacy(source, loaded)
    except CkptscanError as e:
        raise keep_globals(e, loaded) from None
    return loaded


def _load_legacy(source: Source, loaded: Loaded) -> None:
    position = 0
    values = []
    for label in ("magic number", "protocol version", "sys info"):
        value, end, _ = pickle_at(source, position, source.size, label, loaded=loaded)
        kind = RegionKind.METADATA if label == "sys info" else RegionKind.HEADER
        loaded.regions.append(Region(source.name, kind, position, end - position, label))
        position = end
        values.append(value)
    if values[0] != LEGACY_MAGIC:
        raise MalformedFile("legacy checkpoint has the wrong magic number", where="offset 0")
    if values[1] != LEGACY_PROTOCOL:
        raise MalformedFile(f"legacy checkpoint protocol {values[1]!r} is not {LEGACY_PROTOCOL}", where="offset 0")
    table = _StorageTable()
    root, end, unpickler = pickle_at(
        source, position, source.size, "pickle", lambda pid: _storage_pid(pid, table, "legacy pickle", legacy=True)
    )
    loaded.pickles.insert(0, PickleRead("pickle", root, unpickler, end - position))
    loaded.regions.append(Region(source.name, RegionKind.PICKLE, position, end - position, "pickle"))
    position = end
    keys, end, _ = pickle_at(source, position, source.size, "storage keys", loaded=loaded)
    loaded.regions.append(Region(source.name, RegionKind.INDEX, position, end - position, "storage keys"))
    position = end
    if not isinstance(keys, list) or not all(isinstance(k, str | int) for k in keys):
        raise MalformedFile("legacy storage key list is not a list of keys", where=f"offset {position}")
    if len(keys) > MAX_LEGACY_STORAGES:
        raise LimitExceeded(f"legacy checkpoint lists {len(keys):,} storages")
    for raw_key in keys:
        key = _text(raw_key)
        ref = table.refs.get(key)
        if ref is None:
            raise MalformedFile(f"legacy storage key {key} is not referenced by the pickle", where=f"offset {position}")
        count = int.from_bytes(source.read_at(position, 8, "legacy storage size"), "little")
        if count != ref.numel:
            raise MalformedFile(
                f"legacy storage {key} holds {count:,} elements but the pickle declares {ref.numel:,}",
                where=f"offset {position}",
            )
        loaded.regions.append(Region(source.name, RegionKind.HEADER, position, 8, f"storage {key} size"))
        position += 8
        if position + ref.nbytes > source.size:
            raise TruncatedFile(
                f"legacy storage {key} needs {ref.nbytes:,} bytes at {position} but the file has {source.size:,}",
                where=f"offset {position}",
            )
        loaded.storages[f"{source.name}:{key}"] = StorageData(
            ref, source.name, position, ref.nbytes, attrs={"torch_key": key, "location": ref.location}
        )
        position += ref.nbytes
    if position < source.size:
        loaded.regions.append(
            Region(source.name, RegionKind.UNREFERENCED, position, source.size - position, "trailing bytes")
        )
    missing = set(table.refs) - {_text(k) for k in keys}
    if missing:
        raise MalformedFile(f"legacy pickle refers to storages with no data: {sorted(missing)[:5]}")
    loaded.metadata["legacy"] = {"sys_info": values[2] if isinstance(values[2], dict) else None}


# -- legacy tar ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TarMember:
    name: str
    header_offset: int
    data_offset: int
    size: int


def read_tar(source: Source) -> list[TarMember]:
    members: list[TarMember] = []
    position = 0
    long_name: str | None = None
    while position + TAR_BLOCK <= source.size:
        header = source.read_at(position, TAR_BLOCK, "tar header")
        if header == bytes(TAR_BLOCK):
            break
        if len(members) >= MAX_TAR_MEMBERS:
            raise LimitExceeded(f"tar has more than {MAX_TAR_MEMBERS} members")
        if _tar_checksum(header) != _tar_number(header[148:156], position):
            raise MalformedFile("tar header checksum does not match", where=f"offset {position}")
        name = header[:100].split(b"\0")[0].decode("utf-8", "replace")
        if header[257:262] == b"ustar" and header[345:500].strip(b"\0"):
            name = header[345:500].split(b"\0")[0].decode("utf-8", "replace") + "/" + name
        size = _tar_number(header[124:136], position)
        kind = header[156:157]
        data_offset = position + TAR_BLOCK
        if data_offset + size > source.size:
            raise TruncatedFile(f"tar member {name} runs past the end of the file", where=f"offset {position}")
        if kind in (b"L", b"x"):
            body = source.read_at(data_offset, min(size, 1 << 16), "tar extended header")
            if kind == b"L":
                long_name = body.split(b"\0")[0].decode("utf-8", "replace")
            else:
                for line in body.split(b"\n"):
                    if b" path=" in line:
                        long_name = line.split(b" path=", 1)[1].decode("utf-8", "replace")
        elif kind in (b"0", b"\0", b""):
            members.append(TarMember(long_name or name, position, data_offset, size))
            long_name = None
        position = data_offset + (size + TAR_BLOCK - 1) // TAR_BLOCK * TAR_BLOCK
    return members


def _tar_number(field_bytes: bytes, position: int) -> int:
    if field_bytes[:1] and field_bytes[0] & 0x80:
        return int.from_bytes(field_bytes[1:], "big")
    text = field_bytes.split(b"\0")[0].strip()
    try:
        return int(text or b"0", 8)
    except ValueError:
        raise MalformedFile("tar header has a malformed number", where=f"offset {position}") from None


def _tar_checksum(header: bytes) -> int:
    return sum(header[:148]) + 8 * 32 + sum(header[156:])


def load_legacy_tar(source: Source) -> Loaded:
    members = {m.name: m for m in read_tar(source)}
    for required in ("storages", "tensors", "pickle"):
        if required not in members:
            raise MalformedFile(f"legacy tar checkpoint has no '{required}' member")
    loaded = Loaded("pytorch-legacy-tar")
    try:
        _load_legacy_tar(source, members, loaded)
    except CkptscanError as e:
        raise keep_globals(e, loaded) from None
    return loaded


def _load_legacy_tar(source: Source, members: dict[str, TarMember], loaded: Loaded) -> None:
    for name in members:
        why = _zip.unsafe_name(name)
        if why is not None:
            shown = name.encode("unicode_escape").decode("ascii")
            loaded.findings.append(
                Finding("zip-unsafe-name", Severity.HIGH, f"tar member name {shown!r} {why}", shown, subject=shown)
            )
    for m in members.values():
        loaded.regions.append(
            Region(source.name, RegionKind.FRAMING, m.header_offset, TAR_BLOCK, f"tar header {m.name}")
        )
    storages = _tar_storages(source, members["storages"], loaded)
    tensors = _tar_tensors(source, members["tensors"], storages, loaded)
    member = members["pickle"]

    def persistent(pid: Any) -> Any:
        if isinstance(pid, tuple) and pid and _text(pid[0]) == "module":
            return Opaque("module source", args=(pid[1] if len(pid) > 1 else None,), how="persistent")
        key = _text(pid) if isinstance(pid, str | bytes | int) else None
        if key is not None and key in tensors:
            return tensors[key]
        if key is not None and key in storages:
            return storages[key]
        raise MalformedFile(f"tar pickle refers to unknown tensor or storage {key!r:.40}", where="pickle")

    root, _end, unpickler = pickle_at(
        source, member.data_offset, member.data_offset + member.size, "pickle", persistent
    )
    loaded.pickles.insert(0, PickleRead("pickle", root, unpickler, member.size))
    loaded.regions.append(Region(source.name, RegionKind.PICKLE, member.data_offset, member.size, "pickle"))
    if "sys_info" in members:
        info = members["sys_info"]
        loaded.regions.append(Region(source.name, RegionKind.METADATA, info.data_offset, info.size, "sys_info"))
        try:  # torch reads it with pickle.load: scanned like the others
            pickle_at(source, info.data_offset, info.data_offset + info.size, "sys_info", loaded=loaded)
        except CkptscanError as e:
            loaded.findings.append(
                Finding(
                    "pickle-unreadable", Severity.MEDIUM, f"sys_info pickle could not be read: {e.what}", "sys_info"
                )
            )
    loaded.regions.extend(_tar_padding(source, loaded.regions, loaded.storages.values()))


def _tar_storages(source: Source, member: TarMember, loaded: Loaded) -> dict[str, StorageRef]:
    count, position, end = _member_count(source, member, loaded, "storage")
    refs: dict[str, StorageRef] = {}
    for _ in range(count):
        record, header_at, _ = pickle_at(source, position, end, "storages", loaded=loaded)
        if not (isinstance(record, tuple) and len(record) == 3):
            raise MalformedFile("legacy tar storage record is not (key, location, type)", where="storages")
        dtype = storage_dtype(record[2])
        if dtype is None:
            raise MalformedFile(f"legacy tar storage has unknown type {_short(record[2])}", where="storages")
        key, location = _text(record[0]), _text(record[1])
        if header_at + 8 > end:
            raise TruncatedFile("legacy tar storage ends before its size", where="storages")
        numel = int.from_bytes(source.read_at(header_at, 8, "legacy tar storage size"), "little")
        ref = StorageRef(key, dtype, location, numel)
        start = header_at + 8
        if start + ref.nbytes > end:
            raise TruncatedFile(f"legacy tar storage {key} runs past its member", where="storages")
        refs[key] = ref
        loaded.storages[f"{source.name}:{key}"] = StorageData(
            ref, source.name, start, ref.nbytes, attrs={"torch_key": key, "location": location}
        )
        loaded.regions.append(
            Region(source.name, RegionKind.INDEX, position, start - position, f"storage {key} record")
        )
        position = start + ref.nbytes
    views, views_end, _ = pickle_at(source, position, end, "storages", loaded=loaded)
    loaded.regions.append(Region(source.name, RegionKind.INDEX, position, views_end - position, "storage views"))
    for view in views if isinstance(views, list) else []:
        if isinstance(view, tuple) and len(view) == 4 and _text(view[1]) in refs:
            root = refs[_text(view[1])]
            offset, numel = view[2], view[3]
            if not (isinstance(offset, int) and isinstance(numel, int) and 0 <= offset <= offset + numel <= root.numel):
                raise MalformedFile("legacy tar storage view lies outside its storage", where="storages")
            view_ref = StorageRef(root.key, root.dtype, root.location, root.numel, view=(_text(view[0]), offset, numel))
            refs[_text(view[0])] = view_ref
    return refs


def _member_count(source: Source, member: TarMember, loaded: Loaded, what: str) -> tuple[int, int, int]:
    """The pickled record count that opens a ``storages``/``tensors`` member: (count, next offset, member end)."""
    end = member.data_offset + member.size
    count, position, _ = pickle_at(source, member.data_offset, end, f"{what}s", loaded=loaded)
    if not isinstance(count, int) or isinstance(count, bool) or count < 0 or count > MAX_LEGACY_STORAGES:
        raise MalformedFile(f"legacy tar {what} count is malformed", where=f"{what}s")
    loaded.regions.append(
        Region(source.name, RegionKind.INDEX, member.data_offset, position - member.data_offset, f"{what} count")
    )
    return count, position, end


def _tar_tensors(
    source: Source, member: TarMember, storages: dict[str, StorageRef], loaded: Loaded
) -> dict[str, TensorRef]:
    count, position, end = _member_count(source, member, loaded, "tensor")
    tensors: dict[str, TensorRef] = {}
    for _ in range(count):
        record, at, _ = pickle_at(source, position, end, "tensors", loaded=loaded)
        if not (isinstance(record, tuple) and len(record) == 3) or _text(record[1]) not in storages:
            raise MalformedFile("legacy tar tensor record is malformed or names an unknown storage", where="tensors")
        if at + 8 > end:
            raise TruncatedFile("legacy tar tensor record runs past its member", where="tensors")
        (ndim,) = struct.unpack("<i", source.read_at(at, 4))
        if ndim < 0 or ndim > 64:
            raise MalformedFile(f"legacy tar tensor has {ndim} dimensions", where="tensors")
        record_end = at + 8 + 8 * (2 * ndim + 1)
        if record_end > end:
            raise TruncatedFile("legacy tar tensor record runs past its member", where="tensors")
        dims = struct.unpack(f"<{2 * ndim + 1}q", source.read_at(at + 8, 8 * (2 * ndim + 1)))
        storage = storages[_text(record[1])]
        shape, strides, offset = dims[:ndim], dims[ndim : 2 * ndim], dims[2 * ndim]
        if min((*shape, *strides, offset), default=0) < 0:
            raise MalformedFile("legacy tar tensor has a negative size, stride or offset", where="tensors")
        tensors[_text(record[0])] = TensorRef(storage, offset, tuple(shape), tuple(strides), storage.dtype)
        loaded.regions.append(Region(source.name, RegionKind.INDEX, position, record_end - position, "tensor record"))
        position = record_end
    return tensors
