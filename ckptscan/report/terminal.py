"""The rich terminal report. Builds renderables; printing them is the CLI's job.

A report is a list of sections, each a function from a result to a renderable (or None when it
has nothing to say), so later analyses add a section without touching the others.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ckptscan.analyze import modules, summary
from ckptscan.analyze.analysis import Analysis
from ckptscan.analyze.roles import RoleDecision
from ckptscan.inventory import Finding, Inventory, Severity
from ckptscan.report.format import SEVERITY_STYLE, human_bytes, human_count
from ckptscan.safe_text import DEPTH_MARKER, MAX_DEPTH, capped, clean, safe

if TYPE_CHECKING:
    from rich.console import RenderableType

    from ckptscan.pipeline import ModelReport

__all__ = ["SEVERITY_STYLE", "Options", "human_bytes", "human_count", "memory_report", "report"]

MAX_MODULE_ROWS = 30
MAX_METADATA_ROWS = 14
MAX_FINDING_ROWS = 50
MAX_SUBJECTS = 40  # subjects named in one collapsed findings row
HIDDEN_METADATA = frozenset({"kv_types"})  # detail for --json; noise on a terminal


# reduction targets the terminal shows (all of them are in --json)
TERMINAL_TARGETS = ("strip", "dedupe", "fp16", "bf16", "fp8", "int8", "int4", "Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M",
                    "Q4_0", "IQ4_XS")  # fmt: skip
MAX_EXPLAIN_ROWS = 60


@dataclass(frozen=True, slots=True)
class Options:
    """What the terminal report shows besides the summary (every tensor, the role evidence)."""

    tensors: bool = False  # the full tensor table
    largest: int = 10
    explain: bool = False  # each tensor's role and the evidence for it


# a section of one model's report: (inventory, its analysis, view options) -> renderable or None
Section = Callable[[Inventory, Analysis, Options], "RenderableType | None"]


def report(reports: Iterable[ModelReport], options: Options | None = None) -> list[RenderableType]:
    """Renderables for every model report (with the value statistics of those that have them)."""
    options = options or Options()
    out: list[RenderableType] = []
    for model in reports:
        out.extend(result_report(model, options))
    return out


def remote_line(remote: Mapping[str, Any]) -> RenderableType:
    """What reading a remote model cost: bytes fetched against its size, and requests."""
    from rich.text import Text

    fetched, size, requests = remote["bytes_transferred"], remote["model_bytes"], remote["requests"]
    share = f" ({fetched / size:.4%} of it)" if size else ""
    return Text.assemble(
        ("remote ", "bold"),
        f"fetched {human_bytes(fetched)} of {human_bytes(size)}{share} in {requests} request{'s' * (requests != 1)}",
    )


def result_report(model: ModelReport, options: Options) -> list[RenderableType]:
    from rich.rule import Rule
    from rich.text import Text

    result = model.scan
    title = Text.assemble((clean(result.path), "bold"), "  ", (clean(result.format or "unrecognized"), "magenta"))
    out: list[RenderableType] = [Rule(title, align="left", style="blue")]
    if result.error is not None:
        error = result.error
        out.append(Text.assemble(("error ", "bold red"), (f"[{error.code}] ", "red"), clean(error.message)))
        if error.findings:  # found before the error: the file is unreadable and unsafe
            out.append(findings_table(error.findings))
    if result.remote is not None:
        out.append(remote_line(result.remote))
    inventory, analysis = result.inventory, model.analysis
    if inventory is not None and analysis is not None:
        for section in SECTIONS:
            rendered = section(inventory, analysis, options)
            if rendered is not None:
                out.append(rendered)
        if model.stats is not None:
            from ckptscan.report.stats import stats_sections

            out.extend(stats_sections(model, tensors=options.tensors))
    out.append(Text(""))
    return out


# -- sections ------------------------------------------------------------------------------------


def overview(inventory: Inventory, analysis: Analysis, options: Options) -> RenderableType:
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


def findings(inventory: Inventory, analysis: Analysis, options: Options) -> RenderableType | None:
    if not inventory.findings:
        return None
    return findings_table(inventory.findings)


def findings_table(found: Sequence[Finding]) -> RenderableType:
    from rich.table import Table

    table = Table(title="Findings", title_justify="left", title_style="bold red", show_edge=False, expand=False)
    table.add_column("severity")
    table.add_column("finding")
    table.add_column("message", overflow="fold")
    rows = _grouped(found)
    for severity, code, group in rows[:MAX_FINDING_ROWS]:
        label = f"[{SEVERITY_STYLE[severity]}]{severity.value}[/]"
        if len(group) == 1:
            table.add_row(label, safe(code), safe(group[0].message))
        else:  # many low findings of one kind (e.g. unknown pickle globals): one row naming their subjects
            subjects = ", ".join(f.subject for f in group[:MAX_SUBJECTS])
            if len(group) > MAX_SUBJECTS:
                subjects += f" and {len(group) - MAX_SUBJECTS:,} more"
            table.add_row(label, f"{safe(code)} x{len(group)}", safe(subjects))
    if len(rows) > MAX_FINDING_ROWS:  # e.g. a header declaring 100,000 missing shards
        hidden = sum(len(group) for _, _, group in rows[MAX_FINDING_ROWS:])
        table.add_row("", f"[dim]... {hidden:,} more[/dim]", "[dim](--json lists all)[/dim]")
    return table


def _grouped(found: Iterable[Finding]) -> list[tuple[Severity, str, list[Finding]]]:
    """Findings by severity (worst first); LOW/INFO ones with subjects are collapsed per code."""
    rows: list[tuple[Severity, str, list[Finding]]] = []
    groups: dict[tuple[Severity, str], list[Finding]] = {}
    for f in sorted(found, key=lambda f: -f.severity.rank):
        if (f.severity.rank <= Severity.LOW.rank or f.code == "unknown-global") and f.subject:
            key = (f.severity, f.code)
            if key not in groups:
                groups[key] = []
                rows.append((f.severity, f.code, groups[key]))
            groups[key].append(f)
        else:
            rows.append((f.severity, f.code, [f]))
    return rows


def dtypes(inventory: Inventory, analysis: Analysis, options: Options) -> RenderableType | None:
    if not inventory.tensors:
        return None
    return _count_table("By dtype", "dtype", summary.by_dtype(inventory.tensors), inventory)


def _count_table(title: str, key: str, counts: Mapping[str, summary.Count], inventory: Inventory) -> RenderableType:
    """Tensors, elements, bytes and share of the tensor bytes per group (dtype, role)."""
    from rich.table import Table

    table = Table(title=title, title_justify="left", title_style="bold", show_edge=False)
    table.add_column(key)
    table.add_column("tensors", justify="right")
    table.add_column("elements", justify="right")
    table.add_column("bytes", justify="right")
    table.add_column("share", justify="right")
    total = sum(t.nbytes for t in inventory.tensors) or 1
    for name, c in counts.items():
        table.add_row(safe(name), f"{c.tensors:,}", f"{c.elements:,}", human_bytes(c.bytes), f"{c.bytes / total:.1%}")
    return table


def module_rollup(inventory: Inventory, analysis: Analysis, options: Options) -> RenderableType | None:
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
        table.add_row(safe(g.name), blocks, f"{g.tensors:,}", f"{g.elements:,}", human_bytes(g.bytes))
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


def largest_tensors(inventory: Inventory, analysis: Analysis, options: Options) -> RenderableType | None:
    if options.tensors or len(inventory.tensors) < 2:
        return None
    from rich.table import Table

    table = Table(title=f"Largest tensors (of {len(inventory.tensors):,})", title_justify="left",
                  title_style="bold", show_edge=False)  # fmt: skip
    table.add_column("name", overflow="fold")
    table.add_column("shape")
    table.add_column("dtype")
    table.add_column("bytes", justify="right")
    table.add_column("role")
    role = _role_names(inventory, analysis)
    for t in summary.largest(inventory.tensors, options.largest):
        table.add_row(safe(t.name), _shape(t.shape), safe(t.dtype.name), human_bytes(t.nbytes), role[t.name])
    return table


def tensor_table(inventory: Inventory, analysis: Analysis, options: Options) -> RenderableType | None:
    if not options.tensors or not inventory.tensors:
        return None
    from rich.table import Table

    multi_file = len({t.file for t in inventory.tensors}) > 1
    table = Table(title="Tensors", title_justify="left", title_style="bold", show_edge=False)
    _tensor_columns(table, multi_file=multi_file, longest=max(len(t.name) for t in inventory.tensors))
    decisions = analysis.decisions
    for t, d in zip(inventory.tensors, decisions, strict=True):
        row = [safe(t.name), _shape(t.shape), safe(t.dtype.name), f"{t.elements:,}", human_bytes(t.nbytes)]
        row.append("-" if t.offset is None else f"{t.offset:,}")
        if multi_file:
            row.append(safe(t.file))
        row.append(d.role.value)
        table.add_row(*row)
    return table


def _role_names(inventory: Inventory, analysis: Analysis) -> dict[str, str]:
    decisions = analysis.decisions
    return {t.name: d.role.value for t, d in zip(inventory.tensors, decisions, strict=True)}


def parameters(inventory: Inventory, analysis: Analysis, options: Options) -> RenderableType | None:
    if not inventory.tensors:
        return None
    from rich.table import Table

    p = analysis.parameters
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    shared = f", {p.repeated_entries:,} entries repeat bytes counted once" if p.repeated_entries else ""
    grid.add_row("parameters", f"{_with_human(p.total)} in {p.tensors:,} tensors ({human_bytes(p.bytes)}){shared}")
    moe = analysis.moe
    if moe is not None:
        routing = f"{moe.experts_per_token} of {moe.experts}" if moe.experts_per_token else f"? of {moe.experts}"
        active = _with_human(moe.active) if moe.active is not None else "unknown"
        grid.add_row("active / token", f"{active} (MoE: {routing} routed experts per token)")
        grid.add_row("experts", f"{_with_human(moe.expert_parameters)} in {moe.expert_tensors:,} tensors "
                     f"({human_bytes(moe.expert_bytes)}); shared {_with_human(moe.shared_parameters)} "
                     f"({human_bytes(moe.shared_bytes)})")  # fmt: skip
    for tie in p.ties:
        head = safe(tie.head) if tie.head else "output head (not stored)"
        grid.add_row("tied", f"{head} = {safe(tie.embedding)}  [dim]{safe(tie.evidence)}[/dim]")
    for note in p.notes:
        grid.add_row("", f"[dim]{safe(note)}[/dim]")
    return grid


def components(inventory: Inventory, analysis: Analysis, options: Options) -> RenderableType | None:
    """A diffusers pipeline (ckptscan.folders): one row per component, summed."""
    from ckptscan.report.json import component_rows

    rows = component_rows(inventory, analysis)
    if not rows:
        return None
    from rich.table import Table

    table = Table(title="Components", title_justify="left", title_style="bold")
    for name, justify in (("component", "left"), ("class", "left"), ("file", "left"), ("parameters", "right"),
                          ("bytes", "right")):  # fmt: skip
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for row in rows:
        names = (safe(str(row[k])) for k in ("name", "class", "path"))
        table.add_row(*names, f"{row['parameters']:,}", human_bytes(row["file_bytes"]))
    total_parameters = sum(r["parameters"] for r in rows)
    total_bytes = sum(r["file_bytes"] for r in rows)
    table.add_row("[bold]pipeline[/bold]", "", "", f"[bold]{total_parameters:,}[/bold]",
                  f"[bold]{human_bytes(total_bytes)}[/bold]")  # fmt: skip
    return table


def roles(inventory: Inventory, analysis: Analysis, options: Options) -> RenderableType | None:
    if not inventory.tensors:
        return None
    return _count_table("By role", "role", analysis.by_role, inventory)


def overhead(inventory: Inventory, analysis: Analysis, options: Options) -> RenderableType | None:
    if not inventory.files or not inventory.file_bytes:
        return None
    from rich.table import Table

    o = analysis.overhead
    note = "parts add up to the file size exactly" if o.exact else safe("; ".join(o.notes)) or "approximate"
    table = Table(title="Where the bytes go", title_justify="left", title_style="bold", show_edge=False,
                  caption=note, caption_justify="left", caption_style="dim")  # fmt: skip
    table.add_column("part")
    table.add_column("tensors", justify="right")
    table.add_column("elements", justify="right")
    table.add_column("bytes", justify="right")
    table.add_column("share", justify="right")
    for name, part in o.parts.items():
        if part.bytes == 0 and part.tensors == 0:
            continue
        detail = ""
        if name == "format_overhead" and o.format_overhead:
            detail = (
                " [dim](" + ", ".join(f"{safe(k)} {human_bytes(v)}" for k, v in o.format_overhead.items()) + ")[/dim]"
            )
        share = f"{part.bytes / o.file_bytes:.1%}"
        elements = f"{part.elements:,}" if part.tensors else ""
        tensors = f"{part.tensors:,}" if part.tensors else ""
        table.add_row(name.replace("_", " ") + detail, tensors, elements, _bytes_exact(part.bytes), share)
    table.add_row("[bold]file[/bold]", "", "", _bytes_exact(o.file_bytes), "100.0%")
    return table


def reduction(inventory: Inventory, analysis: Analysis, options: Options) -> RenderableType | None:
    if not inventory.tensors or not inventory.file_bytes:
        return None
    from rich.table import Table

    targets = {t.name: t for t in analysis.targets}
    table = Table(title="Reduction (exact tensor bytes; format overhead as today)", title_justify="left",
                  title_style="bold", show_edge=False)  # fmt: skip
    table.add_column("target")
    table.add_column("size", justify="right")
    table.add_column("vs file", justify="right")
    table.add_column("what", overflow="fold", style="dim")
    base = analysis.overhead.file_bytes
    shown_sizes: dict[int, str] = {}
    for name in TERMINAL_TARGETS:
        t = targets.get(name)
        if t is None:
            continue
        if name in ("strip", "dedupe") and t.bytes >= base:
            continue
        if name == "dedupe" and t.bytes == targets["strip"].bytes:
            continue
        if name == "bf16" and shown_sizes.get(t.bytes) == "fp16":
            continue
        shown_sizes.setdefault(t.bytes, name)
        ratio = f"{t.bytes / base:.1%}" if base else ""
        table.add_row(name, human_bytes(t.bytes), ratio, _composition(t))
    return table


def _composition(target: Any) -> str:
    """The result's main dtypes by share of its tensor bytes: ``Q4_K 81%, Q6_K 17%, F32 2%``."""
    total = target.tensor_bytes or 1
    shares = [(name, c.bytes / total) for name, c in target.by_dtype.items()]
    shown = [f"{name} {share:.0%}" for name, share in shares[:4] if share >= 0.005] or [s[0] for s in shares[:1]]
    return safe(", ".join(shown) or "no tensor bytes")


