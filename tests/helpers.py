"""Small helpers shared by the tests: run the CLI in-process, check one-line errors and ground truth,
encode protobuf wire format for hostile inputs, check byte accounting."""

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
from ckptscan.errors import CkptscanError
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


def assert_only_one_line_errors(path: Path, mutations: list[bytes], read: Callable[[Path], object]) -> None:
    """Write each damaged version of a file to ``path`` and ``read`` it: a one-line CkptscanError or success."""
    for index, mutated in enumerate(mutations):
        path.write_bytes(mutated)
        try:
            read(path)
        except CkptscanError as e:
            assert "\n" not in str(e), index
        except Exception as e:  # pragma: no cover - the assertion names what escaped
            raise AssertionError(f"mutation {index} of {path.name} raised {type(e).__name__}: {e}") from e


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


VARINT, LEN, FIXED32 = 0, 2, 5


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def tag(number: int, wire_type: int) -> bytes:
    return varint(number << 3 | wire_type)


def int_field(number: int, value: int) -> bytes:
    return tag(number, VARINT) + varint(value & ((1 << 64) - 1))


def len_field(number: int, payload: bytes) -> bytes:
    return tag(number, LEN) + varint(len(payload)) + payload


def assert_accounted(inventory: Inventory) -> None:
    """Regions + in-place tensor bytes tile every file of the inventory exactly (no gap, no overlap)."""
    for ref in inventory.files:
        if ref.role == "missing":
            continue
        spans = sorted(
            [(r.offset, r.offset + r.nbytes) for r in inventory.regions if r.file == ref.path]
            + [
                (t.offset, t.offset + t.nbytes)
                for t in inventory.tensors
                if t.file == ref.path and t.offset is not None
            ]
        )
        position = 0
        for begin, end in spans:
            assert begin == position, f"{ref.path}: gap or overlap at {position}..{begin}"
            position = end
        assert position == ref.size == (Path(inventory.root) / ref.path).stat().st_size
