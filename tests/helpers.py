"""Small helpers shared by the tests: run the CLI in-process and check one-line errors."""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ckptscan.cli import main
from ckptscan.inventory import Inventory, Tensor


@dataclass
class Run:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


def run_cli(*args: str | os.PathLike[str]) -> Run:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main([str(a) for a in args])
    return Run(code, out.getvalue(), err.getvalue())


def assert_one_line_error(path: Path, *expected: str) -> dict[str, Any]:
    """Scanning ``path`` fails with exit 1, one stderr line naming the file, no traceback."""
    run = run_cli("--json", path)
    assert run.code == 1, run
    lines = run.err.strip().splitlines()
    assert len(lines) == 1, run.err
    assert "Traceback" not in run.err and str(path) in lines[0]
    for fragment in expected:
        assert fragment in lines[0], (fragment, lines[0])
    error: dict[str, Any] = run.json()["results"][0]["error"]
    assert error["message"] in lines[0]
    return error


def assert_matches_truth(
    inventory: Inventory, truth: dict[str, Any], dtype_name: Callable[[Tensor], str] = lambda t: t.dtype.name
) -> None:
    """Counts, elements, bytes and the per-dtype element histogram equal a manifest's ground truth."""
    assert len(inventory.tensors) == truth["n_tensors"]
    assert sum(t.elements for t in inventory.tensors) == truth["total_params"]
    assert sum(t.nbytes for t in inventory.tensors) == truth["total_tensor_bytes"]
    histogram: dict[str, int] = {}
    for t in inventory.tensors:
        histogram[dtype_name(t)] = histogram.get(dtype_name(t), 0) + t.elements
    assert histogram == truth["dtype_hist"]
