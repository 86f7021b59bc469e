"""Terminal sections of the value statistics (``--stats``): integrity first, then pruning potential
and quantization sensitivity, and with ``--tensors`` the per-tensor figures. Renderables only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from ckptscan.inventory import Severity
from ckptscan.report.format import SEVERITY_STYLE, human_bytes

if TYPE_CHECKING:
    from rich.console import RenderableType

    from ckptscan.pipeline import ModelReport
    from ckptscan.stats import StatsResult, TensorStats
    from ckptscan.stats.summary import Amount, MeasuredError, SqnrTotal

MAX_FINDING_ROWS = 20


def stats_sections(model: ModelReport, *, tensors: bool = False) -> list[RenderableType]:
    """The value statistics sections of one model report (empty when it has no statistics)."""
    stats = model.stats
    if stats is None:
        return []
    out = [header(stats), integrity(stats)]
    for section in (pruning(stats), quantization(stats, model.measured)):
        if section is not None:
            out.append(section)
    if tensors:
        out.append(tensor_stats(stats))
    return out


def header(stats: StatsResult) -> RenderableType:
    from rich.text import Text

    summary = stats.summary
    rate = ""
    if stats.seconds >= 0.5:
        rate = f" ({stats.bytes_read / stats.seconds / 1e9:.2f} GB/s, {_plural(stats.workers, 'worker')})"
    line = Text.assemble(
        ("Values ", "bold"),
        f"{_plural(summary.tensors, 'tensor')}, {human_bytes(stats.bytes_read)} read in {stats.seconds:.1f} s" + rate,
    )
    if stats.sampled:
        line.append(f"  sampled: about {summary.sample_fraction or 0:.1%} of each large tensor", style="yellow")
    skipped = summary.skipped
    if skipped:
        reasons: dict[str, int] = {}
        for entry in skipped:
            reasons[entry.reason] = reasons.get(entry.reason, 0) + 1
        listed = "; ".join(f"{n} x {reason}" for reason, n in list(reasons.items())[:4])
        line.append(f"\n{_plural(len(skipped), 'tensor')} without statistics: {listed}", style="yellow")
    return line


def integrity(stats: StatsResult) -> RenderableType:
    from rich.table import Table
    from rich.text import Text

    if not stats.findings:
        return Text("Integrity: no NaN or Inf values, no all-zero tensors, no duplicated tensors", style="green")
    table = Table(title="Integrity", title_justify="left", title_style="bold red", show_edge=False)
    table.add_column("severity")
    table.add_column("finding")
    table.add_column("tensor", overflow="fold")
    table.add_column("message", overflow="fold")
    ordered = sorted(stats.findings, key=lambda f: -f.severity.rank)
    for f in ordered[:MAX_FINDING_ROWS]:
        table.add_row(f"[{SEVERITY_STYLE[f.severity]}]{f.severity.value}[/]", f.code, f.where, f.message)
    if len(ordered) > MAX_FINDING_ROWS:
        rest = ordered[MAX_FINDING_ROWS:]
        worst = max((f.severity for f in rest), key=lambda s: s.rank, default=Severity.INFO)
        table.add_row("", f"[dim]... {len(rest)} more[/dim]", "", f"(up to {worst.value}; --json lists all)")
    return table


def pruning(stats: StatsResult) -> RenderableType | None:
    data = stats.summary.pruning
    counts = data.counts
    if not counts.elements:
        return None
    from rich.table import Table

    estimated = " (estimated from samples)" if data.estimated else ""
    table = Table(title=f"Pruning potential{estimated}", title_justify="left", title_style="bold", show_edge=False)
    table.add_column("values")
    table.add_column("count", justify="right")
    table.add_column("share", justify="right")
    table.add_column("bytes", justify="right")
    total = counts.elements
    rows: list[tuple[str, Amount]] = [("exactly zero", counts.zeros)]
    rows += [(f"|x| < {key}", value) for key, value in counts.below.items()]
    rows += [(f"|x| < {float(key):g} x row max", value) for key, value in counts.below_rel.items()]
    for label, value in rows:
        table.add_row(label, f"{value.elements:,}", f"{value.elements / total:.2%}", human_bytes(value.bytes))
    pattern = data.structured_2_4
    if pattern.tensors:
        table.add_row(
            "2:4 pattern holds", f"{len(pattern.tensors)} tensors", f"{pattern.elements / total:.2%}",
            human_bytes(pattern.bytes),
        )  # fmt: skip
    by_role = data.by_role
    if by_role:
        from rich.console import Group

        roles = Table(title="By role", title_justify="left", title_style="bold", show_edge=False)
        roles.add_column("role")
        roles.add_column("values", justify="right")
        roles.add_column("zero", justify="right")
        roles.add_column("|x| < 0.001", justify="right")
        roles.add_column("< 0.01 x row max", justify="right")
        for role, c in by_role.items():
            n = c.elements or 1
            roles.add_row(
                role,
                f"{c.elements:,}",
                f"{c.zeros.elements / n:.2%}",
                f"{_elements(c.below.get('0.001')) / n:.2%}",
                f"{_elements(c.below_rel.get('0.01')) / n:.2%}",
            )
        return Group(table, roles)
    return table


def quantization(stats: StatsResult, measured: Mapping[str, MeasuredError] | None = None) -> RenderableType | None:
    data = stats.summary.quantization
    if not data.ranking:
        return None
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    def overall(total: SqnrTotal, label: str) -> str:
        if total.sqnr_db is None:
            return f"{label}: -"
        return (
            f"{label}: {total.sqnr_db:.1f} dB overall (min {total.min_db:.1f}, median {total.median_db:.1f},"
            f" {total.tensors} tensors)"
        )

    lines = Text.assemble(
        ("Quantization error, measured ", "bold"),
        "(SQNR, higher is better)\n",
        overall(data.int8, "  int8 per channel"),
        "\n",
        overall(data.int4_g128, "  int4 groups of 128"),
    )
    for name, record in (measured or {}).items():  # the analyzer's reduction targets
        if record.sqnr_db is not None:
            lines.append(
                f"\n  reduction target {name}: {record.sqnr_db:.1f} dB, measured on {record.tensors} of the "
                f"{record.of} tensors it quantizes"
            )
    table = Table(title="Most sensitive tensors", title_justify="left", title_style="bold", show_edge=False)
    table.add_column("tensor", overflow="fold")
    table.add_column("int8 dB", justify="right")
    table.add_column("int4 dB", justify="right")
    table.add_column("absmax/std", justify="right")
    table.add_column("bytes", justify="right")
    table.add_column("keep in higher precision because", overflow="fold")
    for entry in data.ranking:
        table.add_row(
            entry.name,
            _db(entry.sqnr_int8_db),
            _db(entry.sqnr_int4_g128_db),
            "-" if entry.outlier is None else f"{entry.outlier:.1f}",
            human_bytes(entry.bytes),
            "; ".join(entry.reasons) or "[dim]-[/dim]",
        )
    keep = data.keep_high_precision
    note = Text(
        f"{_plural(len(keep), 'tensor')} meet{'s' if len(keep) == 1 else ''} a sensitivity criterion "
        f"({human_bytes(sum(e.bytes for e in keep))})"
        if keep
        else "no tensor meets a sensitivity criterion",
        style="yellow" if keep else "dim",
    )
    return Group(lines, table, note)


def tensor_stats(stats: StatsResult) -> RenderableType:
    from rich.table import Table

    table = Table(title="Tensor values", title_justify="left", title_style="bold", show_edge=False)
    table.add_column("tensor", overflow="fold")
    for column in ("min", "max", "mean", "std", "zeros", "NaN/Inf", "int8 dB", "int4 dB"):
        table.add_column(column, justify="right", no_wrap=True)
    for s in stats.tensors:
        if s.skipped is not None:
            table.add_row(s.name, f"[dim]{s.skipped}[/dim]", "", "", "", "", "", "", "")
            continue
        bad = f"[red]{s.nan}/{s.inf}[/red]" if s.nan or s.inf else "-"
        zeros = f"{s.zeros / s.elements:.1%}" if s.elements else "-"
        table.add_row(
            s.name, _num(s.min), _num(s.max), _num(s.mean), _num(s.std), zeros, bad,
            _db(s.sqnr_int8_db, s, "int8"), _db(s.sqnr_int4_g128_db, s, "int4_g128"),
        )  # fmt: skip
    return table


def _elements(amount: Amount | None) -> int:
    return amount.elements if amount is not None else 0


def _plural(count: int, noun: str) -> str:
    return f"{count:,} {noun}" + ("" if count == 1 else "s")


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _db(value: float | None, s: TensorStats | None = None, key: str = "") -> str:
    if value is not None:
        return f"{value:.1f}"
    note = s.notes.get(key, "") if s is not None else ""
    return "lossless" if note.startswith("lossless") else "-"
