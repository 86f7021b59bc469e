"""The per-block arithmetic of the stats pass, and the partial results that merge across blocks.

A block is a run of decoded values that holds whole rows of a tensor (or, for rows too long to hold
in one block, a group-aligned piece of one row whose absolute maximum a first sweep measured; for a
channels-last weight, whole rows of inputs with each output column's maximum from a sweep). Every
statistic is a sum, a count, an extreme or a mergeable moment, so blocks, tasks and workers can be
combined in any grouping: :meth:`Partial.merge` adds counts, keeps extremes, and merges mean and
variance with Chan et al.'s pairwise update (no catastrophic cancellation, unlike sum-of-squares).

The arithmetic runs in the block's precision (float32 for every type up to 32 bits, float64 for
F64 and wide integers) on buffers reused from block to block (:class:`Workspace`), with sums of
blocks accumulated in Python floats (float64). Each statistic costs one or two numpy passes over a
block that sits in cache (about 25 in all); the order of operations is chosen to reuse what was
computed (magnitudes serve thresholds, group maxima, row maxima and both quantizers). Definitions
are in docs/stats.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

# |x| below these (in the tensor's precision) counts as near zero
ABS_THRESHOLDS: tuple[float, ...] = (1e-6, 1e-4, 1e-3, 1e-2)
# |x| below r x the absolute maximum of its row (the whole tensor when 1-D)
REL_THRESHOLDS: tuple[float, ...] = (1e-3, 1e-2, 1e-1)
INT8_LEVELS = 127  # symmetric int8: codes -127..127, scale = row absmax / 127
INT4_LEVELS = 7  # symmetric int4: codes -7..7, scale = group absmax / 7
INT4_GROUP = 128
TWO_FOUR_GROUP = 4
SUM_WIDTHS = (4096, 1024, 256, 64)
REDUCEAT_WIDTH = 1024
CANCELLATION_SHARE = 1 / 64  # n mean^2 up to this share of sum(x^2): M2 from the sums loses < 2% of digits


@dataclass(frozen=True, slots=True)
class Features:
    """What applies to one tensor's blocks (decided by the plan from dtype and shape)."""

    floating: bool  # near-zero thresholds and the quantization error apply
    int8: bool  # per-row int8 error (2+ dims)
    int4: bool  # int4 error in groups of 128 along the row (row length a multiple of 128)
    relative: bool  # near-zero relative to the row's absolute maximum
    two_four: bool  # 2:4 pattern along the last dimension (a multiple of 4)
    channels_last: bool = False  # output channels are the last dimension ([in, out]: Keras, ONNX MatMul)


@dataclass(slots=True)
class Partial:
    """Mergeable statistics of some blocks of one tensor."""

    elements: int = 0  # values examined, non-finite included
    nan: int = 0
    posinf: int = 0
    neginf: int = 0
    count: int = 0  # finite values, over which the moments and extremes are taken
    mean: float = 0.0
    m2: float = 0.0  # sum of squared deviations from the mean
    minimum: float = math.inf
    maximum: float = -math.inf
    zeros: int = 0
    below: list[int] = field(default_factory=lambda: [0] * len(ABS_THRESHOLDS))
    below_rel: list[int] = field(default_factory=lambda: [0] * len(REL_THRESHOLDS))
    err8: float = 0.0  # sum of squared int8 quantization errors
    err4: float = 0.0
    two_four_ok: int = 0  # groups of 4 along the last dimension with at least 2 zeros
    two_four_groups: int = 0
    two_four_broken: bool = False  # some block had fewer zeros than half its values
    row_absmax: dict[int, float] = field(default_factory=dict)  # first sweep over long rows
    column_absmax: Any = None  # first sweep over a channels-last tensor: one maximum per output channel
    leaves: list[tuple[int, bytes]] = field(default_factory=list)  # (task number, digest)
    bytes_read: int = 0

    def merge(self, other: Partial) -> None:
        self.elements += other.elements
        self.nan += other.nan
        self.posinf += other.posinf
        self.neginf += other.neginf
        self.add_moments(other.count, other.mean, other.m2)
        self.minimum = min(self.minimum, other.minimum)
        self.maximum = max(self.maximum, other.maximum)
        self.zeros += other.zeros
        self.below = [a + b for a, b in zip(self.below, other.below, strict=True)]
        self.below_rel = [a + b for a, b in zip(self.below_rel, other.below_rel, strict=True)]
        self.err8 += other.err8
        self.err4 += other.err4
        self.two_four_ok += other.two_four_ok
        self.two_four_groups += other.two_four_groups
        self.two_four_broken = self.two_four_broken or other.two_four_broken
        for row, value in other.row_absmax.items():
            self.row_absmax[row] = max(self.row_absmax.get(row, 0.0), value)
        if other.column_absmax is not None:
            import numpy as np

            mine = self.column_absmax
            self.column_absmax = other.column_absmax if mine is None else np.maximum(mine, other.column_absmax)
        self.leaves.extend(other.leaves)
        self.bytes_read += other.bytes_read

    def add_moments(self, count: int, mean: float, m2: float) -> None:
        """Chan, Golub & LeVeque's pairwise update of count, mean and M2."""
        if not count:
            return
        if not self.count:
            self.count, self.mean, self.m2 = count, mean, m2
            return
        total = self.count + count
        delta = mean - self.mean
        self.mean += delta * count / total
        self.m2 += m2 + delta * delta * self.count * count / total
        self.count = total


