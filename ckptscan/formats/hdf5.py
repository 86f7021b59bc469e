"""HDF5: every dataset of the file, walked link by link so that nothing outside the file is touched.

h5py (optional: ``pip install 'ckptscan[hdf5]'``) parses the format; ckptscan decides what to open.
The walk starts at the root group and looks at each link *before* following it
(``group.get(name, getlink=True)``):

- hard links are followed; an object reached a second time (compared by file number and object
  address) is not walked again, so a group hard-linked into its own subtree cannot loop. The first
  path in walk order names the object, the others are listed as its ``aliases``;
- soft links are never followed by HDF5: they are resolved afterwards against the tree already
  walked, at most 16 hops deep (HDF5's own limit), so a soft-link cycle becomes a finding and a
  soft link to an ancestor does not loop;
- external links are never followed (their target file is not opened): each is a HIGH finding;
- user-defined link classes are listed as warnings and not followed.

Datasets are opened with a dataset-access property list whose external-file and virtual-dataset
prefixes point at a directory that does not exist, and their values are never read: external
storage (``H5Pset_external``) and virtual datasets whose sources are other files are HIGH findings.
Only small attributes are ever read, and only when a reader asks for them (:func:`read_attr`).

Per dataset the inventory has the logical size (elements x item size) as ``nbytes`` and what the
file spends on it as ``attrs["stored_bytes"]`` (``H5Dget_storage_size``); they differ for chunked,
compressed and unallocated datasets. Contiguous datasets are addressable in place (``offset`` from
``H5Dget_offset``, absolute in the file, user block included); chunked ones are not
(``offset=None``, ``encoding="hdf5-chunked"``, chunk shape and filters in ``attrs``).

The rest of the file (superblock, object headers, B-trees, heaps, attributes, free space) is
accounted for as "HDF5 structure" regions: the exact gaps between the stored bytes of contiguous
datasets and of every allocated chunk. HDF5 does not expose where each piece of metadata sits, so
the structure is not split further; the values of compact datasets live inside object headers and
are therefore inside those regions too.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from ckptscan.dtypes import DType, DTypeKind, fixed_width
from ckptscan.errors import CkptscanError, LimitExceeded, MalformedFile, MissingDependency, TruncatedFile
from ckptscan.formats import _bounded, _zip
from ckptscan.formats.numpy import OBJECT, STRING, dtype_from_descr
from ckptscan.inventory import FileRef, Finding, Inventory, Region, RegionKind, Severity, Tensor
from ckptscan.source import Head, Source

if TYPE_CHECKING:
    import h5py

FORMAT = "hdf5"
SIGNATURE = b"\x89HDF\r\n\x1a\n"
MAX_SIGNATURE_OFFSET = 1 << 30  # HDF5 looks at 0, 512, 1024, 2048, ... (user blocks are powers of two)
MAX_LINKS = 1_000_000
MAX_SOFT_LINK_HOPS = 16  # H5L_NUM_LINKS, HDF5's own limit on soft-link traversal
MAX_CHUNKS = 1_000_000  # chunk locations enumerated for the region accounting, summed over datasets
MAX_ATTR_BYTES = 16 << 20
MAX_ATTR_ELEMENTS = 1 << 20
NO_SUCH_PREFIX = b"/nonexistent-ckptscan-never-open/"
STRUCTURE_LABEL = "HDF5 structure (superblock, object headers, B-trees, heaps, attributes, free space)"

_LAYOUTS = {0: "compact", 1: "contiguous", 2: "chunked", 3: "virtual"}
_FILTERS = {1: "gzip", 2: "shuffle", 3: "fletcher32", 4: "szip", 5: "nbit", 6: "scaleoffset", 32000: "lzf"}
_INSTALL = "reading HDF5 needs h5py: pip install 'ckptscan[hdf5]' (or pip install h5py numpy)"


@dataclass(frozen=True, slots=True)
class Dataset:
    """One HDF5 dataset as the walk found it; offsets are relative to the start of the HDF5 image."""

    path: str  # without the leading slash
    aliases: tuple[str, ...]
    shape: tuple[int, ...]
    dtype: DType
    native_dtype: str
    big_endian: bool
    layout: str  # "contiguous", "chunked", "compact", "virtual"
    offset: int | None
    stored_bytes: int
    chunks: tuple[int, ...] | None
    filters: tuple[str, ...]
    extents: tuple[tuple[int, int], ...] | None  # (offset, length) of stored bytes; None: not enumerated
    external_files: tuple[str, ...] = ()
    virtual_files: tuple[str, ...] = ()
    null_dataspace: bool = False

    @property
    def elements(self) -> int:
        total = 0 if self.null_dataspace else 1
        for dim in self.shape:
            total *= dim
        return total

    @property
    def nbytes(self) -> int:
        return self.dtype.nbytes(self.elements) if self.dtype.known else self.stored_bytes

    @property
    def section(self) -> str:
        return self.path.split("/", 1)[0] if "/" in self.path else ""


@dataclass
class Walk:
    """What a walk of one HDF5 file found. ``groups`` maps canonical paths to open group handles."""

    datasets: list[Dataset] = field(default_factory=list)
    groups: dict[str, Any] = field(default_factory=dict)
    soft_links: dict[str, str] = field(default_factory=dict)
    external_links: dict[str, tuple[str, str]] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    addresses: dict[str, int] = field(default_factory=dict)  # object address of each group and dataset
    userblock: int = 0
    named_datatypes: int = 0

    def group(self, path: str) -> Any:
        return self.groups.get(path.strip("/"))


# -- detection and opening ---------------------------------------------------------------------


def signature_offset(head: Head) -> int | None:
    """Where the superblock signature is: offset 0, or a power of two from 512 (a user block)."""
    if head.data.startswith(SIGNATURE):
        return 0
    offset = 512
    while offset < min(head.size, MAX_SIGNATURE_OFFSET):
        if offset + len(SIGNATURE) <= len(head.data):
            found = head.data[offset : offset + len(SIGNATURE)] == SIGNATURE
        else:
            found = head.source.read_up_to(offset, len(SIGNATURE)) == SIGNATURE
        if found:
            return offset
        offset *= 2
    return None


def sniff(head: Head) -> bool:
    return signature_offset(head) is not None


def import_h5py() -> Any:
    try:
        import h5py
    except ImportError as e:
        raise MissingDependency(_INSTALL) from e
    return h5py


@contextlib.contextmanager
def open_file(source: Source, window: tuple[int, int] | None = None) -> Iterator[h5py.File]:
    """The HDF5 file of ``source`` (or of the byte range ``window`` = (start, length) inside it), read-only."""
    if window is None:
        with _open(source.opener()) as h5:
            yield h5
        return
    reader = _zip.SourceWindow(source, *window)
    try:
        with _open(reader) as h5:
            yield h5
    finally:
        reader.close()


@contextlib.contextmanager
def _open(target: Any) -> Iterator[h5py.File]:
    """h5py on a path or a read-only file object; h5py's errors become ckptscan's."""
    h5py = import_h5py()
    try:
        h5 = h5py.File(target, "r", locking=False) if not hasattr(target, "read") else h5py.File(target, "r")
    except (OSError, ValueError, RuntimeError, KeyError, TypeError) as e:
        raise _translate(e, "opening the file") from e
    try:
        yield h5
    finally:
        h5.close()  # before a file object goes away: h5py must not call into a dead one


open_fileobj = _open


def _translate(error: BaseException, where: str) -> CkptscanError:
    text = str(error) or type(error).__name__
    if "truncated file" in text or "addr overflow" in text or "past end of file" in text.lower():
        return TruncatedFile(f"HDF5 file is truncated ({text})", where=where)
    return MalformedFile(f"not a readable HDF5 file ({text})", where=where)


# -- the walk ----------------------------------------------------------------------------------


def walk_file(h5: h5py.File) -> Walk:
    """Every dataset reachable through hard links, with soft and external links recorded, not followed."""
    walker = _Walker(import_h5py(), h5)
    try:
        walker.run()
    except CkptscanError:
        raise
    except RecursionError as e:
        raise LimitExceeded("HDF5 structure nests too deeply", where=walker.current or "/") from e
    except (OSError, ValueError, RuntimeError, KeyError, TypeError, AttributeError) as e:
        raise _translate(e, walker.current or "/") from e
    return walker.result


class _Walker:
    def __init__(self, h5py: Any, h5: Any) -> None:
        self.h5py = h5py
        self.h5 = h5
        self.result = Walk(userblock=int(h5.userblock_size))
        self.current = ""
        self.links = 0
        self.chunks = 0
        self.dapl = h5py.h5p.create(h5py.h5p.DATASET_ACCESS)
        self.dapl.set_efile_prefix(NO_SUCH_PREFIX)
        self.dapl.set_virtual_prefix(NO_SUCH_PREFIX)
        # tree of what was walked: group key -> {link name: ("hard", key) | ("soft", target) | ("external", ...)}
        self.children: dict[tuple[int, int], dict[str, tuple[str, Any]]] = {}
        self.kind_of: dict[tuple[int, int], str] = {}
        self.path_of: dict[tuple[int, int], str] = {}
        self.aliases: dict[tuple[int, int], list[str]] = {}
        self.dataset_keys: list[tuple[int, int]] = []
        self.root_key = (0, 0)

    def _key(self, obj_id: Any, name: bytes | None = None) -> tuple[tuple[int, int], int]:
        info = self.h5py.h5o.get_info(obj_id, name) if name is not None else self.h5py.h5o.get_info(obj_id)
        return (int(info.fileno), int(info.addr)), int(info.type)

    def run(self) -> None:
        h5py = self.h5py
        root = self.h5["/"]
        root_key, _ = self._key(root.id)
        self.root_key = root_key
        self.kind_of[root_key] = "group"
        self.path_of[root_key] = ""
        self.result.groups[""] = root
        stack: list[tuple[str, Any, tuple[int, int]]] = [("", root, root_key)]
        pending: list[tuple[str, Any, tuple[int, int]]] = []
        while stack:
            path, group, key = stack.pop()
            links = self.children.setdefault(key, {})
            for name in self._names(group, path):
                child_path = f"{path}/{name}" if path else name
                self.current = "/" + child_path
                link = group.get(name, getlink=True)
                if isinstance(link, h5py.SoftLink):
                    links[name] = ("soft", link.path)
                    self.result.soft_links[child_path] = link.path
                elif isinstance(link, h5py.ExternalLink):
                    links[name] = ("external", (link.filename, link.path))
                    self.result.external_links[child_path] = (link.filename, link.path)
                    self.result.findings.append(
                        Finding(
                            "hdf5-external-link",
                            Severity.HIGH,
                            f"/{child_path} is an external link to {link.path!r} in file {link.filename!r}; "
                            "HDF5 would open that file when the link is accessed; not followed",
                            "/" + child_path,
                        )
                    )
                elif isinstance(link, h5py.HardLink):
                    child_key, child_group = self._hard(group, name, child_path)
                    links[name] = ("hard", child_key)
                    if child_group is not None:
                        pending.append((child_path, child_group, child_key))
                else:
                    links[name] = ("other", None)
                    self.result.warnings.append(f"/{child_path}: user-defined link class; not followed")
            stack.extend(reversed(pending))
            pending.clear()
        self._resolve_soft_links()
        for index, dataset in enumerate(self.result.datasets):
            extra = self.aliases.get(self.dataset_keys[index])
            if extra:
                self.result.datasets[index] = replace(dataset, aliases=tuple(extra))

    def _names(self, group: Any, path: str) -> list[str]:
        count = len(group)
        self.links += count
        if self.links > MAX_LINKS:
            raise LimitExceeded(f"more than {MAX_LINKS:,} links in the file", where="/" + path)
        return list(group)

    def _hard(self, group: Any, name: str, path: str) -> tuple[tuple[int, int], Any]:
        """Open a hard-linked child: its key, and the group to walk below it (None: nothing to walk)."""
        h5py = self.h5py
        bname = name.encode("utf-8", "surrogateescape")
        key, obj_type = self._key(group.id, bname)
        if key in self.kind_of:
            if self.kind_of[key] == "dataset":
                self.aliases.setdefault(key, []).append(path)
            elif self.kind_of[key] == "group":
                self.result.warnings.append(f"/{path} is a second hard link to group /{self.path_of[key]}")
            return key, None
        self.path_of[key] = path
        self.result.addresses[path] = key[1]
        if obj_type == h5py.h5o.TYPE_GROUP:
            self.kind_of[key] = "group"
            child = h5py.Group(h5py.h5g.open(group.id, bname))
            self.result.groups[path] = child
            return key, child
        if obj_type == h5py.h5o.TYPE_DATASET:
            self.kind_of[key] = "dataset"
            dsid = h5py.h5d.open(group.id, bname, self.dapl)
            self.result.datasets.append(self._inspect(dsid, path))
            self.dataset_keys.append(key)
            return key, None
        self.kind_of[key] = "datatype"
        self.result.named_datatypes += 1
        return key, None

    def _inspect(self, dsid: Any, path: str) -> Dataset:
        h5py = self.h5py
        dcpl = dsid.get_create_plist()
        layout = _LAYOUTS.get(dcpl.get_layout(), f"layout-{dcpl.get_layout()}")
        space = dsid.get_space()
        null = space.get_simple_extent_type() == h5py.h5s.NULL
        shape = () if null else tuple(int(d) for d in space.shape)
        dtype, native, big_endian = _dtype_of(h5py, dsid)
        stored = int(dsid.get_storage_size())
        chunks = tuple(int(c) for c in dcpl.get_chunk()) if layout == "chunked" else None
        filters = self._filters(dcpl, path) if layout == "chunked" else ()
        offset: int | None = None
        extents: tuple[tuple[int, int], ...] | None = ()
        external: tuple[str, ...] = ()
        virtual: tuple[str, ...] = ()
        if layout == "contiguous":
            if dcpl.get_external_count():
                external = tuple(_text(dcpl.get_external(i)[0]) for i in range(min(dcpl.get_external_count(), 64)))
                self._finding(
                    "hdf5-external-storage",
                    f"/{path} keeps its values in external file(s) {list(external)}; not read",
                    path,
                )
            else:
                offset = dsid.get_offset()
                if offset is not None:
                    extents = ((int(offset), stored),)
        elif layout == "chunked":
            extents = self._chunk_extents(dsid)
        elif layout == "virtual":
            virtual = tuple(_text(dcpl.get_virtual_filename(i)) for i in range(min(dcpl.get_virtual_count(), 1024)))
            outside = sorted({f for f in virtual if f != "."})
            if outside:
                self._finding(
                    "hdf5-virtual-dataset",
                    f"/{path} is a virtual dataset mapped onto other file(s) {outside}; HDF5 would open them "
                    "when it is read; not opened",
                    path,
                )
        return Dataset(
            path=path,
            aliases=(),
            shape=shape,
            dtype=dtype,
            native_dtype=native,
            big_endian=big_endian,
            layout=layout,
            offset=None if offset is None else int(offset),
            stored_bytes=stored,
            chunks=chunks,
            filters=filters,
            extents=extents,
            external_files=external,
            virtual_files=virtual,
            null_dataspace=null,
        )

    def _finding(self, code: str, message: str, path: str) -> None:
        self.result.findings.append(Finding(code, Severity.HIGH, message, "/" + path))

    def _filters(self, dcpl: Any, path: str) -> tuple[str, ...]:
        names = []
        for index in range(dcpl.get_nfilters()):
            code, _flags, _values, raw_name = dcpl.get_filter(index)
            known = _FILTERS.get(int(code))
            if known is None:
                known = f"filter-{int(code)}"
                label = _text(raw_name)
                self.result.warnings.append(
                    f"/{path}: user-defined HDF5 filter {int(code)} ({label or 'unnamed'}); "
                    "its values cannot be decoded without that plugin"
                )
            names.append(known)
        return tuple(names)

    def _chunk_extents(self, dsid: Any) -> tuple[tuple[int, int], ...] | None:
        count = int(dsid.get_num_chunks())
        self.chunks += count
        if self.chunks > MAX_CHUNKS:
            return None
        found: list[tuple[int, int]] = []
        if hasattr(dsid, "chunk_iter"):
            dsid.chunk_iter(lambda info: found.append((int(info.byte_offset), int(info.size))))
        else:  # HDF5 < 1.14 has no H5Dchunk_iter
            for index in range(count):
                info = dsid.get_chunk_info(index)
                found.append((int(info.byte_offset), int(info.size)))
        return tuple(found)

    def _resolve_soft_links(self) -> None:
        for path, target in self.result.soft_links.items():
            parent = path.rsplit("/", 1)[0] if "/" in path else ""
            parent_key = self._key_of_group_path(parent)
            try:
                key = self._resolve(parent_key, target, 0)
            except _SoftLinkCycle:
                self.result.findings.append(
                    Finding(
                        "hdf5-soft-link-cycle",
                        Severity.MEDIUM,
                        f"/{path} is a soft link to {target!r} that never resolves (a cycle of soft links)",
                        "/" + path,
                    )
                )
                continue
            except _ThroughExternal as e:
                self.result.warnings.append(f"/{path}: soft link {target!r} passes through external link {e}")
                continue
            if key is None:
                self.result.warnings.append(f"/{path}: soft link to {target!r}, which does not exist (dangling)")
            elif self.kind_of.get(key) == "dataset":
                self.aliases.setdefault(key, []).append(path)

    def _key_of_group_path(self, path: str) -> tuple[int, int]:
        key = self.root_key
        for part in filter(None, path.split("/")):
            kind, value = self.children.get(key, {}).get(part, ("", None))
            key = value if kind == "hard" else key
        return key

    def _resolve(self, start: tuple[int, int], target: str, hops: int) -> tuple[int, int] | None:
        if hops >= MAX_SOFT_LINK_HOPS:
            raise _SoftLinkCycle
        key: tuple[int, int] | None = self.root_key if target.startswith("/") else start
        for part in target.split("/"):
            if not part or part == ".":
                continue
            if key is None or self.kind_of.get(key) != "group":
                return None
            kind, value = self.children.get(key, {}).get(part, ("", None))
            if kind == "hard":
                key = value
            elif kind == "soft":
                key = self._resolve(key, value, hops + 1)
            elif kind == "external":
                raise _ThroughExternal(f"{value[1]!r} in {value[0]!r}")
            else:
                return None
        return key


class _SoftLinkCycle(Exception):
    pass


class _ThroughExternal(Exception):
    pass


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _dtype_of(h5py: Any, dsid: Any) -> tuple[DType, str, bool]:
    """(canonical dtype, NumPy dtype string, big-endian?) of a dataset's element type."""
    try:
        dt = dsid.dtype
    except (TypeError, ValueError):  # an HDF5 type h5py has no NumPy equivalent for
        size = int(dsid.get_type().get_size())
        return fixed_width(f"HDF5_OPAQUE{size}", size * 8, DTypeKind.UNKNOWN), "unsupported", False
    string = h5py.check_string_dtype(dt)
    if string is not None and string.length is None:
        return STRING, f"vlen-str({string.encoding})", False
    if h5py.check_vlen_dtype(dt) is not None:
        return OBJECT, f"vlen({h5py.check_vlen_dtype(dt).str})", False
    if h5py.check_ref_dtype(dt) is not None:
        return fixed_width(f"HDF5_REF{dt.itemsize}", dt.itemsize * 8, DTypeKind.OBJECT), "reference", False
    if dt.fields is not None or dt.subdtype is not None:
        return fixed_width(f"RECORD{dt.itemsize}", dt.itemsize * 8, DTypeKind.UNKNOWN), str(dt), False
    dtype, big_endian, _ = dtype_from_descr(dt.str)
    return dtype, dt.str, big_endian


