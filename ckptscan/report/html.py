"""The self-contained HTML report: ``ckptscan report PATH... -o report.html``.

One file, readable offline: the CSS and JavaScript (``html_assets/``, written for ckptscan) are
inlined, the data travels as one JSON block, and a Content-Security-Policy allows only those two
inline blocks (by hash) and nothing from the network. Only formatting happens here: the models'
analyses, stats and diffs come in ready (:class:`~ckptscan.pipeline.ModelReport`); nothing is read
or analyzed.

Escaping: every string that came from a file (tensor names, metadata, paths, messages) is either
HTML-escaped into the markup or carried in the JSON block, where ``<``, ``>``, ``&`` and every
non-ASCII character (U+2028/2029 and lone surrogates included) are ``\\u`` escapes, so nothing in
the data can close the ``<script>`` element; the JavaScript puts strings on the page with
``textContent`` only. No event handler is written into the markup.

The treemap: model -> module blocks (repeated blocks collapsed as ``model.layers.[0-21]``, the
terminal's rollup, expandable by a click) -> tensors, area = bytes. Tensors count once per distinct
view; the format's overhead (headers, metadata, padding, pickle, framing...), storage no tensor
views and bytes the reader could not place are tiles of their own, so the tiles add up to the file
size (``tree_total``).
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any

from ckptscan._version import __version__
from ckptscan.analyze import modules, summary
from ckptscan.analyze.overhead import CATEGORY_OF_ROLE
from ckptscan.inventory import Inventory

if TYPE_CHECKING:
    from ckptscan.analyze.analysis import Analysis
    from ckptscan.diff import Diff
    from ckptscan.pipeline import ModelReport
    from ckptscan.stats import StatsResult

GPU_SIZES_GB = (8, 12, 16, 24, 40, 48, 80, 141)  # "will it fit": common accelerator memory sizes
FIT_TARGETS = ("dedupe", "bf16", "fp8", "int8", "int4", "Q8_0", "Q4_K_M")
HISTOGRAM_BINS = 20
_SPLIT = re.compile(r"[./]")
# categories of tensors that are not the model itself: their own top-level block of the treemap
_SIDE_CATEGORIES = {
    "optimizer_state": "[optimizer state]",
    "ema_master": "[EMA / master weights]",
    "training_state": "[training state]",
}
ROLE_COLORS = {  # the same as report.js (the legend is drawn here)
    "weight": "#4e79a7",
    "bias": "#a0cbe8",
    "embedding": "#f28e2b",
    "output_head": "#ffbe7d",
    "norm": "#59a14f",
    "quantization": "#8cd17d",
    "buffer": "#b6992d",
    "optimizer_state": "#e15759",
    "ema": "#ff9d9a",
    "master_weight": "#d37295",
    "training_state": "#fabfd2",
    "other": "#79706e",
    "overhead": "#bab0ac",
}
DTYPE_PALETTE = (
    "#4e79a7",
    "#f28e2b",
    "#59a14f",
    "#e15759",
    "#76b7b2",
    "#edc948",
    "#b07aa1",
    "#ff9da7",
    "#9c755f",
    "#499894",
    "#86bcb6",
    "#d4a6c8",
)


@dataclass(frozen=True, slots=True)
class HtmlAudit:
    """An audit's page: the summary, one row per model, and each model's JSON record (by path)."""

    summary: Mapping[str, Any]
    rows: Sequence[Mapping[str, Any]]
    records: Mapping[str, Mapping[str, Any]]


# -- the page --------------------------------------------------------------------------------------


def render(
    models: Sequence[ModelReport],
    *,
    diff: Diff | None = None,
    audit: HtmlAudit | None = None,
    title: str = "ckptscan report",
) -> str:
    data: dict[str, Any] = {"models": []}
    body: list[str] = []
    if audit is not None:
        body.append(_audit_section(audit))
        for i, row in enumerate(audit.rows):
            record = audit.records.get(str(row.get("path")), {})
            data["models"].append({"tree": record_tree(record) if record else None})
            body.append(_record_section(i, row, record))
    for model in models:
        index = len(data["models"])
        inventory = model.inventory
        tree = None
        if inventory is not None and model.analysis is not None:
            tree = tensor_tree(inventory, model.analysis)
        colors = dtype_colors(inventory) if inventory is not None else {}
        data["models"].append({"tree": tree, "dtype_colors": colors})
        body.append(_model_section(index, model))
    if diff is not None:
        body.insert(0, _diff_section(diff))
    toc = ""
    if len(body) > 1:
        links = [
            f'<a href="#model-{i}">{_e(_short_path(m.path))}</a>'
            for i, m in enumerate(models, start=len(audit.rows) if audit else 0)
        ]
        if diff is not None:
            links.insert(0, '<a href="#diff">diff</a>')
        if audit is not None:
            links.insert(0, '<a href="#audit">audit</a>')
        toc = '<nav class="toc">' + " ".join(links[:200]) + "</nav>"
    script = _asset("report.js")
    style = _asset("report.css")
    csp = (
        "default-src 'none'; "
        f"script-src '{_sha256(script)}'; style-src '{_sha256(style)}'; img-src data:; "
        "base-uri 'none'; form-action 'none'"
    )
    subtitle = f"{len(models) + (len(audit.rows) if audit else 0)} model(s) · ckptscan {_e(__version__)}"
    return "".join(
        [
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">',
            f'<meta http-equiv="Content-Security-Policy" content="{csp}">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{_e(title)}</title><style>{style}</style></head><body>",
            f'<header class="page"><h1>{_e(title)}</h1><p>{subtitle}</p>{toc}</header><main>',
            *body,
            "</main><footer>Written by ckptscan from the files' headers"
            + (" and values (--stats)" if any(m.stats for m in models) else "")
            + "; nothing in this page loads anything from the network.</footer>",
            f'<script type="application/json" id="ckptscan-data">{script_json(data)}</script>',
            f"<script>{script}</script></body></html>\n",
        ]
    )


def script_json(value: Any) -> str:
    """JSON that is safe inside a ``<script>`` element: ASCII only, and no ``<``, ``>`` or ``&``."""
    text = json.dumps(value, ensure_ascii=True, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


@cache
def _asset(name: str) -> str:
    return resources.files("ckptscan.report").joinpath("html_assets").joinpath(name).read_text(encoding="utf-8")


def _sha256(text: str) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii")


def _e(value: object) -> str:
    """HTML-escaped text; lone surrogates (possible in names from files) become visible escapes."""
    text = str(value)
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return html.escape(text, quote=True)


def _short_path(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1] or path


# -- the treemap's tree ----------------------------------------------------------------------------


def tensor_tree(inventory: Inventory, analysis: Analysis) -> dict[str, Any]:
    """The model as nested blocks of bytes that add up to the file size (see the module docstring)."""
    root: dict[str, Any] = _group(_short_path(inventory.path), "")
    seen: set[tuple[object, ...]] = set()
    tensor_bytes = 0
    for t, d in zip(inventory.tensors, analysis.decisions, strict=True):
        key = summary.view_key(t)
        if key in seen:
            continue  # the same bytes under a second name: counted once, as the overhead split does
        seen.add(key)
        node = root
        side = _SIDE_CATEGORIES.get(CATEGORY_OF_ROLE.get(d.role, ""), "")
        if side:
            node = node["c"].setdefault("\0" + side, _group(side, side))
        parts = [p for p in _SPLIT.split(t.name) if p] or [t.name or "(unnamed)"]
        path = ""
        for part in parts[:-1]:
            path = f"{path}.{part}" if path else part
            node = node["c"].setdefault(part, _group(part, path))
        leaf = {
            "n": parts[-1],
            "p": t.name,
            "b": t.nbytes,
            "r": d.role.value,
            "d": t.dtype.name,
            "s": "[" + ", ".join(map(str, t.shape)) + "]",
        }
        slot = "\0t:" + parts[-1]
        while slot in node["c"]:  # two tensors with one name (allowed by some formats)
            slot += "'"
        node["c"][slot] = leaf
        tensor_bytes += t.nbytes
    split = analysis.overhead
    overhead = _group("[format overhead]", "[format overhead]")
    for kind, nbytes in sorted(split.format_overhead.items(), key=lambda kv: -kv[1]):
        overhead["c"][kind] = {"n": kind, "p": f"format overhead: {kind}", "b": nbytes, "k": "overhead"}
    if overhead["c"]:
        root["c"]["\0overhead"] = overhead
    dead = split.bytes_of("dead_storage")
    if dead:
        root["c"]["\0dead"] = {
            "n": "[unused storage]",
            "p": "storage bytes no tensor views, or bytes nothing points at",
            "b": dead,
            "k": "overhead",
        }
    described = tensor_bytes + sum(split.format_overhead.values()) + dead
    rest = inventory.file_bytes - described
    if rest > 0:
        root["c"]["\0rest"] = {
            "n": "[not described]",
            "p": "bytes the reader did not place (format internals, compressed data, a shared copy)",
            "b": rest,
            "k": "overhead",
        }
    tree = _finish(root)
    tree["file_bytes"] = inventory.file_bytes
    return tree


def record_tree(record: Mapping[str, Any]) -> dict[str, Any] | None:
    """A coarser tree from an audit record (module rollups, overhead by kind): what an audit keeps."""
    overhead = record.get("overhead") or {}
    rollup = (record.get("parameters") or {}).get("modules") or record.get("modules") or []
    if not isinstance(overhead, Mapping) or not isinstance(rollup, list):
        return None
    root: dict[str, Any] = _group(_short_path(str(record.get("path", ""))), "")
    placed = 0
    for m in rollup:
        if isinstance(m, Mapping) and isinstance(m.get("bytes"), int):
            name = str(m.get("name"))
            root["c"][name] = {"n": name, "p": name, "b": m["bytes"], "r": "weight"}
            placed += m["bytes"]
    kinds = overhead.get("format_overhead") or {}
    if isinstance(kinds, Mapping):
        for kind, nbytes in kinds.items():
            if isinstance(nbytes, int):
                root["c"]["\0" + kind] = {"n": kind, "p": f"format overhead: {kind}", "b": nbytes, "k": "overhead"}
                placed += nbytes
    file_bytes = record.get("file_bytes")
    if isinstance(file_bytes, int) and file_bytes > placed:
        root["c"]["\0rest"] = {
            "n": "[other]",
            "p": "tensors outside the parameter rollup, and unplaced bytes",
            "b": file_bytes - placed,
            "k": "overhead",
        }
    tree = _finish(root)
    tree["file_bytes"] = file_bytes if isinstance(file_bytes, int) else tree["b"]
    return tree


def _group(name: str, path: str) -> dict[str, Any]:
    return {"n": name, "p": path, "c": {}}


def _finish(node: dict[str, Any]) -> dict[str, Any]:
    """Children as lists, byte totals, numbered blocks collapsed, single-child chains merged."""
    children = node.get("c")
    if children is None:
        return node
    done = [_finish(child) for child in children.values()]
    node["c"] = done
    node["b"] = sum(child["b"] for child in done)
    for field, key in (("r", "r"), ("d", "d")):  # a block drawn whole takes its largest role's colour
        weights: dict[str, int] = {}
        for child in done:
            if child.get(key):
                weights[child[key]] = weights.get(child[key], 0) + child["b"]
        if weights:
            node[field] = max(weights, key=lambda k: weights[k])
    numbered = [c for c in done if c.get("c") is not None and c["n"].isdigit()]
    if len(done) > 1 and len(numbered) == len(done):  # layers.0, layers.1, ...: one block, expandable
        indices = sorted(int(c["n"]) for c in done)
        node["n"] = f"{node['n']}.{modules.format_indices(indices)}"
        node["k"] = "blocks"
        done.sort(key=lambda c: int(c["n"]))
    while len(node["c"]) == 1 and node["c"][0].get("c") is not None and node.get("p"):
        only = node["c"][0]  # model -> layers: one block "model.layers" (the path stays the deepest)
        node["n"] = f"{node['n']}.{only['n']}"
        node["p"] = only["p"]
        node["c"] = only["c"]
        if only.get("k"):
            node["k"] = only["k"]
    return node


def tree_total(tree: Mapping[str, Any]) -> int:
    return int(tree["b"])


# -- a model's section -----------------------------------------------------------------------------


def _model_section(index: int, model: ModelReport) -> str:
    r = model.scan
    out = [
        f'<section class="model" id="model-{index}">',
        f'<h2>{_e(r.path)} <span class="fmt">{_e(r.format or "unrecognized")}</span></h2>',
    ]
    if r.error is not None:
        out.append(f'<p class="error">[{_e(r.error.code)}] {_e(r.error.message)}</p>')
    inventory, analysis = r.inventory, model.analysis
    if inventory is None or analysis is None:
        out.append("</section>")
        return "".join(out)
    totals = summary.totals(inventory)
    findings = model.findings()
    out.append(
        _kv(
            [
                ("files", f"{len(inventory.files)} ({_bytes(inventory.file_bytes)})"),
                ("tensors", f"{totals.every.tensors:,}"),
                ("parameters", f"{analysis.parameters.total:,} ({_count(analysis.parameters.total)})"),
                ("tensor bytes", _bytes(totals.every.bytes)),
                ("findings", f"{len(findings)}"),
            ]
        )
    )
    if model.stats_problem:
        out.append(f'<p class="error">{_e(model.stats_problem)}</p>')
    out.append(_treemap(index, analysis, dtype_colors(inventory)))
    out.append('<div class="grid2">')
    out.append(_roles_table(analysis))
    out.append(_dtypes_table(inventory))
    out.append(_overhead_table(analysis))
    out.append("</div>")
    out.append(_reduction_table(analysis, model.measured))
    out.append(_memory_table(analysis))
    out.append(_findings_table(findings))
    if inventory.warnings:
        out.append("<h3>Warnings</h3><ul>" + "".join(f"<li>{_e(w)}</li>" for w in inventory.warnings) + "</ul>")
    if model.stats is not None:
        out.append(_stats_section(inventory, analysis, model.stats))
    out.append("</section>")
    return "".join(out)


def dtype_colors(inventory: Inventory) -> dict[str, str]:
    """A colour per dtype, largest bytes first (the treemap's dtype mode and its legend)."""
    names = list(summary.by_dtype(inventory.tensors))
    return {name: DTYPE_PALETTE[i % len(DTYPE_PALETTE)] for i, name in enumerate(names)}


def _treemap(index: int, analysis: Analysis, dtypes: Mapping[str, str]) -> str:
    roles = [role for role in analysis.by_role if analysis.by_role[role].bytes]
    legend = "".join(_swatch(ROLE_COLORS.get(role, ROLE_COLORS["other"]), role) for role in [*roles, "overhead"])
    by_dtype = "".join(_swatch(color, name) for name, color in [*dtypes.items(), ("overhead", ROLE_COLORS["overhead"])])
    return (
        f'<div class="treemap" data-model="{index}"><div class="tm-bar">'
        '<button type="button" class="tm-up">&#8593; up</button>'
        '<label>colour by <select class="tm-color"><option value="role">role</option>'
        '<option value="dtype">dtype</option></select></label>'
        '<span class="tm-crumbs"></span><span class="tm-info"></span></div>'
        f'<div class="tm-box"></div><div class="legend legend-role">{legend}</div>'
        f'<div class="legend legend-dtype" hidden>{by_dtype}</div>'
        '<p class="muted">Area is bytes; click a block to zoom in, the path above to zoom out.</p></div>'
    )


def _swatch(color: str, label: str) -> str:
    return (
        f'<span><svg width="10" height="10" aria-hidden="true"><rect width="10" height="10" fill="{_e(color)}"/>'
        f"</svg> {_e(label)}</span>"
    )


Cell = tuple[str, object]  # (html, sort key: None for the text itself, "name" for a tensor name)


def _table(
    title: str,
    headers: Sequence[tuple[str, bool]],
    rows: Iterable[Sequence[Cell]],
    *,
    sortable: bool = False,
    scroll: bool = False,
    table_id: str = "",
) -> str:
    """A table: headers are (label, numeric); cells are (html, sort key or None)."""
    head = "".join(f'<th class="num">{_e(h)}</th>' if num else f"<th>{_e(h)}</th>" for h, num in headers)
    body = []
    for row in rows:
        cells = []
        for (cell, key), (_, num) in zip(row, headers, strict=True):
            attrs = ' class="num"' if num else (' class="name"' if key == "name" else "")
            if key is not None and key != "name":
                attrs += f' data-v="{_e(key)}"'
            cells.append(f"<td{attrs}>{cell}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    cls = ' class="sortable"' if sortable else ""
    ident = f' id="{_e(table_id)}"' if table_id else ""
    table = f"<table{cls}{ident}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
    if scroll:
        table = f'<div class="scroll">{table}</div>'
    return f"<div><h3>{_e(title)}</h3>{table}</div>"


def _roles_table(analysis: Analysis) -> str:
    total = sum(c.bytes for c in analysis.by_role.values()) or 1
    rows = [
        [
            (_e(role), None),
            (f"{c.tensors:,}", c.tensors),
            (_count(analysis.parameters.by_role.get(role, 0)), analysis.parameters.by_role.get(role, 0)),
            (_bytes(c.bytes), c.bytes),
            (f"{100 * c.bytes / total:.1f}%", c.bytes),
        ]
        for role, c in analysis.by_role.items()
    ]
    return _table(
        "Roles",
        [("role", False), ("tensors", True), ("parameters", True), ("bytes", True), ("share", True)],
        rows,
        sortable=True,
    )


def _dtypes_table(inventory: Inventory) -> str:
    rows = [
        [(_e(name), None), (f"{c.tensors:,}", c.tensors), (_count(c.elements), c.elements), (_bytes(c.bytes), c.bytes)]
        for name, c in summary.by_dtype(inventory.tensors).items()
    ]
    return _table(
        "Dtypes", [("dtype", False), ("tensors", True), ("elements", True), ("bytes", True)], rows, sortable=True
    )


def _overhead_table(analysis: Analysis) -> str:
    split = analysis.overhead
    rows = [
        [(_e(name.replace("_", " ")), None), (_bytes(p.bytes), p.bytes)] for name, p in split.parts.items() if p.bytes
    ]
    rows += [[(f"&nbsp;&nbsp;{_e(kind)}", None), (_bytes(n), n)] for kind, n in split.format_overhead.items()]
    note = "" if split.exact else '<p class="muted">approximate: ' + _e("; ".join(split.notes)) + "</p>"
    return _table(f"Where the {_bytes(split.file_bytes)} go", [("category", False), ("bytes", True)], rows) + note


def _reduction_table(analysis: Analysis, measured: Mapping[str, Any]) -> str:
    """Each target's size and saving; with --stats, the SQNR measured for int8/int4 targets."""
    if not analysis.targets:
        return ""
    rows: list[Sequence[Cell]] = []
    for t in analysis.targets:
        m = measured.get(t.name)
        sqnr = getattr(m, "sqnr_db", None)
        worst = getattr(m, "min_db", None)
        row: list[Cell] = [
            (_e(t.name), None),
            (_bytes(t.bytes), t.bytes),
            (_bytes(t.saving_bytes), t.saving_bytes),
            (f"{100 * t.saving_bytes / max(1, t.bytes + t.saving_bytes):.1f}%", t.saving_bytes),
        ]
        if measured:
            row += [(_db(sqnr), _key(sqnr)), (_db(worst), _key(worst))]
        rows.append(row)
    headers = [("target", False), ("bytes", True), ("saving", True), ("saving %", True)]
    if measured:
        headers += [("measured SQNR dB", True), ("worst tensor dB", True)]
    return _table("Reduction what-ifs (file size at each target)", headers, rows, sortable=True)


def _memory_table(analysis: Analysis) -> str:
    inf = analysis.inference
    if not inf:
        return ""
    kv = inf.kv_cache
    kv_bytes = kv.bytes if kv is not None else 0
    dynamic = kv_bytes + inf.activations_bytes
    by_target = dict(inf.by_target)
    if inf.weights_bytes is not None:
        by_target = {"as stored": inf.weights_bytes + dynamic, **by_target}
    names = [n for n in ("as stored", *FIT_TARGETS) if n in by_target]
    headers = [("weights at", False), ("inference memory", True)] + [(f"{g} GB", False) for g in GPU_SIZES_GB]
    rows = []
    for name in names:
        need = int(by_target[name])
        fits = [
            ('<span class="ok">&#10003;</span>' if need <= g * 10**9 else '<span class="no">&#10007;</span>', None)
            for g in GPU_SIZES_GB
        ]
        rows.append([(_e(name), None), (_bytes(need), need), *fits])
    kv_note = (
        f"KV cache {_bytes(kv_bytes)} ({kv.context:,} tokens, batch {kv.batch}) and prefill activations "
        f"{_bytes(inf.activations_bytes)} included"
        if kv is not None
        else f"prefill activations {_bytes(inf.activations_bytes)} included; no KV cache estimate"
    )
    return (
        _table("Memory: will it fit?", headers, rows) + f'<p class="muted">{_e(kv_note)}; the CUDA context and '
        "allocator slack are not (`ckptscan memory --gpu` keeps a reserve for them).</p>"
    )


def _findings_table(findings: Sequence[Any]) -> str:
    if not findings:
        return '<h3>Findings</h3><p class="muted">none</p>'
    ordered = sorted(findings, key=lambda f: -f.severity.rank)
    rows = [
        [
            (f'<span class="sev-{_e(f.severity.value)}">{_e(f.severity.value)}</span>', f.severity.rank),
            (_e(f.code), None),
            (_e(f.message), None),
            (_e(f.where), "name"),
        ]
        for f in ordered
    ]
    return _table(
        "Findings", [("severity", True), ("code", False), ("message", False), ("where", False)], rows, sortable=True
    )


# -- --stats ---------------------------------------------------------------------------------------


def _stats_section(inventory: Inventory, analysis: Analysis, stats: StatsResult) -> str:
    rows: list[Sequence[Cell]] = []
    zero_fractions: list[float] = []
    sqnr8: list[float] = []
    for t, d, s in zip(inventory.tensors, analysis.decisions, stats.tensors, strict=True):
        if s.skipped is not None:
            rows.append(
                [
                    (_e(t.name), "name"),
                    (_e(d.role.value), None),
                    (_e(t.dtype.name), None),
                    (f'<span class="muted">{_e(s.skipped)}</span>', None),
                ]
                + [("", None)] * 7
            )
            continue
        zeros = s.zeros / s.elements if s.elements else 0.0
        zero_fractions.append(zeros)
        if s.sqnr_int8_db is not None and math.isfinite(s.sqnr_int8_db):
            sqnr8.append(s.sqnr_int8_db)
        rows.append(
            [
                (_e(t.name), "name"),
                (_e(d.role.value), None),
                (_e(t.dtype.name), None),
                (f"{s.elements:,}", s.elements),
                (f"{100 * zeros:.2f}%", zeros),
                (_num(s.absmax), _key(s.absmax)),
                (_num(s.std), _key(s.std)),
                (_num(s.outlier), _key(s.outlier)),
                (_db(s.sqnr_int8_db), _key(s.sqnr_int8_db)),
                (_db(s.sqnr_int4_g128_db), _key(s.sqnr_int4_g128_db)),
                (f"{s.nan:,} / {s.inf:,}", s.nan + s.inf),
            ]
        )
    headers = [
        ("tensor", False),
        ("role", False),
        ("dtype", False),
        ("values", True),
        ("zeros", True),
        ("|max|", True),
        ("std", True),
        ("outlier", True),
        ("SQNR int8 dB", True),
        ("SQNR int4 dB", True),
        ("NaN / Inf", True),
    ]
    sampled = " (sampled)" if stats.sampled else ""
    hists = (
        '<div class="grid2">'
        + _histogram("int8 SQNR per tensor (dB)", sqnr8)
        + _histogram("zero fraction per tensor", zero_fractions)
        + "</div>"
    )
    return (
        f"<h3>Value statistics{_e(sampled)}</h3>"
        f'<p class="muted">{stats.bytes_read:,} bytes read in {stats.seconds:.2f} s; click a column to sort.</p>'
        + hists
        + _table("Per tensor", headers, rows, sortable=True, scroll=True)
    )


def _histogram(title: str, values: Sequence[float]) -> str:
    """A small SVG histogram of per-tensor values (no script, no style attributes)."""
    if not values:
        return ""
    low, high = min(values), max(values)
    width, height, bins = 240, 60, HISTOGRAM_BINS
    span = high - low or 1.0
    counts = [0] * bins
    for v in values:
        counts[min(bins - 1, int((v - low) / span * bins))] += 1
    top = max(counts)
    bar = width / bins
    rects = "".join(
        f'<rect x="{i * bar:.1f}" y="{height - c / top * height:.1f}" width="{bar - 1:.1f}" '
        f'height="{c / top * height:.1f}"><title>{c}</title></rect>'
        for i, c in enumerate(counts)
        if c
    )
    return (
        f'<div class="hist"><div class="muted">{_e(title)}: {len(values):,} tensors</div>'
        f'<svg width="{width}" height="{height + 12}" role="img">{rects}'
        f'<text x="0" y="{height + 11}">{_e(_num(low))}</text>'
        f'<text x="{width}" y="{height + 11}" text-anchor="end">{_e(_num(high))}</text></svg></div>'
    )


# -- diff ------------------------------------------------------------------------------------------


def _diff_section(diff: Diff) -> str:
    out = ['<section class="diff" id="diff">', f"<h2>diff: {_e(diff.a.path)} &#8594; {_e(diff.b.path)}</h2>"]
    out.append(
        _table(
            "Summary",
            [("", False), ("A", True), ("B", True), ("change", True)],
            [
                [("format", None), (_e(diff.a.format), None), (_e(diff.b.format), None), ("", None)],
                [
                    ("file bytes", None),
                    (_bytes(diff.a.file_bytes), None),
                    (_bytes(diff.b.file_bytes), None),
                    (f"{diff.b.file_bytes - diff.a.file_bytes:+,}", None),
                ],
                [
                    ("tensors", None),
                    (f"{diff.a.tensors:,}", None),
                    (f"{diff.b.tensors:,}", None),
                    (f"{diff.b.tensors - diff.a.tensors:+,}", None),
                ],
                [
                    ("parameters", None),
                    (f"{diff.a.parameters:,}", None),
                    (f"{diff.b.parameters:,}", None),
                    (f"{diff.b.parameters - diff.a.parameters:+,}", None),
                ],
            ],
        )
    )
    counts = (
        f"{len(diff.pairs):,} matched, {len(diff.renamed):,} renamed, {len(diff.added):,} added, "
        f"{len(diff.removed):,} removed, {len(diff.dtype_changes):,} dtype and "
        f"{len(diff.shape_changes):,} shape changes"
    )
    out.append(f"<p><b>{_e(counts)}</b></p>")
    tensor_rows = [
        [("+", None), (_e(t.name), "name"), (_e(t.dtype.name), None), (_bytes(t.nbytes), t.nbytes)] for t in diff.added
    ]
    tensor_rows += [
        [("&#8722;", None), (_e(t.name), "name"), (_e(t.dtype.name), None), (_bytes(t.nbytes), t.nbytes)]
        for t in diff.removed
    ]
    if tensor_rows:
        out.append(
            _table(
                "Added / removed",
                [("", False), ("tensor", False), ("dtype", False), ("bytes", True)],
                tensor_rows,
                sortable=True,
                scroll=True,
            )
        )
    changed = [p for p in diff.pairs if p.match != "name" or p.dtype_changed or p.shape_changed]
    if changed:
        renamed: list[Sequence[Cell]] = [
            [
                (_e(p.a.name), "name"),
                (_e(p.b.name), "name"),
                (_e(p.match), None),
                (_e(f"{p.a.dtype.name} → {p.b.dtype.name}" if p.dtype_changed else p.a.dtype.name), None),
                (_e(f"{list(p.a.shape)} → {list(p.b.shape)}" if p.shape_changed else list(p.a.shape)), None),
            ]
            for p in changed
        ]
        out.append(
            _table(
                "Renamed, retyped or reshaped",
                [("A", False), ("B", False), ("matched by", False), ("dtype", False), ("shape", False)],
                renamed,
                sortable=True,
                scroll=True,
            )
        )
    role_rows = [
        [
            (_e(r.role), None),
            (_bytes(r.bytes_a), r.bytes_a),
            (_bytes(r.bytes_b), r.bytes_b),
            (f"{r.bytes_b - r.bytes_a:+,}", r.bytes_b - r.bytes_a),
            (f"{r.parameters_a:,}", r.parameters_a),
            (f"{r.parameters_b:,}", r.parameters_b),
        ]
        for r in diff.roles
    ]
    out.append(
        _table(
            "By role",
            [
                ("role", False),
                ("bytes A", True),
                ("bytes B", True),
                ("bytes change", True),
                ("params A", True),
                ("params B", True),
            ],
            role_rows,
            sortable=True,
        )
    )
    if diff.values is not None:
        rows: list[Sequence[Cell]] = []
        for v in diff.values:
            name = v.a if v.a == v.b else f"{v.a} → {v.b}"
            if v.skipped is not None:
                rows.append(
                    [(_e(name), "name"), (f'<span class="muted">{_e(v.skipped)}</span>', -1)] + [("", None)] * 5
                )
                continue
            rows.append(
                [
                    (_e(name), "name"),
                    (f"{v.changed:,}", v.changed),
                    (_num(v.max_abs_diff), _key(v.max_abs_diff)),
                    (_num(v.rel_frobenius), _key(v.rel_frobenius)),
                    (_num(v.cosine, 6), _key(v.cosine)),
                    ("∞" if v.sqnr_db is None else f"{v.sqnr_db:.2f}", _key(v.sqnr_db, 1e9)),
                    ("identical" if v.identical else "changed", int(v.identical)),
                ]
            )
        out.append(
            _table(
                "Values (B against A)",
                [
                    ("tensor", False),
                    ("changed values", True),
                    ("max |B−A|", True),
                    ("rel. Frobenius", True),
                    ("cosine", True),
                    ("SQNR dB", True),
                    ("", False),
                ],
                rows,
                sortable=True,
                scroll=True,
                table_id="diff-values",
            )
        )
    if diff.metadata:
        rows = [
            [(_e(m.key), "name"), (_e(m.change), None), (_e(m.a or ""), None), (_e(m.b or ""), None)]
            for m in diff.metadata
        ]
        out.append(
            _table(
                "Metadata",
                [("key", False), ("change", False), ("A", False), ("B", False)],
                rows,
                sortable=True,
                scroll=True,
            )
        )
    out.append("".join(f'<p class="muted">{_e(n)}</p>' for n in diff.notes))
    out.append("</section>")
    return "".join(out)


# -- audit -----------------------------------------------------------------------------------------


def _audit_section(audit: HtmlAudit) -> str:
    s = audit.summary
    totals = s.get("totals") or {}
    recoverable = (s.get("recoverable") or {}).get("total_bytes", 0)
    out = ['<section class="audit" id="audit"><h2>Audit</h2>']
    roots = ", ".join(str(r) for r in s.get("roots") or [])
    out.append(
        _kv(
            [
                ("roots", _e(roots)),
                ("models", f"{len(audit.rows):,}"),
                ("bytes", _bytes(int(totals.get("file_bytes", 0) or 0)) if isinstance(totals, Mapping) else ""),
                ("recoverable (strip + dedupe)", _bytes(int(recoverable or 0))),
            ]
        )
    )
    rows = []
    for i, row in enumerate(audit.rows):
        record = audit.records.get(str(row.get("path")), {})
        found = record.get("findings") or []
        worst = _worst(found)
        rec = int(row.get("strip_bytes") or 0) + int(row.get("duplicate_bytes") or 0)
        rows.append(
            [
                (f'<a href="#model-{i}">{_e(row.get("path", ""))}</a>', "name"),
                (_e(row.get("format", "")), None),
                (_e(row.get("status", "")), None),
                (_bytes(int(row.get("file_bytes") or 0)), row.get("file_bytes") or 0),
                (f"{int(row.get('tensors') or 0):,}", row.get("tensors") or 0),
                (_count(int(row.get("parameters") or 0)), row.get("parameters") or 0),
                (_bytes(rec), rec),
                (_bytes(int(row.get("quantize_saving_bytes") or 0)), row.get("quantize_saving_bytes") or 0),
                (f"{len(found)}" + (f' <span class="sev-{_e(worst)}">{_e(worst)}</span>' if worst else ""), len(found)),
            ]
        )
    quantize = audit.rows[0].get("quantize_target", "") if audit.rows else ""
    headers = [
        ("model", False),
        ("format", False),
        ("status", False),
        ("bytes", True),
        ("tensors", True),
        ("parameters", True),
        ("recoverable", True),
        (f"saving at {quantize}", True),
        ("findings", True),
    ]
    out.append(_table("Models", headers, rows, sortable=True, scroll=True, table_id="audit-models"))
    out.append("</section>")
    return "".join(out)


def _worst(found: Sequence[Any]) -> str:
    order = ["info", "low", "medium", "high", "critical"]
    levels = [order.index(f["severity"]) for f in found if isinstance(f, Mapping) and f.get("severity") in order]
    return order[max(levels)] if levels else ""


def _record_section(index: int, row: Mapping[str, Any], record: Mapping[str, Any]) -> str:
    out = [
        f'<section class="model" id="model-{index}">',
        f'<h2>{_e(row.get("path", ""))} <span class="fmt">{_e(row.get("format") or "unrecognized")}</span></h2>',
    ]
    error = record.get("error")
    if isinstance(error, Mapping):
        out.append(f'<p class="error">[{_e(error.get("code", ""))}] {_e(error.get("message", ""))}</p>')
    if record.get("overhead"):
        out.append(
            f'<div class="treemap" data-model="{index}"><div class="tm-bar">'
            '<button type="button" class="tm-up">&#8593; up</button>'
            '<label>colour by <select class="tm-color"><option value="role">role</option>'
            '<option value="dtype">dtype</option></select></label><span class="tm-crumbs"></span>'
            '<span class="tm-info"></span></div><div class="tm-box"></div>'
            '<p class="muted">Modules (repeated blocks collapsed) and format overhead, area = bytes.</p></div>'
        )
    by_role = record.get("by_role") or {}
    if isinstance(by_role, Mapping) and by_role:
        rows = [
            [
                (_e(k), None),
                (f"{int(v.get('tensors', 0)):,}", v.get("tensors", 0)),
                (_bytes(int(v.get("bytes", 0))), v.get("bytes", 0)),
            ]
            for k, v in by_role.items()
            if isinstance(v, Mapping)
        ]
        out.append(_table("Roles", [("role", False), ("tensors", True), ("bytes", True)], rows, sortable=True))
    found = record.get("findings") or []
    if found:
        rows = [
            [
                (f'<span class="sev-{_e(f.get("severity", ""))}">{_e(f.get("severity", ""))}</span>', None),
                (_e(f.get("code", "")), None),
                (_e(f.get("message", "")), None),
            ]
            for f in found
            if isinstance(f, Mapping)
        ]
        out.append(_table("Findings", [("severity", False), ("code", False), ("message", False)], rows))
    out.append('<p><a href="#audit">back to the audit</a></p></section>')
    return "".join(out)


# -- formatting ------------------------------------------------------------------------------------


def _kv(pairs: Sequence[tuple[str, str]]) -> str:
    return '<dl class="kv">' + "".join(f"<dt>{_e(k)}</dt><dd>{v}</dd>" for k, v in pairs) + "</dl>"


def _bytes(n: int) -> str:
    from ckptscan.report.terminal import human_bytes

    return _e(human_bytes(n))


def _count(n: int) -> str:
    from ckptscan.report.terminal import human_count

    return _e(human_count(n))


def _num(x: float | None, digits: int = 4) -> str:
    return "–" if x is None else f"{x:.{digits}g}"


def _db(x: float | None) -> str:
    return "–" if x is None else ("∞" if math.isinf(x) else f"{x:.2f}")


def _key(x: float | None, infinite: float = 1e300) -> float:
    if x is None or math.isnan(x):
        return -1e300
    return infinite if math.isinf(x) else x