class Workspace:
    """Named scratch arrays, grown on demand and reused from block to block (one per worker).

    The view handed out last under a name is kept, so the common case (the same block size again)
    costs a dictionary lookup, not two new array objects.
    """

    def __init__(self) -> None:
        self._buffers: dict[str, Any] = {}
        self._views: dict[str, tuple[int, Any, Any]] = {}
        self._ones: dict[tuple[int, Any], Any] = {}
        self._starts: dict[tuple[int, ...], Any] = {}
        self.raw = bytearray()

    def array(self, name: str, size: int, dtype: np.dtype[Any]) -> np.ndarray:
        last = self._views.get(name)
        if last is not None and last[0] == size and last[1] == dtype:
            view: np.ndarray = last[2]
            return view
        import numpy as np

        nbytes = size * dtype.itemsize
        buffer = self._buffers.get(name)
        if buffer is None or buffer.nbytes < nbytes:
            buffer = np.empty(max(nbytes, 64), dtype=np.uint8)
            self._buffers[name] = buffer
        view = buffer[:nbytes].view(dtype)
        self._views[name] = (size, dtype, view)
        return view

    def ones(self, size: int, dtype: np.dtype[Any]) -> np.ndarray:
        """An array of ones of this size and type (made once)."""
        key = (size, dtype)
        out: np.ndarray | None = self._ones.get(key)
        if out is None:
            import numpy as np

            out = self._ones[key] = np.ones(size, dtype=dtype)
        return out

    def starts(self, size: int, width: int) -> np.ndarray:
        """0, width, 2 width, ... below ``size``: segment starts for ``reduceat`` (made once)."""
        key = (size, width)
        out: np.ndarray | None = self._starts.get(key)
        if out is None:
            import numpy as np

            out = self._starts[key] = np.arange(0, size, width, dtype=np.intp)
        return out

    def group_starts(self, rows: int, cols: int, width: int) -> np.ndarray:
        """Starts of the runs of ``width`` along each of ``rows`` rows of ``cols`` (the last run of a
        row shorter when ``cols`` is not a multiple of ``width``)."""
        key = (rows, cols, -width)
        out: np.ndarray | None = self._starts.get(key)
        if out is None:
            import numpy as np

            within = np.arange(0, cols, width, dtype=np.intp)
            out = self._starts[key] = (np.arange(rows, dtype=np.intp)[:, None] * cols + within[None, :]).reshape(-1)
        return out

    def raw_buffer(self, size: int) -> memoryview:
        if len(self.raw) < size:
            self.raw = bytearray(size)
        return memoryview(self.raw)[:size]