def memory(inventory: Inventory, analysis: Analysis, options: Options) -> RenderableType | None:
    if not inventory.tensors:
        return None
    from rich.table import Table

    table = Table(title="Memory (estimates)", title_justify="left", title_style="bold", show_edge=False,
                  show_header=False, box=None, padding=(0, 2))  # fmt: skip
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for label, text in memory_lines(analysis):
        table.add_row(label, text)
    return table


def memory_lines(analysis: Analysis) -> list[tuple[str, str]]:
    """Short lines: inference memory as stored and at a few targets, one training estimate, and whether
    they fit the GPU asked for."""
    inf, train = analysis.inference, analysis.training
    assert inf is not None and train is not None, "the terminal report analyzes with memory estimates"
    rows: list[tuple[str, str]] = []
    kv = inf.kv_cache
    weights = inf.weights_bytes or 0
    if kv:
        kv_text = f" + KV cache {human_bytes(kv.bytes)} (batch {kv.batch}, {kv.context:,} tokens)"
    elif analysis.architecture is None:
        kv_text = " [dim](no KV cache: architecture unknown)[/dim]"
    else:
        kv_text = ""
    if inf.activations_bytes:
        kv_text += f" + activations {human_bytes(inf.activations_bytes)}"
    rows.append(("inference", f"weights {human_bytes(weights)}{kv_text} = {human_bytes(inf.total_bytes)}"))
    at = [f"{name} {human_bytes(inf.by_target[name])}" for name in ("bf16", "int8", "int4", "Q4_K_M")
          if name in inf.by_target]  # fmt: skip
    if at:
        rows.append(("", "[dim]at " + ", ".join(at) + "[/dim]"))
    parts = ", ".join(f"{line.name.replace('_', ' ')} {human_bytes(line.bytes)}" for line in train.lines)
    setup = f"{train.optimizer}, {train.precision}"
    if train.seq:
        setup += f", batch {train.batch} x {train.seq:,} tokens, {train.attention} attention"
    rows.append(("training", f"peak {human_bytes(train.total_bytes)} ({setup}): {parts}"))
    if train.activations is None:
        rows.append(("", "[dim]activations not estimated: architecture unknown[/dim]"))
    for label, fit in (("fits?", inf.fit), ("", train.fit)):
        if fit is not None:
            rows.append((label, fit_text(fit, "inference" if fit is inf.fit else "training")))
    rows.append(("", "[dim]`ckptscan memory PATH --help` for other optimizers, precisions, batch, sequence and "
                     "--gpu; assumptions in --json[/dim]"))  # fmt: skip
    return rows


