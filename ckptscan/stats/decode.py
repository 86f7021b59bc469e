"""Turning stored bytes into numbers: one decoder per dtype, numpy only, no per-element Python.

Every decoder maps a run of whole *granules* (the smallest byte-aligned group of values: one value
for byte-wide types, two for 4-bit types, one block for block-quantized types) to a 1-D float array
(float32, or float64 where float32 would round: F64, 32- and 64-bit integers):

* F32/F64 are viewed in place; F16 and 8/16-bit integers are widened; BF16 is its upper half
  (``uint16 << 16`` viewed as float32, exact).
* 8-bit floats (E4M3FN, E5M2, their FNUZ variants, E8M0) and 4-bit values (F4 E2M1, I4, U4) go
  through lookup tables built here from the bit layouts (checked against ml_dtypes in the tests).
  Sub-byte values are packed first-value-in-the-low-bits (PyTorch ``float4_e2m1fn_x2``, ONNX INT4).
* GGUF block-quantized types are dequantized by ``gguf.quants`` (the llama.cpp project's own
  numpy port), imported only when such a tensor is read.

Types with no decoder (complex, 6-bit floats whose packing no standard fixes, unknown types) are
reported as skipped with the reason, never guessed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

from ckptscan.dtypes import DType, DTypeKind

if TYPE_CHECKING:
    import numpy as np

    from ckptscan.stats.kernel import Workspace

DecodeFn = Callable[[memoryview, "Workspace"], "np.ndarray"]


@dataclass(frozen=True, slots=True)
class Decoder:
    """How to turn one dtype's stored bytes into numbers: its granule size and decode function."""

    dtype: str
    granule_elements: int
    granule_bytes: int
    numeric: str  # "float" (quantization and near-zero apply), "int" or "bool"
    wide: bool  # decodes to float64
    decode: DecodeFn

    def elements_to_bytes(self, elements: int) -> int:
        return elements // self.granule_elements * self.granule_bytes

    def bytes_for(self, elements: int) -> int:
        """Bytes holding ``elements`` values: a partly filled last byte counts (packed sub-byte types)."""
        return -(-elements // self.granule_elements) * self.granule_bytes


class NoDecoder(Exception):
    """This dtype's values cannot be computed; the message says why."""


def decoder_for(dtype: DType, attrs: Mapping[str, Any] | None = None) -> Decoder:
    name = dtype.name
    if name in _TORCH_QUANTIZED:
        return _torch_quantized(dtype, attrs or {})
    if name in _SCALARS:
        bits, numeric, wide, make = _SCALARS[name]
        return Decoder(name, 1, bits // 8, numeric, wide, make())
    if name in _PACKED:
        per_byte, numeric = _PACKED[name]
        return Decoder(name, per_byte, 1, numeric, False, _packed(name, per_byte))
    if dtype.kind is DTypeKind.QUANTIZED:
        return _ggml_decoder(dtype)
    if dtype.kind is DTypeKind.COMPLEX:
        raise NoDecoder(f"{name} is complex; value statistics cover real types only")
    if name in ("F6_E2M3", "F6_E3M2"):
        raise NoDecoder(f"{name}: no standard fixes how 6-bit values are packed into bytes")
    if dtype.kind in (DTypeKind.STRING, DTypeKind.OBJECT) or name.startswith(("RECORD", "S", "U")):
        raise NoDecoder(f"{name} values are not numbers")
    if not dtype.known:
        raise NoDecoder(f"dtype {name} is not known")
    raise NoDecoder(f"no decoder for {name}")


# -- scalar types ----------------------------------------------------------------------------------


def _view(np_name: str) -> Callable[[], DecodeFn]:
    def make() -> DecodeFn:
        import numpy as np

        dtype = np.dtype(np_name)

        def decode(raw: memoryview, ws: Workspace) -> np.ndarray:
            return np.frombuffer(raw, dtype=dtype)

        return decode

    return make


def _widen(np_name: str, to: str) -> Callable[[], DecodeFn]:
    def make() -> DecodeFn:
        import numpy as np

        source, target = np.dtype(np_name), np.dtype(to)

        def decode(raw: memoryview, ws: Workspace) -> np.ndarray:
            values = np.frombuffer(raw, dtype=source)
            out = ws.array("decoded", values.size, target)
            np.copyto(out, values, casting="unsafe")
            return out

        return decode

    return make


def _bf16() -> DecodeFn:
    import numpy as np

    def decode(raw: memoryview, ws: Workspace) -> np.ndarray:
        halves = np.frombuffer(raw, dtype=np.uint16)
        out = ws.array("decoded", halves.size, np.dtype(np.uint32))
        np.left_shift(halves, 16, out=out, dtype=np.uint32)
        return out.view(np.float32)

    return decode


def _bool() -> DecodeFn:
    import numpy as np

    def decode(raw: memoryview, ws: Workspace) -> np.ndarray:
        values = np.frombuffer(raw, dtype=np.uint8)
        out = ws.array("decoded", values.size, np.dtype(np.float32))
        np.minimum(values, 1, out=out, dtype=np.float32)  # any non-zero byte is True
        return out

    return decode


def _table8(name: str) -> Callable[[], DecodeFn]:
    def make() -> DecodeFn:
        import numpy as np

        table = np.array(byte_table(name), dtype=np.float32)

        def decode(raw: memoryview, ws: Workspace) -> np.ndarray:
            codes = np.frombuffer(raw, dtype=np.uint8)
            out = ws.array("decoded", codes.size, np.dtype(np.float32))
            np.take(table, codes, out=out)
            return out

        return decode

    return make


_SCALARS: dict[str, tuple[int, str, bool, Callable[[], DecodeFn]]] = {
    "F32": (32, "float", False, _view("<f4")),
    "F64": (64, "float", True, _view("<f8")),
    "F16": (16, "float", False, _widen("<f2", "f4")),
    "BF16": (16, "float", False, _bf16),
    "F8_E4M3": (8, "float", False, _table8("F8_E4M3")),
    "F8_E5M2": (8, "float", False, _table8("F8_E5M2")),
    "F8_E4M3FNUZ": (8, "float", False, _table8("F8_E4M3FNUZ")),
    "F8_E5M2FNUZ": (8, "float", False, _table8("F8_E5M2FNUZ")),
    "F8_E8M0": (8, "float", False, _table8("F8_E8M0")),
    "I8": (8, "int", False, _widen("i1", "f4")),
    "U8": (8, "int", False, _widen("u1", "f4")),
    "I16": (16, "int", False, _widen("<i2", "f4")),
    "U16": (16, "int", False, _widen("<u2", "f4")),
    "I32": (32, "int", True, _widen("<i4", "f8")),
    "U32": (32, "int", True, _widen("<u4", "f8")),
    "I64": (64, "int", True, _widen("<i8", "f8")),
    "U64": (64, "int", True, _widen("<u8", "f8")),
    "BOOL": (8, "bool", False, _bool),
}


# -- minifloat and sub-byte tables -----------------------------------------------------------------

# (exponent bits, mantissa bits, bias, has sign, special values): "ieee" = all-ones exponent is
# inf/NaN; "fn" = only all-ones exponent and mantissa is NaN; "fnuz" = the negative-zero code is the
# only NaN; "none" = no special values.
_MINIFLOATS: dict[str, tuple[int, int, int, bool, str]] = {
    "F8_E4M3": (4, 3, 7, True, "fn"),
    "F8_E5M2": (5, 2, 15, True, "ieee"),
    "F8_E4M3FNUZ": (4, 3, 8, True, "fnuz"),
    "F8_E5M2FNUZ": (5, 2, 16, True, "fnuz"),
    "F8_E8M0": (8, 0, 127, False, "e8m0"),
    "F4": (2, 1, 1, True, "none"),
}


@cache
def byte_table(name: str) -> tuple[float, ...]:
    """The value of every code of a minifloat type, indexed by the code."""
    ebits, mbits, bias, signed, special = _MINIFLOATS[name]
    width = ebits + mbits + (1 if signed else 0)
    values = []
    for code in range(1 << width):
        sign = -1.0 if signed and code >> (width - 1) & 1 else 1.0
        exponent = code >> mbits & ((1 << ebits) - 1)
        mantissa = code & ((1 << mbits) - 1)
        top = (1 << ebits) - 1
        if special == "ieee" and exponent == top:
            values.append(sign * math.inf if mantissa == 0 else math.nan)
        elif (special == "fn" and exponent == top and mantissa == (1 << mbits) - 1) or (
            special == "fnuz" and code == 1 << (width - 1)
        ):
            values.append(math.nan)
        elif special == "e8m0":
            values.append(math.nan if code == 0xFF else math.ldexp(1.0, code - bias))
        elif exponent == 0:
            values.append(sign * math.ldexp(mantissa, 1 - bias - mbits))
        else:
            values.append(sign * math.ldexp((1 << mbits) + mantissa, exponent - bias - mbits))
    return tuple(values)


def _nibble_table(name: str) -> tuple[float, ...]:
    if name == "F4":
        return byte_table("F4")
    if name == "I4":
        return tuple(float(v - 16 if v >= 8 else v) for v in range(16))
    if name == "U4":
        return tuple(float(v) for v in range(16))
    if name == "I2":
        return tuple(float(v - 4 if v >= 2 else v) for v in range(4))
    if name == "U2":
        return tuple(float(v) for v in range(4))
    return (0.0, 1.0)  # U1


_PACKED: dict[str, tuple[int, str]] = {
    "F4": (2, "float"),
    "I4": (2, "int"),
    "U4": (2, "int"),
    "I2": (4, "int"),
    "U2": (4, "int"),
    "U1": (8, "int"),
}


def _packed(name: str, per_byte: int) -> DecodeFn:
    import numpy as np

    bits = 8 // per_byte
    mask = (1 << bits) - 1
    table = np.array(_nibble_table(name), dtype=np.float32)

    def decode(raw: memoryview, ws: Workspace) -> np.ndarray:
        codes = np.frombuffer(raw, dtype=np.uint8)
        out = ws.array("decoded", codes.size * per_byte, np.dtype(np.float32)).reshape(codes.size, per_byte)
        scratch = ws.array("decoded-codes", codes.size, np.dtype(np.uint8))
        for k in range(per_byte):  # value k of each byte sits in bits k*bits.. (low bits first)
            np.right_shift(codes, k * bits, out=scratch)
            np.bitwise_and(scratch, mask, out=scratch)
            np.take(table, scratch, out=out[:, k])
        return out.reshape(-1)

    return decode


# -- PyTorch quantized tensors ---------------------------------------------------------------------

# torch dtype -> (codes per byte, numpy type of the codes when byte-wide)
_TORCH_QUANTIZED: dict[str, tuple[int, str]] = {
    "QINT8": (1, "i1"),
    "QUINT8": (1, "u1"),
    "QINT32": (1, "<i4"),
    "QUINT4X2": (2, ""),
    "QUINT2X4": (4, ""),
}


def _torch_quantized(dtype: DType, attrs: Mapping[str, Any]) -> Decoder:
    """Per-tensor affine quantized tensors dequantized as (code - zero_point) * scale."""
    scheme, scale, zero = attrs.get("qscheme"), attrs.get("scale"), attrs.get("zero_point")
    if scheme != "per_tensor_affine" or not isinstance(scale, int | float) or not isinstance(zero, int | float):
        raise NoDecoder(f"{dtype.name} with {scheme or 'unknown'} quantization: the scales are not at hand")
    per_byte, code_type = _TORCH_QUANTIZED[dtype.name]
    wide = dtype.name == "QINT32"
    codes = _view(code_type)() if code_type else _packed("U4" if per_byte == 2 else "U2", per_byte)

    def decode(raw: memoryview, ws: Workspace) -> np.ndarray:
        import numpy as np

        values = codes(raw, ws)
        out = ws.array("dequantized", values.size, np.dtype(np.float64 if wide else np.float32))
        np.subtract(values, zero, out=out, dtype=out.dtype)  # in floating point: no wrap-around
        np.multiply(out, scale, out=out)
        return out

    size = dtype.block_bits // 8 if per_byte == 1 else 1
    return Decoder(dtype.name, per_byte, size, "float", wide, decode)


# -- GGUF block-quantized types ---------------------------------------------------------------------


def _ggml_decoder(dtype: DType) -> Decoder:
    try:
        from gguf.constants import GGMLQuantizationType
        from gguf.quants import dequantize
    except ImportError as e:
        raise NoDecoder(f"{dtype.name} blocks need the gguf package (pip install 'ckptscan[stats]')") from e
    qtype = getattr(GGMLQuantizationType, dtype.name, None)
    if qtype is None:
        raise NoDecoder(f"the installed gguf package does not know {dtype.name}")
    try:
        import numpy as np

        dequantize(np.zeros(dtype.block_bits // 8, dtype=np.uint8), qtype)
    except NotImplementedError as e:
        raise NoDecoder(f"the installed gguf package cannot dequantize {dtype.name}") from e
    except Exception as e:  # a layout the package gets wrong is a skip, not a crash
        raise NoDecoder(f"gguf cannot dequantize {dtype.name}: {e}") from e

    def decode(raw: memoryview, ws: Workspace) -> np.ndarray:
        import numpy as np

        values = dequantize(np.frombuffer(raw, dtype=np.uint8), qtype)
        return np.ascontiguousarray(values, dtype=np.float32).reshape(-1)

    return Decoder(dtype.name, dtype.block_elements, dtype.block_bits // 8, "float", False, decode)
