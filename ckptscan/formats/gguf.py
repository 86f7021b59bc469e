"""GGUF (llama.cpp / ggml), versions 1 to 3, little- and big-endian.

Layout (https://github.com/ggml-org/ggml/blob/master/docs/gguf.md): magic ``GGUF``, version,
tensor count, key/value count, the key/value metadata, the tensor infos (name, dims in ggml ``ne``
order, ggml type, offset into the data section), padding to ``general.alignment`` (default 32),
then the data section. Version 1 used 32-bit lengths, counts and dims where later versions use 64.

The header is parsed through a read-only memory map, so only the pages holding metadata are ever
touched. Every declared count and length is checked against the bytes that remain before anything
is allocated or looped over. Large metadata arrays (a 150k-token vocabulary) are walked to find
their end but summarized, never turned into Python objects one by one.

Shapes are reported outermost-first, like every other format (the reverse of ggml's ``ne``); the
original ``ne`` is kept in the tensor's ``attrs``.
"""

from __future__ import annotations

import bisect
import itertools
import struct
from typing import Any

from ckptscan.dtypes import DType, lookup
from ckptscan.errors import LimitExceeded, MalformedFile, TruncatedFile, UnsupportedFeature
from ckptscan.inventory import FileRef, Finding, Inventory, Region, RegionKind, Severity, Tensor
from ckptscan.source import Head, Source

FORMAT = "gguf"
MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32
MAX_DIMS = 8  # ggml uses 4; a little headroom before calling a file hostile
MAX_NESTING = 4
ARRAY_MATERIALIZE_LIMIT = 64  # arrays up to this many items are kept whole in the metadata
ARRAY_PREVIEW = 8

# ggml type ids (ggml.h enum ggml_type); ids 4 and 5 (Q4_2, Q4_3) were removed before GGUF existed.
GGML_TYPES: dict[int, str] = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 6: "Q5_0", 7: "Q5_1", 8: "Q8_0", 9: "Q8_1",
    10: "Q2_K", 11: "Q3_K", 12: "Q4_K", 13: "Q5_K", 14: "Q6_K", 15: "Q8_K",
    16: "IQ2_XXS", 17: "IQ2_XS", 18: "IQ3_XXS", 19: "IQ1_S", 20: "IQ4_NL", 21: "IQ3_S", 22: "IQ2_S",
    23: "IQ4_XS", 24: "I8", 25: "I16", 26: "I32", 27: "I64", 28: "F64", 29: "IQ1_M", 30: "BF16",
    31: "Q4_0_4_4", 32: "Q4_0_4_8", 33: "Q4_0_8_8", 34: "TQ1_0", 35: "TQ2_0",
    36: "IQ4_NL_4_4", 37: "IQ4_NL_4_8", 38: "IQ4_NL_8_8", 39: "MXFP4", 40: "NVFP4", 41: "Q1_0",
}  # fmt: skip

# gguf value types: id -> (name, struct code or "" for variable-size)
VALUE_TYPES: dict[int, tuple[str, str]] = {
    0: ("uint8", "B"), 1: ("int8", "b"), 2: ("uint16", "H"), 3: ("int16", "h"), 4: ("uint32", "I"),
    5: ("int32", "i"), 6: ("float32", "f"), 7: ("bool", "?"), 8: ("string", ""), 9: ("array", ""),
    10: ("uint64", "Q"), 11: ("int64", "q"), 12: ("float64", "d"),
}  # fmt: skip
STRING, ARRAY = 8, 9


def sniff(head: Head) -> bool:
    return head.data.startswith(MAGIC)


def read(source: Source) -> Inventory:
    if source.size < 24:
        raise TruncatedFile(f"a GGUF header needs at least 24 bytes; the file has {source.size}")
    with source.mapped() as view:
        return _Parser(view, source).parse()


