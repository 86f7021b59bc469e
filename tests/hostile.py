"""Builders of hostile inputs for the issue-13 tests (output safety, hard bounds), and a CLI runner
whose stdout/stderr encode strictly as UTF-8, as a real terminal or pipe does (a StringIO would
accept a lone surrogate that crashes the real thing)."""

from __future__ import annotations

import io
import json
import os
import re
import struct
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

from ckptscan.cli import main
from ckptscan.safe_text import UNSAFE
from tests.helpers import Run

# what no output may contain: ESC and the other C0/C1 controls, bidi controls, lone surrogates
# (newline and tab excluded: the renderers' own layout uses them)
RAW_UNSAFE = re.compile(UNSAFE.pattern.replace("\x00-\x1f", "\x00-\x08\x0b-\x1f"))
ANSI = re.compile(r"\x1b\[[0-9;]*m")


class _Strict(io.TextIOWrapper):
    def isatty(self) -> bool:
        return False


def run_strict(*args: str | os.PathLike[str], env: dict[str, str] | None = None) -> Run:
    """The CLI in-process, with stdout/stderr that refuse what UTF-8 cannot encode."""
    out_bytes, err_bytes = io.BytesIO(), io.BytesIO()
    out = _Strict(out_bytes, encoding="utf-8", errors="strict", write_through=True)
    err = _Strict(err_bytes, encoding="utf-8", errors="strict", write_through=True)
    saved = {k: os.environ.get(k) for k in (env or {})}
    os.environ.update(env or {})
    try:
        with redirect_stdout(out), redirect_stderr(err):
            code = main([str(a) for a in args])
        out.flush()
        err.flush()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return Run(code, out_bytes.getvalue().decode("utf-8"), err_bytes.getvalue().decode("utf-8"))


def assert_safe_output(run: Run) -> None:
    """No traceback, no raw control/bidi/surrogate character, exit 0 or 1 (read or not read)."""
    assert "Traceback" not in run.err and "internal error" not in run.err + run.out, run.err
    found = RAW_UNSAFE.search(run.out) or RAW_UNSAFE.search(run.err)
    assert found is None, (found, run.out[-2000:], run.err[-2000:])
    assert run.code in (0, 1), run


def safetensors(path: Path, names: list[str], metadata: dict[str, Any] | None = None, dtype: str = "F32") -> Path:
    """A valid safetensors file (two 4-byte values per tensor) with any names, ASCII-escaped JSON."""
    header: dict[str, Any] = {}
    offset = 0
    for name in names:
        header[name] = {"dtype": dtype, "shape": [2], "data_offsets": [offset, offset + 8]}
        offset += 8
    if metadata is not None:
        header["__metadata__"] = metadata
    raw = json.dumps(header, ensure_ascii=True).encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * offset)
    return path


def safetensors_raw(path: Path, header_text: str, data: bytes = b"") -> Path:
    """A safetensors file whose header is exactly ``header_text`` (e.g. with a ``\\ud800`` escape)."""
    raw = header_text.encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return path


def nested(depth: int) -> dict[str, Any]:
    """``{"a": {"a": ...}}`` ``depth`` levels deep, built without recursion."""
    root: dict[str, Any] = {}
    node = root
    for _ in range(depth - 1):
        child: dict[str, Any] = {}
        node["a"] = child
        node = child
    return root


def peak_rss_mb() -> float:
    """This process's peak resident set (MB) so far."""
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1 << 20) if sys.platform == "darwin" else peak / 1024
