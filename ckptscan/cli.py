"""Command line: parse argv, run, print, set the exit code. The only module that prints or exits.

ckptscan PATH...             rich report per model (a file, an index, or a folder of models)
ckptscan PATH... --json      one JSON document (see ``ckptscan schema``)
ckptscan audit DIR...        every checkpoint under some folders, in parallel, with totals
ckptscan PATH... --explain   also each tensor's role and the evidence for it
ckptscan PATH... --stats     also read the values: statistics, pruning, quantization error, integrity
ckptscan memory PATH...      inference and training memory estimates (see --help)
ckptscan diff A B            what changed between two models (tensors, dtypes, roles, metadata; values with --stats)
ckptscan report PATH... -o F a self-contained HTML report with a treemap of the bytes
ckptscan schema              print the JSON Schema of --json
ckptscan formats             list the formats ckptscan reads
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from ckptscan import pipeline
from ckptscan._version import __version__
from ckptscan.analyze.analysis import AnalysisOptions
from ckptscan.errors import UsageError
from ckptscan.inventory import Finding, Severity
from ckptscan.safe_text import clean, json_text, markup

if TYPE_CHECKING:
    from ckptscan.pipeline import ModelReport
    from ckptscan.stats import StatsOptions

EXIT_OK = 0
EXIT_INPUT_FAILED = 1  # at least one input could not be read (or is incomplete)
EXIT_USAGE = 2  # bad arguments (argparse's own code)
EXIT_FINDINGS = 3  # a finding at or above --fail-on
EXIT_RECOVERABLE = 4  # audit: recoverable bytes above --fail-on-recoverable
EXIT_INTERRUPTED = 130

EXIT_CODES_HELP = """\
exit codes:
  0    every input was read
  1    at least one input could not be read, or a model is incomplete (missing shards, LFS pointers)
  2    usage error
  3    a finding at or above --fail-on (when every input was read)
  130  interrupted