# -- reading attributes ------------------------------------------------------------------------


def read_attr(obj: Any, name: str, cap: int = MAX_ATTR_BYTES) -> Any:
    """A small attribute as plain Python (str, int, float, lists), or None when absent.

    The attribute's stored size and element count are checked before it is read.
    """
    h5py = import_h5py()
    bname = name.encode()
    try:
        if not h5py.h5a.exists(obj.id, bname):
            return None
        attr = h5py.h5a.open(obj.id, bname)
        elements = int(attr.get_space().get_simple_extent_npoints())
        size = elements * int(attr.get_type().get_size())  # H5Aget_storage_size fails on empty attributes
        if size > cap or elements > MAX_ATTR_ELEMENTS:
            raise LimitExceeded(
                f"attribute {name!r} holds {size:,} bytes / {elements:,} values; the limit is {cap:,}",
                where=f"{obj.name} attribute {name!r}",
            )
        value = obj.attrs[name]
    except CkptscanError:
        raise
    except (OSError, ValueError, RuntimeError, KeyError, TypeError) as e:
        raise MalformedFile(f"attribute {name!r} cannot be read ({e})", where=f"{obj.name} attribute {name!r}") from e
    return plain(value)


def plain(value: Any) -> Any:
    """NumPy scalars, arrays and bytes as JSON-friendly Python values."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if hasattr(value, "tolist"):
        return plain_list(value.tolist())
    return value


def plain_list(value: Any) -> Any:
    if isinstance(value, list):
        return [plain_list(v) for v in value]
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value


# -- building the inventory --------------------------------------------------------------------


def dataset_tensor(
    dataset: Dataset,
    file: str,
    *,
    base: int = 0,
    name: str | None = None,
    section: str | None = None,
    attrs: Mapping[str, Any] | None = None,
    addressable: bool = True,
) -> Tensor:
    """The tensor record of a dataset. ``base`` is where the HDF5 image starts in ``file``;
    ``addressable=False`` when it is not in ``file`` as such (an inflated zip member)."""
    record: dict[str, Any] = {"hdf5_path": "/" + dataset.path, "layout": dataset.layout}
    record["stored_bytes"] = dataset.stored_bytes
    if dataset.aliases:
        record["aliases"] = list(dataset.aliases)
    if dataset.chunks is not None:
        record["chunks"] = list(dataset.chunks)
        record["filters"] = list(dataset.filters)
    if dataset.big_endian:
        record["byte_order"] = "big"
    if dataset.external_files:
        record["external_files"] = list(dataset.external_files)
    if dataset.virtual_files:
        record["virtual_files"] = list(dataset.virtual_files)
    offset, encoding = None, _encoding(dataset)
    if encoding.startswith("raw") and dataset.offset is not None:
        offset = base + dataset.offset
        if not addressable:
            record["image_offset"] = dataset.offset
            offset = None
    record.update(attrs or {})
    return Tensor(
        name=dataset.path if name is None else name,
        shape=dataset.shape,
        dtype=dataset.dtype,
        elements=dataset.elements,
        nbytes=dataset.nbytes,
        file=file,
        offset=offset,
        section=dataset.section if section is None else section,
        native_dtype=dataset.native_dtype,
        encoding=encoding,
        attrs=record,
    )


def _encoding(dataset: Dataset) -> str:
    if dataset.dtype.kind in (DTypeKind.OBJECT, DTypeKind.STRING) and not dataset.dtype.known:
        return "hdf5-vlen"
    if dataset.layout == "contiguous":
        if dataset.external_files:
            return "hdf5-external-storage"
        if dataset.offset is None:
            return "hdf5-unallocated"  # never written: every value is the fill value
        return "raw-big-endian" if dataset.big_endian else "raw"
    return {"chunked": "hdf5-chunked", "compact": "hdf5-compact", "virtual": "hdf5-virtual"}.get(
        dataset.layout, "hdf5-" + dataset.layout
    )


def check_extents(walk: Walk, image_size: int) -> None:
    """Stored bytes must lie inside the HDF5 image."""
    for dataset in walk.datasets:
        for offset, length in dataset.extents or ():
            if offset < 0 or offset + length > image_size:
                raise TruncatedFile(
                    f"dataset /{dataset.path} stores bytes {offset:,}..{offset + length:,} "
                    f"but the file has {image_size:,}",
                    where="/" + dataset.path,
                )
        allocated = dataset.layout == "contiguous" and dataset.offset is not None and dataset.dtype.known
        if allocated and dataset.stored_bytes < dataset.nbytes:
            raise MalformedFile(
                f"dataset /{dataset.path} is {dataset.nbytes:,} bytes but stores only {dataset.stored_bytes:,}",
                where="/" + dataset.path,
            )


def structure_regions(walk: Walk, file: str, image_size: int, *, base: int = 0) -> list[Region]:
    """The user block plus the gaps between stored dataset bytes: HDF5's own structures."""
    regions: list[Region] = []
    start = walk.userblock
    if walk.userblock:
        regions.append(Region(file, RegionKind.HEADER, base, walk.userblock, "HDF5 user block"))
    extents: list[tuple[int, int]] = []
    for dataset in walk.datasets:
        if dataset.extents is None:
            stored = image_size - start - sum(d.stored_bytes for d in walk.datasets if d.offset is not None)
            label = STRUCTURE_LABEL + ", scattered (too many chunks to locate)"
            regions.append(Region(file, RegionKind.FRAMING, base + start, max(stored, 0), label))
            return regions
        extents.extend(e for e in dataset.extents if e[1] > 0)
    position = start
    for offset, length in sorted(extents):
        if offset > position:
            regions.append(Region(file, RegionKind.FRAMING, base + position, offset - position, STRUCTURE_LABEL))
        position = max(position, offset + length)
    if image_size > position:
        regions.append(Region(file, RegionKind.FRAMING, base + position, image_size - position, STRUCTURE_LABEL))
    return regions


