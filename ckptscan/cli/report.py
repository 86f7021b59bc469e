"""``ckptscan report PATH... -o FILE``: one self-contained HTML report."""

from __future__ import annotations

import argparse

from ckptscan.cli.common import (
    EXIT_CODES_HELP,
    FAIL_ON_LEVELS,
    add_fail_on_argument,
    add_output_arguments,
    add_reduction_arguments,
    add_stats_arguments,
    build_reports,
    exit_code,
    parse_counted,
    pipeline_options,
    report_errors,
    write_text,
)


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
    args = parse_counted(parser, argv)
    reports = build_reports(args.paths, pipeline_options(args), show_progress=True)
    write_text(args.output, html.render(reports))
    report_errors(reports)
    return exit_code(reports, FAIL_ON_LEVELS[args.fail_on])
