"""Command line: parse argv, run, print, set the exit code. The only package that prints or exits.

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

One module per subcommand (``scan``, ``audit``, ``memory``, ``diff``, ``report``, ``info``), imported
only when its command runs; what they share is in ``common``.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Sequence

from ckptscan.cli.common import (
    EXIT_FINDINGS,
    EXIT_INPUT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_RECOVERABLE,
    EXIT_USAGE,
)
from ckptscan.errors import UsageError

__all__ = ["COMMANDS", "EXIT_FINDINGS", "EXIT_INPUT_FAILED", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_RECOVERABLE",
           "EXIT_USAGE", "main"]  # fmt: skip

# subcommand -> the module of ckptscan.cli that runs it (as run_<subcommand>)
COMMANDS = {
    "scan": "scan",
    "audit": "audit",
    "memory": "memory",
    "diff": "diff",
    "report": "report",
    "schema": "info",
    "formats": "info",
}


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    command = args[0] if args and args[0] in COMMANDS else "scan"
    if args and args[0] == command:
        args = args[1:]
    try:
        return runner(command)(args)
    except UsageError as e:  # a bad option value found past argparse (e.g. by an options' validated())
        print(f"ckptscan: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("ckptscan: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return EXIT_OK


def runner(command: str) -> Callable[[list[str]], int]:
    """The function that runs a subcommand, from its module (imported now, not at start-up)."""
    module = importlib.import_module(f"ckptscan.cli.{COMMANDS[command]}")
    run: Callable[[list[str]], int] = getattr(module, f"run_{command}")
    return run
