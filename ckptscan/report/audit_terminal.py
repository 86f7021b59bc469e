"""The rich terminal report of an audit. Builds renderables from the ``audit`` summary section and
the per-model rows; printing them is the CLI's job."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ckptscan.report.format import SEVERITY_STYLE, human_bytes, human_count
from ckptscan.safe_text import clean, safe

if TYPE_CHECKING:
    from rich.console import RenderableType
    from rich.table import Table

from ckptscan.inventory import Severity

MAX_PROBLEM_ROWS = 30
MAX_FINDING_ROWS = 30

SOURCE_NOTE = {
    "analyzer": "",
    "files": " [dim](training-state files deleted whole)[/dim]",
    "inventory": " [dim](from the readers' structure tags; analyzer absent)[/dim]",
    "mixed": "",
    "none": "",
}
DEDUPE_NOTE = {
    "content-hash": "same name, shape, dtype and content hash",
    "metadata": "by metadata: same name, shape and dtype, content not compared (an upper bound; use --stats)",
    "mixed": "content hash where the stats pass gave one, metadata elsewhere",
}


@dataclass(frozen=True, slots=True)
class Options:
    """How many models the audit's terminal report lists one by one."""

    models: int = 50  # list every model when there are at most this many (0: never, -1: always)


def report(
    summary: Mapping[str, Any], rows: Sequence[Mapping[str, Any]], options: Options | None = None
) -> list[RenderableType]:
    options = options or Options()
    shorten = Shortener(summary["roots"])
    out: list[RenderableType | None] = [overview(summary)]
    if rows and options.models and (options.models < 0 or len(rows) <= options.models):
        out.append(model_table(rows, shorten))
    out.extend(section(summary) for section in (by_format, by_dtype, by_role, recoverable))
    out.extend(listing(summary, shorten) for listing in (offenders, problems, findings, skipped))
    out.append(notes(summary))
    return [r for r in out if r is not None]


class Shortener:
    """Paths as the reader knows them: relative to the audited folder (or to the folders' common parent)."""

    def __init__(self, roots: Sequence[str]) -> None:
        folders = [os.path.abspath(r) for r in roots if os.path.isdir(r)]
        if len(folders) == 1:
            self.base: str | None = folders[0]
        elif folders:
            self.base = os.path.commonpath(folders)
        else:
            self.base = None

    def __call__(self, path: str) -> str:
        if self.base is None:
            return path
        absolute = os.path.abspath(path)
        if absolute == self.base or not absolute.startswith(self.base.rstrip(os.sep) + os.sep):
            return path
        return os.path.relpath(absolute, self.base)


def overview(summary: Mapping[str, Any]) -> RenderableType:
    from rich.table import Table

    totals = summary["totals"]
    discovery = summary["discovery"]
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    if summary.get("interrupted"):
        grid.add_row("[bold red]interrupted[/]", "[red]the totals below cover only what was read before Ctrl-C[/red]")
    grid.add_row("audited", safe(", ".join(summary["roots"])))
    grid.add_row(
        "files",
        f"{discovery['files']:,} found ({human_bytes(discovery['bytes'])}) in {discovery['folders']:,} folders; "
        f"{discovery['files_done']:,} covered",
    )
    status = f"{totals['models']:,} ({totals['ok']:,} read"
    if totals["incomplete"]:
        status += f", [red]{totals['incomplete']:,} incomplete[/red]"
    if totals["failed"]:
        status += f", [red]{totals['failed']:,} failed[/red]"
    grid.add_row("models", status + ")")
    grid.add_row("model bytes", f"{human_bytes(totals['file_bytes'])} in {totals['files']:,} files")
    grid.add_row("tensors", f"{totals['tensors']:,} ({human_bytes(totals['tensor_bytes'])})")
    grid.add_row("parameters", f"{totals['parameters']:,} ({human_count(totals['parameters'])})")
    rec = summary["recoverable"]
    grid.add_row(
        "recoverable",
        f"[bold]{human_bytes(rec['total_bytes'])}[/bold] by stripping training state and deduplicating (details below)",
    )
    grid.add_row("took", f"{summary['elapsed_s']:.2f} s with {summary['workers']} worker(s)")
    return grid