def fit_text(fit: Any, what: str) -> str:
    """``training on 24GiB: fits, 3.1 GiB to spare; up to batch 6 (seq 2,048), seq 8,192 (batch 1)``."""
    usable = fit.capacity_bytes - fit.reserve_bytes
    if fit.fits:
        verdict = f"[green]fits[/green], {human_bytes(fit.margin_bytes)} to spare of {human_bytes(usable)}"
    else:
        verdict = f"[red]does not fit[/red]: {human_bytes(-fit.margin_bytes)} over {human_bytes(usable)}"
    largest = []
    if fit.max_batch is not None:
        largest.append(f"batch {fit.max_batch:,}")
    if fit.max_seq is not None:
        largest.append(f"seq {fit.max_seq:,}" + (" (the model's context)" if fit.max_seq == fit.seq_limit else ""))
    tail = "; largest that fit: " + ", ".join(largest) if largest else "; not even batch 1 x 1 token fits"
    return f"{what} on {fit.gpu}: {verdict}{tail}"


def memory_report(reports: Iterable[ModelReport]) -> list[RenderableType]:
    """``ckptscan memory``: the estimates in full, with every formula and assumption."""
    from rich.rule import Rule
    from rich.table import Table
    from rich.text import Text

    out: list[RenderableType] = []
    for model in reports:
        result, analysis = model.scan, model.analysis
        title = Text.assemble((clean(result.path), "bold"), "  ", (clean(result.format or "unrecognized"), "magenta"))
        out.append(Rule(title, align="left", style="blue"))
        if result.error is not None or analysis is None:
            message = result.error.message if result.error else "no inventory"
            out.append(Text.assemble(("error ", "bold red"), clean(message)))
            continue
        arch = analysis.architecture
        if arch is not None:
            moe = f", {arch.experts} experts (top-{arch.experts_per_token})" if arch.experts else ""
            enc = f", encoder {arch.encoder_layers} layers" if arch.encoder_layers else ""
            out.append(Text(
                f"architecture ({clean(arch.source)}{', a guess' if arch.guessed else ''}): "
                f"{arch.kind} {arch.modality}, "
                f"{arch.layers} layers{enc}, hidden {arch.hidden}, {arch.heads} heads, {arch.kv_heads} KV heads x "
                f"{arch.head_dim}, FFN {arch.ffn}{' gated' if arch.gated_mlp else ''}{moe}, vocab {arch.vocab:,}, "
                f"context {arch.context or 'unknown'}"
            ))  # fmt: skip
        inf, train = analysis.inference, analysis.training
        assert inf is not None and train is not None, "the memory command analyzes with memory estimates"
        kv = inf.kv_cache
        table = Table(title=f"Inference (prefill, batch {inf.batch} x {inf.seq or '?'} tokens, {inf.compute_bytes * 8}"
                      f"-bit compute{', ' + inf.kernel + ' attention' if inf.kernel else ''})", title_justify="left",
                      title_style="bold", show_edge=False)  # fmt: skip
        table.add_column("weights at")
        table.add_column("weights", justify="right")
        table.add_column("KV cache", justify="right")
        table.add_column("activations", justify="right")
        table.add_column("total", justify="right")
        kv_bytes = kv.bytes if kv else 0
        dynamic = kv_bytes + inf.activations_bytes
        weights = {"as stored": inf.weights_bytes or 0}
        weights.update({name: total - dynamic for name, total in inf.by_target.items()})
        for name, nbytes in weights.items():
            table.add_row(name, human_bytes(nbytes), human_bytes(kv_bytes) if kv else "-",
                          human_bytes(inf.activations_bytes), human_bytes(nbytes + dynamic))  # fmt: skip
        out.append(table)
        if kv:
            out.append(Text(f"KV cache: {clean(kv.formula)}", style="dim"))
        if inf.fit is not None:
            out.append(Text.from_markup(fit_text(inf.fit, "inference")))
        table = Table(title=f"Training: {train.optimizer}, {train.precision}, batch {train.batch}"
                      + (f" x {train.seq:,} tokens" if train.seq else "")
                      + (f", {train.attention} attention" if train.activations else "")
                      + (", gradient checkpointing" if train.checkpointing else "")
                      + (f", {train.gpus} GPUs {train.sharding}" if train.gpus > 1 else ""),
                      title_justify="left", title_style="bold", show_edge=False)  # fmt: skip
        table.add_column("part")
        table.add_column("bytes", justify="right")
        table.add_column("how", overflow="fold", style="dim")
        for line in train.lines:
            table.add_row(line.name.replace("_", " "), _bytes_exact(line.bytes), safe(line.formula))
        table.add_row("sum of the lines", _bytes_exact(train.sum_bytes), "every line at once: an upper bound")
        table.add_row("[bold]peak[/bold]", f"[bold]{_bytes_exact(train.total_bytes)}[/bold]", train.peak_formula)
        out.append(table)
        if train.activations is not None and train.activations.terms:
            terms = ", ".join(f"{t.name} {human_bytes(t.bytes)}" for t in train.activations.terms)
            out.append(Text(f"activations by kind: {terms}", style="dim"))
        if train.fit is not None:
            out.append(Text.from_markup(fit_text(train.fit, "training")))
        out.append(Text(f"parameters {train.parameters:,}, trainable {train.trainable_parameters:,}", style="dim"))
        assumptions = list(dict.fromkeys([*inf.assumptions, *train.assumptions]))
        out.append(Text("assumptions:\n" + "\n".join(f"  - {clean(a)}" for a in assumptions), style="dim"))
        out.append(Text(""))
    return out


