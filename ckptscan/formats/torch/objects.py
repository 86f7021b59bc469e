"""The inert values the restricted unpickler builds instead of live Python objects.

A pickle names callables (globals) and asks for them to be called. We never import or call
anything: a global becomes a :class:`Global` record, and a call becomes either a value we build
ourselves (for the few torch, numpy and standard-library callables we know to be pure, listed in
``ckptscan.formats.torch.rebuild``) or an :class:`Opaque` record of what would have been called
with what. Tensors become :class:`TensorRef` records pointing at :class:`StorageRef` records.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ckptscan.dtypes import DType, DTypeKind, fixed_width, lookup


@dataclass(frozen=True, slots=True)
class Global:
    """A reference to ``module.name`` that the pickle asked for; never resolved."""

    module: str
    name: str

    @property
    def qualname(self) -> str:
        return f"{self.module}.{self.name}"


@dataclass(eq=False, slots=True)
class Opaque:
    """An object the pickle would have built by calling ``callee``; kept as data, never built.

    ``states`` are what BUILD would have passed to ``__setstate__``; ``items``/``entries`` are what
    APPEND(S)/SETITEM(S) added (list and dict subclasses such as Lightning's ``AttributeDict``).
    """

    callee: str  # qualified name of the class or function, or a description when not a global
    args: tuple[Any, ...] = ()
    kwargs: dict[Any, Any] | None = None
    states: list[Any] = field(default_factory=list)
    items: list[Any] = field(default_factory=list)
    entries: dict[Any, Any] = field(default_factory=dict)
    how: str = "reduce"  # the opcode family that built it: reduce, newobj, inst, obj, persistent


@dataclass(eq=False, slots=True)
class StorageRef:
    """One storage a pickle points at through a persistent id; where its bytes are is up to the container."""

    key: str
    dtype: str  # torch dtype name without the "torch." prefix, e.g. "float32"
    location: str  # "cpu", "cuda:0", ...
    numel: int  # elements of the storage's dtype, in torch's element size
    view: tuple[str, int, int] | None = None  # legacy format: (view key, offset, size) in elements

    @property
    def nbytes(self) -> int:
        return self.numel * storage_element_size(self.dtype)


@dataclass(eq=False, slots=True)
class TensorRef:
    """A tensor a torch rebuild function would have made: a view (offset, shape, strides) of a storage."""

    storage: StorageRef | None  # None for meta tensors and wrapper subclasses without data
    offset: int  # in elements of ``dtype``
    shape: tuple[int, ...]
    strides: tuple[int, ...]
    dtype: str
    kind: str = "tensor"  # tensor, parameter, quantized, meta, subclass
    requires_grad: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(eq=False, slots=True)
class NumpyArray:
    """An ndarray described by numpy's reconstruct globals; its data stays bytes in the pickle."""

    shape: tuple[int, ...] = ()
    dtype: str = ""
    fortran_order: bool = False
    data_bytes: int = 0
    file_offset: int | None = None  # joblib: the raw bytes follow the record in the stream, here


@dataclass(eq=False, slots=True)
class NumpyDType:
    """``numpy.dtype(spec)`` plus the byte order its BUILD state sets."""

    spec: str
    byteorder: str = "="


@dataclass(frozen=True, slots=True)
class TorchValue:
    """A torch constant named by a global: a dtype (``torch.float32``), a layout, a qscheme, a device."""

    kind: str  # dtype, layout, qscheme, memory_format, device
    name: str


class SkippedBytes(bytes):
    """A bytes payload too large to keep: empty, but ``len()`` is its size in the file; ``head``
    keeps its first bytes (enough for the pickles of a nested torch storage)."""

    nbytes: int
    head: bytes

    def __new__(cls, nbytes: int, head: bytes = b"") -> SkippedBytes:
        self = super().__new__(cls, b"")
        self.nbytes = nbytes
        self.head = head
        return self

    def __len__(self) -> int:
        return self.nbytes


class SkippedText(str):
    """A text payload too large to keep, shown as a placeholder; ``head`` keeps its first characters."""

    nbytes: int
    head: str

    def __new__(cls, nbytes: int, head: str = "") -> SkippedText:
        self = super().__new__(cls, f"<{nbytes:,} bytes of text not kept>")
        self.nbytes = nbytes
        self.head = head
        return self


class PickleSet(list[Any]):
    """set / frozenset contents, kept as a list so that unhashable placeholders fit."""


class OrderedDictValue(dict[Any, Any]):
    """A ``collections.OrderedDict`` (reported as such; Python dicts keep order already)."""


# torch dtype name -> (ckptscan canonical dtype, torch element size in bytes)
TORCH_DTYPES: dict[str, tuple[str, int]] = {
    "float32": ("F32", 4), "float64": ("F64", 8), "float16": ("F16", 2), "bfloat16": ("BF16", 2),
    "int64": ("I64", 8), "int32": ("I32", 4), "int16": ("I16", 2), "int8": ("I8", 1),
    "uint8": ("U8", 1), "uint16": ("U16", 2), "uint32": ("U32", 4), "uint64": ("U64", 8),
    "bool": ("BOOL", 1),
    "complex32": ("C32", 4), "complex64": ("C64", 8), "complex128": ("C128", 16),
    "float8_e4m3fn": ("F8_E4M3", 1), "float8_e5m2": ("F8_E5M2", 1),
    "float8_e4m3fnuz": ("F8_E4M3FNUZ", 1), "float8_e5m2fnuz": ("F8_E5M2FNUZ", 1),
    "float8_e8m0fnu": ("F8_E8M0", 1), "float4_e2m1fn_x2": ("F4_E2M1FN_X2", 1),
    "qint8": ("QINT8", 1), "quint8": ("QUINT8", 1), "qint32": ("QINT32", 4),
    "quint4x2": ("QUINT4X2", 1), "quint2x4": ("QUINT2X4", 1),
}  # fmt: skip

# torch's other spellings of the same dtypes (torch.float, torch.half, ...)
TORCH_DTYPE_ALIASES = {
    "float": "float32", "double": "float64", "half": "float16", "long": "int64", "int": "int32",
    "short": "int16", "cfloat": "complex64", "cdouble": "complex128", "chalf": "complex32",
}  # fmt: skip

# sub-byte and bit types torch stores one per byte (torch.uint4, torch.bits8, ...)
_ONE_BYTE_TORCH_TYPES = frozenset(
    [f"uint{n}" for n in range(1, 8)] + [f"int{n}" for n in range(1, 8)] + ["bits8", "bits1x8", "bits2x4", "bits4x2"]
)

# legacy typed storage classes (torch.FloatStorage, torch.cuda.HalfStorage...) -> torch dtype
STORAGE_CLASSES: dict[str, str] = {
    "FloatStorage": "float32", "DoubleStorage": "float64", "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16", "LongStorage": "int64", "IntStorage": "int32", "ShortStorage": "int16",
    "CharStorage": "int8", "ByteStorage": "uint8", "BoolStorage": "bool",
    "ComplexFloatStorage": "complex64", "ComplexDoubleStorage": "complex128",
    "QInt8Storage": "qint8", "QUInt8Storage": "quint8", "QInt32Storage": "qint32",
    "QUInt4x2Storage": "quint4x2", "QUInt2x4Storage": "quint2x4", "UntypedStorage": "uint8",
}  # fmt: skip


def torch_dtype_name(name: str) -> str | None:
    """The canonical torch name of a ``torch.<name>`` dtype global, or None if it is not one."""
    name = TORCH_DTYPE_ALIASES.get(name, name)
    if name in TORCH_DTYPES or name in _ONE_BYTE_TORCH_TYPES or name == "bits16":
        return name
    return None


def storage_element_size(dtype: str) -> int:
    known = TORCH_DTYPES.get(dtype)
    if known is not None:
        return known[1]
    return 2 if dtype == "bits16" else 1


def canonical_dtype(dtype: str) -> DType:
    """The ckptscan dtype for a torch dtype name (``float32`` -> ``F32``)."""
    known = TORCH_DTYPES.get(dtype)
    if known is not None:
        return lookup(known[0])
    if dtype == "bits16":
        return fixed_width("torch.bits16", 16, DTypeKind.UINT)
    if dtype in _ONE_BYTE_TORCH_TYPES:
        return fixed_width(f"torch.{dtype}", 8, DTypeKind.UINT if "int" in dtype else DTypeKind.UNKNOWN)
    return lookup(f"torch.{dtype}")


def type_name(value: Any) -> str:
    """A short description of a value's type, as the metadata shows it (``OrderedDict[16]``, ``object:...``)."""
    if isinstance(value, TensorRef):
        return "Tensor"
    if isinstance(value, OrderedDictValue):
        return f"OrderedDict[{len(value)}]"
    if isinstance(value, PickleSet):
        return f"set[{len(value)}]"
    if isinstance(value, dict | list | tuple):
        return f"{type(value).__name__}[{len(value)}]"
    if isinstance(value, Opaque):
        return f"object:{value.callee}"
    if isinstance(value, Global):
        return f"global:{value.qualname}"
    if isinstance(value, NumpyArray):
        return f"ndarray[{value.dtype}]{list(value.shape)}"
    if isinstance(value, TorchValue):
        return f"torch.{value.kind}"
    if value is None:
        return "NoneType"
    return type(value).__name__
