"""``ckptscan audit DIR...``: every checkpoint under some folders, read in parallel, with totals."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from ckptscan._version import __version__
from ckptscan.cli.common import (
    EXIT_FINDINGS,
    EXIT_INPUT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_RECOVERABLE,
    FAIL_ON_LEVELS,
    add_fail_on_argument,
    add_output_arguments,
    add_remote_arguments,
    clean_lines,
    configure_remote,
    emit_json,
    emit_line,
    help_formatter,
    make_console,
    sample_fraction,
    write_text,
)
from ckptscan.errors import UsageError
from ckptscan.inventory import Severity
from ckptscan.safe_text import clean

AUDIT_EXIT_CODES_HELP = """\
exit codes (the first that applies):
  130  interrupted by Ctrl-C (the report covers what was read until then)
  1    a file could not be read (malformed, over the time limit, crashed its worker) or a model is
       incomplete (missing shards, Git LFS pointers, truncated files)
  3    a finding at or above --fail-on
  4    recoverable bytes (strip + dedupe) above --fail-on-recoverable
  0    otherwise
  2    usage error
"""

SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 10**3,
    "m": 10**6,
    "g": 10**9,
    "t": 10**12,
    "p": 10**15,
    "ki": 2**10,
    "mi": 2**20,
    "gi": 2**30,
    "ti": 2**40,
    "pi": 2**50,
}


def parse_size(text: str) -> int:
    """``10GB``, ``1.5 TiB``, ``500M``, ``123`` -> bytes (KB = 1000, KiB = 1024)."""
    import re

    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([kmgtp]i?)?b?\s*", text.lower())
    if match is None:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (examples: 500MB, 10GB, 1.5TiB)")
    from fractions import Fraction

    return int(Fraction(match.group(1)) * SIZE_UNITS[match.group(2) or ""])


def audit_parser() -> argparse.ArgumentParser:
    from ckptscan.audit.model import DEFAULT_QUANTIZE, QUANTIZE_BITS
    from ckptscan.audit.run import DEFAULT_TIMEOUT_S, STATS_TIMEOUT_S

    parser = argparse.ArgumentParser(
        prog="ckptscan audit",
        description="Audit every checkpoint under some folders: what there is, what it costs, and what "
        "could be deleted or shrunk. Files are recognized by content, grouped into models (shards with "
        "their index, HF model and Trainer folders, external data), read in parallel worker processes "
        "with a time limit each, and totalled across models. See docs/audit.md.",
        epilog=AUDIT_EXIT_CODES_HELP,
        formatter_class=help_formatter,
    )
    parser.add_argument("paths", nargs="+", metavar="DIR", help="folders to walk (or single files)")
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print one JSON document at the end")
    output.add_argument(
        "--jsonl", action="store_true", help="print one JSON record per model as it is read, then a summary record"
    )
    output.add_argument("--csv", action="store_true", help="print one CSV row per model")
    output.add_argument("--format", choices=("text", "json", "jsonl", "csv", "sarif"), default=None,
                        help="output format (json, jsonl, csv as the flags; sarif: SARIF 2.1.0, one result per "
                        "finding, for code scanning)")  # fmt: skip
    parser.add_argument(
        "--include",
        action="append",
        default=[],
        metavar="GLOB",
        help="audit only files matching GLOB (repeatable; a GLOB with / matches the path "
        "under DIR, one without matches the file name)",
    )
    parser.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="GLOB",
        help="skip files and folders matching GLOB (repeatable)",
    )
    parser.add_argument("--hidden", action="store_true", help="also walk hidden files and folders (never .git & co)")
    parser.add_argument("--follow-links", action="store_true", help="follow links to folders (loops are detected)")
    parser.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="worker processes (default: one per CPU; 0: read in this process, no time limit)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        help=f"time limit per model; a worker over it is killed (default: {DEFAULT_TIMEOUT_S:g}, "
        f"{STATS_TIMEOUT_S:g} with --stats)",
    )
    parser.add_argument(
        "--quantize",
        choices=list(QUANTIZE_BITS),
        default=DEFAULT_QUANTIZE,
        metavar="TARGET",
        help=f"quantization target for the savings estimate: {', '.join(QUANTIZE_BITS)} (default: {DEFAULT_QUANTIZE})",
    )
    parser.add_argument(
        "--all-targets",
        action="store_true",
        help="every reduction target in each model's record (default: strip, dedupe and the --quantize target)",
    )
    parser.add_argument(
        "--stats",
        action="store_true",
        help="read tensor values (the stats pass, docs/stats.md): deduplicate by content hash, not metadata; "
        f"raises the default --timeout to {STATS_TIMEOUT_S:g} s",
    )
    parser.add_argument(
        "--stats-sample",
        type=sample_fraction,
        metavar="FRACTION",
        help="--stats from this fraction of each tensor (e.g. 5%%): faster, but sampled tensors have no "
        "content hash, so deduplication stays by metadata",
    )
    parser.add_argument("--tensors", action="store_true", help="keep every tensor record in --json/--jsonl")
    parser.add_argument("--top", type=int, default=10, metavar="N", help="top offenders to list (default: 10)")
    parser.add_argument(
        "--models",
        type=int,
        default=50,
        metavar="N",
        help="list every model in the report when there are at most N (-1: always; default: 50)",
    )
    add_fail_on_argument(parser)
    parser.add_argument(
        "--fail-on-recoverable",
        type=parse_size,
        metavar="SIZE",
        help="exit 4 when more than SIZE (e.g. 10GB) is recoverable by strip + dedupe",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--html", metavar="FILE", help="also write a self-contained HTML report: one sortable row "
                        "per model, linking to each model's section (docs/html.md)")  # fmt: skip
    add_audit_engine_arguments(parser)
    add_remote_arguments(parser)
    add_output_arguments(parser)
    return parser


def add_audit_engine_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--engine",
        choices=("processes", "dask"),
        default="processes",
        help="processes: a pool of worker processes on this machine (default); dask: Dask tasks, on a local "
        "cluster or on --scheduler (pip install 'ckptscan[dask]')",
    )
    parser.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="with --engine dask: an existing Dask scheduler (tcp://host:8786) instead of a local cluster",
    )
    parser.add_argument(
        "--index",
        metavar="FILE",
        help="an SQLite file remembering every file's record: a re-run reads only new or changed files "
        "(docs/audit.md, 'The index')",
    )


def run_audit(argv: list[str]) -> int:
    from ckptscan.audit import Audit, AuditOptions, Discovered, ModelDone
    from ckptscan.audit.run import DEFAULT_TIMEOUT_S, STATS_TIMEOUT_S
    from ckptscan.report import audit as audit_report
    from ckptscan.report.json import model_row_dict

    parser = audit_parser()
    args = parser.parse_args(argv)
    options = AuditOptions(
        include=tuple(args.include),
        exclude=tuple(args.exclude),
        hidden=args.hidden,
        follow_links=args.follow_links,
        workers=args.workers,
        timeout_s=args.timeout if args.timeout is not None else STATS_TIMEOUT_S if args.stats else DEFAULT_TIMEOUT_S,
        tensors=args.tensors,
        stats=args.stats or args.stats_sample is not None,
        stats_sample=args.stats_sample,
        quantize=args.quantize,
        all_targets=args.all_targets,
        top=args.top,
        engine=args.engine,
        scheduler=args.scheduler,
        index=args.index,
    )
    configure_remote(args)
    if args.scheduler and args.engine != "dask":
        parser.error("--scheduler needs --engine dask")
    from ckptscan.scan import is_remote

    missing = [p for p in args.paths if not is_remote(p) and not os.path.lexists(p)]
    if missing:  # a typo must not pass a CI gate as "0 files found"
        for p in missing:
            print(f"ckptscan: {p}: no such file or folder", file=sys.stderr)
        return EXIT_INPUT_FAILED
    try:
        audit = Audit(args.paths, options)
    except UsageError as e:
        parser.error(str(e))
    if args.format in ("json", "jsonl", "csv"):
        setattr(args, args.format, True)
    sarif = args.format == "sarif"
    machine = args.json or args.jsonl or args.csv or sarif
    show_progress = not (machine or args.no_progress) and sys.stdout.isatty() and sys.stderr.isatty()
    progress = _AuditProgress(args.no_color) if show_progress else None
    events = audit.events()
    try:
        for event in events:
            if isinstance(event, ModelDone):
                if args.jsonl:
                    emit_line(audit_report.model_line(event.text))
                if args.debug and event.detail:
                    print(clean_lines(event.detail), file=sys.stderr)
            elif isinstance(event, Discovered) and progress is not None:
                progress.start(event.files, event.bytes)
            if progress is not None:
                progress.update(audit.progress)
    except KeyboardInterrupt:
        audit.interrupted = True
    except UsageError as e:  # e.g. an unreachable Dask scheduler, found when the audit starts
        events.close()
        parser.error(str(e))
    finally:
        events.close()  # stops the workers (at once when interrupted)
        if progress is not None:
            progress.stop()

    summary = audit.summary()
    rows = [model_row_dict(row) for row in audit.aggregate.model_rows()]
    if sarif:
        from ckptscan.report import sarif as sarif_report

        emit_json(sarif_report.document(audit_sarif_files(audit.sorted_texts()), version=__version__,
                                        base=os.getcwd()))  # fmt: skip
    elif args.jsonl:
        emit_line(audit_report.summary_line(summary))
    elif args.json:
        text = audit_report.document_text(audit.sorted_texts(), summary)
        if sys.stdout.isatty():  # for a person: indented, as `ckptscan PATH --json` does
            emit_json(json.loads(text))
        else:
            emit_line(text)
    elif args.csv:
        sys.stdout.write(audit_report.csv_text(rows))
        sys.stdout.flush()
    else:
        from ckptscan.report.audit_terminal import Options, report

        console = make_console(args.no_color)
        for renderable in report(summary, rows, Options(models=args.models)):
            console.print(renderable)
    if args.html:
        from ckptscan.report import html

        records = {str(r.get("path")): r for r in map(json.loads, audit.sorted_texts())}
        page = html.HtmlAudit(summary, rows, records)
        write_text(args.html, html.render([], audit=page, title="ckptscan audit"))
    if machine:
        for problem in summary["incomplete"] + summary["failed"]:
            print(f"ckptscan: {clean(problem['message'])}", file=sys.stderr)
    return audit_exit_code(summary, FAIL_ON_LEVELS[args.fail_on], args.fail_on_recoverable)


def audit_sarif_files(texts: Sequence[str]) -> list[Any]:
    """The audit's model records (our own JSON) as SARIF inputs."""
    from ckptscan.inventory import Finding
    from ckptscan.report.sarif import SarifFile

    files = []
    for text in texts:
        record = json.loads(text)
        found = tuple(
            Finding(f["code"], Severity(f["severity"]), f["message"], f.get("where", ""), f.get("subject", ""))
            for f in record.get("findings") or ()
        )
        error = record.get("error") or {}
        files.append(SarifFile(record["path"], found, error.get("code", ""), error.get("message", "")))
    return files