def explain(inventory: Inventory, analysis: Analysis, options: Options) -> RenderableType | None:
    if not options.explain or not inventory.tensors:
        return None
    from rich.table import Table

    decisions = analysis.decisions
    rows = explain_rows(inventory, decisions)
    table = Table(title=f"Roles and why ({len(inventory.tensors):,} tensors, {len(rows):,} rows with blocks "
                  "collapsed)", title_justify="left", title_style="bold", show_edge=False)  # fmt: skip
    table.add_column("tensor", overflow="fold")
    table.add_column("role")
    table.add_column("detail", overflow="fold")
    table.add_column("why", overflow="fold", style="dim")
    for name, decision in rows[:MAX_EXPLAIN_ROWS]:
        table.add_row(safe(name), decision.role.value, safe(decision.detail), safe(decision.reason))
    if len(rows) > MAX_EXPLAIN_ROWS:
        table.add_row(f"[dim]... {len(rows) - MAX_EXPLAIN_ROWS} more (--json --explain shows all)[/dim]", "", "", "")
    return table


_BLOCK_NUMBER = re.compile(r"(?<=[./])\d+(?=[./])")


def explain_rows(inventory: Inventory, decisions: Sequence[RoleDecision]) -> list[tuple[str, RoleDecision]]:
    """One row per (name pattern, decision): ``layers.[0-31].mlp.up.weight`` for a repeated block."""
    number = _BLOCK_NUMBER
    # the pattern is the name's non-number pieces (a tuple, not a string with a placeholder
    # character: any character may occur in a name)
    groups: dict[tuple[tuple[str, ...], str, str, str], list[list[int]]] = {}
    first: dict[tuple[tuple[str, ...], str, str, str], RoleDecision] = {}
    for t, d in zip(inventory.tensors, decisions, strict=True):
        key = (tuple(number.split(t.name)), d.role.value, d.detail, d.rule)
        groups.setdefault(key, []).append([int(n) for n in number.findall(t.name)])
        first.setdefault(key, d)
    rows = []
    for key, indices in groups.items():
        pieces = key[0]
        name = pieces[0]
        for position, piece in enumerate(pieces[1:]):
            values = sorted({ix[position] for ix in indices})
            name += (modules.format_indices(values) if len(values) > 1 else str(values[0])) + piece
        rows.append((name, first[key]))
    return rows


