"""``ckptscan diff``: the terminal report and the JSON document of a :class:`~ckptscan.diff.Diff`.

Only formatting: the comparison is :mod:`ckptscan.diff` (structure) and
:mod:`ckptscan.stats.compare` (values). The JSON document's schema is
``ckptscan/schema/diff.schema.json`` (``ckptscan schema --diff``).
"""

from __future__ import annotations

import math
from importlib import resources
from typing import TYPE_CHECKING, Any

from ckptscan._version import __version__
from ckptscan.diff import Diff, Pair, Side
from ckptscan.inventory import Tensor

if TYPE_CHECKING:
    from rich.console import RenderableType

    from ckptscan.stats.compare import ValueDiff

DIFF_SCHEMA_VERSION = "1.0"
DIFF_SCHEMA_RESOURCE = "diff.schema.json"
MAX_ROWS = 40  # rows per terminal table (every row is in --json)


# -- JSON ------------------------------------------------------------------------------------------


def document(diff: Diff) -> dict[str, Any]:
    return {
        "schema_version": DIFF_SCHEMA_VERSION,
        "tool": {"name": "ckptscan", "version": __version__},
        "a": _side(diff.a),
        "b": _side(diff.b),
        "summary": {
            "matched": len(diff.pairs),
            "added": len(diff.added),
            "removed": len(diff.removed),
            "renamed": len(diff.renamed),
            "dtype_changed": len(diff.dtype_changes),
            "shape_changed": len(diff.shape_changes),
            "metadata_changed": len(diff.metadata),
            "values_compared": None if diff.values is None else sum(v.skipped is None for v in diff.values),
            "values_changed": None if diff.values is None else len(diff.changed_values),
            "file_bytes_delta": diff.b.file_bytes - diff.a.file_bytes,
            "parameters_delta": diff.b.parameters - diff.a.parameters,
        },
        "added": [_tensor(t) for t in diff.added],
        "removed": [_tensor(t) for t in diff.removed],
        "matched": [_pair(p, v) for p, v in zip(diff.pairs, _values(diff), strict=True)],
        "roles": [
            {
                "role": r.role,
                "tensors_a": r.tensors_a,
                "tensors_b": r.tensors_b,
                "bytes_a": r.bytes_a,
                "bytes_b": r.bytes_b,
                "bytes_delta": r.bytes_b - r.bytes_a,
                "parameters_a": r.parameters_a,
                "parameters_b": r.parameters_b,
                "parameters_delta": r.parameters_b - r.parameters_a,
            }
            for r in diff.roles
        ],
        "metadata": [{"key": m.key, "change": m.change, "a": m.a, "b": m.b} for m in diff.metadata],
        "notes": list(diff.notes),
    }


def _values(diff: Diff) -> list[ValueDiff | None]:
    return list(diff.values) if diff.values is not None else [None] * len(diff.pairs)


def _side(side: Side) -> dict[str, Any]:
    return {
        "path": side.path,
        "format": side.format,
        "file_bytes": side.file_bytes,
        "tensors": side.tensors,
        "tensor_bytes": side.tensor_bytes,
        "parameters": side.parameters,
    }


def _tensor(t: Tensor) -> dict[str, Any]:
    return {"name": t.name, "shape": list(t.shape), "dtype": t.dtype.name, "elements": t.elements, "bytes": t.nbytes}


def _finite(x: float | None) -> float | None:
    return x if x is None or math.isfinite(x) else None


def _pair(p: Pair, v: ValueDiff | None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "a": p.a.name,
        "b": p.b.name,
        "match": p.match,
        "shape_a": list(p.a.shape),
        "shape_b": list(p.b.shape),
        "dtype_a": p.a.dtype.name,
        "dtype_b": p.b.dtype.name,
        "bytes_a": p.a.nbytes,
        "bytes_b": p.b.nbytes,
        "values": None,
    }
    if v is not None:
        out["values"] = {
            "elements": v.elements,
            "identical": v.identical if v.skipped is None else None,
            "changed": v.changed,
            "nonfinite_mismatch": v.nonfinite_mismatch,
            "max_abs_diff": _finite(v.max_abs_diff),
            "rel_frobenius": _finite(v.rel_frobenius),
            "cosine": _finite(v.cosine),
            "sqnr_db": _finite(v.sqnr_db),
            "note": v.note,
            "skipped": v.skipped,
        }
    return out


def schema() -> dict[str, Any]:
    import json

    text = resources.files("ckptscan.schema").joinpath(DIFF_SCHEMA_RESOURCE).read_text(encoding="utf-8")
    loaded: dict[str, Any] = json.loads(text)
    return loaded


# -- terminal --------------------------------------------------------------------------------------


