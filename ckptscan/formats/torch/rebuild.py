"""What the restricted unpickler does with a call: our own pure re-implementations, or a record.

Only the callables in :data:`_CALLS` get values: torch's tensor rebuild functions, ``torch.Size``,
``torch.device``, ``collections.OrderedDict``, set/frozenset/bytearray/complex, ``_codecs.encode``
(how protocol 2 spells bytes), ``copyreg`` reconstructors and numpy's array/dtype/scalar
reconstructors. Each is re-implemented here from its documented behaviour on inert data; the real
function is never looked up. Every other callable becomes an :class:`~.objects.Opaque` record.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from ckptscan.errors import MalformedFile
from ckptscan.formats.torch.objects import (
    STORAGE_CLASSES,
    Global,
    NumpyArray,
    NumpyDType,
    Opaque,
    OrderedDictValue,
    PickleSet,
    SkippedBytes,
    SkippedText,
    StorageRef,
    TensorRef,
    TorchValue,
    torch_dtype_name,
)

# Other spellings of the same modules: Python 2 names, numpy 2's private core, torch's cuda storages
_MODULE_ALIASES = {"__builtin__": "builtins", "copy_reg": "copyreg", "numpy._core.multiarray": "numpy.core.multiarray"}
_MODULE_ALIASES["numpy._core.numeric"] = "numpy.core.numeric"

_TORCH_LAYOUTS = frozenset({"strided", "sparse_coo", "sparse_csr", "sparse_csc", "sparse_bsr", "sparse_bsc", "_mkldnn"})
_TORCH_QSCHEMES = frozenset(
    {"per_tensor_affine", "per_channel_affine", "per_tensor_symmetric", "per_channel_symmetric",
     "per_channel_affine_float_qparams"}
)  # fmt: skip
_TORCH_MEMORY_FORMATS = frozenset({"contiguous_format", "channels_last", "channels_last_3d", "preserve_format"})


def canonical_qualname(module: str, name: str) -> str:
    return f"{_MODULE_ALIASES.get(module, module)}.{name}"


def intern_global(module: str, name: str) -> Any:
    """What GLOBAL pushes: a torch constant for dtype/layout/qscheme names, else a Global record."""
    if module == "torch":
        dtype = torch_dtype_name(name)
        if dtype is not None:
            return TorchValue("dtype", dtype)
        if name in _TORCH_LAYOUTS:
            return TorchValue("layout", name)
        if name in _TORCH_QSCHEMES:
            return TorchValue("qscheme", name)
        if name in _TORCH_MEMORY_FORMATS:
            return TorchValue("memory_format", name)
    return Global(module, name)


def storage_dtype(storage_type: Any) -> str | None:
    """The torch dtype of a storage class global (``torch.FloatStorage``, ``torch.cuda.HalfStorage``)."""
    if isinstance(storage_type, TorchValue) and storage_type.kind == "dtype":
        return storage_type.name
    if isinstance(storage_type, Global) and storage_type.module.split(".")[0] == "torch":
        return STORAGE_CLASSES.get(storage_type.name)
    return None


def is_allowlisted(module: str, name: str) -> bool:
    """Globals that only describe tensors and plain data; everything else is reported."""
    qualname = canonical_qualname(module, name)
    if qualname in _CALLS or qualname in _INERT_GLOBALS:
        return True
    top = module.split(".")[0]
    if top == "torch" and (name.endswith("Storage") or isinstance(intern_global(module, name), TorchValue)):
        return module in ("torch", "torch.cuda", "torch.storage")
    return module == "torch._utils" and name.startswith("_rebuild_")


def call(func: Any, args: tuple[Any, ...], kwargs: dict[Any, Any] | None, how: str) -> Any:
    """The value standing for ``func(*args, **kwargs)``; ``func`` is never resolved or run."""
    if isinstance(func, Global):
        qualname = canonical_qualname(func.module, func.name)
        handler = _CALLS.get(qualname)
        if handler is not None and not kwargs:
            return handler(args)
        return Opaque(func.qualname, args, kwargs, how=how)
    if isinstance(func, TorchValue):
        return Opaque(f"torch.{func.name}", args, kwargs, how=how)
    callee = func.callee if isinstance(func, Opaque) else type(func).__name__
    return Opaque(f"<call of {callee}>", args, kwargs, how=how)


def build(target: Any, state: Any) -> None:
    """BUILD: record ``state`` on the object it would have been given to."""
    if isinstance(target, Opaque):
        target.states.append(state)
    elif isinstance(target, NumpyArray):
        _build_ndarray(target, state)
    elif isinstance(target, NumpyDType):
        if isinstance(state, tuple) and len(state) > 1 and isinstance(state[1], str):
            target.byteorder = state[1]
    elif isinstance(target, TensorRef) and state is not None:
        target.extra["state"] = True


# -- tensors ---------------------------------------------------------------------------------------


def _bad(what: str) -> MalformedFile:
    return MalformedFile(f"tensor rebuild call has {what}")


def _count(value: Any, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise _bad(f"a {what} that is not a non-negative integer ({value!r:.40})")
    return value


def _dims(value: Any, what: str) -> tuple[int, ...]:
    if not isinstance(value, tuple | list):
        raise _bad(f"a {what} that is not a tuple")
    return tuple(_count(v, what) for v in value)


def _view(storage: Any, offset: Any, size: Any, stride: Any, *, dtype: str | None = None) -> TensorRef:
    if not isinstance(storage, StorageRef):
        raise _bad(f"a storage argument that is a {type(storage).__name__}, not a storage reference")
    shape = _dims(size, "size")
    strides = _dims(stride, "stride")
    if len(strides) != len(shape):
        raise _bad(f"{len(shape)} sizes but {len(strides)} strides")
    return TensorRef(storage, _count(offset, "storage offset"), shape, strides, dtype or storage.dtype)


def _rebuild_tensor(args: tuple[Any, ...]) -> TensorRef:
    if len(args) < 4:
        raise _bad(f"{len(args)} arguments")
    tensor = _view(*args[:4])
    tensor.requires_grad = len(args) > 4 and args[4] is True
    return tensor


def _rebuild_tensor_v3(args: tuple[Any, ...]) -> TensorRef:
    if len(args) < 7 or not (isinstance(args[6], TorchValue) and args[6].kind == "dtype"):
        raise _bad("no dtype (v3)")
    tensor = _view(*args[:4], dtype=args[6].name)
    tensor.requires_grad = args[4] is True
    return tensor


def _rebuild_parameter(args: tuple[Any, ...]) -> TensorRef:
    if not args or not isinstance(args[0], TensorRef):
        raise _bad("a parameter whose data is not a tensor")
    tensor: TensorRef = args[0]
    tensor.kind = "parameter" if tensor.kind == "tensor" else tensor.kind
    tensor.extra["parameter"] = True
    tensor.requires_grad = len(args) > 1 and args[1] is True
    return tensor


def _rebuild_qtensor(args: tuple[Any, ...]) -> TensorRef:
    if len(args) < 5:
        raise _bad(f"{len(args)} arguments (quantized)")
    tensor = _view(*args[:4])
    tensor.kind = "quantized"
    params = args[4]
    if isinstance(params, tuple) and params:
        scheme = params[0]
        tensor.extra["qscheme"] = scheme.name if isinstance(scheme, TorchValue) else str(scheme)
        if len(params) == 3 and isinstance(params[1], float) and isinstance(params[2], int):
            tensor.extra["scale"], tensor.extra["zero_point"] = params[1], params[2]
        else:
            tensor.extra["quantizer_tensors"] = [p for p in params[1:] if isinstance(p, TensorRef)]
    return tensor


def _rebuild_meta(args: tuple[Any, ...]) -> TensorRef:
    if len(args) < 3 or not (isinstance(args[0], TorchValue) and args[0].kind == "dtype"):
        raise _bad("no dtype (meta tensor)")
    shape, strides = _dims(args[1], "size"), _dims(args[2], "stride")
    return TensorRef(None, 0, shape, strides, args[0].name, kind="meta")


def _rebuild_wrapper_subclass(args: tuple[Any, ...]) -> TensorRef:
    if len(args) < 5 or not (isinstance(args[1], TorchValue) and args[1].kind == "dtype"):
        raise _bad("no dtype (wrapper subclass)")
    tensor = TensorRef(
        None, _count(args[4], "storage offset"), _dims(args[2], "size"), _dims(args[3], "stride"), args[1].name
    )
    tensor.kind = "subclass"
    tensor.extra["subclass"] = args[0].qualname if isinstance(args[0], Global) else "?"
    return tensor


def _rebuild_from_type(args: tuple[Any, ...]) -> Any:
    if len(args) < 3 or not isinstance(args[2], tuple):
        raise _bad("a malformed _rebuild_from_type call")
    value = call(args[0], args[2], None, "reduce")
    new_type = args[1]
    if isinstance(value, TensorRef) and isinstance(new_type, Global):
        if new_type.qualname == "torch.nn.parameter.Parameter":
            value.kind, value.extra["parameter"] = "parameter", True
        elif new_type.qualname != "torch.Tensor":
            value.kind, value.extra["subclass"] = "subclass", new_type.qualname
    return value


def _rebuild_device_tensor(args: tuple[Any, ...]) -> Any:
    if not args or not isinstance(args[0], TensorRef):
        return Opaque("torch._utils._rebuild_device_tensor", args)
    return args[0]


# -- plain data ------------------------------------------------------------------------------------


def _ordered_dict(args: tuple[Any, ...]) -> OrderedDictValue:
    result = OrderedDictValue()
    if args and isinstance(args[0], list | tuple):
        for pair in args[0]:
            if isinstance(pair, list | tuple) and len(pair) == 2 and isinstance(pair[0], str | int):
                result[pair[0]] = pair[1]
    return result


def _set(args: tuple[Any, ...]) -> PickleSet:
    if args and isinstance(args[0], list | tuple):
        return PickleSet(args[0])
    return PickleSet()


def _encode(args: tuple[Any, ...]) -> bytes:
    """``_codecs.encode(text, "latin1")``: how protocol 2 pickles bytes objects."""
    if args and isinstance(args[0], SkippedText):
        return SkippedBytes(args[0].nbytes, args[0].head.encode("latin-1", "replace"))
    if not args or not isinstance(args[0], str):
        raise MalformedFile("_codecs.encode needs a string")
    encoding = args[1] if len(args) > 1 and isinstance(args[1], str) else "utf-8"
    if encoding.replace("-", "").replace("_", "").lower() not in ("latin1", "iso88591", "utf8", "ascii"):
        raise MalformedFile(f"_codecs.encode with unsupported encoding {encoding!r:.30}")
    return args[0].encode(encoding)


def _bytearray(args: tuple[Any, ...]) -> bytearray:
    if args and isinstance(args[0], bytes | bytearray):
        return bytearray(args[0])
    if args and isinstance(args[0], str) and len(args) > 1:
        return bytearray(_encode(args))
    return bytearray()


def _bytes(args: tuple[Any, ...]) -> Any:
    """``bytes()`` (how protocols 0 and 1 spell b""), ``bytes(ints)`` and ``bytes(text, encoding)``."""
    if not args:
        return b""
    if isinstance(args[0], list) and all(isinstance(v, int) and 0 <= v < 256 for v in args[0]):
        return bytes(args[0])
    if isinstance(args[0], str) and len(args) > 1:
        return _encode(args)
    return Opaque("builtins.bytes", args)


def _complex(args: tuple[Any, ...]) -> Any:
    if all(isinstance(a, int | float) and not isinstance(a, bool) for a in args) and len(args) <= 2:
        return complex(*args)
    return Opaque("builtins.complex", args)


def _first_argument(args: tuple[Any, ...]) -> Any:
    return args[0] if args else None


def _size(args: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(args[0]) if args and isinstance(args[0], list | tuple) else ()


def _device(args: tuple[Any, ...]) -> TorchValue:
    return TorchValue("device", ":".join(str(a) for a in args if a is not None))


def _layout(args: tuple[Any, ...]) -> TorchValue:
    return TorchValue("layout", str(args[0]).removeprefix("torch.") if args else "?")


def _reconstructor(args: tuple[Any, ...]) -> Opaque:
    """``copyreg._reconstructor(cls, base, state)``: how protocols 0 and 1 pickle plain objects."""
    cls = args[0] if args else None
    name = cls.qualname if isinstance(cls, Global) else "?"
    return Opaque(name, args=(), how="reconstructor")


def _newobj(args: tuple[Any, ...]) -> Any:
    return call(args[0], tuple(args[1:]), None, "newobj") if args else Opaque("copyreg.__newobj__")


def _newobj_ex(args: tuple[Any, ...]) -> Any:
    if len(args) == 3 and isinstance(args[1], tuple) and isinstance(args[2], dict):
        return call(args[0], args[1], args[2], "newobj")
    return Opaque("copyreg.__newobj_ex__", args)


# -- numpy -----------------------------------------------------------------------------------------


def _np_reconstruct(args: tuple[Any, ...]) -> NumpyArray:
    return NumpyArray()


def _np_dtype(args: tuple[Any, ...]) -> NumpyDType:
    return NumpyDType(str(args[0]) if args else "?")


def dtype_spec(dtype: Any) -> str:
    if isinstance(dtype, NumpyDType):
        order = dtype.byteorder if dtype.byteorder in "<>" else ""
        return order + dtype.spec
    return str(dtype)


def _build_ndarray(array: NumpyArray, state: Any) -> None:
    # ndarray.__setstate__((version, shape, dtype, is_fortran, rawdata)); version is optional
    if isinstance(state, tuple) and len(state) == 5:
        state = state[1:]
    if isinstance(state, tuple) and len(state) == 4:
        shape, dtype, fortran, raw = state
        if isinstance(shape, tuple) and all(isinstance(d, int) for d in shape):
            array.shape = shape
        array.dtype = dtype_spec(dtype)
        array.fortran_order = fortran is True
        array.data_bytes = len(raw) if isinstance(raw, bytes | bytearray | list) else 0


def _np_frombuffer(args: tuple[Any, ...]) -> NumpyArray:
    # numpy >= 1.x protocol 5: _frombuffer(buffer, dtype, shape, order)
    array = NumpyArray()
    if len(args) == 4:
        array.dtype = dtype_spec(args[1])
        if isinstance(args[2], tuple):
            array.shape = args[2]
        array.fortran_order = args[3] == "F"
        array.data_bytes = len(args[0]) if isinstance(args[0], bytes | bytearray) else 0
    return array


_SCALAR_CODES = {"f8": "d", "f4": "f", "f2": "e", "i8": "q", "i4": "i", "i2": "h", "i1": "b", "u8": "Q",
                 "u4": "I", "u2": "H", "u1": "B", "b1": "?"}  # fmt: skip


def _np_scalar(args: tuple[Any, ...]) -> Any:
    """``numpy.core.multiarray.scalar(dtype, raw)``: decoded for the common numeric types."""
    if len(args) == 2 and isinstance(args[0], NumpyDType) and isinstance(args[1], bytes):
        dtype, raw = args
        code = _SCALAR_CODES.get(dtype.spec.lstrip("<>|="))
        if code is not None and struct.calcsize(code) == len(raw):
            order = ">" if dtype.byteorder == ">" else "<"
            return struct.unpack(order + code, raw)[0]
    return Opaque("numpy.core.multiarray.scalar", args)


_CALLS: dict[str, Callable[[tuple[Any, ...]], Any]] = {
    "torch._utils._rebuild_tensor": _rebuild_tensor,
    "torch._utils._rebuild_tensor_v2": _rebuild_tensor,
    "torch._utils._rebuild_tensor_v3": _rebuild_tensor_v3,
    "torch._utils._rebuild_parameter": _rebuild_parameter,
    "torch._utils._rebuild_parameter_with_state": _rebuild_parameter,
    "torch._utils._rebuild_qtensor": _rebuild_qtensor,
    "torch._utils._rebuild_meta_tensor_no_storage": _rebuild_meta,
    "torch._utils._rebuild_wrapper_subclass": _rebuild_wrapper_subclass,
    "torch._utils._rebuild_device_tensor_from_cpu_tensor": _rebuild_device_tensor,
    "torch._tensor._rebuild_from_type": _rebuild_from_type,
    "torch._tensor._rebuild_from_type_v2": _rebuild_from_type,
    "torch.Size": _size,
    # TorchScript's pickles wrap lists and typed values; each returns its first argument
    "torch.jit._pickle.restore_type_tag": _first_argument,
    "torch.jit._pickle.build_intlist": _first_argument,
    "torch.jit._pickle.build_tensorlist": _first_argument,
    "torch.jit._pickle.build_doublelist": _first_argument,
    "torch.jit._pickle.build_boollist": _first_argument,
    "torch.device": _device,
    "torch.serialization._get_layout": _layout,
    "collections.OrderedDict": _ordered_dict,
    "builtins.set": _set,
    "builtins.frozenset": _set,
    "builtins.bytearray": _bytearray,
    "builtins.bytes": _bytes,
    "builtins.complex": _complex,
    "_codecs.encode": _encode,
    "copyreg._reconstructor": _reconstructor,
    "copyreg.__newobj__": _newobj,
    "copyreg.__newobj_ex__": _newobj_ex,
    "numpy.core.multiarray._reconstruct": _np_reconstruct,
    "numpy.core.multiarray.scalar": _np_scalar,
    "numpy.core.numeric._frombuffer": _np_frombuffer,
    "numpy.dtype": _np_dtype,
}

# globals that are only ever arguments (classes named so that the calls above can be described)
_INERT_GLOBALS = frozenset(
    {"builtins.object", "builtins.slice", "builtins.range", "numpy.ndarray", "torch.Tensor",
     "torch.nn.parameter.Parameter", "torch.nn.parameter.Buffer", "torch.storage.TypedStorage",
     "torch.storage.UntypedStorage", "builtins.dict",
     "builtins.list", "builtins.tuple", "builtins.int", "builtins.float", "builtins.str", "builtins.bool"}
)  # fmt: skip