def summary(walk: Walk) -> dict[str, Any]:
    info: dict[str, Any] = {
        "groups": len(walk.groups),
        "datasets": len(walk.datasets),
        "userblock_size": walk.userblock,
    }
    if walk.soft_links:
        info["soft_links"] = dict(list(walk.soft_links.items())[:1000])
    if walk.external_links:
        info["external_links"] = {p: {"file": f, "path": o} for p, (f, o) in list(walk.external_links.items())[:1000]}
    if walk.named_datatypes:
        info["named_datatypes"] = walk.named_datatypes
    return info


def read(source: Source) -> Inventory:
    """libhdf5 runs in a bounded worker (time, memory, files it may open): see ``formats/_bounded.py``."""
    return _bounded.call(_read, source, what="HDF5")


def _read(source: Source) -> Inventory:
    with open_file(source) as h5:
        walk = walk_file(h5)
        root_attrs = _root_attr_summary(walk)
        attr_findings = pickle_attr_findings(walk)
    check_extents(walk, source.size)
    tensors = tuple(dataset_tensor(d, source.name) for d in walk.datasets)
    return Inventory(
        format=FORMAT,
        path=str(source.path),
        root=str(source.root),
        files=(FileRef(source.name, source.size),),
        tensors=tensors,
        regions=tuple(structure_regions(walk, source.name, source.size)),
        metadata={"hdf5": {**summary(walk), "root_attributes": root_attrs}},
        findings=tuple(walk.findings) + tuple(attr_findings),
        warnings=tuple(walk.warnings),
    )