class _Parser:
    def __init__(self, buf: Any, source: Source) -> None:
        self.buf = buf
        self.size = len(buf)
        self.source = source
        # a remote source's buffer fetches what is sliced but has no buffer protocol for unpack_from
        self.in_place = not source.is_remote
        self.pos = 0
        self.order = "<"
        self.version = 0

    # -- primitive reads, each bounds-checked -----------------------------------------------------

    def need(self, n: int, what: str) -> None:
        if n < 0 or self.pos + n > self.size:
            raise TruncatedFile(
                f"{what} needs {n:,} bytes at offset {self.pos:,} but the file ends at {self.size:,}",
                where=f"offset {self.pos}",
            )

    def unpack(self, code: str, what: str) -> Any:
        fmt = struct.Struct(self.order + code)
        self.need(fmt.size, what)
        (value,) = self.unpack_at(fmt, self.pos)
        self.pos += fmt.size
        return value

    def unpack_at(self, fmt: struct.Struct, pos: int) -> tuple[Any, ...]:
        if self.in_place:
            return fmt.unpack_from(self.buf, pos)
        return fmt.unpack(self.buf[pos : pos + fmt.size])

    def count(self, what: str) -> int:
        """A length or count: 32-bit in GGUF v1, 64-bit later."""
        return int(self.unpack("I" if self.version == 1 else "Q", what))

    def string(self, what: str, strict: bool = True) -> str:
        start = self.pos
        n = self.count(f"{what} length")
        self.need(n, what)
        raw: bytes = self.buf[self.pos : self.pos + n]
        self.pos += n
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as e:
            if strict:
                raise MalformedFile(f"{what} is not valid UTF-8", where=f"offset {start}") from e
            return raw.decode("utf-8", errors="replace")

    # -- structure ---------------------------------------------------------------------------------

    def parse(self) -> Inventory:
        if self.buf[:4] != MAGIC:
            raise MalformedFile("missing GGUF magic", where="offset 0")
        self.pos = 4
        raw_version = self.unpack_at(struct.Struct("<I"), 4)[0]
        if raw_version & 0xFFFF == 0 and raw_version:
            self.order = ">"  # written for a big-endian machine
        self.version = self.unpack("I", "version")
        if self.version not in (1, 2, 3):
            raise UnsupportedFeature(f"GGUF version {self.version} (ckptscan reads versions 1 to 3)", where="offset 4")
        tensor_count = self.count("tensor count")
        kv_count = self.count("key/value count")
        header_end = self.pos
        # every key/value needs at least a length, a type and one byte; every tensor info 4 fields
        self._check_count(kv_count, 8 + 4 + 1 if self.version > 1 else 4 + 4 + 1, "key/value count")
        self._check_count(tensor_count, 8 + 4 + 4 + 8 if self.version > 1 else 4 + 4 + 4 + 8, "tensor count")

        kv: dict[str, Any] = {}
        kv_types: dict[str, str] = {}
        for i in range(kv_count):
            key = self.string(f"key #{i}")
            if key in kv:
                raise MalformedFile(f"metadata key {key!r} appears twice", where=f"key #{i}")
            value_type = self.unpack("I", f"type of {key!r}")
            kv[key], kv_types[key] = self.value(value_type, key, 0)
        kv_end = self.pos
        empty_key_warnings = ["a metadata key is the empty string"] if "" in kv else []

        alignment = kv.get("general.alignment", DEFAULT_ALIGNMENT)
        if "general.alignment" in kv and (
            kv_types["general.alignment"] != "uint32" or alignment == 0 or alignment & (alignment - 1)
        ):
            raise MalformedFile(f"general.alignment {alignment!r} is not a power-of-two uint32")

        infos = [self.tensor_info(i) for i in range(tensor_count)]
        infos_end = self.pos
        data_start = _align(infos_end, alignment)
        if data_start > self.size and tensor_count:
            raise TruncatedFile("the file ends before its data section begins", where=f"offset {infos_end}")

        tensors, regions, warnings = self.place_tensors(infos, data_start, alignment)
        warnings = empty_key_warnings + list(warnings)
        name = self.source.name
        regions[:0] = [
            Region(name, RegionKind.HEADER, 0, header_end, "magic, version and counts"),
            Region(name, RegionKind.METADATA, header_end, kv_end - header_end, f"{kv_count} key/value pairs"),
            Region(name, RegionKind.INDEX, kv_end, infos_end - kv_end, f"{tensor_count} tensor infos"),
        ]
        if min(data_start, self.size) > infos_end:
            padding = min(data_start, self.size) - infos_end
            regions.insert(3, Region(name, RegionKind.PADDING, infos_end, padding, "alignment before data"))

        metadata = {
            "gguf": {
                "version": self.version,
                "byte_order": "big" if self.order == ">" else "little",
                "alignment": alignment,
                "data_offset": data_start,
                "tensor_count": tensor_count,
                "kv_count": kv_count,
            },
            "kv": kv,
            "kv_types": kv_types,
        }
        return Inventory(
            format=FORMAT,
            path=str(self.source.path),
            root=str(self.source.root),
            files=(FileRef(name, self.size),),
            tensors=tuple(tensors),
            regions=tuple(regions),
            metadata=metadata,
            warnings=tuple(warnings),
            findings=tuple(template_findings(kv)),
        )

    def _check_count(self, declared: int, min_bytes_each: int, what: str) -> None:
        if declared * min_bytes_each > self.size - self.pos:
            raise LimitExceeded(
                f"{what} {declared:,} cannot fit in the {self.size - self.pos:,} bytes that remain",
                where=f"offset {self.pos}",
            )

    def value(self, value_type: int, key: str, depth: int) -> tuple[Any, str]:
        """A metadata value (summarized when it is a large array) and its type name."""
        if value_type == STRING:
            return self.string(f"value of {key!r}", strict=False), "string"
        if value_type == ARRAY:
            element_type = self.unpack("I", f"element type of {key!r}")
            n = self.count(f"length of {key!r}")
            return self.array(element_type, n, key, depth + 1), "array"
        spec = VALUE_TYPES.get(value_type)
        if spec is None:
            raise MalformedFile(f"metadata {key!r} has unknown value type {value_type}", where=f"offset {self.pos}")
        return self.unpack(spec[1], f"value of {key!r}"), spec[0]

    def array(self, element_type: int, n: int, key: str, depth: int) -> Any:
        if depth > MAX_NESTING:
            raise LimitExceeded(f"metadata {key!r} nests arrays deeper than {MAX_NESTING}")
        spec = VALUE_TYPES.get(element_type)
        if spec is None:
            raise MalformedFile(f"metadata array {key!r} has unknown element type {element_type}")
        type_name, code = spec
        if code:
            item = struct.Struct(self.order + code)
            self.need(n * item.size, f"array {key!r} of {n:,} {type_name}")
            keep = n if n <= ARRAY_MATERIALIZE_LIMIT else ARRAY_PREVIEW
            values = [self.unpack_at(item, self.pos + i * item.size)[0] for i in range(keep)]
            self.pos += n * item.size
        elif element_type == STRING:
            values = self.string_array(n, key)
        else:  # arrays of arrays: rare; walk them, keep only small ones
            self._check_count(n, 4 + (4 if self.version == 1 else 8), f"length of array {key!r}")
            values = []
            for i in range(n):
                inner_type = self.unpack("I", f"element type in {key!r}")
                inner_n = self.count(f"length in {key!r}")
                inner = self.array(inner_type, inner_n, key, depth + 1)
                if i < ARRAY_PREVIEW or n <= ARRAY_MATERIALIZE_LIMIT:
                    values.append(inner)
            type_name = "array"
        if n <= ARRAY_MATERIALIZE_LIMIT:
            return values
        return {"type": "array", "element_type": type_name, "count": n, "head": values[:ARRAY_PREVIEW]}

    def string_array(self, n: int, key: str) -> list[str]:
        """Walk ``n`` strings to find the array's end; decode only the first few."""
        length_size = 4 if self.version == 1 else 8
        self._check_count(n, length_size, f"length of array {key!r}")
        length_struct = struct.Struct(self.order + ("I" if self.version == 1 else "Q"))
        length = length_struct.unpack_from if self.in_place else self.remote_unpacker(length_struct)
        buf, pos, size = self.buf, self.pos, self.size
        keep = n if n <= ARRAY_MATERIALIZE_LIMIT else ARRAY_PREVIEW
        values = []
        for i in range(n):
            if pos + length_size > size:
                self.pos = pos
                self.need(length_size, f"string #{i} of {key!r}")
            (m,) = length(buf, pos)
            pos += length_size
            if pos + m > size:
                self.pos = pos
                self.need(m, f"string #{i} of {key!r}")
            if i < keep:
                values.append(buf[pos : pos + m].decode("utf-8", errors="replace"))
            pos += m
        self.pos = pos
        return values

    @staticmethod
    def remote_unpacker(fmt: struct.Struct) -> Any:
        def unpack_from(buf: Any, pos: int) -> tuple[Any, ...]:
            return fmt.unpack(buf[pos : pos + fmt.size])

        return unpack_from

    def tensor_info(self, i: int) -> _Info:
        name = self.string(f"name of tensor #{i}")
        n_dims = self.unpack("I", f"dims of {name!r}")
        if n_dims > MAX_DIMS:
            raise LimitExceeded(f"tensor {name!r} declares {n_dims} dimensions (at most {MAX_DIMS})")
        dim_code = "I" if self.version == 1 else "Q"
        ne = tuple(int(self.unpack(dim_code, f"dims of {name!r}")) for _ in range(n_dims))
        type_id = int(self.unpack("I", f"type of {name!r}"))
        offset = int(self.unpack("Q", f"offset of {name!r}"))
        return _Info(name, ne, type_id, offset)

    def place_tensors(
        self, infos: list[_Info], data_start: int, alignment: int
    ) -> tuple[list[Tensor], list[Region], list[str]]:
        warnings: list[str] = []
        seen: set[str] = set()
        sized: list[tuple[int, int, str]] = []  # (begin, end) relative to data_start, for overlap checks
        for index, info in enumerate(infos):
            name = info.name
            if name in seen:
                raise MalformedFile(f"tensor name {name!r} appears twice", where=f"tensor #{index}")
            seen.add(name)
            if info.offset % alignment:
                raise MalformedFile(
                    f"tensor {name!r} offset {info.offset:,} is not a multiple of the alignment {alignment}",
                    where=f"tensor {name!r}",
                )
            dtype = info.dtype
            if dtype.known:
                # a scalar (no dims) of a block type is not a whole block either
                row = info.ne[0] if info.ne else info.elements
                if row % dtype.block_elements:
                    raise MalformedFile(
                        f"tensor {name!r}: row of {row} is not a multiple of the {dtype.name} block "
                        f"({dtype.block_elements})",
                        where=f"tensor {name!r}",
                    )
                info.nbytes = dtype.nbytes(info.elements)
                sized.append((info.offset, info.offset + info.nbytes, name))

        data_len = self.size - data_start
        sized.sort()
        for (_, end_a, name_a), (begin_b, _, name_b) in itertools.pairwise(sized):
            if begin_b < end_a:
                raise MalformedFile(f"tensors {name_a!r} and {name_b!r} overlap", where=f"tensor {name_b!r}")
        if sized and max(end for _, end, _ in sized) > data_len:
            begin, end, name = max(sized, key=lambda s: s[1])
            raise TruncatedFile(
                f"tensor {name!r} needs data bytes {begin:,}..{end:,} but the data section has {max(data_len, 0):,}",
                where=f"tensor {name!r}",
            )
        starts = sorted({info.offset for info in infos} | {max(data_len, 0)})
        for info in infos:
            if info.dtype.known:
                continue
            at = bisect.bisect_right(starts, info.offset)  # the next tensor's start: O(log N), not a scan
            following = starts[at] if at < len(starts) else info.offset
            info.nbytes = max(0, following - info.offset)
            warnings.append(
                f"tensor {info.name!r}: unknown ggml type {info.type_id}; its size ({info.nbytes:,} bytes) is "
                "taken from the layout and may include padding"
            )

        tensors = [
            Tensor(
                name=info.name,
                shape=tuple(reversed(info.ne)),
                dtype=info.dtype,
                elements=info.elements,
                nbytes=info.nbytes,
                file=self.source.name,
                offset=data_start + info.offset,
                native_dtype=info.dtype.name,
                encoding="raw" if self.order == "<" else "raw-big-endian",
                attrs={"ggml_ne": list(info.ne), "ggml_type": info.type_id},
            )
            for info in infos
        ]
        return tensors, self.gap_regions(tensors, data_start, alignment), warnings

    def gap_regions(self, tensors: list[Tensor], data_start: int, alignment: int) -> list[Region]:
        """Bytes of the data section between and after tensors: alignment padding, or unreferenced."""
        name = self.source.name
        regions = []
        position = data_start
        for t in sorted(tensors, key=lambda t: t.offset or 0):
            begin = t.offset or 0
            if begin > position:
                kind = RegionKind.PADDING if begin - position < alignment else RegionKind.UNREFERENCED
                regions.append(Region(name, kind, position, begin - position, "between tensors"))
            position = max(position, begin + t.nbytes)
        if self.size > position and data_start <= self.size:
            tail = self.size - position
            kind = RegionKind.PADDING if tail < alignment else RegionKind.UNREFERENCED
            regions.append(Region(name, kind, position, tail, "after the last tensor"))
        return regions