def model_table(rows: Sequence[Mapping[str, Any]], shorten: Shortener) -> RenderableType:
    table = _table(f"Models ({len(rows):,})")
    table.add_column("model", overflow="fold", ratio=1, min_width=16)
    table.add_column("format", no_wrap=True, overflow="ellipsis", max_width=12)
    for column in ("bytes", "tensors", "params", "recoverable"):
        table.add_column(column, justify="right", no_wrap=True)
    for r in rows:
        name = safe(shorten(r["path"]))
        if r["status"] != "ok":
            name += f"  [red]{r['status']}: {r['error_code']}[/red]"
        table.add_row(
            name,
            safe(r["format"] or "-"),
            human_bytes(r["file_bytes"]),
            f"{r['tensors']:,}",
            human_count(r["parameters"]),
            _bytes_or_dash(r["strip_bytes"] + r["duplicate_bytes"]),
        )
    return table


def by_format(summary: Mapping[str, Any]) -> RenderableType | None:
    groups = summary["by_format"]
    if not groups:
        return None
    table = _table("By format")
    table.add_column("format")
    for column in ("models", "files", "bytes", "tensors", "parameters"):
        table.add_column(column, justify="right")
    for name, c in sorted(groups.items(), key=lambda item: -item[1].get("file_bytes", 0)):
        table.add_row(
            safe(name),
            f"{c.get('models', 0):,}",
            f"{c.get('files', 0):,}",
            human_bytes(c.get("file_bytes", 0)),
            f"{c.get('tensors', 0):,}",
            human_count(c.get("parameters", 0)),
        )
    return table


def by_dtype(summary: Mapping[str, Any]) -> RenderableType | None:
    return _count_table("By dtype", "dtype", summary["by_dtype"])


def by_role(summary: Mapping[str, Any]) -> RenderableType | None:
    title = "By role" + SOURCE_NOTE.get(summary["by_role_source"], "")
    return _count_table(title, "role", summary["by_role"])


def recoverable(summary: Mapping[str, Any]) -> RenderableType:
    rec = summary["recoverable"]
    table = _table("Recoverable bytes")
    table.add_column("how")
    table.add_column("bytes", justify="right")
    table.add_column("what", overflow="fold")
    strip, dedupe, quantize = rec["strip"], rec["dedupe"], rec["quantize"]
    by_source = strip.get("by_source", {})
    files_note = (
        f" [dim]({human_bytes(by_source['files'])} as training-state files deleted whole)[/dim]"
        if strip["source"] == "mixed" and by_source.get("files")
        else SOURCE_NOTE.get(strip["source"], "")
    )
    table.add_row(
        "strip",
        human_bytes(strip["bytes"]),
        f"optimizer, EMA and training state in {strip['models']:,} model(s)" + files_note,
    )
    table.add_row(
        "dedupe",
        human_bytes(dedupe["bytes"]),
        f"{dedupe['tensors']:,} tensor copies in {dedupe['groups']:,} groups; "
        + DEDUPE_NOTE.get(dedupe["method"], dedupe["method"])
        + (f" ({dedupe['metadata_only_keys']:,} without a hash)" if dedupe.get("metadata_only_keys") else ""),
    )
    table.add_row("[bold]total[/bold]", f"[bold]{human_bytes(rec['total_bytes'])}[/bold]", "strip + dedupe (disjoint)")
    table.add_row(
        f"quantize ({quantize['target']})",
        human_bytes(quantize["saving_bytes"]),
        f"{quantize['models']:,} model(s), each on its own; overlaps the rows above"
        + SOURCE_NOTE.get(quantize["source"], ""),
    )
    return table


def offenders(summary: Mapping[str, Any], shorten: Shortener) -> RenderableType | None:
    top = [m for m in summary["top_offenders"] if m["recoverable_bytes"] or m["file_bytes"]]
    if not top:
        return None
    table = _table("Top offenders")
    table.add_column("model", overflow="fold", ratio=1, min_width=20)
    for column in ("bytes", "recoverable", "strip", "duplicate", f"{summary['recoverable']['quantize']['target']}"):
        table.add_column(column, justify="right", no_wrap=True)
    for m in top:
        table.add_row(
            safe(shorten(m["path"])),
            human_bytes(m["file_bytes"]),
            human_bytes(m["recoverable_bytes"]),
            _bytes_or_dash(m["strip_bytes"]),
            _bytes_or_dash(m["duplicate_bytes"]),
            _bytes_or_dash(m["quantize_saving_bytes"]),
        )
    return table


