"""What the subcommands share: exit codes, common options, building the reports, printing.

Printing and exit codes live in ``ckptscan.cli`` only; this module and the subcommands' modules
beside it are that layer.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from ckptscan import pipeline
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


def parse_counted(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """``argv`` parsed by a parser with the reduction and stats options, whose counts cannot be negative."""
    args = parser.parse_args(argv)
    if args.group_size < 0:
        parser.error("--group-size must be 0 or more")
    if args.stats_workers < 0:
        parser.error("--stats-workers must be 0 (one per core) or more")
    return args


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


def build_reports(paths: Sequence[str], options: pipeline.Options, *, show_progress: bool = False) -> list[ModelReport]:
    """Every model's report; a stats pass that could not run is said on stderr (the report stands)."""
    progress = progress_bar if show_progress and sys.stderr.isatty() else None
    reports = []
    for model in pipeline.run(paths, options, progress):
        if model.stats_problem:
            print(clean(f"ckptscan: {model.path}: {model.stats_problem}"), file=sys.stderr)
        reports.append(model)
    return reports


def report_errors(reports: Sequence[ModelReport]) -> None:
    for r in reports:
        if r.error is not None:
            print(f"ckptscan: {clean(r.error.message)}", file=sys.stderr)


def exit_code(reports: Sequence[ModelReport], fail_on: Severity | None) -> int:
    if any(r.error is not None for r in reports):
        return EXIT_INPUT_FAILED
    if fail_on is not None:
        found: list[Finding] = [f for r in reports for f in r.findings()]
        if any(f.severity.rank >= fail_on.rank for f in found):
            return EXIT_FINDINGS
    return EXIT_OK


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


def write_text(path: str, text: str) -> None:
    """Write a report file (HTML); the path is the user's own output, not a model's."""
    try:
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
    except OSError as e:
        print(f"ckptscan: cannot write {path}: {e.strerror or e}", file=sys.stderr)
        raise SystemExit(EXIT_INPUT_FAILED) from None
    print(f"ckptscan: wrote {path} ({len(text.encode('utf-8')):,} bytes)", file=sys.stderr)


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