def metadata(inventory: Inventory, analysis: Analysis, options: Options) -> RenderableType | None:
    rows = list(_flatten(inventory.metadata))
    if not rows:
        return None
    from rich.table import Table

    table = Table(title="Metadata", title_justify="left", title_style="bold", show_edge=False, show_header=False)
    key_width = min(40, max(len(key) for key, _ in rows[:MAX_METADATA_ROWS]))
    table.add_column("key", style="dim", no_wrap=True, overflow="ellipsis", min_width=key_width)
    table.add_column("value", overflow="ellipsis", no_wrap=True, ratio=1)
    for key, value in rows[:MAX_METADATA_ROWS]:
        table.add_row(safe(key), safe(value))
    if len(rows) > MAX_METADATA_ROWS:
        table.add_row(f"... {len(rows) - MAX_METADATA_ROWS} more", "(--json shows all)")
    return table


def warnings(inventory: Inventory, analysis: Analysis, options: Options) -> RenderableType | None:
    if not inventory.warnings:
        return None
    from rich.text import Text

    return Text("\n".join(f"warning: {clean(w)}" for w in inventory.warnings), style="yellow")


SECTIONS: list[Section] = [
    overview,
    components,
    parameters,
    findings,
    roles,
    overhead,
    dtypes,
    module_rollup,
    largest_tensors,
    tensor_table,
    explain,
    reduction,
    memory,
    metadata,
    warnings,
]


