"""NumPy ``.npy``: a magic string, a version, a header length, a Python dict literal, then the data.

Layout (``numpy.lib.format``): ``\\x93NUMPY``, major and minor version bytes, the header length
(2 bytes little-endian in version 1.0, 4 bytes in 2.0 and 3.0), then the header: a Python literal
``{'descr': ..., 'fortran_order': ..., 'shape': (...)}`` padded with spaces and a newline so that
the data starts aligned (64 bytes in current NumPy). Version 3.0 headers are UTF-8, earlier ones
Latin-1. The data follows immediately: ``prod(shape) * itemsize`` bytes in C or Fortran order.

The header is parsed here, never with NumPy: its length is capped before it is read, it must be a
literal (``ast.literal_eval``, which builds constants and containers and calls nothing), a dict
with exactly the three keys NumPy writes, a shape of non-negative integers and a dtype descriptor
(a type string, or a list of fields for structured dtypes). The data must fit in the file.

Object arrays (``descr`` ``'|O'``, or a structured dtype with an object field) are stored as a
pickle after the header: loading them runs the pickle, so they are reported as a HIGH finding and
their bytes as a pickle region; they are never unpickled.

The descriptor mapping (:func:`dtype_from_descr`) is shared with the HDF5 reader, which sees NumPy
dtypes through h5py.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from typing import Any

from ckptscan.dtypes import DType, DTypeKind, fixed_width, lookup
from ckptscan.errors import CkptscanError, LimitExceeded, MalformedFile, TruncatedFile, UnsupportedFeature
from ckptscan.inventory import FileRef, Finding, Inventory, Region, RegionKind, Severity, Tensor
from ckptscan.source import Head, Source

FORMAT = "npy"
MAGIC = b"\x93NUMPY"
MAX_HEADER_BYTES = 1 << 20  # numpy itself refuses more than 10,000 bytes by default
MAX_DIMS = 64  # NPY_MAXDIMS in NumPy 2
MAX_FIELD_DEPTH = 32

OBJECT = DType("OBJECT", 1, 0, DTypeKind.OBJECT)
STRING = DType("STRING", 1, 0, DTypeKind.STRING)

_FIXED: dict[str, str] = {
    "b1": "BOOL",
    "i1": "I8", "i2": "I16", "i4": "I32", "i8": "I64",
    "u1": "U8", "u2": "U16", "u4": "U32", "u8": "U64",
    "f2": "F16", "f4": "F32", "f8": "F64",
    "c8": "C64", "c16": "C128", "c32": "C256",
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class NpyHeader:
    version: tuple[int, int]
    prefix_bytes: int  # magic + version + length field
    header_bytes: int  # the dict literal with its padding
    descr: Any
    fortran_order: bool
    shape: tuple[int, ...]
    dtype: DType
    big_endian: bool
    has_objects: bool

    @property
    def data_offset(self) -> int:
        return self.prefix_bytes + self.header_bytes

    @property
    def elements(self) -> int:
        total = 1
        for dim in self.shape:
            total *= dim
        return total

    @property
    def data_bytes(self) -> int | None:
        """Exact bytes of the array data; None for object arrays (a pickle of any length)."""
        if self.has_objects or not self.dtype.known:
            return None
        return self.dtype.nbytes(self.elements)

    @property
    def strides(self) -> tuple[int, ...] | None:
        """Element strides for Fortran order (column-major); None for C order."""
        if not self.fortran_order or len(self.shape) < 2:
            return None
        strides, step = [], 1
        for dim in self.shape:
            strides.append(step)
            step *= dim
        return tuple(strides)


def sniff(head: Head) -> bool:
    return head.data.startswith(MAGIC)


def read(source: Source) -> Inventory:
    prefix = source.read_up_to(0, 12)
    header = parse_header(prefix, lambda offset, length: source.read_at(offset, length, ".npy header"))
    tensor, regions, findings = describe(header, source.name, data_start=0, available=source.size, name="array")
    if header.has_objects:
        from ckptscan.formats.torch.unpickler import SourceStream

        findings += object_pickle_findings(SourceStream(source, header.data_offset, source.size), "array")
    return Inventory(
        format=FORMAT,
        path=str(source.path),
        root=str(source.root),
        files=(FileRef(source.name, source.size),),
        tensors=(tensor,),
        regions=tuple(regions),
        metadata={"npy_version": f"{header.version[0]}.{header.version[1]}", "descr": _jsonable(header.descr)},
        findings=tuple(findings),
    )


def object_pickle_findings(stream: Any, name: str) -> list[Finding]:
    """The globals an object array's pickle names (what loading it with pickles allowed would import):
    listed by the restricted scanner, never imported or run."""
    from ckptscan.formats.torch.safety import findings_for
    from ckptscan.formats.torch.unpickler import Unpickler

    unpickler = Unpickler(label=f"{name} object pickle", stream=stream)
    found: list[Finding] = []
    try:
        unpickler.load()
    except CkptscanError as e:
        found.append(Finding("pickle-unreadable", Severity.MEDIUM, f"{name}: object pickle could not be read: {e.what}",
                             name))  # fmt: skip
    return findings_for(unpickler.all_globals(), kind=f"{name} object pickle") + found


def describe(
    header: NpyHeader,
    file: str,
    *,
    data_start: int | None,
    available: int,
    name: str,
    attrs: dict[str, Any] | None = None,
    where: str = "",
) -> tuple[Tensor, list[Region], list[Finding]]:
    """The tensor, regions and findings of one .npy stream of ``available`` bytes.

    ``data_start`` is the absolute position of the stream in ``file``; None when the stream is not
    addressable in place (a deflated zip member), in which case no regions are produced.
    """
    data_bytes = header.data_bytes
    if header.data_offset > available:
        raise TruncatedFile(
            f"the .npy header ends at {header.data_offset:,} but only {available:,} bytes are there", where=where
        )
    if data_bytes is not None and header.data_offset + data_bytes > available:
        raise TruncatedFile(
            f"{name}: shape {list(header.shape)} of {header.dtype.name} needs {data_bytes:,} bytes of data "
            f"but only {available - header.data_offset:,} follow the header",
            where=where or f"offset {header.data_offset}",
        )
    findings: list[Finding] = []
    stored = data_bytes if data_bytes is not None else available - header.data_offset
    if header.has_objects:
        findings.append(
            Finding(
                "numpy-object-array",
                Severity.HIGH,
                f"{name} is an object array: its data is a pickle that runs code when loaded "
                "(NumPy loads it only with pickling allowed); not unpickled",
                where or name,
            )
        )
    tensor_attrs = dict(attrs or {})
    if header.fortran_order:
        tensor_attrs["fortran_order"] = True
    if header.big_endian:
        tensor_attrs["byte_order"] = "big"
    if header.has_objects:
        tensor_attrs["pickled"] = True
    encoding = "raw-big-endian" if header.big_endian else "raw"
    if header.has_objects:
        encoding = "pickle"
    if data_start is None:
        encoding = "zip-deflated"
    tensor = Tensor(
        name=name,
        shape=header.shape,
        dtype=header.dtype,
        elements=header.elements,
        nbytes=data_bytes if data_bytes is not None else stored,
        file=file,
        offset=None if data_start is None or header.has_objects else data_start + header.data_offset,
        strides=header.strides,
        native_dtype=_native_name(header.descr),
        encoding=encoding,
        attrs=tensor_attrs,
    )
    regions: list[Region] = []
    if data_start is not None:
        text_end = header.prefix_bytes + header.header_bytes
        regions.append(Region(file, RegionKind.HEADER, data_start, header.prefix_bytes, f"{name}: .npy magic"))
        regions.append(
            Region(
                file, RegionKind.METADATA, data_start + header.prefix_bytes, header.header_bytes, f"{name}: .npy header"
            )
        )
        if header.has_objects:
            regions.append(Region(file, RegionKind.PICKLE, data_start + text_end, stored, f"{name}: pickled objects"))
        elif header.data_offset + stored < available:
            start = header.data_offset + stored
            regions.append(
                Region(file, RegionKind.UNREFERENCED, data_start + start, available - start, f"{name}: after the data")
            )
    return tensor, regions, findings


def parse_header(prefix: bytes, read_at: Any) -> NpyHeader:
    """Parse the header from the first 12 bytes, calling ``read_at(offset, length)`` for the dict text."""
    if not prefix.startswith(MAGIC) or len(prefix) < 10:
        raise MalformedFile("no .npy magic (\\x93NUMPY) at the start", where="offset 0")
    version = (prefix[6], prefix[7])
    if version == (1, 0):
        length_bytes, encoding = 2, "latin1"
    elif version in ((2, 0), (3, 0)):
        length_bytes, encoding = 4, "utf-8" if version == (3, 0) else "latin1"
    else:
        raise UnsupportedFeature(f".npy format version {version[0]}.{version[1]} is not known", where="offset 6")
    if len(prefix) < 8 + length_bytes:
        raise TruncatedFile(".npy file ends inside its header length", where="offset 8")
    header_len = int.from_bytes(prefix[8 : 8 + length_bytes], "little")
    if header_len > MAX_HEADER_BYTES:
        raise LimitExceeded(
            f".npy header of {header_len:,} bytes exceeds the limit of {MAX_HEADER_BYTES:,}", where="offset 8"
        )
    prefix_bytes = 8 + length_bytes
    raw = read_at(prefix_bytes, header_len)
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError as e:
        raise MalformedFile(f".npy header is not valid {encoding} ({e.reason})", where=f"offset {prefix_bytes}") from e
    try:
        value = ast.literal_eval(text)  # literals only: nothing is called or imported
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as e:
        raise MalformedFile(
            f".npy header is not a Python literal ({type(e).__name__})", where=f"offset {prefix_bytes}"
        ) from e
    descr, fortran_order, shape = _check_header_dict(value)
    dtype, big_endian, has_objects = dtype_from_descr(descr)
    return NpyHeader(version, prefix_bytes, header_len, descr, fortran_order, shape, dtype, big_endian, has_objects)


def _check_header_dict(value: Any) -> tuple[Any, bool, tuple[int, ...]]:
    where = "header"
    if not isinstance(value, dict) or set(value) != {"descr", "fortran_order", "shape"}:
        raise MalformedFile(".npy header must be a dict with exactly descr, fortran_order and shape", where=where)
    shape, fortran_order = value["shape"], value["fortran_order"]
    if not isinstance(fortran_order, bool):
        raise MalformedFile(".npy header fortran_order must be True or False", where=where)
    if not isinstance(shape, tuple) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise MalformedFile(".npy header shape must be a tuple of non-negative integers", where=where)
    if len(shape) > MAX_DIMS:
        raise LimitExceeded(f".npy shape has {len(shape)} dimensions; the limit is {MAX_DIMS}", where=where)
    return value["descr"], fortran_order, shape


def dtype_from_descr(descr: Any) -> tuple[DType, bool, bool]:
    """(dtype, big-endian?, holds Python objects?) for a NumPy array-interface descriptor.

    ``descr`` is a type string (``'<f4'``, ``'|S16'``, ``'<M8[ns]'``, ``'|O'``) or a list of
    ``(name, descr[, shape])`` fields; structured dtypes become ``RECORD<n>`` of their item size.
    """
    if isinstance(descr, str):
        return _scalar_descr(descr)
    if isinstance(descr, list):
        itemsize, has_objects = _record_size(descr, 0)
        if has_objects:
            return OBJECT, False, True
        return fixed_width(f"RECORD{itemsize}", itemsize * 8, DTypeKind.UNKNOWN), False, False
    raise MalformedFile(f".npy descr must be a string or a list of fields, not {type(descr).__name__}", where="descr")


def _scalar_descr(descr: str) -> tuple[DType, bool, bool]:
    order, body = (descr[0], descr[1:]) if descr[:1] in ("<", ">", "|", "=") else ("|", descr)
    big_endian = order == ">"
    unit = ""
    if body.endswith("]") and "[" in body:
        body, unit = body[: body.index("[")], body[body.index("[") :]
    kind, digits = body[:1], body[1:]
    if kind == "O":
        return OBJECT, False, True
    if not digits.isdigit() or not digits.isascii():
        raise MalformedFile(f"unknown dtype descriptor {descr!r}", where="descr")
    size = int(digits)
    if size > 1 << 31:
        raise LimitExceeded(f"dtype {descr!r} has an item size of {size:,} bytes", where="descr")
    known = _FIXED.get(f"{kind}{size}")
    if known is not None:
        return lookup(known), big_endian and size > 1, False
    if kind == "S" or kind == "a":
        return fixed_width(f"S{size}", size * 8, DTypeKind.STRING), False, False
    if kind == "U":
        return fixed_width(f"UNICODE{size}", size * 32, DTypeKind.STRING), big_endian, False
    if kind == "V":
        return fixed_width(f"RECORD{size}", size * 8, DTypeKind.UNKNOWN), False, False
    if kind in ("M", "m") and size == 8:
        name = ("DATETIME64" if kind == "M" else "TIMEDELTA64") + unit
        return fixed_width(name, 64, DTypeKind.INT), big_endian, False
    if kind == "f":  # x87 extended precision, padded to 12 or 16 bytes
        return fixed_width(f"LONGDOUBLE{size * 8}", size * 8, DTypeKind.FLOAT), big_endian, False
    if kind == "c":
        return fixed_width(f"CLONGDOUBLE{size * 8}", size * 8, DTypeKind.COMPLEX), big_endian, False
    raise MalformedFile(f"unknown dtype descriptor {descr!r}", where="descr")


def _record_size(fields: list[Any], depth: int) -> tuple[int, bool]:
    if depth > MAX_FIELD_DEPTH:
        raise LimitExceeded("structured dtype nests too deeply", where="descr")
    total, has_objects = 0, False
    for field in fields:
        if not isinstance(field, tuple) or len(field) not in (2, 3):
            raise MalformedFile(f"structured dtype field {field!r} is not (name, descr[, shape])", where="descr")
        descr = field[1]
        if isinstance(descr, list):
            size, objects = _record_size(descr, depth + 1)
        elif isinstance(descr, str):
            dtype, _, objects = _scalar_descr(descr)
            if not objects and not dtype.known:  # e.g. '<g0': a zero-width long double (fuzzing, issue 13)
                raise MalformedFile(f"structured dtype field {field[0]!r} has no size ({descr!r})", where="descr")
            size = 8 if objects else dtype.nbytes(1)
        else:
            raise MalformedFile(f"structured dtype field {field[0]!r} has no descriptor", where="descr")
        count = 1
        if len(field) == 3:
            shape = field[2] if isinstance(field[2], tuple) else (field[2],)
            if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
                raise MalformedFile(f"structured dtype field {field[0]!r} has a bad shape", where="descr")
            for dim in shape:
                count *= dim
        total += size * count
        has_objects = has_objects or objects
    return total, has_objects


def _native_name(descr: Any) -> str:
    return descr if isinstance(descr, str) else repr(descr)


def _jsonable(descr: Any) -> Any:
    if isinstance(descr, (list, tuple)):
        return [_jsonable(d) for d in descr]
    return descr
