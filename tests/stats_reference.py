"""Plain numpy (float64) definitions of every value statistic, for the stats tests to compare with.

Written from docs/stats.md, independently of ckptscan.stats: whole arrays in memory, no chunks,
direct quantize-dequantize for the SQNR values.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

ABS_THRESHOLDS = (1e-6, 1e-4, 1e-3, 1e-2)
REL_THRESHOLDS = (1e-3, 1e-2, 1e-1)
WIDE = {"F64", "I32", "U32", "I64", "U64"}  # computed in float64; everything else in float32


def reference(
    values: np.ndarray, dtype: str, shape: tuple[int, ...], *, floating: bool = True, channels_last: bool = False
) -> dict[str, Any]:
    """Every statistic of ``values`` (the decoded values, any float array) as docs/stats.md defines it.

    ``channels_last``: output channels are the last dimension (Keras kernels, ONNX MatMul weights):
    scales per column, int4 groups and 2:4 groups run down the columns.
    """
    precision = np.float64 if dtype in WIDE else np.float32
    x = np.asarray(values, dtype=np.float64).reshape(shape)
    flat = x.reshape(-1)
    finite = flat[np.isfinite(flat)]
    out: dict[str, Any] = {
        "elements": flat.size,
        "nan": int(np.isnan(flat).sum()),
        "inf": int(np.isinf(flat).sum()),
        "zeros": int((flat == 0).sum()),
    }
    if finite.size:
        out.update(
            min=float(finite.min()),
            max=float(finite.max()),
            mean=float(finite.mean()),
            std=float(finite.std()),
            absmax=float(np.abs(finite).max()),
            l2=float(np.sqrt((finite * finite).sum())),
        )
    if not floating:
        return out
    magnitude = np.abs(flat.astype(precision))
    out["near_zero"] = {repr(t): int((magnitude < precision(t)).sum()) for t in ABS_THRESHOLDS}
    clean = np.where(np.isfinite(x), x, 0.0)
    # channels: one row per output channel (rows of the first dimension, or columns when channels-last)
    if not flat.size:
        channels = np.zeros((0, 0))
    elif channels_last:
        channels = clean.reshape(-1, shape[-1]).T
    else:
        channels = clean.reshape(shape[0] if len(shape) >= 2 else 1, -1)
    bad = flat.size - finite.size
    if flat.size:  # in int8 units: |x| * (127 / m) < 127 r, in the tensor's precision (docs/stats.md)
        by_row = np.abs(channels).astype(precision)
        top = by_row.max(axis=1, keepdims=True)
        inverse = np.where(top > 0, precision(127) / np.where(top > 0, top, 1), 0).astype(precision)
        scaled = by_row * inverse
        out["near_zero_rel"] = {repr(r): int((scaled < precision(127 * r)).sum()) - bad for r in REL_THRESHOLDS}
    if len(shape) >= 2 and flat.size:
        out["sqnr_int8_db"] = sqnr(channels, 127)
        if channels_last and channels.shape[1] % 128 == 0:  # 128 consecutive inputs (rows) of each column
            groups = clean.reshape(-1, 128, shape[-1]).transpose(0, 2, 1).reshape(-1, 128)
            out["sqnr_int4_g128_db"] = sqnr(groups, 7)
        elif not channels_last:  # runs of 128 along each row, the last one shorter: zero padding is neutral
            pad = -channels.shape[1] % 128
            out["sqnr_int4_g128_db"] = sqnr(np.pad(channels, ((0, 0), (0, pad))).reshape(-1, 128), 7)
        if channels_last and channels.shape[1] % 4 == 0:
            fours = (clean.reshape(-1, 4, shape[-1]) == 0).sum(axis=1)
            out["structured_2_4"] = bool((fours >= 2).all())
        elif not channels_last and shape[-1] % 4 == 0:
            fours = (clean.reshape(-1, 4) == 0).sum(axis=1)
            out["structured_2_4"] = bool((fours >= 2).all())
    return out


def sqnr(groups: np.ndarray, levels: int) -> float | None:
    """Symmetric absmax quantization, one scale per row of ``groups``: quantize, dequantize, compare."""
    w = groups.astype(np.float64)
    scale = np.abs(w).max(axis=1, keepdims=True) / levels
    codes = np.clip(np.round(np.divide(w, scale, out=np.zeros_like(w), where=scale > 0)), -levels, levels)
    error = w - codes * scale
    signal, noise = float((w * w).sum()), float((error * error).sum())
    if signal == 0 or noise == 0:
        return None
    return 10 * math.log10(signal / noise)


def assert_matches(got: Any, want: dict[str, Any], *, label: str = "") -> None:
    """Compare a TensorStats with ``reference``; exact for counts and extremes."""
    where = f"{label}: " if label else ""
    assert got.skipped is None, f"{where}skipped: {got.skipped}"
    for key in ("elements", "nan", "inf", "zeros"):
        assert getattr(got, key) == want[key], f"{where}{key} {getattr(got, key)} != {want[key]}"
    if "min" not in want:
        assert got.min is None and got.mean is None
        return
    assert got.min == want["min"] and got.max == want["max"] and got.absmax == want["absmax"], where
    # blocks are summed pairwise in their own precision (float32 for most types), then in float64
    scale = want["std"] + abs(want["mean"])
    assert abs(got.mean - want["mean"]) <= 1e-6 * scale + 1e-12, f"{where}mean {got.mean} != {want['mean']}"
    assert math.isclose(got.std, want["std"], rel_tol=1e-5, abs_tol=1e-12), f"{where}std {got.std} {want['std']}"
    assert math.isclose(got.l2, want["l2"], rel_tol=1e-5, abs_tol=1e-12), f"{where}l2 {got.l2} {want['l2']}"
    if "near_zero" in want:
        assert dict(got.near_zero) == want["near_zero"], f"{where}near_zero {got.near_zero} {want['near_zero']}"
    if "near_zero_rel" in want and got.near_zero_rel is not None:
        assert dict(got.near_zero_rel) == want["near_zero_rel"], f"{where}near_zero_rel {got.near_zero_rel}"
    for key in ("sqnr_int8_db", "sqnr_int4_g128_db"):
        if want.get(key) is not None:
            assert getattr(got, key) is not None, f"{where}{key} missing: {got.notes}"
            assert abs(getattr(got, key) - want[key]) < 0.01, f"{where}{key} {getattr(got, key)} != {want[key]}"
    if "structured_2_4" in want:
        assert got.structured_2_4 == want["structured_2_4"], where