# -- formatting ----------------------------------------------------------------------------------


def _with_human(n: int) -> str:
    return f"{n:,} ({human_count(n)})" if n >= 1000 else f"{n:,}"


def _bytes_exact(n: int) -> str:
    return f"{human_bytes(n)} ({n:,} B)" if n >= 1000 else f"{n:,} B"


def _missing_note(inventory: Inventory) -> str:
    missing = [f for f in inventory.files if f.role in ("missing", "lfs-pointer", "unreadable")]
    if not missing:
        return ""
    return f"  [red]{len(missing)} not readable: {', '.join(f'{safe(f.path)} ({f.role})' for f in missing[:4])}[/red]"


def _shape(shape: tuple[int, ...]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _tensor_columns(table: Any, *, multi_file: bool, longest: int = 0) -> None:
    table.add_column("name", overflow="fold", min_width=min(longest, 32))
    table.add_column("shape")
    table.add_column("dtype")
    table.add_column("elements", justify="right")
    table.add_column("bytes", justify="right")
    table.add_column("offset", justify="right")
    if multi_file:
        table.add_column("file")
    table.add_column("role", overflow="ellipsis", no_wrap=True)


def _flatten(value: Mapping[str, Any], prefix: str = "", depth: int = 0) -> Iterable[tuple[str, str]]:
    for key, item in value.items():
        if key in HIDDEN_METADATA:
            continue
        name = f"{prefix}{key}"
        if isinstance(item, Mapping) and depth >= MAX_DEPTH:
            yield name, DEPTH_MARKER
        elif isinstance(item, Mapping) and not ("count" in item and "element_type" in item):
            yield from _flatten(item, name + ".", depth + 1)
        elif isinstance(item, Mapping):  # a reader's array summary (or a file's look-alike: any types)
            count = item["count"]
            yield name, f"array of {count:,} {item['element_type']}" if isinstance(count, int) else str(capped(item))
        elif isinstance(item, list) and len(item) > 8:
            yield name, f"[{', '.join(map(repr, capped(item[:8])))}, ...] ({len(item)} items)"
        else:
            yield name, str(capped(item)) if not isinstance(item, str) else item.replace("\n", "\\n")