"""

FAIL_ON_LEVELS = {
    "none": None,
    "info": Severity.INFO,
    "low": Severity.LOW,
    "medium": Severity.MEDIUM,
    "high": Severity.HIGH,
    "unsafe": Severity.HIGH,  # a risk of running code or reading outside the model
    "critical": Severity.CRITICAL,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    command = args[0] if args and args[0] in COMMANDS else "scan"
    if args and args[0] == command:
        args = args[1:]
    try:
        return COMMANDS[command](args)
    except UsageError as e:  # a bad option value found past argparse (e.g. by an options' validated())
        print(f"ckptscan: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("ckptscan: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return EXIT_OK


# -- scan ----------------------------------------------------------------------------------------


def scan_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ckptscan",
        description="Inventory ML checkpoints without running code from them or loading their weights. "
        "Formats: safetensors (single and sharded), GGUF, PyTorch (.pt/.pth/.bin, legacy, TorchScript, "
        "Lightning, HF Trainer folders), ONNX, Keras/HDF5, NumPy, TensorFlow checkpoints; see `ckptscan formats`. "
        "Other commands: `ckptscan audit`, `ckptscan memory`, `ckptscan diff`, `ckptscan report`, `ckptscan schema`, "
        "`ckptscan formats`.",
        epilog=EXIT_CODES_HELP,
        formatter_class=help_formatter,
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="checkpoint files, index files or model folders")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of the report")
    parser.add_argument("--format", choices=("text", "json", "sarif"), default=None,
                        help="output format: text (the report), json (= --json) or sarif (SARIF 2.1.0: one result "
                        "per finding, for code scanning)")  # fmt: skip
    parser.add_argument("--tensors", action="store_true", help="list every tensor (with --json: also each "
                        "reduction target's plan per tensor)")  # fmt: skip
    parser.add_argument("--explain", action="store_true", help="show each tensor's role and the evidence for it")
    parser.add_argument("--gpu", metavar="SIZE|NAME", default=None, type=gpu_size,
                        help="the memory summary says whether it fits this GPU (24GiB, H100, A10G, ...)")  # fmt: skip
    add_reduction_arguments(parser)
    add_fail_on_argument(parser)
    add_stats_arguments(parser)
    add_remote_arguments(parser)
    add_output_arguments(parser)
    parser.add_argument("--version", action="version", version=f"ckptscan {__version__}")
    return parser


def help_formatter(prog: str) -> argparse.HelpFormatter:
    """argparse's RawDescriptionHelpFormatter with the width argparse would pick, found without
    importing shutil (argparse makes a formatter for every add_argument: ~2 ms of each run)."""
    import os

    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        try:
            columns = os.get_terminal_size(sys.stdout.fileno()).columns
        except (OSError, ValueError, AttributeError):
            columns = 80
    return argparse.RawDescriptionHelpFormatter(prog, width=max(columns, 20) - 2)


def add_remote_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--download",
        action="store_true",
        help="remote paths (hf://, https://, s3://...): allow reading more than the header budget of a file "
        "whose metadata is spread through it (see docs/remote.md)",
    )


def configure_remote(args: argparse.Namespace) -> None:
    if getattr(args, "download", False):
        from ckptscan import remote

        remote.configure(download=True)


def add_fail_on_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--fail-on",
        choices=list(FAIL_ON_LEVELS),
        default="none",
        metavar="LEVEL",
        help="exit 3 when a finding is at or above LEVEL: info, low, medium, high, critical, "
        "or unsafe (= high: code execution or reading outside the model); default: none",
    )


def add_output_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-color", action="store_true", help="plain text output")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of internal errors")


def add_stats_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--stats",
        action="store_true",
        help="read every tensor's values (streamed, bounded memory): min/max/mean/std, zeros and near-zero "
        "fractions, NaN/Inf, int8/int4 quantization error, content hashes; needs numpy (docs/stats.md)",
    )
    parser.add_argument(
        "--stats-sample",
        type=sample_fraction,
        metavar="FRACTION",
        help="with --stats: read only this fraction of each tensor (e.g. 0.05 or 5%%), in evenly spaced "
        "windows, for a fast estimate (implies --stats)",
    )
    parser.add_argument(
        "--stats-workers", type=int, default=0, metavar="N", help="workers for --stats (default: one per CPU core)"
    )


def add_reduction_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--group-size", type=int, default=128, metavar="N",
                        help="int4 target: inputs per scale (0: one scale per output channel); "
                        "default 128")  # fmt: skip
    parser.add_argument("--zero-points", action="store_true", help="int4/int8 targets: asymmetric, with zero points")


def run_scan(argv: list[str]) -> int:
    parser = scan_parser()
    args = parser.parse_args(argv)
    if args.group_size < 0:
        parser.error("--group-size must be 0 or more")
    if args.stats_workers < 0:
        parser.error("--stats-workers must be 0 (one per core) or more")
    configure_remote(args)
    if args.format == "json":
        args.json = True
    sarif = args.format == "sarif"
    reports = build_reports(args.paths, pipeline_options(args), show_progress=not (args.json or sarif))
    failed_reports = 0
    if sarif:
        from ckptscan.report import sarif as sarif_report

        emit_json(sarif_report.document(sarif_files(reports), version=__version__, base=os.getcwd()))
        report_errors(reports)
    elif args.json:
        from ckptscan.report.json import document

        emit_json(document(reports, explain=args.explain, tensor_plans=args.tensors))
        report_errors(reports)
    else:
        from ckptscan.report.terminal import Options, report

        console = make_console(args.no_color, wide=piped_width(reports) if args.tensors else None)
        view = Options(tensors=args.tensors, explain=args.explain)
        for model in reports:
            try:  # one report at a time: a renderer's bug on one model must not lose the others
                renderables = report([model], view)
            except Exception as e:
                print(clean(f"ckptscan: {model.path}: internal error in the report ({type(e).__name__}: {e}); "
                            "please report it"), file=sys.stderr)  # fmt: skip
                failed_reports += 1
                continue
            for renderable in renderables:
                console.print(renderable)
    if args.debug:
        for r in reports:
            if r.error is not None and r.error.detail:
                print(clean_lines(r.error.detail), file=sys.stderr)
    code = exit_code(reports, FAIL_ON_LEVELS[args.fail_on])
    return EXIT_INPUT_FAILED if failed_reports and code == EXIT_OK else code


def sarif_files(reports: Sequence[ModelReport]) -> list[Any]:
    from ckptscan.report.sarif import SarifFile

    files = []
    for model in reports:
        result = model.scan
        found = list(result.inventory.findings) if result.inventory is not None else []
        if model.stats is not None:
            found += model.stats.findings
        error = result.error
        if error is not None:
            found += error.findings
        code, message = (error.code, error.message) if error is not None else ("", "")
        files.append(SarifFile(result.path, tuple(found), code, message))
    return files


def build_reports(paths: Sequence[str], options: pipeline.Options, *, show_progress: bool = False) -> list[ModelReport]:
    """Every model's report; a stats pass that could not run is said on stderr (the report stands)."""
    progress = progress_bar if show_progress and sys.stderr.isatty() else None
    reports = []
    for model in pipeline.run(paths, options, progress):
        if model.stats_problem:
            print(clean(f"ckptscan: {model.path}: {model.stats_problem}"), file=sys.stderr)
        reports.append(model)
    return reports