def problems(summary: Mapping[str, Any], shorten: Shortener) -> RenderableType | None:
    listed = [("incomplete", p) for p in summary["incomplete"]] + [("failed", p) for p in summary["failed"]]
    if not listed:
        return None
    table = _table("Incomplete and failed", style="bold red")
    table.add_column("status")
    table.add_column("code")
    table.add_column("message", overflow="fold")
    for status, p in listed[:MAX_PROBLEM_ROWS]:
        message = p["message"].replace(p["path"], shorten(p["path"]), 1)
        table.add_row(f"[red]{status}[/red]", safe(p["code"]), safe(message))
    if len(listed) > MAX_PROBLEM_ROWS:
        table.add_row("", "", f"[dim]... {len(listed) - MAX_PROBLEM_ROWS} more (--json lists all)[/dim]")
    return table


def findings(summary: Mapping[str, Any], shorten: Shortener) -> RenderableType | None:
    f = summary["findings"]
    if not f["by_severity"]:
        return None
    counts = ", ".join(f"{n:,} {severity}" for severity, n in f["by_severity"].items())
    table = _table(f"Findings ({counts})", style="bold red")
    table.add_column("severity")
    table.add_column("code")
    table.add_column("model", overflow="fold")
    table.add_column("message", overflow="fold")
    for item in f["listed"][:MAX_FINDING_ROWS]:
        severity = Severity(item["severity"])
        table.add_row(
            f"[{SEVERITY_STYLE[severity]}]{severity.value}[/]",
            safe(item["code"]),
            safe(shorten(item["path"])),
            safe(item["message"]),
        )
    hidden = len(f["listed"]) - MAX_FINDING_ROWS + f["not_listed"]
    if hidden > 0:
        table.add_row("", "", "", f"[dim]... {hidden} more (--json lists them)[/dim]")
    return table


def skipped(summary: Mapping[str, Any], shorten: Shortener) -> RenderableType | None:
    from rich.text import Text

    discovery = summary["discovery"]
    skipped_files = summary["skipped"]
    parts = []
    for reason, n in skipped_files["files"].items():
        parts.append(f"{n:,} {reason} ({human_bytes(skipped_files['bytes'].get(reason, 0))})")
    for key, label in (
        ("hidden_skipped", "hidden"),
        ("vcs_skipped", "version-control folders"),
        ("excluded", "excluded"),
        ("links_not_followed", "folder links not followed"),
        ("links_outside", "links out of the audited folders (never followed)"),
        ("link_loops", "link loops"),
        ("aliases", "reached twice (links)"),
        ("broken_links", "broken links"),
    ):
        if discovery[key]:
            parts.append(f"{discovery[key]:,} {label}")
    lines = []
    if parts:
        lines.append("skipped: " + "; ".join(parts))
    for name in skipped_files["unrecognized_checkpoint_names"][:10]:
        lines.append(f"named like a checkpoint, content not recognized: {clean(shorten(name))}")
    for problem in discovery["unreadable"]:
        lines.append(f"could not list: {clean(str(problem))}")
    return Text("\n".join(lines), style="dim") if lines else None


def notes(summary: Mapping[str, Any]) -> RenderableType | None:
    if not summary["notes"]:
        return None
    from rich.text import Text

    return Text("\n".join(f"note: {clean(n)}" for n in summary["notes"]), style="yellow")


# -- helpers -------------------------------------------------------------------------------------


def _table(title: str, style: str = "bold") -> Table:
    from rich.table import Table

    return Table(title=title, title_justify="left", title_style=style, show_edge=False)


def _count_table(title: str, label: str, groups: Mapping[str, Mapping[str, int]]) -> RenderableType | None:
    if not groups:
        return None
    table = _table(title)
    table.add_column(label)
    for column in ("tensors", "elements", "bytes", "share"):
        table.add_column(column, justify="right")
    total = sum(c["bytes"] for c in groups.values()) or 1
    for name, c in groups.items():
        table.add_row(
            safe(name), f"{c['tensors']:,}", f"{c['elements']:,}", human_bytes(c["bytes"]), f"{c['bytes'] / total:.1%}"
        )
    return table


def _bytes_or_dash(n: int) -> str:
    return human_bytes(n) if n else "-"