def block_stats(
    p: Partial,
    x: np.ndarray,
    rows: int,
    features: Features,
    ws: Workspace,
    row_absmax: float | None = None,
    columns: np.ndarray | None = None,
) -> None:
    """Add one block to ``p``: ``rows`` whole rows, or (``row_absmax`` given) a piece of one row.

    A channels-last tensor's rows are its input positions; ``columns`` (from the first sweep) holds
    each output channel's absolute maximum.
    """
    import numpy as np

    n = x.size
    if not n:
        return
    p.elements += n
    total = _sum(x, ws)
    filled = 0  # non-finite values replaced by zero for everything after the moments
    if math.isfinite(total):
        p.add_moments(n, *_moments(x, total, ws))
        p.minimum = min(p.minimum, float(x.min()))
        p.maximum = max(p.maximum, float(x.max()))
    else:
        x, filled = _without_nonfinite(p, x, ws)
    zero_mask = np.equal(x, 0, out=ws.array("mask", n, np.dtype(np.bool_)))
    zeros = int(np.count_nonzero(zero_mask))
    p.zeros += zeros - filled
    if features.two_four:
        _two_four(p, zero_mask, zeros, x.size // rows if features.channels_last else 0)
    if not features.floating:
        return
    magnitude = _magnitude(x, ws)
    mask = ws.array("mask", n, np.dtype(np.bool_))
    for i, threshold in enumerate(ABS_THRESHOLDS):
        p.below[i] += int(np.count_nonzero(np.less(magnitude, threshold, out=mask))) - filled
    if features.channels_last:
        _channels_last(p, magnitude, rows, features, ws, filled, columns)
    elif row_absmax is not None:
        _piece_of_row(p, x, magnitude, row_absmax, features, ws, filled)
    else:
        _whole_rows(p, x, magnitude, rows, features, ws, filled)


def column_absmax_of(x: np.ndarray, columns: int) -> np.ndarray:
    """The largest finite magnitude of each column of a block of whole rows (first sweep)."""
    import numpy as np

    magnitude = np.abs(x).reshape(-1, columns)
    if not np.isfinite(magnitude).all():
        magnitude = np.where(np.isfinite(magnitude), magnitude, 0)
    out: np.ndarray = magnitude.max(axis=0).astype(np.float64)
    return out


def absmax_of(x: np.ndarray) -> float:
    """The largest finite magnitude of a block (first sweep over long rows)."""
    import numpy as np

    if not x.size:
        return 0.0
    top = float(np.max(np.abs(x)))
    if math.isfinite(top):
        return top
    finite = x[np.isfinite(x)]
    return float(np.max(np.abs(finite))) if finite.size else 0.0


# -- pieces ----------------------------------------------------------------------------------------


def _sum(x: np.ndarray, ws: Workspace) -> float:
    """Sum of a block: rows of up to 4096 values summed by BLAS (float32 rows), then in float64.

    As accurate as numpy's pairwise sum here and about twice as fast; NaN and Inf propagate.
    """
    import numpy as np

    n = x.size
    for width in SUM_WIDTHS:
        if n % width == 0:
            rows = x.reshape(-1, width) @ ws.ones(width, x.dtype)
            return float(np.add.reduce(rows, dtype=np.float64))
    return float(np.add.reduce(x, dtype=np.float64))


def _moments(x: np.ndarray, total: float, ws: Workspace) -> tuple[float, float]:
    """Mean and M2 (sum of squared deviations) of a block.

    M2 = sum(x^2) - n mean^2 when the mean is small next to the spread (weights, most tensors):
    the subtraction then loses nothing. Otherwise (a LayerNorm weight near 1.0) the values are
    centred on the block's mean first, so M2 does not cancel.
    """
    import numpy as np

    n = x.size
    mean = total / n
    squares = float(np.dot(x, x))
    if math.isfinite(squares) and n * mean * mean <= CANCELLATION_SHARE * squares:
        return mean, max(squares - n * mean * mean, 0.0)
    centred = np.subtract(x, mean, out=ws.array("centred", n, x.dtype))
    m2 = float(np.dot(centred, centred))
    if not math.isfinite(m2):  # squares beyond float32's range
        wide = centred.astype(np.float64)
        m2 = float(np.dot(wide, wide))
    return mean, m2


def _without_nonfinite(p: Partial, x: np.ndarray, ws: Workspace) -> tuple[np.ndarray, int]:
    """Count NaN and infinities, take the moments over the finite values, and zero the rest."""
    import numpy as np

    finite_mask = np.isfinite(x)
    nan = int(np.count_nonzero(np.isnan(x)))
    posinf = int(np.count_nonzero(np.isposinf(x)))
    p.nan += nan
    p.posinf += posinf
    p.neginf += x.size - int(np.count_nonzero(finite_mask)) - nan - posinf
    finite = x[finite_mask]
    if finite.size:
        total = float(np.add.reduce(finite, dtype=np.float64))
        p.add_moments(finite.size, *_moments(finite, total, ws))
        p.minimum = min(p.minimum, float(finite.min()))
        p.maximum = max(p.maximum, float(finite.max()))
    cleaned = ws.array("cleaned", x.size, x.dtype)
    np.copyto(cleaned, x)
    cleaned[~finite_mask] = 0
    return cleaned, x.size - finite.size


def _magnitude(x: np.ndarray, ws: Workspace, name: str = "magnitude") -> np.ndarray:
    import numpy as np

    if x.dtype == np.float32:  # clearing the sign bit is |x|, and faster than np.abs
        bits = ws.array(name, x.size, np.dtype(np.uint32))
        np.bitwise_and(x.view(np.uint32), 0x7FFFFFFF, out=bits)
        return bits.view(np.float32)
    out: np.ndarray = np.abs(x, out=ws.array(name, x.size, x.dtype))
    return out


def _group_max(magnitude: np.ndarray, width: int, ws: Workspace, starts: np.ndarray | None = None) -> np.ndarray:
    """Maximum of each run of ``width`` magnitudes (or of the runs beginning at ``starts``).

    float32 magnitudes are compared as their uint32 bit patterns (same order, no NaN handling), and
    short runs go through ``maximum.reduceat``, which is about twice as fast as a reduction over a
    short last axis.
    """
    import numpy as np

    values = magnitude.view(np.uint32) if magnitude.dtype == np.float32 else magnitude
    if starts is not None:
        out: np.ndarray = np.maximum.reduceat(values, starts)
    elif width <= REDUCEAT_WIDTH:
        out = np.maximum.reduceat(values, ws.starts(values.size, width))
    else:
        out = values.reshape(-1, width).max(axis=1)
    return out.view(magnitude.dtype)


def _whole_rows(
    p: Partial, x: np.ndarray, magnitude: np.ndarray, rows: int, features: Features, ws: Workspace, filled: int
) -> None:
    cols = x.size // rows
    ragged = cols % INT4_GROUP != 0  # the last group of each row is shorter
    starts = ws.group_starts(rows, cols, INT4_GROUP) if ragged else None
    groups = _group_max(magnitude, INT4_GROUP, ws, starts) if features.int4 else None
    # row maxima from the group maxima when there are groups: one pass fewer
    row_max = groups.reshape(rows, -1).max(axis=1) if groups is not None else _group_max(magnitude, cols, ws)
    if features.int8:
        scaled = _scaled(magnitude, row_max, INT8_LEVELS, rows, ws)
        if features.relative:
            _count_relative(p, scaled.reshape(-1), ws, filled)
        p.err8 += _rounding_error(scaled, row_max, INT8_LEVELS, ws)
    elif features.relative:  # one row (1-D tensors): compare with the row's own maximum
        _relative_direct(p, magnitude, float(row_max.max()), ws, filled)
    if groups is not None and starts is not None:
        p.err4 += _ragged_error(magnitude, groups, starts, INT4_LEVELS, ws)
    elif groups is not None:
        scaled = _scaled(magnitude, groups, INT4_LEVELS, groups.size, ws)
        p.err4 += _rounding_error(scaled, groups, INT4_LEVELS, ws)


def _ragged_error(magnitude: np.ndarray, absmax: np.ndarray, starts: np.ndarray, levels: int, ws: Workspace) -> float:
    """Rounding error for groups of unequal length (rows that are not a multiple of the group size)."""
    import numpy as np

    inverse = np.divide(levels, absmax, dtype=magnitude.dtype)
    inverse[absmax == 0] = 0
    sizes = np.diff(starts, append=magnitude.size)
    scaled = np.multiply(magnitude, np.repeat(inverse, sizes), out=ws.array("scaled", magnitude.size, magnitude.dtype))
    rounded = np.rint(scaled, out=ws.array("rounded", scaled.size, scaled.dtype))
    np.subtract(scaled, rounded, out=scaled)
    np.multiply(scaled, scaled, out=scaled)
    per_group = np.add.reduceat(scaled, starts, dtype=np.float64)
    return float(np.dot(per_group, absmax.astype(np.float64) ** 2)) / (levels * levels)


def _piece_of_row(
    p: Partial,
    x: np.ndarray,
    magnitude: np.ndarray,
    row_absmax: float,
    features: Features,
    ws: Workspace,
    filled: int,
) -> None:
    import numpy as np

    if features.relative:
        _relative_direct(p, magnitude, row_absmax, ws, filled)
    if features.int8:
        top = np.array([row_absmax], dtype=x.dtype)
        scaled = _scaled(magnitude, top, INT8_LEVELS, 1, ws)
        p.err8 += _rounding_error(scaled, top, INT8_LEVELS, ws)
    if features.int4 and magnitude.size % INT4_GROUP:  # the row's last piece ends in a short group
        starts = ws.starts(magnitude.size, INT4_GROUP)
        p.err4 += _ragged_error(magnitude, _group_max(magnitude, INT4_GROUP, ws, starts), starts, INT4_LEVELS, ws)
    elif features.int4:
        groups = _group_max(magnitude, INT4_GROUP, ws)
        scaled = _scaled(magnitude, groups, INT4_LEVELS, groups.size, ws)
        p.err4 += _rounding_error(scaled, groups, INT4_LEVELS, ws)


def _channels_last(
    p: Partial,
    magnitude: np.ndarray,
    rows: int,
    features: Features,
    ws: Workspace,
    filled: int,
    columns: np.ndarray | None,
) -> None:
    """int8 per output channel (a column), int4 in groups of 128 inputs down each column."""
    import numpy as np

    out = magnitude.size // rows
    by_row = magnitude.reshape(rows, out)
    if columns is not None and (features.int8 or features.relative):
        top = columns.astype(magnitude.dtype)
        inverse = np.divide(INT8_LEVELS, top, dtype=magnitude.dtype)
        inverse[top == 0] = 0
        scaled = ws.array("scaled", magnitude.size, magnitude.dtype).reshape(rows, out)
        np.multiply(by_row, inverse, out=scaled)
        if features.relative:
            _count_relative(p, scaled.reshape(-1), ws, filled)
        if features.int8:
            p.err8 += _column_error(scaled.reshape(1, rows, out), top.reshape(1, out), INT8_LEVELS, ws)
    if features.int4:
        groups = rows // INT4_GROUP
        stacked = by_row.reshape(groups, INT4_GROUP, out)
        if magnitude.dtype == np.float32:  # integer compare of the bit patterns: faster
            top4 = stacked.view(np.uint32).max(axis=1).view(np.float32)
        else:
            top4 = stacked.max(axis=1)
        inverse4 = np.divide(INT4_LEVELS, top4, dtype=magnitude.dtype)
        inverse4[top4 == 0] = 0
        scaled4 = ws.array("scaled", magnitude.size, magnitude.dtype).reshape(groups, INT4_GROUP, out)
        np.multiply(stacked, inverse4[:, None, :], out=scaled4)
        p.err4 += _column_error(scaled4, top4, INT4_LEVELS, ws)


def _column_error(scaled: np.ndarray, absmax: np.ndarray, levels: int, ws: Workspace) -> float:
    """Sum of squared rounding errors for scales that run down columns: ``scaled`` is (groups,
    rows per group, columns) and ``absmax`` (groups, columns)."""
    import numpy as np

    rounded = np.rint(scaled, out=ws.array("rounded", scaled.size, scaled.dtype).reshape(scaled.shape))
    np.subtract(scaled, rounded, out=scaled)
    np.multiply(scaled, scaled, out=scaled)
    per_column = np.add.reduce(scaled, axis=1, dtype=np.float64)
    return float(np.vdot(per_column, absmax.astype(np.float64) ** 2)) / (levels * levels)


def _scaled(magnitude: np.ndarray, absmax: np.ndarray, levels: int, groups: int, ws: Workspace) -> np.ndarray:
    """|x| / scale for scale = absmax / levels per group (the values split into ``groups`` runs).

    Round-to-nearest is symmetric, so the error of |x| is the error of x: scaling the magnitudes
    serves the quantization error and the relative counts alike. A group whose absmax is 0 scales
    to zeros (its inverse is set to 0; the caller runs under ``np.errstate(all="ignore")``).
    """
    import numpy as np

    inverse = np.divide(levels, absmax, dtype=magnitude.dtype)
    inverse[absmax == 0] = 0
    out = ws.array("scaled", magnitude.size, magnitude.dtype).reshape(groups, -1)
    np.multiply(magnitude.reshape(groups, -1), inverse[:, None], out=out)
    return out


def _rounding_error(scaled: np.ndarray, absmax: np.ndarray, levels: int, ws: Workspace) -> float:
    """Sum of squared errors of round-to-nearest, back in the tensor's units.

    ``scaled`` holds |x| / scale per group; the error of one value is (y - round(y)) * scale, so the
    sum is, per group, scale^2 times the sum of (y - round(y))^2 (a matrix-vector product).
    """
    import numpy as np

    rounded = np.rint(scaled, out=ws.array("rounded", scaled.size, scaled.dtype).reshape(scaled.shape))
    np.subtract(scaled, rounded, out=scaled)
    np.multiply(scaled, scaled, out=scaled)
    per_group = scaled @ ws.ones(scaled.shape[1], scaled.dtype)
    return float(np.dot(per_group, absmax * absmax)) / (levels * levels)


def _relative_direct(p: Partial, magnitude: np.ndarray, top: float, ws: Workspace, filled: int) -> None:
    """Relative counts for values of one row whose absolute maximum ``top`` is known."""
    import numpy as np

    inverse = np.array([top], dtype=magnitude.dtype)
    with np.errstate(divide="ignore"):
        inverse = np.where(inverse > 0, INT8_LEVELS / inverse, 0).astype(magnitude.dtype)
    scaled = np.multiply(magnitude, inverse[0], out=ws.array("scaled-magnitude", magnitude.size, magnitude.dtype))
    _count_relative(p, scaled, ws, filled)


def _count_relative(p: Partial, scaled_magnitude: np.ndarray, ws: Workspace, filled: int) -> None:
    """|x| * (127 / m) < 127 * r, in the block's precision: below r of the row maximum m, measured
    in int8 units (the value int8 quantization rounds). Rows whose maximum is 0 scale to zeros and
    count whole; so do the non-finite values zeroed before, which ``filled`` takes back out.
    """
    import numpy as np

    mask = ws.array("mask", scaled_magnitude.size, np.dtype(np.bool_))
    for i, r in enumerate(REL_THRESHOLDS):
        below = np.less(scaled_magnitude, r * INT8_LEVELS, out=mask)
        p.below_rel[i] += int(np.count_nonzero(below)) - filled


def _two_four(p: Partial, zero_mask: np.ndarray, zeros: int, columns: int = 0) -> None:
    """Groups of 4 consecutive inputs holding at least 2 zeros: along the last dimension, or down
    each column (4 consecutive rows) when ``columns`` says the tensor is channels-last."""
    import numpy as np

    if columns:
        groups = zero_mask.size // TWO_FOUR_GROUP
        p.two_four_groups += groups
        if p.two_four_broken or 2 * zeros < zero_mask.size:
            p.two_four_broken = True
            return
        counts = np.add.reduce(zero_mask.view(np.uint8).reshape(-1, TWO_FOUR_GROUP, columns), axis=1)
        ok = int(np.count_nonzero(counts >= 2))
        p.two_four_ok += ok
        p.two_four_broken = p.two_four_broken or ok < groups
        return

    groups = zero_mask.size // TWO_FOUR_GROUP
    p.two_four_groups += groups
    if p.two_four_broken or 2 * zeros < zero_mask.size:
        p.two_four_broken = True  # fewer zeros than half the values: some group has fewer than 2
        return
    packed = zero_mask.view(np.uint32)  # four 0/1 bytes per group: their sum sits in the top byte
    counts = (packed * np.uint32(0x01010101)) >> np.uint32(24)
    ok = int(np.count_nonzero(counts >= 2))
    p.two_four_ok += ok
    if ok < groups:
        p.two_four_broken = True