# -- the stats pass ------------------------------------------------------------------------------


def sample_fraction(text: str) -> float:
    try:
        value = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a fraction: {text!r}") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"the fraction must be in (0, 1], e.g. 0.05 or 5%, not {text!r}")
    return value


def stats_options(args: argparse.Namespace) -> StatsOptions | None:
    """The stats pass's options when --stats or --stats-sample asks for it."""
    if not (args.stats or args.stats_sample is not None):
        return None
    from ckptscan.stats import StatsOptions

    return StatsOptions(workers=args.stats_workers, sample=args.stats_sample)


def progress_bar(label: str) -> tuple[Callable[[int, int], None], Callable[[], None]]:
    """A progress bar for one model's stats pass (pipeline.ProgressFactory)."""
    bar = ProgressBar(label)
    return bar.update, bar.close


class ProgressBar:
    """A transient bar on stderr that appears only once a run has taken ``delay`` seconds."""

    def __init__(self, label: str, delay: float = 1.0) -> None:
        self.label = label
        self.delay = delay
        self.started = time.monotonic()
        self._progress: Any = None
        self._task: Any = None

    def update(self, done: int, total: int) -> None:
        if self._progress is None:
            if time.monotonic() - self.started < self.delay or done >= total:
                return
            self._progress = make_progress(self.label)
            self._progress.start()
            self._task = self._progress.add_task("values", total=total)
        self._progress.update(self._task, completed=done, total=total)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()


