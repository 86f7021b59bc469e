"""``ckptscan diff A B``: what changed between two models (with --stats, in their values too)."""

from __future__ import annotations

import argparse
import sys

from ckptscan import pipeline
from ckptscan.analyze.analysis import AnalysisOptions
from ckptscan.cli.common import (
    EXIT_INPUT_FAILED,
    EXIT_OK,
    ProgressBar,
    add_output_arguments,
    emit_json,
    make_console,
    report_errors,
    write_text,
)


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
