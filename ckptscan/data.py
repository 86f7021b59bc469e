"""Reading a tensor's values where its reader said they are, in bounded pieces.

Readers record where each tensor's bytes live (``Tensor.file``/``offset``/``encoding``/``attrs``, or
a shared :class:`~ckptscan.inventory.Storage` plus ``storage_offset``/``strides``) and never read
them. Passes that look at values (the stats pass) read them through this module:

* :data:`ENCODINGS` maps ``Tensor.encoding`` to an opener that returns a :class:`ByteStream`: the
  stored bytes of one tensor or storage, in the canonical form every later step assumes
  (little-endian, row-major, the dtype's own width), read into caller-owned buffers. ``raw`` and
  ``raw-big-endian`` read in place with ``pread``; encodings that need a library or decompression
  (zip entries, HDF5 datasets, ONNX typed fields) add one opener each.
* :func:`open_tensor` puts a tensor on top of that: contiguous tensors are a window of their stream;
  views into a shared storage are gathered through their strides (see :class:`StridedView`).

Nothing here allocates in proportion to a tensor: every read fills a buffer of the caller's size.
Paths are resolved inside the model's folder (:func:`ckptscan.source.resolve_inside`), and every
declared offset and size is checked against the file before the first read.
"""

from __future__ import annotations

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
    dtype = ref.dtype
    if dtype.block_elements != 1 or dtype.block_bits % 8 or dtype.kind is DTypeKind.QUANTIZED:
        raise UnsupportedFeature(
            f"{ref.label}: big-endian {dtype.name} data cannot be reordered value by value", where=ref.label
        )
    width = dtype.block_bits // 8
    if dtype.kind is DTypeKind.COMPLEX:
        width //= 2  # real and imaginary parts are swapped separately
    return RawStream(root, ref, swap_bytes=width)


ENCODINGS: dict[str, Opener] = {
    "raw": open_raw,
    "raw-big-endian": open_raw_big_endian,
}


def open_stream(root: Path, ref: DataRef) -> ByteStream:
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

    random_access = True

    def __init__(
        self, stream: ByteStream, start: int, shape: tuple[int, ...], strides: tuple[int, ...], itemsize: int
    ) -> None:
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
        self.nbytes = _product(shape) * itemsize
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
    expected = 1
    for n, s in zip(reversed(shape), reversed(strides), strict=False):
        if n != 1 and s != expected:
            return False
        expected *= n
    return len(shape) == len(strides)


def _product(values: tuple[int, ...]) -> int:
    out = 1
    for v in values:
        out *= v
    return out