def make_progress(label: str) -> Any:
    """A transient progress bar on stderr (bytes read by the stats pass)."""
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

    return Progress(
        TextColumn(f"[bold]{markup(label)}[/bold] values"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    )


def report_errors(reports: Sequence[ModelReport]) -> None:
    for r in reports:
        if r.error is not None:
            print(f"ckptscan: {clean(r.error.message)}", file=sys.stderr)


def pipeline_options(args: argparse.Namespace) -> pipeline.Options:
    stats = stats_options(args) if hasattr(args, "stats") else None  # `ckptscan memory` has no stats pass
    return pipeline.Options(analysis=analysis_options(args), stats=stats)


def analysis_options(args: argparse.Namespace) -> AnalysisOptions:
    from ckptscan.analyze import memory, reduction

    training = memory.TrainingOptions()
    inference = memory.InferenceOptions()
    if hasattr(args, "optimizer"):
        lora = None
        if args.lora_rank or args.qlora:
            lora = memory.LoraOptions(rank=args.lora_rank or 16 if args.qlora else args.lora_rank,
                                      alpha=args.lora_alpha, targets=tuple(args.lora_targets.split(",")),
                                      quantized_base=args.qlora)  # fmt: skip
        training = memory.TrainingOptions(
            optimizer=args.optimizer,
            precision=args.precision,
            batch=args.batch,
            seq=args.seq,
            checkpointing=args.checkpointing,
            freeze=tuple(args.freeze),
            attention=args.attention,
            optimizer_impl=args.optimizer_impl,
            device=args.device,
            padded=args.padded,
            lora=lora,
            gpus=args.gpus,
            sharding=args.sharding,
        )
        inference = memory.InferenceOptions(batch=args.batch, seq=args.context or args.seq, kv_bytes=args.kv_bytes,
                                            attention=args.attention, device=args.device, padded=args.padded,
                                            last_token_logits=args.last_token_logits)  # fmt: skip
    gpu = getattr(args, "gpu", None)
    return AnalysisOptions(
        reduction=reduction.Options(group_size=args.group_size, zero_points=args.zero_points),
        training=training,
        inference=inference,
        gpu=gpu,
    )


def exit_code(reports: Sequence[ModelReport], fail_on: Severity | None) -> int:
    if any(r.error is not None for r in reports):
        return EXIT_INPUT_FAILED
    if fail_on is not None:
        found: list[Finding] = [f for r in reports for f in r.findings()]
        if any(f.severity.rank >= fail_on.rank for f in found):
            return EXIT_FINDINGS
    return EXIT_OK


# -- audit ---------------------------------------------------------------------------------------

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


# -- memory --------------------------------------------------------------------------------------


def memory_parser() -> argparse.ArgumentParser:
    from ckptscan.analyze import memory

    parser = argparse.ArgumentParser(
        prog="ckptscan memory",
        description="Estimate inference memory (weights at each reduction target + KV cache) and training memory "
        "(weights, master weights, gradients, optimizer state, activations) from the checkpoint alone. The "
        "architecture comes from a config.json beside the file, GGUF metadata, or the tensor shapes. Formulas "
        "and their sources: docs/analysis.md.",
        epilog=EXIT_CODES_HELP,
        formatter_class=help_formatter,
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="checkpoint files, index files or model folders")
    parser.add_argument("--optimizer", default="adamw", type=str.lower,
                        choices=[*memory.OPTIMIZERS, *memory.OPTIMIZER_ALIASES], help="default: adamw")  # fmt: skip
    parser.add_argument("--precision", default="bf16-mixed", type=str.lower,
                        choices=[*memory.PRECISIONS, *memory.PRECISION_ALIASES],
                        help="fp32; bf16 = bf16-mixed (autocast, as HF Trainer --bf16 and Lightning bf16-mixed: "
                        "fp32 weights and gradients, bf16 copies saved); fp16-mixed; bf16-true (pure bf16); "
                        "bf16-master / fp16-master (ZeRO: 16-bit weights + fp32 master); "
                        "default: bf16-mixed")  # fmt: skip
    parser.add_argument("--batch", type=positive, default=1, help="sequences per step (and KV-cache batch)")
    parser.add_argument("--seq", type=positive, default=None, help="tokens per sequence (default: the model's "
                        "context, at most 2048 for training)")  # fmt: skip
    parser.add_argument("--context", type=positive, default=None,
                        help="KV-cache tokens for inference (default: --seq, else the model's context)")  # fmt: skip
    parser.add_argument("--checkpointing", action="store_true", help="gradient checkpointing, one layer at a time")
    parser.add_argument("--freeze", action="append", default=[], metavar="PATTERN",
                        help="freeze parameters whose name matches this glob (repeatable), "
                        "e.g. 'model.embed_tokens.*'")  # fmt: skip
    parser.add_argument("--attention", choices=[*memory.ATTENTION, *memory.ATTENTION_ALIASES], default="auto",
                        help="auto (default): the SDPA kernel PyTorch picks for the dtype, head layout, mask and "
                        "device; or force flash, efficient, math, eager")  # fmt: skip
    parser.add_argument("--device", choices=memory.DEVICES, default="cuda",
                        help="cuda (default) or cpu: kernel rules and dropout-mask width differ")  # fmt: skip
    parser.add_argument("--padded", action="store_true",
                        help="batches carry a padding mask (no flash kernel; K/V heads expanded)")  # fmt: skip
    parser.add_argument("--last-token-logits", action="store_true",
                        help="inference: logits for the last position only (generate()), "
                        "not every position")  # fmt: skip
    parser.add_argument("--lora-rank", type=positive, default=None, metavar="R",
                        help="LoRA fine-tuning: the base frozen, rank-R adapters train")  # fmt: skip
    parser.add_argument("--lora-alpha", type=positive, default=16, help="LoRA alpha (reported; no memory effect)")
    parser.add_argument("--lora-targets", default=",".join(memory.LORA_DEFAULT_TARGETS), metavar="NAMES",
                        help="comma-separated module names the adapters wrap (default: q_proj,v_proj)")  # fmt: skip
    parser.add_argument("--qlora", action="store_true",
                        help="QLoRA: 4-bit NF4 base (double-quantized), LoRA adapters (rank 16 unless --lora-rank); "
                        "use with --optimizer paged-adamw-8bit")  # fmt: skip
    parser.add_argument("--gpus", type=positive, default=1, help="GPUs training together (figures are per GPU)")
    parser.add_argument("--sharding", default="ddp", type=str.lower,
                        choices=[*memory.SHARDING, *memory.SHARDING_ALIASES],
                        help="ddp (default), zero1, zero2, zero3 / fsdp")  # fmt: skip
    parser.add_argument("--gpu", metavar="SIZE|NAME", default=None, type=gpu_size,
                        help="answer 'will it fit?': a size (24GiB, 80GB) or a card (H100, A100-40GB, A10G, L4, "
                        "RTX4090, ...); gives the margin and the largest batch and sequence that fit")  # fmt: skip
    parser.add_argument("--optimizer-impl", choices=list(memory.OPTIMIZER_IMPLS), default="foreach",
                        help="PyTorch Adam/AdamW step: foreach (CUDA default), for-loop, "
                        "fused (no temporaries)")  # fmt: skip
    parser.add_argument("--kv-bytes", type=positive, default=None,
                        help="bytes per KV-cache element (default: the model's compute width: "
                        "4 for fp32 weights)")  # fmt: skip
    add_reduction_arguments(parser)
    parser.add_argument("--json", action="store_true", help="the scan JSON document, with these memory options")
    parser.add_argument("--no-color", action="store_true", help="plain text output")
    add_remote_arguments(parser)
    return parser


def gpu_size(text: str) -> tuple[str, int]:
    from ckptscan.analyze import memory

    try:
        return memory.parse_gpu(text)
    except UsageError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be 1 or more")
    return value


def run_memory(argv: list[str]) -> int:
    args = memory_parser().parse_args(argv)
    configure_remote(args)
    reports = build_reports(args.paths, pipeline_options(args))
    if args.json:
        from ckptscan.report.json import document

        emit_json(document(reports))
        report_errors(reports)
    else:
        from ckptscan.report.terminal import memory_report

        console = make_console(args.no_color)
        for renderable in memory_report(reports):
            console.print(renderable)
    return exit_code(reports, None)


# -- diff ----------------------------------------------------------------------------------------


def diff_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ckptscan diff",
        description="What changed between two models of any formats: tensors added, removed and renamed "
        "(matched by name, wrapper prefixes, llama.cpp <-> Hugging Face names, shape, and with --stats content), "
        "dtype and shape changes, bytes and parameters by role, metadata; with --stats, every matched tensor's "
        "values compared, B against A (max |B-A|, relative Frobenius norm, cosine, SQNR). See docs/diff.md.",
        epilog="exit codes:\n  0    both models were read (whatever changed)\n  1    a model could not be read, or "
        "the value comparison could not run\n  2    usage error\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("a", metavar="A", help="the reference model (file, index or model folder)")
    parser.add_argument("b", metavar="B", help="the model to compare with it")
    parser.add_argument("--json", action="store_true", help="print one JSON document (see `ckptscan schema --diff`)")
    parser.add_argument(
        "--stats",
        action="store_true",
        help="read both models' values (streamed, bounded memory): compare every matched tensor and match "
        "renames by content; needs numpy",
    )
    parser.add_argument("--all", action="store_true", help="list every row (the terminal shows 40 per table)")
    parser.add_argument("--html", metavar="FILE", help="also write a self-contained HTML report with both models "
                        "and the diff")  # fmt: skip
    add_output_arguments(parser)
    return parser


def run_diff(argv: list[str]) -> int:
    from ckptscan.diff import compare, match_tensors, with_values
    from ckptscan.errors import CkptscanError

    parser = diff_parser()
    args = parser.parse_args(argv)
    reports = []
    for path in (args.a, args.b):
        found = pipeline.expand(path)
        if len(found) != 1:
            parser.error(f"{path}: holds {len(found)} models; name one file or index")
        # memory estimates only for the HTML page; the diff itself needs roles and parameters
        reports.append(pipeline.build(found[0], pipeline.Options(analysis=AnalysisOptions(memory=bool(args.html)))))
    if any(r.analysis is None or r.error is not None for r in reports):
        report_errors(reports)
        for r in reports if args.debug else ():
            if r.error is not None and r.error.detail:
                print(r.error.detail, file=sys.stderr)
        return EXIT_INPUT_FAILED
    model_a, model_b = reports
    inv_a, inv_b = model_a.inventory, model_b.inventory
    assert inv_a is not None and inv_b is not None and model_a.analysis is not None and model_b.analysis is not None
    hashes = None
    if args.stats:
        from ckptscan.stats.compare import content_hashes

        _, removed, added = match_tensors(inv_a.tensors, inv_b.tensors, by_shape=False)
        if removed and added:  # renames: hash what the names did not match
            try:
                hashes = (content_hashes(inv_a, removed), content_hashes(inv_b, added))
            except CkptscanError as e:  # numpy missing, say
                print(f"ckptscan: diff --stats: {e}", file=sys.stderr)
                return EXIT_INPUT_FAILED
    diff = compare(inv_a, inv_b, model_a.analysis, model_b.analysis, hashes_a=hashes[0] if hashes else None,
                   hashes_b=hashes[1] if hashes else None, content=args.stats)  # fmt: skip
    if args.stats:
        from ckptscan.stats.compare import compare_pairs

        bar = ProgressBar("diff") if not args.json and sys.stderr.isatty() else None
        try:
            values = compare_pairs(inv_a, inv_b, [(p.a, p.b) for p in diff.pairs],
                                   progress=bar.update if bar is not None else None)  # fmt: skip
        except CkptscanError as e:
            print(f"ckptscan: diff --stats: {e}", file=sys.stderr)
            return EXIT_INPUT_FAILED
        finally:
            if bar is not None:
                bar.close()
        diff = with_values(diff, values)
    from ckptscan.report import diff as diff_report

    if args.json:
        emit_json(diff_report.document(diff))
    else:
        console = make_console(args.no_color)
        for renderable in diff_report.report(diff, show_all=args.all):
            console.print(renderable)
    if args.html:
        from ckptscan.report import html

        write_text(args.html, html.render(reports, diff=diff))
    return EXIT_OK


# -- report (HTML) ------------------------------------------------------------------------------


def report_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ckptscan report",
        description="Write one self-contained HTML file (no network access when viewed): a zoomable treemap of "
        "where each model's bytes go, and the summary tables; with --stats also per-tensor value statistics. "
        "See docs/html.md.",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="checkpoint files, index files or model folders")
    parser.add_argument("-o", "--output", required=True, metavar="FILE", help="the HTML file to write")
    add_reduction_arguments(parser)
    add_fail_on_argument(parser)
    add_stats_arguments(parser)
    add_output_arguments(parser)
    return parser


