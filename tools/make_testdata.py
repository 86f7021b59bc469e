#!/usr/bin/env python3
"""Regenerate the committed test data with the real libraries, deterministically.

    python tools/make_testdata.py              # every format
    python tools/make_testdata.py gguf torch   # only some

One generator module per format lives in tools/testdata/<name>.py and exposes
``generate(out: Path) -> list[Path]``. Each writes small files under testdata/<name>/ from fixed
seeds, so re-running gives the same bytes (see testdata/README.md for what each file is).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
GENERATORS = (
    "safetensors",
    "gguf",
    "torch",
    "numpy",
    "hdf5",
    "keras",
    "onnx",
    "tf_checkpoint",
    "stats",
    "diff",
    "folders",
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "formats",
        nargs="*",
        metavar="FORMAT",
        help=f"generators to run (default: all of {', '.join(GENERATORS)})",
    )
    args = parser.parse_args(argv)
    unknown = sorted(set(args.formats) - set(GENERATORS))
    if unknown:
        parser.error(f"unknown generator(s): {', '.join(unknown)}")
    sys.path.insert(0, str(REPO / "tools"))
    for name in args.formats or GENERATORS:
        module = importlib.import_module(f"testdata.{name}")
        out = REPO / "testdata" / name
        out.mkdir(parents=True, exist_ok=True)
        for path in module.generate(out):
            print(f"wrote {path.relative_to(REPO)} ({path.stat().st_size:,} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
