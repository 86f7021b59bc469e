"""Which axis of a weight holds its output channels: one rule for every part that needs it
(the analyzer's int8/int4 targets, the stats pass's per-channel quantization error)."""

from __future__ import annotations

from ckptscan.analyze.roles import name_parts
from ckptscan.inventory import Tensor


def channels_last(tensor: Tensor) -> bool:
    """Output channels on the last dimension: Keras/TF kernels ([in, out], known by the variable
    name the reader recorded, else the tensor name) and ONNX MatMul weights (input 1)."""
    name = tensor.name
    for key in ("variable", "variable_name"):
        value = tensor.attrs.get(key)
        if isinstance(value, str) and value:
            name = value
            break
    parts = name_parts(name) if name else ()
    consumers = tensor.attrs.get("consumers", ())
    return bool(parts and parts[-1].endswith("kernel")) or any(
        isinstance(c, dict) and c.get("op") == "MatMul" and c.get("input") == 1 for c in consumers
    )


def output_channels(tensor: Tensor) -> tuple[int, int]:
    """(output channels, inputs per channel) of a weight."""
    out = tensor.shape[-1] if channels_last(tensor) else tensor.shape[0]
    return out, tensor.elements // out if out else 0