def run_report(argv: list[str]) -> int:
    from ckptscan.report import html

    parser = report_parser()
    args = parser.parse_args(argv)
    if args.group_size < 0:
        parser.error("--group-size must be 0 or more")
    if args.stats_workers < 0:
        parser.error("--stats-workers must be 0 (one per core) or more")
    reports = build_reports(args.paths, pipeline_options(args), show_progress=True)
    write_text(args.output, html.render(reports))
    report_errors(reports)
    return exit_code(reports, FAIL_ON_LEVELS[args.fail_on])


def write_text(path: str, text: str) -> None:
    """Write a report file (HTML); the path is the user's own output, not a model's."""
    try:
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
    except OSError as e:
        print(f"ckptscan: cannot write {path}: {e.strerror or e}", file=sys.stderr)
        raise SystemExit(EXIT_INPUT_FAILED) from None
    print(f"ckptscan: wrote {path} ({len(text.encode('utf-8')):,} bytes)", file=sys.stderr)


# -- other commands ------------------------------------------------------------------------------


def run_schema(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="ckptscan schema", description="Print the JSON Schema of --json.")
    parser.add_argument("--diff", action="store_true", help="the schema of `ckptscan diff --json` instead")
    args = parser.parse_args(argv)
    if args.diff:
        from ckptscan.report.diff import schema as diff_schema

        emit_json(diff_schema())
        return EXIT_OK
    from ckptscan.report.json import schema

    emit_json(schema())
    return EXIT_OK


