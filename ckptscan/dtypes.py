"""The dtype table: every element type ckptscan knows, sized in bits per block.

Sizes are exact integers. A scalar type is a block of one element (``F32``: 1 element, 32 bits);
a block-quantized type stores ``block_elements`` values in ``block_bits`` bits (GGUF ``Q4_K``:
256 elements in 144 bytes); sub-byte types are scalar blocks of fewer than 8 bits (``F4``: 4).
``nbytes`` never goes through floating point or ``np.prod``.

Canonical names follow safetensors (``F32``, ``BF16``, ``I64``, ``F8_E4M3``...) and ggml for the
block-quantized types (``Q4_K``, ``IQ4_XS``...). Readers map their native names onto these and keep
the native one on the tensor record, so totals by dtype add up across formats.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fractions import Fraction


class DTypeKind(str, enum.Enum):
    FLOAT = "float"
    INT = "int"
    UINT = "uint"
    BOOL = "bool"
    COMPLEX = "complex"
    QUANTIZED = "quantized"  # block-quantized or affine-quantized integer codes with scales
    STRING = "string"
    OBJECT = "object"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class DType:
    """One element type: its canonical name, its size in bits per block of elements, and its kind."""

    name: str
    block_elements: int
    block_bits: int  # 0 when the size is not known (unknown types, variable-length strings)
    kind: DTypeKind

    @property
    def known(self) -> bool:
        return self.block_bits > 0

    @property
    def bits_per_element(self) -> Fraction:
        from fractions import Fraction  # only the stats and audit paths ask; a scan leaves it unimported

        return Fraction(self.block_bits, self.block_elements)

    @property
    def is_floating(self) -> bool:
        return self.kind in (DTypeKind.FLOAT, DTypeKind.COMPLEX)

    def nbytes(self, elements: int) -> int:
        """Exact bytes that ``elements`` values of this type occupy.

        Raises ValueError when the count cannot be stored whole: not a multiple of the block size,
        or a sub-byte type whose bits do not end on a byte boundary, or an unknown size.
        """
        if not self.known:
            raise ValueError(f"the size of dtype {self.name} is not known")
        blocks, rest = divmod(elements, self.block_elements)
        if rest:
            raise ValueError(
                f"{elements} elements is not a whole number of {self.name} blocks of {self.block_elements}"
            )
        bits = blocks * self.block_bits
        if bits % 8:
            raise ValueError(f"{elements} elements of {self.name} end inside a byte ({bits} bits)")
        return bits // 8


def _scalar(name: str, bits: int, kind: DTypeKind) -> DType:
    return DType(name, 1, bits, kind)


def _block(name: str, elements: int, nbytes: int) -> DType:
    return DType(name, elements, nbytes * 8, DTypeKind.QUANTIZED)


_F, _I, _U = DTypeKind.FLOAT, DTypeKind.INT, DTypeKind.UINT

_TABLE: tuple[DType, ...] = (
    # safetensors (every dtype of the format's Rust reader, incl. the OCP microscaling types)
    _scalar("BOOL", 8, DTypeKind.BOOL),
    _scalar("F4", 4, _F),  # MX FP4 E2M1
    _scalar("F6_E2M3", 6, _F),
    _scalar("F6_E3M2", 6, _F),
    _scalar("U8", 8, _U),
    _scalar("I8", 8, _I),
    _scalar("F8_E5M2", 8, _F),
    _scalar("F8_E4M3", 8, _F),
    _scalar("F8_E8M0", 8, _F),  # MX shared scale (exponent only)
    _scalar("F8_E4M3FNUZ", 8, _F),
    _scalar("F8_E5M2FNUZ", 8, _F),
    _scalar("F8_E4M3B11FNUZ", 8, _F),  # TensorFlow DT_FLOAT8_E4M3B11FNUZ (exponent bias 11)
    _scalar("I16", 16, _I),
    _scalar("U16", 16, _U),
    _scalar("F16", 16, _F),
    _scalar("BF16", 16, _F),
    _scalar("I32", 32, _I),
    _scalar("U32", 32, _U),
    _scalar("F32", 32, _F),
    _scalar("C64", 64, DTypeKind.COMPLEX),
    _scalar("F64", 64, _F),
    _scalar("I64", 64, _I),
    _scalar("U64", 64, _U),
    # wider and narrower types other formats use (PyTorch, ONNX, NumPy/HDF5)
    _scalar("C32", 32, DTypeKind.COMPLEX),
    _scalar("C128", 128, DTypeKind.COMPLEX),
    _scalar("C256", 256, DTypeKind.COMPLEX),
    _scalar("F128", 128, _F),
    _scalar("I4", 4, _I),
    _scalar("U4", 4, _U),
    _scalar("I2", 2, _I),
    _scalar("U2", 2, _U),
    _scalar("U1", 1, _U),
    # PyTorch affine-quantized integer codes (scale / zero point live beside the tensor) and packed fp4
    _scalar("QINT8", 8, DTypeKind.QUANTIZED),
    _scalar("QUINT8", 8, DTypeKind.QUANTIZED),
    _scalar("QINT32", 32, DTypeKind.QUANTIZED),
    _scalar("QUINT4X2", 4, DTypeKind.QUANTIZED),  # two 4-bit codes per byte
    _scalar("QUINT2X4", 2, DTypeKind.QUANTIZED),  # four 2-bit codes per byte
    _scalar("F4_E2M1FN_X2", 8, _F),  # torch.float4_e2m1fn_x2: one element is a byte holding two FP4 values
    # variable-length strings (ONNX STRING, TensorFlow DT_STRING): no fixed width; readers give the bytes
    _scalar("STRING", 0, DTypeKind.STRING),
    # ggml block-quantized types: (elements per block, bytes per block), as gguf's GGML_QUANT_SIZES
    _block("Q4_0", 32, 18),
    _block("Q4_1", 32, 20),
    _block("Q5_0", 32, 22),
    _block("Q5_1", 32, 24),
    _block("Q8_0", 32, 34),
    _block("Q8_1", 32, 40),
    _block("Q2_K", 256, 84),
    _block("Q3_K", 256, 110),
    _block("Q4_K", 256, 144),
    _block("Q5_K", 256, 176),
    _block("Q6_K", 256, 210),
    _block("Q8_K", 256, 292),
    _block("IQ2_XXS", 256, 66),
    _block("IQ2_XS", 256, 74),
    _block("IQ3_XXS", 256, 98),
    _block("IQ1_S", 256, 50),
    _block("IQ4_NL", 32, 18),
    _block("IQ3_S", 256, 110),
    _block("IQ2_S", 256, 82),
    _block("IQ4_XS", 256, 136),
    _block("IQ1_M", 256, 56),
    _block("TQ1_0", 256, 54),
    _block("TQ2_0", 256, 66),
    _block("MXFP4", 32, 17),
    _block("NVFP4", 64, 36),
    _block("Q1_0", 128, 18),
    # interleaved repacks that llama.cpp wrote for a while (since removed): block_q4_0 / iq4_nl layout
    _block("Q4_0_4_4", 32, 18),
    _block("Q4_0_4_8", 32, 18),
    _block("Q4_0_8_8", 32, 18),
    _block("IQ4_NL_4_4", 32, 18),
    _block("IQ4_NL_4_8", 32, 18),
    _block("IQ4_NL_8_8", 32, 18),
)

DTYPES: dict[str, DType] = {d.name: d for d in _TABLE}


def lookup(name: str) -> DType:
    """The table's entry for ``name``, or an unknown dtype of that name (size 0 bits)."""
    found = DTYPES.get(name)
    if found is not None:
        return found
    return DType(name, 1, 0, DTypeKind.UNKNOWN)


def fixed_width(name: str, bits: int, kind: DTypeKind) -> DType:
    """A scalar type outside the table whose width the file states (e.g. NumPy ``S16`` strings)."""
    return DTYPES.get(name) or DType(name, 1, bits, kind)