def pickle_attr_findings(walk: Walk, cap: int = MAX_ATTR_BYTES) -> list[Finding]:
    """Root attributes that hold a pickle (bytes a loader may unpickle): their globals, scanned, never run."""
    from ckptscan.formats.pickle import looks_like_pickle
    from ckptscan.formats.torch.safety import findings_for
    from ckptscan.formats.torch.unpickler import Unpickler

    root = walk.group("")
    found: list[Finding] = []
    for name in list(root.attrs)[:256]:
        try:
            if read_attr(root, name, cap) is None:
                continue
            raw = root.attrs[name]
        except (CkptscanError, OSError, ValueError, RuntimeError, KeyError, TypeError):
            continue
        if hasattr(raw, "tobytes") and getattr(getattr(raw, "dtype", None), "kind", "") in ("S", "V", "u", "i"):
            raw = raw.tobytes()
        if isinstance(raw, str) and raw[:1] in ("c", "(", "]", "}"):  # a protocol 0 pickle stored as text
            raw = raw.encode("utf-8", "surrogateescape")
        if not isinstance(raw, bytes) or not looks_like_pickle(raw[:256], len(raw)):
            continue
        label = f"attribute {name!r}".encode("unicode_escape").decode("ascii")
        unpickler = Unpickler(raw, label=label)
        with contextlib.suppress(CkptscanError):  # what it named before failing is reported all the same
            unpickler.load()
        found += findings_for(unpickler.all_globals(), kind=f"HDF5 {label} pickle")
    return found


def _root_attr_summary(walk: Walk, cap: int = 4096) -> dict[str, Any]:
    """Root attributes: small ones by value, larger ones by name only."""
    root = walk.group("")
    found: dict[str, Any] = {}
    for name in list(root.attrs)[:256]:
        try:
            value = read_attr(root, name, cap)
        except LimitExceeded:
            value = {"type": "attribute", "note": f"larger than {cap} bytes; not read"}
        found[name] = value if _is_json(value) else repr(value)[:200]
    return found


def _is_json(value: Any) -> bool:
    if value is None or isinstance(value, (str, int, float, bool)):
        return True
    if isinstance(value, list):
        return all(_is_json(v) for v in value)
    return False