def run_formats(argv: list[str]) -> int:
    argparse.ArgumentParser(prog="ckptscan formats", description="List the formats ckptscan reads.").parse_args(argv)
    from ckptscan.registry import FOLDER_FORMATS, FORMATS

    rows = [(spec.name, " ".join(spec.extensions) or "(any name)", spec.title) for spec in FORMATS]
    rows += [(folder.name, "(a folder)", folder.title) for folder in FOLDER_FORMATS]
    widths = [max(len(row[i]) for row in rows) for i in (0, 1)]
    for name, extensions, title in rows:
        print(f"{name:{widths[0]}}  {extensions:{widths[1]}}  {title}")
    return EXIT_OK


COMMANDS: dict[str, Callable[[list[str]], int]] = {
    "scan": run_scan,
    "audit": run_audit,
    "memory": run_memory,
    "diff": run_diff,
    "report": run_report,
    "schema": run_schema,
    "formats": run_formats,
}


# -- output --------------------------------------------------------------------------------------


def clean_lines(text: str) -> str:
    """A multi-line text (a --debug traceback quoting file content), each line cleaned."""
    return "\n".join(clean(line) for line in text.splitlines())


def emit_json(doc: object) -> None:
    indent = 2 if sys.stdout.isatty() else None
    sys.stdout.write(json_text(doc, indent=indent))
    sys.stdout.write("\n")
    sys.stdout.flush()