class _Info:
    """A tensor info as declared, before its size is settled."""

    __slots__ = ("dtype", "elements", "name", "nbytes", "ne", "offset", "type_id")

    def __init__(self, name: str, ne: tuple[int, ...], type_id: int, offset: int) -> None:
        self.name = name
        self.ne = ne
        self.type_id = type_id
        self.offset = offset
        self.dtype = dtype_for(type_id)
        elements = 1
        for d in ne:
            elements *= d
        self.elements = elements
        self.nbytes = 0


def _align(position: int, alignment: int) -> int:
    return position + (-position % alignment)


def dtype_for(type_id: int) -> DType:
    return lookup(GGML_TYPES.get(type_id, f"GGML_TYPE_{type_id}"))


# Jinja chat templates are rendered by llama.cpp bindings and transformers; a sandbox escape through
# Python attributes runs code (CVE-2024-34359, llama-cpp-python). These spellings reach them.
_TEMPLATE_ESCAPES = ("__class__", "__subclasses__", "__globals__", "__builtins__", "__import__", "__mro__",
                     "__base__", "__init__", "__getattribute__", "os.popen", "os.system", "subprocess")  # fmt: skip


def template_findings(kv: dict[str, Any]) -> list[Finding]:
    """A chat template (``tokenizer.chat_template*``) reaching Python internals: a template injection."""
    found = []
    for key, value in kv.items():
        if not (key.startswith("tokenizer.chat_template") and isinstance(value, str)):
            continue
        hits = sorted({escape for escape in _TEMPLATE_ESCAPES if escape in value})
        if hits:
            shown = key.encode("unicode_escape").decode("ascii")
            found.append(
                Finding(
                    "gguf-template-injection",
                    Severity.CRITICAL,
                    f"{shown} reaches Python internals ({', '.join(hits)}): rendering it can run code",
                    shown,
                    subject=hits[0],
                )
            )
    return found
