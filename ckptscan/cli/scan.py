"""``ckptscan PATH...``: the report of each model (terminal, --json or --format sarif)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ckptscan._version import __version__
from ckptscan.cli.common import (
    EXIT_CODES_HELP,
    EXIT_INPUT_FAILED,
    EXIT_OK,
    FAIL_ON_LEVELS,
    add_fail_on_argument,
    add_output_arguments,
    add_reduction_arguments,
    add_remote_arguments,
    add_stats_arguments,
    build_reports,
    clean_lines,
    configure_remote,
    emit_json,
    exit_code,
    gpu_size,
    help_formatter,
    make_console,
    parse_counted,
    piped_width,
    pipeline_options,
    report_errors,
)
from ckptscan.safe_text import clean

if TYPE_CHECKING:
    from ckptscan.pipeline import ModelReport


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


def run_scan(argv: list[str]) -> int:
    parser = scan_parser()
    args = parse_counted(parser, argv)
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
