"""safetensors: an 8-byte little-endian header length, a JSON header, then the tensor bytes.

Validation follows the format's README and its Rust reader (``Metadata::validate``): header at most
100 MB of UTF-8 JSON object; ``__metadata__`` a string-to-string map; every tensor has a dtype, a
shape of non-negative integers and ``data_offsets`` [begin, end]; sorted by offset the tensors tile
the data section exactly (no gap, no overlap) and the data section ends at the end of the file;
each tensor's byte length equals elements x dtype bits / 8, on a byte boundary. Tensor names must be
unique (the Rust reader would silently keep one of two duplicates; we refuse).
"""

from __future__ import annotations

import json
import re
from typing import Any

from ckptscan.dtypes import DType, DTypeKind, lookup
from ckptscan.errors import LimitExceeded, MalformedFile, TruncatedFile
from ckptscan.inventory import FileRef, Inventory, Region, RegionKind, Tensor
from ckptscan.source import Head, Source

FORMAT = "safetensors"
MAX_HEADER_BYTES = 100_000_000  # the Rust reader's MAX_HEADER_SIZE
LENGTH_PREFIX = 8


_TEXT_BYTES = re.compile(rb"[\t\n\r\x20-\x7e]*")


def sniff(head: Head) -> bool:
    data = head.data
    if len(data) < LENGTH_PREFIX + 2:
        return False
    # A JSON object right after the length is the signature; an absurd length is then the file's
    # error to report (read() does), not a reason to call it unrecognized.
    length = int.from_bytes(data[:LENGTH_PREFIX], "little")
    if _TEXT_BYTES.fullmatch(data[:LENGTH_PREFIX]):
        # eight printable bytes are text (a Python or JSON file whose ninth byte is '{'), not a
        # length: any real header length has zero high bytes
        return False
    return length >= 2 and data[LENGTH_PREFIX:].lstrip(b" \t\r\n")[:1] == b"{"


def read(source: Source) -> Inventory:
    header_len = int.from_bytes(source.read_at(0, LENGTH_PREFIX, "header length"), "little")
    if header_len > MAX_HEADER_BYTES:
        raise LimitExceeded(
            f"header length {header_len:,} exceeds the format's limit of {MAX_HEADER_BYTES:,} bytes",
            where="offset 0",
        )
    data_start = LENGTH_PREFIX + header_len
    if data_start > source.size:
        raise TruncatedFile(
            f"header length {header_len:,} runs past the end of the file ({source.size:,} bytes)",
            where="offset 0",
        )
    raw = source.read_at(LENGTH_PREFIX, header_len, "header")
    header = parse_header(raw)
    metadata = header.pop("__metadata__", None)
    if metadata is not None and not (isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values())):
        raise MalformedFile("__metadata__ must map strings to strings", where="header __metadata__")

    entries: list[tuple[str, str, tuple[int, ...], int, int]] = []
    warnings: list[str] = []
    for name, info in header.items():
        native, shape, begin, end = _tensor_info(name, info)
        entries.append((name, native, shape, begin, end))

    data_len = _check_tiling(entries, header_len)
    if data_start + data_len > source.size:
        raise TruncatedFile(
            f"the header describes {data_len:,} bytes of tensor data but only {source.size - data_start:,} follow it",
            where=f"offset {data_start}",
        )
    if data_start + data_len != source.size:
        raise MalformedFile(
            f"{source.size - data_start - data_len:,} bytes after the last tensor are not covered by "
            "the header (the data section must end at the end of the file)",
            where=f"offset {data_start + data_len}",
        )

    tensors = []
    for name, native, shape, begin, end in entries:
        dtype = _dtype(native)
        elements = _product(shape)
        if not dtype.known:
            shown = native.encode("unicode_escape").decode("ascii")
            warnings.append(f"tensor {name!r}: unknown dtype {shown!r} (not a safetensors dtype); size taken from "
                            "its offsets")  # fmt: skip
        tensors.append(
            Tensor(
                name=name,
                shape=shape,
                dtype=dtype,
                elements=elements,
                nbytes=end - begin,
                file=source.name,
                offset=data_start + begin,
                native_dtype=native,
            )
        )

    padding = len(raw) - len(raw.rstrip(b" "))
    regions = [
        Region(source.name, RegionKind.HEADER, 0, LENGTH_PREFIX, "header length"),
        Region(source.name, RegionKind.INDEX, LENGTH_PREFIX, header_len - padding, "JSON header"),
    ]
    if padding:
        regions.append(Region(source.name, RegionKind.PADDING, data_start - padding, padding, "header padding"))

    return Inventory(
        format=FORMAT,
        path=str(source.path),
        root=str(source.root),
        files=(FileRef(source.name, source.size),),
        tensors=tuple(tensors),
        regions=tuple(regions),
        metadata={"__metadata__": metadata} if metadata is not None else {},
        warnings=tuple(warnings),
    )