def audit_exit_code(summary: dict[str, object], fail_on: Severity | None, max_recoverable: int | None) -> int:
    if summary.get("interrupted"):
        return EXIT_INTERRUPTED
    totals = summary["totals"]
    assert isinstance(totals, dict)
    if totals["failed"] or totals["incomplete"]:
        return EXIT_INPUT_FAILED
    findings = summary["findings"]
    assert isinstance(findings, dict)
    if fail_on is not None and any(Severity(s).rank >= fail_on.rank for s in findings["by_severity"]):
        return EXIT_FINDINGS
    recoverable = summary["recoverable"]
    assert isinstance(recoverable, dict)
    if max_recoverable is not None and recoverable["total_bytes"] > max_recoverable:
        return EXIT_RECOVERABLE
    return EXIT_OK


class _AuditProgress:
    """A progress bar on stderr, refreshed from the event loop (no thread: workers are forked)."""

    REFRESH_S = 0.1

    def __init__(self, no_color: bool) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = Progress(
            TextColumn("[bold]auditing[/bold]"),
            BarColumn(),
            TextColumn("{task.fields[files]}"),
            TextColumn("{task.fields[rate]}"),
            TextColumn("{task.fields[covered]}"),
            TextColumn("{task.fields[models]}"),
            TimeElapsedColumn(),
            console=Console(stderr=True, no_color=no_color or None),
            auto_refresh=False,
            transient=True,
        )
        self.task = self.progress.add_task("audit", total=None, files="", rate="", covered="", models="")
        self.started = 0.0
        self.last = 0.0
        self.files_total = 0
        self.bytes_total = 0

    def start(self, files: int, nbytes: int) -> None:
        import time

        self.files_total, self.bytes_total = files, nbytes
        self.started = time.monotonic()
        self.progress.start()
        self.progress.update(self.task, total=max(nbytes, 1))

    def update(self, p: object) -> None:
        import time

        from ckptscan.audit import Progress
        from ckptscan.report.terminal import human_bytes

        now = time.monotonic()
        if not self.started or now - self.last < self.REFRESH_S or not isinstance(p, Progress):
            return
        self.last = now
        rate = p.files_done / max(now - self.started, 1e-6)
        failed = f", [red]{p.failed} failed[/red]" if p.failed else ""
        self.progress.update(
            self.task,
            completed=p.bytes_done,
            files=f"{p.files_done:,}/{p.files_total:,} files",
            rate=f"{rate:,.0f} files/s",
            covered=f"{human_bytes(p.bytes_done)}/{human_bytes(p.bytes_total)}",
            models=f"{p.models:,} models{failed}",
        )
        self.progress.refresh()

    def stop(self) -> None:
        if self.started:
            self.progress.stop()
