"""The rich terminal report. Builds renderables; printing them is the CLI's job.

A report is a list of sections, each a function from a result to a renderable (or None when it
has nothing to say), so later analyses add a section without touching the others.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ckptscan.analyze import modules, summary
from ckptscan.inventory import Finding, Inventory, Severity
from ckptscan.scan import ScanResult

if TYPE_CHECKING:
    from rich.console import RenderableType

SEVERITY_STYLE = {
    Severity.CRITICAL: "bold white on red",
    Severity.HIGH: "bold red",
    Severity.MEDIUM: "yellow",
    Severity.LOW: "cyan",
    Severity.INFO: "dim",
}
MAX_MODULE_ROWS = 30
MAX_METADATA_ROWS = 14
HIDDEN_METADATA = frozenset({"kv_types"})  # detail for --json; noise on a terminal


@dataclass(frozen=True, slots=True)
class Options:
    tensors: bool = False  # the full tensor table
    largest: int = 10


Section = Callable[[Inventory, Options], "RenderableType | None"]


def report(results: Iterable[ScanResult], options: Options | None = None) -> list[RenderableType]:
    options = options or Options()
    out: list[RenderableType] = []
    for result in results:
        out.extend(result_report(result, options))
    return out


def result_report(result: ScanResult, options: Options) -> list[RenderableType]:
    from rich.rule import Rule
    from rich.text import Text

    title = Text.assemble((result.path, "bold"), "  ", (result.format or "unrecognized", "magenta"))
    out: list[RenderableType] = [Rule(title, align="left", style="blue")]
    if result.error is not None:
        out.append(Text.assemble(("error ", "bold red"), (f"[{result.error.code}] ", "red"), result.error.message))
    inventory = result.inventory
    if inventory is not None:
        for section in SECTIONS:
            rendered = section(inventory, options)
            if rendered is not None:
                out.append(rendered)
    out.append(Text(""))
    return out


# -- sections ------------------------------------------------------------------------------------


def overview(inventory: Inventory, options: Options) -> RenderableType:
    from rich.table import Table

    t = summary.totals(inventory)
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    files = inventory.files
    present = [f for f in files if f.role not in ("missing",)]
    grid.add_row("files", f"{len(present)} ({human_bytes(inventory.file_bytes)})" + _missing_note(inventory))
    if not inventory.tensors and not inventory.complete:
        grid.add_row("tensors", "[red]unknown: the tensor data is not here (see findings)[/red]")
        return grid
    shared = ""
    if t.unique.tensors != t.every.tensors:
        repeats = t.every.tensors - t.unique.tensors
        shared = f"  [dim]({t.unique.tensors:,} unique views: {repeats:,} entries repeat another)[/dim]"
    grid.add_row("tensors", f"{t.every.tensors:,}{shared}")
    unique_elements = ""
    if t.unique.elements != t.every.elements:
        unique_elements = f"  [dim]({human_count(t.unique.elements)} counting shared entries once)[/dim]"
    grid.add_row("elements", f"{_with_human(t.every.elements)}{unique_elements}")
    grid.add_row("tensor bytes", _bytes_exact(t.every.bytes))
    if t.stored_bytes != t.every.bytes:
        grid.add_row("stored bytes", f"{_bytes_exact(t.stored_bytes)}  [dim]shared storages once[/dim]")
    if inventory.file_bytes:
        other = inventory.file_bytes - t.stored_bytes
        share = other / inventory.file_bytes
        grid.add_row("non-tensor bytes", f"{_bytes_exact(other)}, {share:.2%} of the files")
    return grid


def findings(inventory: Inventory, options: Options) -> RenderableType | None:
    if not inventory.findings:
        return None
    from rich.table import Table

    table = Table(title="Findings", title_justify="left", title_style="bold red", show_edge=False, expand=False)
    table.add_column("severity")
    table.add_column("finding")
    table.add_column("message", overflow="fold")
    for severity, code, group in _grouped(inventory.findings):
        label = f"[{SEVERITY_STYLE[severity]}]{severity.value}[/]"
        if len(group) == 1:
            table.add_row(label, code, group[0].message)
        else:  # many low findings of one kind (e.g. unknown pickle globals): one row naming their subjects
            subjects = ", ".join(f.subject for f in group)
            table.add_row(label, f"{code} x{len(group)}", subjects)
    return table


def _grouped(found: Iterable[Finding]) -> list[tuple[Severity, str, list[Finding]]]:
    """Findings by severity (worst first); LOW/INFO ones with subjects are collapsed per code."""
    rows: list[tuple[Severity, str, list[Finding]]] = []
    groups: dict[tuple[Severity, str], list[Finding]] = {}
    for f in sorted(found, key=lambda f: -f.severity.rank):
        if f.severity.rank <= Severity.LOW.rank and f.subject:
            key = (f.severity, f.code)
            if key not in groups:
                groups[key] = []
                rows.append((f.severity, f.code, groups[key]))
            groups[key].append(f)
        else:
            rows.append((f.severity, f.code, [f]))
    return rows


def dtypes(inventory: Inventory, options: Options) -> RenderableType | None:
    if not inventory.tensors:
        return None
    from rich.table import Table

    table = Table(title="By dtype", title_justify="left", title_style="bold", show_edge=False)
    table.add_column("dtype")
    table.add_column("tensors", justify="right")
    table.add_column("elements", justify="right")
    table.add_column("bytes", justify="right")
    table.add_column("share", justify="right")
    total = sum(t.nbytes for t in inventory.tensors) or 1
    for name, c in summary.by_dtype(inventory.tensors).items():
        table.add_row(name, f"{c.tensors:,}", f"{c.elements:,}", human_bytes(c.bytes), f"{c.bytes / total:.1%}")
    return table


def module_rollup(inventory: Inventory, options: Options) -> RenderableType | None:
    groups = modules.rollup(inventory.tensors)
    if not 2 <= len(groups) < len(inventory.tensors):
        return None  # one row, or no grouping at all: the other tables say it better
    from rich.table import Table

    table = Table(title="By module", title_justify="left", title_style="bold", show_edge=False)
    table.add_column("module", overflow="fold")
    table.add_column("blocks", justify="right")
    table.add_column("tensors", justify="right")
    table.add_column("elements", justify="right")
    table.add_column("bytes", justify="right")
    for g in groups[:MAX_MODULE_ROWS]:
        blocks = f"x{g.blocks}" if g.blocks > 1 else ""
        table.add_row(g.name, blocks, f"{g.tensors:,}", f"{g.elements:,}", human_bytes(g.bytes))
    if len(groups) > MAX_MODULE_ROWS:
        rest = groups[MAX_MODULE_ROWS:]
        table.add_row(
            f"[dim]... {len(rest)} more[/dim]",
            "",
            f"{sum(g.tensors for g in rest):,}",
            f"{sum(g.elements for g in rest):,}",
            human_bytes(sum(g.bytes for g in rest)),
        )
    return table


def largest_tensors(inventory: Inventory, options: Options) -> RenderableType | None:
    if options.tensors or len(inventory.tensors) < 2:
        return None
    from rich.table import Table

    table = Table(title=f"Largest tensors (of {len(inventory.tensors):,})", title_justify="left",
                  title_style="bold", show_edge=False)  # fmt: skip
    table.add_column("name", overflow="fold")
    table.add_column("shape")
    table.add_column("dtype")
    table.add_column("bytes", justify="right")
    for t in summary.largest(inventory.tensors, options.largest):
        table.add_row(t.name, _shape(t.shape), t.dtype.name, human_bytes(t.nbytes))
    return table


def tensor_table(inventory: Inventory, options: Options) -> RenderableType | None:
    if not options.tensors or not inventory.tensors:
        return None
    from rich.table import Table

    multi_file = len({t.file for t in inventory.tensors}) > 1
    table = Table(title="Tensors", title_justify="left", title_style="bold", show_edge=False)
    _tensor_columns(table, multi_file=multi_file)
    for t in inventory.tensors:
        row = [t.name, _shape(t.shape), t.dtype.name, f"{t.elements:,}", human_bytes(t.nbytes)]
        row.append("-" if t.offset is None else f"{t.offset:,}")
        if multi_file:
            row.append(t.file)
        table.add_row(*row)
    return table


def metadata(inventory: Inventory, options: Options) -> RenderableType | None:
    rows = list(_flatten(inventory.metadata))
    if not rows:
        return None
    from rich.table import Table

    table = Table(title="Metadata", title_justify="left", title_style="bold", show_edge=False, show_header=False)
    key_width = min(40, max(len(key) for key, _ in rows[:MAX_METADATA_ROWS]))
    table.add_column("key", style="dim", no_wrap=True, overflow="ellipsis", min_width=key_width)
    table.add_column("value", overflow="ellipsis", no_wrap=True, ratio=1)
    for key, value in rows[:MAX_METADATA_ROWS]:
        table.add_row(key, value)
    if len(rows) > MAX_METADATA_ROWS:
        table.add_row(f"... {len(rows) - MAX_METADATA_ROWS} more", "(--json shows all)")
    return table


def warnings(inventory: Inventory, options: Options) -> RenderableType | None:
    if not inventory.warnings:
        return None
    from rich.text import Text

    return Text("\n".join(f"warning: {w}" for w in inventory.warnings), style="yellow")


SECTIONS: list[Section] = [
    overview,
    findings,
    dtypes,
    module_rollup,
    largest_tensors,
    tensor_table,
    metadata,
    warnings,
]


# -- formatting ----------------------------------------------------------------------------------


def human_bytes(n: int) -> str:
    value = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(value) < 1000 or unit == "TB":
            return f"{value:,.0f} {unit}" if unit == "B" else f"{value:,.2f} {unit}"
        value /= 1000
    return f"{n} B"


def human_count(n: int) -> str:
    for threshold, suffix in ((10**12, "T"), (10**9, "B"), (10**6, "M"), (10**3, "K")):
        if abs(n) >= threshold:
            return f"{n / threshold:.2f}{suffix}"
    return str(n)


def _with_human(n: int) -> str:
    return f"{n:,} ({human_count(n)})" if n >= 1000 else f"{n:,}"


def _bytes_exact(n: int) -> str:
    return f"{human_bytes(n)} ({n:,} B)" if n >= 1000 else f"{n:,} B"


def _missing_note(inventory: Inventory) -> str:
    missing = [f for f in inventory.files if f.role in ("missing", "lfs-pointer", "unreadable")]
    if not missing:
        return ""
    return f"  [red]{len(missing)} not readable: {', '.join(f'{f.path} ({f.role})' for f in missing[:4])}[/red]"


def _shape(shape: tuple[int, ...]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _tensor_columns(table: Any, *, multi_file: bool) -> None:
    table.add_column("name", overflow="fold")
    table.add_column("shape")
    table.add_column("dtype")
    table.add_column("elements", justify="right")
    table.add_column("bytes", justify="right")
    table.add_column("offset", justify="right")
    if multi_file:
        table.add_column("file")


def _flatten(value: Mapping[str, Any], prefix: str = "") -> Iterable[tuple[str, str]]:
    for key, item in value.items():
        if key in HIDDEN_METADATA:
            continue
        name = f"{prefix}{key}"
        if isinstance(item, Mapping) and not ("count" in item and "element_type" in item):
            yield from _flatten(item, name + ".")
        elif isinstance(item, Mapping):
            yield name, f"array of {item['count']:,} {item['element_type']}"
        elif isinstance(item, list) and len(item) > 8:
            yield name, f"[{', '.join(map(repr, item[:8]))}, ...] ({len(item)} items)"
        else:
            yield name, str(item) if not isinstance(item, str) else item.replace("\n", "\\n")