def report(diff: Diff, *, show_all: bool = False) -> list[RenderableType]:
    from rich.rule import Rule
    from rich.table import Table
    from rich.text import Text

    from ckptscan.report.terminal import human_bytes, human_count

    limit = None if show_all else MAX_ROWS
    out: list[RenderableType] = [
        Rule(Text.assemble(("diff  ", "bold"), (diff.a.path, "bold"), "  ->  ", (diff.b.path, "bold")), align="left")
    ]
    grid = Table(box=None, padding=(0, 2))
    grid.add_column("")
    grid.add_column("A", justify="right")
    grid.add_column("B", justify="right")
    grid.add_column("change", justify="right")
    grid.add_row("format", diff.a.format, diff.b.format, "")
    grid.add_row("file bytes", human_bytes(diff.a.file_bytes), human_bytes(diff.b.file_bytes),
                 _signed_bytes(diff.b.file_bytes - diff.a.file_bytes))  # fmt: skip
    grid.add_row("tensors", f"{diff.a.tensors:,}", f"{diff.b.tensors:,}", _signed(diff.b.tensors - diff.a.tensors))
    grid.add_row("parameters", human_count(diff.a.parameters), human_count(diff.b.parameters),
                 _signed(diff.b.parameters - diff.a.parameters))  # fmt: skip
    out.append(grid)
    words = [
        f"{len(diff.pairs):,} matched",
        f"{len(diff.renamed):,} renamed",
        f"{len(diff.added):,} added",
        f"{len(diff.removed):,} removed",
        f"{len(diff.dtype_changes):,} dtype changes",
        f"{len(diff.shape_changes):,} shape changes",
    ]
    if diff.values is not None:
        words.append(f"{len(diff.changed_values):,} with changed values")
    out.append(Text("  ".join(words), style="bold"))

    if diff.added or diff.removed:
        t = Table(title="added / removed tensors", title_justify="left")
        for col in ("", "name", "shape", "dtype", "bytes"):
            t.add_column(col, justify="right" if col == "bytes" else "left")
        rows = [("+", x) for x in diff.added] + [("-", x) for x in diff.removed]
        for sign, x in rows[:limit]:
            style = "green" if sign == "+" else "red"
            t.add_row(Text(sign, style=style), Text(x.name), _shape(x.shape), x.dtype.name, human_bytes(x.nbytes))
        _more(t, len(rows), limit, 5)
        out.append(t)

    changed_pairs = [p for p in diff.pairs if p.match != "name" or p.dtype_changed or p.shape_changed]
    if changed_pairs:
        t = Table(title="renamed, retyped or reshaped", title_justify="left")
        for col in ("A", "B", "matched by", "dtype", "shape"):
            t.add_column(col)
        for p in changed_pairs[:limit]:
            t.add_row(
                Text(p.a.name),
                Text(p.b.name if p.b.name != p.a.name else "="),
                p.match,
                f"{p.a.dtype.name} -> {p.b.dtype.name}" if p.dtype_changed else p.a.dtype.name,
                f"{_shape(p.a.shape)} -> {_shape(p.b.shape)}" if p.shape_changed else _shape(p.a.shape),
            )
        _more(t, len(changed_pairs), limit, 5)
        out.append(t)

    if diff.roles:
        t = Table(title="bytes and parameters by role", title_justify="left")
        for col in ("role", "bytes A", "bytes B", "bytes change", "params A", "params B", "params change"):
            t.add_column(col, justify="left" if col == "role" else "right")
        for r in diff.roles:
            t.add_row(r.role, human_bytes(r.bytes_a), human_bytes(r.bytes_b), _signed_bytes(r.bytes_b - r.bytes_a),
                      human_count(r.parameters_a), human_count(r.parameters_b),
                      _signed(r.parameters_b - r.parameters_a))  # fmt: skip
        out.append(t)

    if diff.values is not None:
        if diff.changed_values or any(v.skipped for v in diff.values):
            out.append(values_table(diff, limit))
        else:
            out.append(Text(f"values: all {len(diff.values):,} matched tensors are identical", style="bold green"))

    if diff.metadata:
        t = Table(title="metadata changes", title_justify="left")
        for col in ("key", "change", "A", "B"):
            t.add_column(col, overflow="fold")
        for m in diff.metadata[:limit]:
            t.add_row(Text(m.key), m.change, Text(m.a or ""), Text(m.b or ""))
        _more(t, len(diff.metadata), limit, 4)
        out.append(t)
    for note in diff.notes:
        out.append(Text(note, style="dim"))
    return out


def values_table(diff: Diff, limit: int | None) -> RenderableType:
    from rich.table import Table
    from rich.text import Text

    assert diff.values is not None
    shown = [v for v in diff.values if v.skipped is not None or not v.identical]
    shown.sort(key=lambda v: (v.skipped is not None, v.sqnr_db if v.sqnr_db is not None else math.inf))
    identical = sum(v.skipped is None and v.identical for v in diff.values)
    title = f"values: {len(diff.changed_values):,} tensors changed, {identical:,} identical (B against A)"
    t = Table(title=title, title_justify="left")
    for col in ("tensor", "changed", "max |B-A|", "rel. Frobenius", "cosine", "SQNR dB"):
        t.add_column(col, justify="left" if col == "tensor" else "right")
    for v in shown[:limit]:
        name = v.a if v.a == v.b else f"{v.a} -> {v.b}"
        if v.skipped is not None:
            t.add_row(Text(name), Text(f"not compared: {v.skipped}", style="dim"), "", "", "", "")
            continue
        t.add_row(
            Text(name),
            f"{v.changed:,}/{v.elements:,}",
            _num(v.max_abs_diff),
            _num(v.rel_frobenius),
            _num(v.cosine, 6),
            "inf" if v.sqnr_db is None else f"{v.sqnr_db:.2f}",
        )
    _more(t, len(shown), limit, 6)
    return t


def _more(table: Any, count: int, limit: int | None, columns: int) -> None:
    if limit is not None and count > limit:
        table.add_row(f"[dim]... {count - limit:,} more (--all, or --json)[/dim]", *[""] * (columns - 1))


def _num(x: float | None, digits: int = 4) -> str:
    return "-" if x is None else f"{x:.{digits}g}"


def _signed(n: int) -> str:
    return "0" if n == 0 else f"{n:+,}"


def _signed_bytes(n: int) -> str:
    from ckptscan.report.terminal import human_bytes

    return "0" if n == 0 else ("+" if n > 0 else "-") + human_bytes(abs(n))


def _shape(shape: tuple[int, ...]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"