def parse_header(raw: bytes) -> dict[str, Any]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise MalformedFile(f"header is not valid UTF-8 ({e.reason})", where=f"header byte {e.start}") from e
    try:
        header = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constants)
    except json.JSONDecodeError as e:
        raise MalformedFile(
            f"header is not valid JSON: {e.msg}", where=f"header line {e.lineno} column {e.colno}"
        ) from e
    except RecursionError as e:
        raise LimitExceeded("header JSON is nested too deeply", where="header") from e
    if not isinstance(header, dict):
        raise MalformedFile(f"header must be a JSON object, not {type(header).__name__}", where="header")
    return header


def _tensor_info(name: str, info: Any) -> tuple[str, tuple[int, ...], int, int]:
    where = f"header tensor {name!r}"
    if not isinstance(info, dict):
        raise MalformedFile(f"tensor {name!r} must be an object", where=where)
    dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
    if not isinstance(dtype, str):
        raise MalformedFile(f"tensor {name!r} has no dtype string", where=where)
    if not isinstance(shape, list) or not all(_is_count(d) for d in shape):
        raise MalformedFile(f"tensor {name!r} shape must be a list of non-negative integers", where=where)
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_count(o) for o in offsets)):
        raise MalformedFile(f"tensor {name!r} data_offsets must be two non-negative integers", where=where)
    begin, end = offsets
    if end < begin:
        raise MalformedFile(f"tensor {name!r} data_offsets [{begin}, {end}] end before they begin", where=where)
    return dtype, tuple(shape), begin, end


def _check_tiling(entries: list[tuple[str, str, tuple[int, ...], int, int]], header_len: int) -> int:
    """Tensors sorted by offset must cover [0, data_len) exactly; returns data_len."""
    position = 0
    for name, dtype_name, shape, begin, end in sorted(entries, key=lambda e: (e[3], e[4])):
        where = f"header tensor {name!r}"
        if begin != position:
            kind = "overlaps the previous tensor" if begin < position else f"leaves a gap after byte {position}"
            raise MalformedFile(f"tensor {name!r} data_offsets [{begin}, {end}] {kind}", where=where)
        dtype = _dtype(dtype_name)
        if dtype.known:
            elements = _product(shape)
            try:
                expected = dtype.nbytes(elements)
            except ValueError as e:
                raise MalformedFile(f"tensor {name!r}: {e}", where=where) from e
            if expected != end - begin:
                raise MalformedFile(
                    f"tensor {name!r} is {dtype_name} {list(shape)} = {expected:,} bytes but its "
                    f"data_offsets span {end - begin:,}",
                    where=where,
                )
        position = end
    return position


def _product(shape: tuple[int, ...]) -> int:
    total = 1
    for dim in shape:
        total *= dim
    return total


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise MalformedFile(f"name {key!r} appears twice in the header", where=f"header key {key!r}")
        result[key] = value
    return result


def _no_constants(name: str) -> Any:
    raise MalformedFile(f"header contains {name}, which is not JSON", where="header")


# the dtypes of the safetensors specification (the Rust crate's Dtype enum, 0.8: with the FNUZ float8s); our table
# knows more (F128, GGUF block types...), which a safetensors file must not claim
SAFETENSORS_DTYPES = frozenset(
    {"BOOL", "F4", "F6_E2M3", "F6_E3M2", "U8", "I8", "F8_E5M2", "F8_E4M3", "F8_E8M0", "I16", "U16", "F16",
     "BF16", "I32", "U32", "F32", "C64", "F64", "I64", "U64", "F8_E4M3FNUZ", "F8_E5M2FNUZ"}
)  # fmt: skip


def _dtype(native: str) -> DType:
    """The dtype, or an unknown one (no size, no reduction what-ifs) when safetensors has no such dtype."""
    if native in SAFETENSORS_DTYPES:
        return lookup(native)
    return DType(native, 1, 0, DTypeKind.UNKNOWN)
