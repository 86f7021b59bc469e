"""Command line: parse argv, run, print, set the exit code. The only module that prints or exits.

ckptscan PATH...             rich report per model (a file, an index, or a folder of models)
ckptscan PATH... --json      one JSON document (see ``ckptscan schema``)
ckptscan PATH... --explain   also each tensor's role and the evidence for it
ckptscan memory PATH...      inference and training memory estimates (see --help)
ckptscan schema              print the JSON Schema of --json
ckptscan formats             list the formats ckptscan reads
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from ckptscan._version import __version__
from ckptscan.analyze.analysis import AnalysisOptions
from ckptscan.inventory import Severity
from ckptscan.scan import ScanError, ScanResult, model_inputs, scan

EXIT_OK = 0
EXIT_INPUT_FAILED = 1  # at least one input could not be read (or is incomplete)
EXIT_USAGE = 2  # bad arguments (argparse's own code)
EXIT_FINDINGS = 3  # a finding at or above --fail-on
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
        "Other commands: `ckptscan memory`, `ckptscan schema`, `ckptscan formats`.",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="checkpoint files, index files or model folders")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of the report")
    parser.add_argument("--tensors", action="store_true", help="list every tensor (with --json: also each "
                        "reduction target's plan per tensor)")  # fmt: skip
    parser.add_argument("--explain", action="store_true", help="show each tensor's role and the evidence for it")
    add_reduction_arguments(parser)
    parser.add_argument(
        "--fail-on",
        choices=list(FAIL_ON_LEVELS),
        default="none",
        metavar="LEVEL",
        help="exit 3 when a finding is at or above LEVEL: info, low, medium, high, critical, "
        "or unsafe (= high: code execution or reading outside the model); default: none",
    )
    parser.add_argument("--no-color", action="store_true", help="plain text output")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of internal errors")
    parser.add_argument("--version", action="version", version=f"ckptscan {__version__}")
    return parser


def add_reduction_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--group-size", type=int, default=128, metavar="N",
                        help="int4 target: inputs per scale (0: one scale per output channel); "
                        "default 128")  # fmt: skip
    parser.add_argument("--zero-points", action="store_true", help="int4/int8 targets: asymmetric, with zero points")


def run_scan(argv: list[str]) -> int:
    args = scan_parser().parse_args(argv)
    if args.group_size < 0:
        scan_parser().error("--group-size must be 0 or more")
    results = [result for path in args.paths for result in scan_path(path)]
    options = analysis_options(args)
    if args.json:
        from ckptscan.report.json import document

        emit_json(document(results, explain=args.explain, tensor_plans=args.tensors, options=options))
        report_errors(results)
    else:
        from ckptscan.report.terminal import Options, report

        console = make_console(args.no_color)
        for renderable in report(results, Options(tensors=args.tensors, explain=args.explain, analysis=options)):
            console.print(renderable)
    if args.debug:
        for r in results:
            if r.error is not None and r.error.detail:
                print(r.error.detail, file=sys.stderr)
    return exit_code(results, FAIL_ON_LEVELS[args.fail_on])


def report_errors(results: list[ScanResult]) -> None:
    for r in results:
        if r.error is not None:
            print(f"ckptscan: {r.error.message}", file=sys.stderr)


def analysis_options(args: argparse.Namespace) -> AnalysisOptions:
    from ckptscan.analyze import memory, reduction

    training = memory.TrainingOptions()
    inference = memory.InferenceOptions()
    if hasattr(args, "optimizer"):
        training = memory.TrainingOptions(
            optimizer=args.optimizer,
            precision=args.precision,
            batch=args.batch,
            seq=args.seq,
            checkpointing=args.checkpointing,
            freeze=tuple(args.freeze),
            attention=args.attention,
            optimizer_impl=args.optimizer_impl,
        )
        inference = memory.InferenceOptions(batch=args.batch, seq=args.context or args.seq, kv_bytes=args.kv_bytes)
    return AnalysisOptions(
        reduction=reduction.Options(group_size=args.group_size, zero_points=args.zero_points),
        training=training,
        inference=inference,
    )


def scan_path(path: str) -> list[ScanResult]:
    """Results for one argument; a folder may hold several models (or none, which is an error)."""
    p = Path(path)
    if p.is_dir():
        found = model_inputs(p)
        if not found:
            message = f"{path}: no checkpoint found in this folder"
            return [ScanResult(path, None, None, ScanError("unrecognized-format", message))]
        return [scan(child) for child in found]
    return [scan(path)]


def exit_code(results: list[ScanResult], fail_on: Severity | None) -> int:
    if any(r.error is not None for r in results):
        return EXIT_INPUT_FAILED
    if fail_on is not None:
        for r in results:
            if r.inventory and any(f.severity.rank >= fail_on.rank for f in r.inventory.findings):
                return EXIT_FINDINGS
    return EXIT_OK


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
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="checkpoint files, index files or model folders")
    parser.add_argument("--optimizer", default="adamw", type=str.lower,
                        choices=[*memory.OPTIMIZERS, *memory.OPTIMIZER_ALIASES], help="default: adamw")  # fmt: skip
    parser.add_argument("--precision", default="bf16-mixed", type=str.lower,
                        choices=[*memory.PRECISIONS, *memory.PRECISION_ALIASES],
                        help="fp32, fp16-mixed / bf16-mixed (fp32 master weights), bf16-true (pure bf16); "
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
    parser.add_argument("--attention", choices=list(memory.ATTENTION), default="sdpa",
                        help="sdpa: fused kernels keep no s x s matrix (default); eager: they do")  # fmt: skip
    parser.add_argument("--optimizer-impl", choices=list(memory.OPTIMIZER_IMPLS), default="foreach",
                        help="PyTorch Adam/AdamW step: foreach (CUDA default), for-loop, "
                        "fused (no temporaries)")  # fmt: skip
    parser.add_argument("--kv-bytes", type=positive, default=2, help="bytes per KV-cache element (default 2)")
    add_reduction_arguments(parser)
    parser.add_argument("--json", action="store_true", help="the scan JSON document, with these memory options")
    parser.add_argument("--no-color", action="store_true", help="plain text output")
    return parser


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
    results = [result for path in args.paths for result in scan_path(path)]
    options = analysis_options(args)
    if args.json:
        from ckptscan.report.json import document

        emit_json(document(results, options=options))
        report_errors(results)
    else:
        from ckptscan.report.terminal import Options, memory_report

        console = make_console(args.no_color)
        for renderable in memory_report(results, Options(analysis=options)):
            console.print(renderable)
    return exit_code(results, None)


# -- other commands ------------------------------------------------------------------------------


def run_schema(argv: list[str]) -> int:
    argparse.ArgumentParser(prog="ckptscan schema", description="Print the JSON Schema of --json.").parse_args(argv)
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
    "memory": run_memory,
    "schema": run_schema,
    "formats": run_formats,
}


# -- output --------------------------------------------------------------------------------------


def emit_json(doc: object) -> None:
    indent = 2 if sys.stdout.isatty() else None
    sys.stdout.write(json.dumps(doc, indent=indent, ensure_ascii=False))
    sys.stdout.write("\n")
    sys.stdout.flush()


def make_console(no_color: bool):  # type: ignore[no-untyped-def]
    from rich.console import Console

    return Console(no_color=no_color, highlight=False, soft_wrap=False)