_line_open = False  # a line was cut short (Ctrl-C while a slow reader blocked the write)


def emit_line(text: str) -> None:
    """One line (a JSON Lines record, a compact document), flushed at once so that a reader
    downstream gets it now. A line cut short by Ctrl-C is ended before the next one, so that the
    summary record never shares a line with half a model record."""
    global _line_open
    if _line_open:
        sys.stdout.write("\n")
    _line_open = True
    sys.stdout.write(text + "\n")
    sys.stdout.flush()
    _line_open = False


def make_console(no_color: bool, wide: int | None = None):  # type: ignore[no-untyped-def]
    """The report's console. ``--no-color`` means plain text (no styles at all); without it the
    ``NO_COLOR`` environment variable is honoured (rich drops colours, keeps bold). ``wide``: the
    width to lay out at when stdout is not a terminal, so that piped tables keep every column and
    whole names (a pipe has no width; rich would assume 80 columns)."""
    from rich.console import Console

    width = wide if wide is not None and not sys.stdout.isatty() else None
    if no_color:
        return Console(color_system=None, no_color=True, highlight=False, soft_wrap=False, width=width)
    return Console(highlight=False, soft_wrap=False, width=width)


def piped_width(results: Sequence[ModelReport]) -> int:
    """A width at which the ``--tensors`` table needs no wrapping: the longest name and file name
    plus the fixed columns (shape, dtype, counts, offset, role)."""
    longest = 0
    for r in results:
        if r.inventory is not None:
            for t in r.inventory.tensors:
                longest = max(longest, len(clean(t.name)) + len(clean(t.file)) + 3 * len(t.shape))
    return max(80, longest + 24 * 8)
