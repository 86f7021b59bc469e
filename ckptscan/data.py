"""Reading a tensor's values where its reader said they are, in bounded pieces.

Readers record where each tensor's bytes live (``Tensor.file``/``offset``/``encoding``/``attrs``, or
a shared :class:`~ckptscan.inventory.Storage` plus ``storage_offset``/``strides``) and never read
them. Passes that look at values (the stats pass) read them through this module:

* :data:`ENCODINGS` maps ``Tensor.encoding`` to an opener that returns a :class:`ByteStream`: the
  stored bytes of one tensor or storage, in the canonical form every later step assumes
  (little-endian, row-major, the dtype's own width), read into caller-owned buffers. ``raw`` and
  ``raw-big-endian`` read in place with ``pread``; ``zip-deflated`` inflates as it reads;
  ``hdf5-*`` goes through h5py hyperslabs; ``onnx-typed-field`` decodes a (small, capped) protobuf
  field up front; ``raw-unpacked`` packs sub-byte values stored one per byte. :data:`NOT_READ`
  names the encodings that are never read, with the reason.
* :func:`open_tensor` puts a tensor on top of that: contiguous tensors are a window of their stream;
  views into a shared storage are gathered through their strides (see :class:`StridedView`).

Nothing here allocates in proportion to a tensor (typed ONNX fields aside, capped at 16 MiB):
every read fills a buffer of the caller's size.
Paths are resolved inside the model's folder (:func:`ckptscan.source.resolve_inside`), and every
declared offset and size is checked against the file before the first read.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ckptscan.dtypes import DType, DTypeKind
from ckptscan.errors import CkptscanError, MalformedFile, ReadFailure, TruncatedFile, UnsupportedFeature
from ckptscan.inventory import Inventory, Storage, Tensor
from ckptscan.source import Source, resolve_inside


class ByteStream(Protocol):
    """The stored bytes of one tensor or storage, canonical (little-endian) form.

    ``random_access`` is False for streams that can only go forward cheaply (compressed data):
    the stats pass then reads them in one task, front to back.
    """

    size: int
    random_access: bool

    def read_into(self, offset: int, out: memoryview) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class DataRef:
    """Where a run of stored bytes is: what a tensor or a storage says about its data."""

    file: str
    offset: int | None
    nbytes: int
    dtype: DType
    encoding: str
    attrs: Mapping[str, Any]
    label: str  # for messages: the tensor or storage name

    @classmethod
    def of_tensor(cls, t: Tensor) -> DataRef:
        return cls(t.file, t.offset, t.nbytes, t.dtype, t.encoding, dict(t.attrs), f"tensor {t.name!r}")

    @classmethod
    def of_storage(cls, s: Storage) -> DataRef:
        return cls(s.file, s.offset, s.nbytes, s.dtype, s.encoding, dict(s.attrs), f"storage {s.key!r}")


Opener = Callable[[Path, DataRef], ByteStream]


# -- raw bytes in place ----------------------------------------------------------------------------


class RawStream:
    """Bytes stored contiguously at an offset of a file, read with ``pread``."""

    random_access = True

    def __init__(self, root: Path, ref: DataRef, *, swap_bytes: int = 0) -> None:
        if ref.offset is None:
            raise MalformedFile(f"{ref.label} has encoding {ref.encoding!r} but no offset", where=ref.label)
        path = resolve_inside(root, ref.file, referrer=ref.file)
        self._source = Source(path, root=root)
        if ref.offset < 0 or ref.offset + ref.nbytes > self._source.size:
            size = self._source.size
            self._source.close()
            raise TruncatedFile(
                f"{ref.label} needs bytes {ref.offset:,}..{ref.offset + ref.nbytes:,} but the file has {size:,}",
                path=str(path),
                where=ref.label,
            )
        self._fd = self._source.fileno()
        self._base = ref.offset
        self._swap = swap_bytes
        self.size = ref.nbytes

    def read_into(self, offset: int, out: memoryview) -> None:
        length = len(out)
        if offset < 0 or offset + length > self.size:
            raise TruncatedFile(f"read of bytes {offset:,}..{offset + length:,} of {self.size:,}")
        done = 0
        path = self._source.path
        while done < length:
            try:
                got = os.preadv(self._fd, [out[done:]], self._base + offset + done)
            except OSError as e:
                raise ReadFailure(f"read failed: {e.strerror or e}", path=str(path)) from e
            if got == 0:
                raise TruncatedFile("file ended while reading tensor data (did it shrink?)", path=str(path))
            done += got
        if self._swap > 1:
            swap_in_place(out, self._swap)

    def close(self) -> None:
        self._source.close()


def swap_in_place(buffer: memoryview, width: int) -> None:
    """Reverse the bytes of every ``width``-byte value: big-endian storage to canonical form."""
    import numpy as np

    values = np.frombuffer(buffer, dtype=np.dtype(f"u{width}"))
    values.byteswap(inplace=True)


def open_raw(root: Path, ref: DataRef) -> ByteStream:
    return RawStream(root, ref)


def open_raw_big_endian(root: Path, ref: DataRef) -> ByteStream:
    width = value_width(ref.dtype)
    if not width:
        raise UnsupportedFeature(
            f"{ref.label}: big-endian {ref.dtype.name} data cannot be reordered value by value", where=ref.label
        )
    return RawStream(root, ref, swap_bytes=width)


def value_width(dtype: DType) -> int:
    """Bytes per value to reverse for byte order (0: nothing to reverse)."""
    if dtype.block_elements != 1 or dtype.block_bits % 8 or dtype.kind is DTypeKind.QUANTIZED:
        return 0
    width = dtype.block_bits // 8
    return width // 2 if dtype.kind is DTypeKind.COMPLEX else width


# -- compressed zip members -----------------------------------------------------------------------------

INFLATE_PIECE = 1 << 20


class DeflateStream:
    """A deflated zip member, inflated front to back as it is read (a backward read starts over).

    Where the values start inside the inflated member comes from the reader's ``attrs``:
    ``entry_data_offset`` (a ``.npy`` member: after its header), ``image_offset`` (a dataset inside an
    HDF5 image), else 0 (a PyTorch storage). The member is found by ``data_offset`` and
    ``compressed_size`` when the reader recorded them, else by ``zip_entry`` in the zip directory.
    """

    random_access = False

    def __init__(self, root: Path, ref: DataRef) -> None:
        from ckptscan.formats import _zip

        attrs = ref.attrs
        path = resolve_inside(root, ref.file, referrer=ref.file)
        self._source = Source(path, root=root)
        try:
            if isinstance(attrs.get("data_offset"), int) and isinstance(attrs.get("compressed_size"), int):
                self._start, self._compressed = attrs["data_offset"], attrs["compressed_size"]
            else:
                entry = _zip.read_directory(self._source).get(str(attrs.get("zip_entry", "")))
                if entry is None:
                    raise MalformedFile(f"{ref.label}: zip member {attrs.get('zip_entry')!r} is not in the archive")
                if entry.method != _zip.DEFLATED:
                    raise UnsupportedFeature(f"{ref.label}: zip member uses compression method {entry.method}")
                self._start, self._compressed = entry.data_offset, entry.compressed_size
            if self._start < 0 or self._start + self._compressed > self._source.size:
                raise TruncatedFile(f"{ref.label}: the compressed member runs past the end of the file")
        except BaseException:
            self._source.close()
            raise
        inner = attrs.get("entry_data_offset", attrs.get("image_offset", 0))
        self._skip = inner if isinstance(inner, int) and inner >= 0 else 0
        self._swap = value_width(ref.dtype) if attrs.get("byte_order") == "big" else 0
        self._label = ref.label
        self.size = ref.nbytes
        self._restart()

    def _restart(self) -> None:
        from ckptscan.formats import _zip

        need = self._skip + self.size  # inflating stops soon past it, whatever the member declares
        self._pieces = _zip.inflate(self._source, self._start, self._compressed, need, self._label, INFLATE_PIECE)
        self._pending = memoryview(b"")
        self._position = 0  # inflated bytes handed out

    def _inflate(self, limit: int) -> memoryview:
        """Up to ``limit`` more inflated bytes; empty at the end of the member."""
        if not self._pending:
            self._pending = memoryview(next(self._pieces, b""))
        piece, self._pending = self._pending[:limit], self._pending[limit:]
        self._position += len(piece)
        return piece

    def read_into(self, offset: int, out: memoryview) -> None:
        if offset < 0 or offset + len(out) > self.size:
            raise MalformedFile(f"read of bytes {offset:,}..{offset + len(out):,} of {self.size:,}")
        target = self._skip + offset
        if target < self._position:
            self._restart()
        while self._position < target:
            if not self._inflate(target - self._position):
                raise TruncatedFile(f"{self._label}: the compressed member ends before its declared size")
        done = 0
        while done < len(out):
            piece = self._inflate(len(out) - done)
            if not piece:
                raise TruncatedFile(f"{self._label}: the compressed member ends before its declared size")
            out[done : done + len(piece)] = piece
            done += len(piece)
        if self._swap > 1:
            swap_in_place(out, self._swap)

    def close(self) -> None:
        self._source.close()


# -- HDF5 datasets that are not contiguous bytes ------------------------------------------------------

# HDF5 filters whose decoding ships with libhdf5 or h5py; a dataset naming another would make the
# library look for a plugin, so it is not read
KNOWN_FILTERS = frozenset({"gzip", "shuffle", "fletcher32", "szip", "nbit", "scaleoffset", "lzf"})
_NUMPY_NAMES = {
    "F16": "<f2", "F32": "<f4", "F64": "<f8", "I8": "i1", "I16": "<i2", "I32": "<i4", "I64": "<i8",
    "U8": "u1", "U16": "<u2", "U32": "<u4", "U64": "<u8", "BOOL": "?",
}  # fmt: skip


class Hdf5Stream:
    """A dataset read through h5py (chunked and compressed, compact, never written), by hyperslabs.

    The file is opened read-only and the dataset with external-file and virtual-dataset prefixes
    pointing nowhere, as the HDF5 reader does; HDF5 converts the values to little-endian on the way.
    """

    random_access = True

    def __init__(self, root: Path, ref: DataRef) -> None:
        import contextlib

        import numpy as np

        from ckptscan.formats import _zip, hdf5

        attrs = ref.attrs
        name = _NUMPY_NAMES.get(ref.dtype.name)
        if name is None:
            raise UnsupportedFeature(f"{ref.label}: HDF5 values of type {ref.dtype.name} are not read")
        unknown = [f for f in attrs.get("filters", ()) if f not in KNOWN_FILTERS]
        if unknown:
            raise UnsupportedFeature(f"{ref.label}: HDF5 filter {unknown[0]} needs a plugin; not read")
        if attrs.get("compression") == "deflate":
            raise UnsupportedFeature(f"{ref.label}: an HDF5 dataset inside a compressed zip member is not read")
        self._stack = contextlib.ExitStack()
        try:
            source = self._stack.enter_context(Source(resolve_inside(root, ref.file, referrer=ref.file), root=root))
            window = None
            if "zip_entry" in attrs:  # an HDF5 image stored in a zip (.keras)
                entry = _zip.read_directory(source).get(str(attrs["zip_entry"]))
                if entry is None or not entry.stored:
                    raise UnsupportedFeature(f"{ref.label}: zip member {attrs['zip_entry']!r} is not stored")
                window = (entry.data_offset, entry.uncompressed_size)
            h5 = self._stack.enter_context(hdf5.open_file(source, window))
            h5py = hdf5.import_h5py()
            access = h5py.h5p.create(h5py.h5p.DATASET_ACCESS)
            access.set_efile_prefix(hdf5.NO_SUCH_PREFIX)
            access.set_virtual_prefix(hdf5.NO_SUCH_PREFIX)
            path = str(attrs.get("hdf5_path", ""))
            self._dataset = h5py.Dataset(h5py.h5d.open(h5.id, path.encode(), access))
        except CkptscanError:
            self._stack.close()
            raise
        except (OSError, ValueError, RuntimeError, KeyError, TypeError) as e:
            self._stack.close()
            raise MalformedFile(f"{ref.label}: HDF5 dataset cannot be opened ({e})") from e
        self._dtype = np.dtype(name)
        self._shape = tuple(int(d) for d in self._dataset.shape)
        self._label = ref.label
        self.size = ref.nbytes
        if math.prod(self._shape) * self._dtype.itemsize != self.size:
            self._stack.close()
            raise MalformedFile(f"{ref.label}: the dataset has shape {list(self._shape)}, not the recorded size")

    def read_into(self, offset: int, out: memoryview) -> None:
        import numpy as np

        size = self._dtype.itemsize
        if offset % size or len(out) % size or offset < 0 or offset + len(out) > self.size:
            raise MalformedFile(f"unaligned read of bytes {offset:,}..{offset + len(out):,} of an HDF5 dataset")
        position = 0
        for start, count in hyperslabs(self._shape, offset // size, (offset + len(out)) // size):
            n = math.prod(count) * size
            target = np.frombuffer(out[position : position + n], dtype=self._dtype).reshape(count)
            selection = tuple(slice(a, a + c) for a, c in zip(start, count, strict=True))
            try:
                self._dataset.read_direct(target, source_sel=selection if selection else np.s_[()])
            except (OSError, ValueError, RuntimeError, TypeError) as e:
                raise MalformedFile(f"{self._label}: HDF5 could not read the values ({e})") from e
            position += n

    def close(self) -> None:
        self._stack.close()


def hyperslabs(shape: tuple[int, ...], first: int, stop: int) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """Row-major elements [first, stop) of an array of ``shape`` as at most 2 x ndim boxes, in order."""
    if first >= stop:
        return []
    if len(shape) <= 1:
        return [((first,), (stop - first,))] if shape else [((), ())]
    inner = math.prod(shape[1:])
    head, tail = divmod(first, inner), divmod(stop, inner)
    if head[0] == tail[0] or (tail[0] == head[0] + 1 and tail[1] == 0 and head[1]):
        row = head[0]
        return [((row, *s), (1, *c)) for s, c in hyperslabs(shape[1:], head[1], stop - row * inner)]
    out = []
    row = head[0]
    if head[1]:
        out += [((row, *s), (1, *c)) for s, c in hyperslabs(shape[1:], head[1], inner)]
        row += 1
    if tail[0] > row:
        out.append(((row, *(0 for _ in shape[1:])), (tail[0] - row, *shape[1:])))
    if tail[1]:
        out += [((tail[0], *s), (1, *c)) for s, c in hyperslabs(shape[1:], 0, tail[1])]
    return out


# -- ONNX typed fields ----------------------------------------------------------------------------------

MAX_TYPED_FIELD_BYTES = 16 << 20  # ONNX writers put large tensors in raw_data; typed fields are small


class DecodedStream:
    """Values decoded up front into canonical bytes (small by construction: callers cap the size)."""

    random_access = True

    def __init__(self, data: bytearray) -> None:
        self._data = data
        self.size = len(data)

    def read_into(self, offset: int, out: memoryview) -> None:
        if offset < 0 or offset + len(out) > self.size:
            raise MalformedFile(f"read of bytes {offset:,}..{offset + len(out):,} of {self.size:,}")
        out[:] = memoryview(self._data)[offset : offset + len(out)]

    def close(self) -> None:
        self._data = bytearray()


def open_onnx_typed(root: Path, ref: DataRef) -> ByteStream:
    """An ONNX TensorProto's typed field (``float_data``, ``int32_data``...) turned into canonical bytes.

    ``attrs["payload"]`` lists the packed field's (offset, length) spans in the ``.onnx`` file:
    fixed-width fields are the values already; varint fields are decoded, then narrowed to the
    tensor's type (int32_data carries FLOAT16/BFLOAT16 bit patterns, 8-bit types, and sub-byte
    types already packed into their low byte).
    """
    import numpy as np

    attrs = ref.attrs
    spans = attrs.get("payload") or []
    if attrs.get("unpacked") or not spans:
        raise UnsupportedFeature(f"{ref.label}: an unpacked ONNX typed field is not read")
    if sum(length for _, length in spans) > MAX_TYPED_FIELD_BYTES:
        raise UnsupportedFeature(f"{ref.label}: ONNX typed field larger than {MAX_TYPED_FIELD_BYTES:,} bytes")
    field = attrs.get("onnx_field")
    with Source(resolve_inside(root, ref.file, referrer=ref.file), root=root) as source:
        payload = b"".join(source.read_at(offset, length, "ONNX typed field") for offset, length in spans)
    if field in ("float_data", "double_data"):
        values = np.frombuffer(payload, dtype="<f4" if field == "float_data" else "<f8")
    elif field in ("int32_data", "int64_data", "uint64_data"):
        values = decode_varints(payload, ref.label)
    else:
        raise UnsupportedFeature(f"{ref.label}: ONNX field {field!r} does not hold numbers")
    if values.size != attrs.get("values", values.size):
        raise UnsupportedFeature(f"{ref.label}: the typed field continues beyond the spans the reader kept")
    dtype = ref.dtype
    if field == "int32_data" or field == "uint64_data":
        width = dtype.block_bits // 8 if dtype.block_bits >= 8 and dtype.block_elements == 1 else 1
        canonical = values.astype(np.dtype(f"<u{width}"))  # keeps the low bytes: bit patterns and packed codes
    elif field == "int64_data":
        canonical = values.view(np.int64).astype("<i8")
    else:
        canonical = values
    data = bytearray(canonical.tobytes())
    if len(data) != ref.nbytes:
        raise MalformedFile(f"{ref.label}: the typed field decodes to {len(data):,} bytes, not {ref.nbytes:,}")
    return DecodedStream(data)


def decode_varints(payload: bytes, label: str) -> Any:
    """Every varint of a packed protobuf field, as uint64 (two's complement for negative int32/int64)."""
    import numpy as np

    data = np.frombuffer(payload, dtype=np.uint8)
    if not data.size:
        return np.zeros(0, dtype=np.uint64)
    ends = np.flatnonzero(data < 0x80)
    if not ends.size or ends[-1] != data.size - 1:
        raise MalformedFile(f"{label}: a packed varint field ends inside a value")
    starts = np.concatenate(([0], ends[:-1] + 1))
    lengths = ends - starts + 1
    if int(lengths.max()) > 10:
        raise MalformedFile(f"{label}: a varint longer than 10 bytes")
    position = np.arange(data.size) - np.repeat(starts, lengths)
    pieces = (data & 0x7F).astype(np.uint64) << (7 * position).astype(np.uint64)
    return np.add.reduceat(pieces, starts)


# -- sub-byte values stored one per byte (TensorFlow) -------------------------------------------------


class UnpackedStream:
    """Sub-byte values stored one per byte, packed (first value in the low bits) as they are read."""

    random_access = True

    def __init__(self, root: Path, ref: DataRef) -> None:
        bits = ref.dtype.block_bits
        if ref.dtype.block_elements != 1 or bits not in (1, 2, 4):
            raise UnsupportedFeature(f"{ref.label}: {ref.dtype.name} values one per byte are not read")
        self._per_byte = 8 // bits
        self._bits = bits
        self._raw = RawStream(root, ref)
        self.size = self._raw.size // self._per_byte

    def read_into(self, offset: int, out: memoryview) -> None:
        import numpy as np

        unpacked = bytearray(len(out) * self._per_byte)
        self._raw.read_into(offset * self._per_byte, memoryview(unpacked))
        values = np.frombuffer(unpacked, dtype=np.uint8).reshape(-1, self._per_byte) & ((1 << self._bits) - 1)
        packed = np.zeros(len(out), dtype=np.uint8)
        for k in range(self._per_byte):
            packed |= values[:, k] << (k * self._bits)
        out[:] = packed.tobytes()

    def close(self) -> None:
        self._raw.close()


# -- the registry ---------------------------------------------------------------------------------------


def open_deflated(root: Path, ref: DataRef) -> ByteStream:
    return DeflateStream(root, ref)


def open_hdf5(root: Path, ref: DataRef) -> ByteStream:
    return Hdf5Stream(root, ref)


def open_unpacked(root: Path, ref: DataRef) -> ByteStream:
    return UnpackedStream(root, ref)


ENCODINGS: dict[str, Opener] = {
    "raw": open_raw,
    "raw-big-endian": open_raw_big_endian,
    "raw-unpacked": open_unpacked,
    "zip-deflated": open_deflated,
    "hdf5-chunked": open_hdf5,
    "hdf5-compact": open_hdf5,
    "hdf5-unallocated": open_hdf5,  # never written: HDF5 returns the fill value for every element
    "onnx-typed-field": open_onnx_typed,
}

# encodings whose values are deliberately not read, and why
NOT_READ: dict[str, str] = {
    "meta": "the file stores no values for this tensor (a meta tensor)",
    "pickle": "an object array: its values are a pickle, which is never loaded",
    "hdf5-vlen": "variable-length HDF5 values are not numbers",
    "hdf5-external-storage": "the values live in files outside the HDF5 file; not followed",
    "hdf5-virtual": "a virtual dataset: the values live in other files; not followed",
    "onnx-attribute": "a Constant node's attribute value: not located in the file by the reader",
    "tf-string": "TensorFlow strings are not numbers",
    "tf-variant": "TensorFlow variants are not numbers",
    "tf-resource": "TensorFlow resource handles are not numbers",
}


def open_stream(root: Path, ref: DataRef) -> ByteStream:
    if ref.encoding in NOT_READ:
        raise UnsupportedFeature(f"{ref.label}: {NOT_READ[ref.encoding]}", where=ref.label)
    opener = ENCODINGS.get(ref.encoding)
    if opener is None:
        raise UnsupportedFeature(f"{ref.label}: values stored as {ref.encoding!r} cannot be read yet", where=ref.label)
    return opener(root, ref)


# -- tensors: contiguous windows and strided views --------------------------------------------------


class TensorBytes(Protocol):
    """A tensor's values as canonical bytes, in row-major order when ``logical_order`` is True.

    For a view whose strides put its elements in another order than row-major (a transpose),
    ``logical_order`` is False and ``shape`` is the order the bytes come in (the storage's).
    """

    nbytes: int
    shape: tuple[int, ...]
    random_access: bool
    logical_order: bool

    def read_into(self, offset: int, out: memoryview) -> None: ...

    def close(self) -> None: ...


class Window:
    """A contiguous run of a stream: a tensor stored on its own, or a contiguous view."""

    logical_order = True

    def __init__(self, stream: ByteStream, start: int, nbytes: int, shape: tuple[int, ...]) -> None:
        if start < 0 or start + nbytes > stream.size:
            stream.close()
            raise MalformedFile(f"bytes {start:,}..{start + nbytes:,} lie outside their storage of {stream.size:,}")
        self._stream = stream
        self._start = start
        self.nbytes = nbytes
        self.shape = shape
        self.random_access = stream.random_access

    def read_into(self, offset: int, out: memoryview) -> None:
        if offset < 0 or offset + len(out) > self.nbytes:
            raise MalformedFile(f"read of bytes {offset:,}..{offset + len(out):,} of a {self.nbytes:,}-byte tensor")
        self._stream.read_into(self._start + offset, out)

    def close(self) -> None:
        self._stream.close()


# A strided read gathers its elements from the storage span they cover; a read whose span is wider
# than this is split in halves until it fits, so memory stays bounded for any strides.
MAX_VIEW_SPAN_BYTES = 8 << 20


class StridedView:
    """A non-contiguous view of a storage, gathered through its strides.

    Elements come in row-major order when one slab of the leading dimension covers a compact span of
    the storage (slices, narrowed columns, broadcast dimensions). A view whose slabs are scattered
    over the whole storage (a transpose) is read in storage order instead, dimensions sorted by
    decreasing stride: ``logical_order`` is then False and ``shape`` is that order.
    """

    def __init__(
        self, stream: ByteStream, start: int, shape: tuple[int, ...], strides: tuple[int, ...], itemsize: int
    ) -> None:
        self.random_access = stream.random_access
        if any(s < 0 for s in strides):
            stream.close()
            raise UnsupportedFeature("views with negative strides are not supported")
        slab_span = (sum((n - 1) * s for n, s in zip(shape[1:], strides[1:], strict=True)) + 1) * itemsize
        self.logical_order = len(shape) < 2 or slab_span <= MAX_VIEW_SPAN_BYTES
        if not self.logical_order:
            order = sorted(range(len(shape)), key=lambda d: (-strides[d], d))
            shape, strides = tuple(shape[d] for d in order), tuple(strides[d] for d in order)
        self.shape = shape
        self.strides = strides
        self.itemsize = itemsize
        self.nbytes = math.prod(shape) * itemsize
        self._stream = stream
        self._start = start
        if self.nbytes:
            last = start + (sum((n - 1) * s for n, s in zip(shape, strides, strict=True)) + 1) * itemsize
            if start < 0 or last > stream.size:
                stream.close()
                raise MalformedFile(
                    f"a view of shape {list(shape)} and strides {list(strides)} at byte {start:,} reaches byte "
                    f"{last:,} of a {stream.size:,}-byte storage"
                )

    def read_into(self, offset: int, out: memoryview) -> None:
        isz = self.itemsize
        if offset % isz or len(out) % isz or offset < 0 or offset + len(out) > self.nbytes:
            raise MalformedFile(f"unaligned read of bytes {offset:,}..{offset + len(out):,} of a strided view")
        if len(out):
            self._gather(offset // isz, out)

    def _gather(self, first: int, out: memoryview) -> None:
        import numpy as np

        isz = self.itemsize
        count = len(out) // isz
        index = np.arange(first, first + count, dtype=np.int64)
        positions = np.zeros(count, dtype=np.int64)
        for n, s in zip(reversed(self.shape), reversed(self.strides), strict=True):
            index, i = np.divmod(index, n)
            positions += i * s
        low, high = int(positions.min()), int(positions.max())
        span = (high - low + 1) * isz
        if span > MAX_VIEW_SPAN_BYTES and count > 1:
            half = count // 2
            self._gather(first, out[: half * isz])
            self._gather(first + half, out[half * isz :])
            return
        raw = bytearray(span)
        self._stream.read_into(self._start + low * isz, memoryview(raw))
        item = np.dtype(f"V{isz}")
        np.frombuffer(out, dtype=item)[:] = np.frombuffer(raw, dtype=item)[positions - low]

    def close(self) -> None:
        self._stream.close()


def open_tensor(inventory: Inventory, tensor: Tensor) -> TensorBytes:
    """The tensor's values as canonical bytes, ready to be read in bounded pieces."""
    root = Path(inventory.root)
    if tensor.storage is None:
        stream = open_stream(root, DataRef.of_tensor(tensor))
        if stream.size < tensor.nbytes:
            stream.close()
            raise MalformedFile(f"tensor {tensor.name!r} has {stream.size:,} bytes of data, needs {tensor.nbytes:,}")
        if tensor.strides is not None and not _c_contiguous(tensor.shape, tensor.strides):
            return _strided(stream, 0, tensor)
        return Window(stream, 0, tensor.nbytes, tensor.shape)
    storage = next((s for s in inventory.storages if s.key == tensor.storage), None)
    if storage is None:
        raise MalformedFile(f"tensor {tensor.name!r} views storage {tensor.storage!r}, which is not in the inventory")
    stream = open_stream(root, DataRef.of_storage(storage))
    if tensor.strides is None or _c_contiguous(tensor.shape, tensor.strides):
        return Window(stream, tensor.storage_offset, tensor.nbytes, tensor.shape)
    return _strided(stream, tensor.storage_offset, tensor)


def _strided(stream: ByteStream, start: int, tensor: Tensor) -> TensorBytes:
    dtype = tensor.dtype
    if dtype.block_elements != 1 or dtype.block_bits % 8 or not dtype.known:
        stream.close()
        raise UnsupportedFeature(f"tensor {tensor.name!r}: strided views of {dtype.name} are not supported")
    assert tensor.strides is not None
    if len(tensor.strides) != len(tensor.shape):
        stream.close()
        raise MalformedFile(f"tensor {tensor.name!r} has {len(tensor.strides)} strides for {len(tensor.shape)} dims")
    try:
        return StridedView(stream, start, tensor.shape, tensor.strides, dtype.block_bits // 8)
    except CkptscanError as e:
        e.where = e.where or f"tensor {tensor.name!r}"
        raise


def _c_contiguous(shape: tuple[int, ...], strides: tuple[int, ...]) -> bool:
    """Row-major strides (dimensions of size 1 may carry any stride)."""
    row_major = [math.prod(shape[d + 1 :]) for d in range(len(shape))]
    if len(strides) != len(shape):
        return False
    return all(n == 1 or s == r for n, s, r in zip(shape, strides, row_major, strict=True))
