"""``ckptscan schema`` and ``ckptscan formats``: what the tool itself offers."""

from __future__ import annotations

import argparse

from ckptscan.cli.common import EXIT_OK, emit_json


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
