"""safetensors: counts, shapes, dtypes, bytes and offsets against the official library."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import pytest
from safetensors import deserialize, safe_open

import ckptscan
from ckptscan.analyze.summary import totals
from tests.conftest import REAL_MODELS, TESTDATA, real_entries
from tests.helpers import assert_matches_truth, assert_one_line_error

FIXTURES = sorted(TESTDATA.glob("safetensors/**/*.safetensors"))


def test_fixtures_exist() -> None:
    assert len(FIXTURES) >= 5


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: str(p.relative_to(TESTDATA)))
def test_matches_official_library(path: Path) -> None:
    inventory = ckptscan.read_inventory(path)
    raw = path.read_bytes()
    reference = dict(deserialize(raw))
    assert [t.name for t in inventory.tensors] == list(_header_order(raw))
    assert {t.name for t in inventory.tensors} == set(reference)
    with safe_open(str(path), framework="numpy") as f:
        assert set(f.keys()) == set(reference)
        assert (f.metadata() or {}) == dict(inventory.metadata.get("__metadata__") or {})
        for t in inventory.tensors:
            ref = reference[t.name]
            assert list(t.shape) == ref["shape"] == f.get_slice(t.name).get_shape()
            assert t.dtype.name == ref["dtype"] == t.native_dtype
            assert t.nbytes == len(ref["data"])
            assert raw[t.offset : t.offset + t.nbytes] == ref["data"]
            elements = 1
            for d in t.shape:
                elements *= d
            assert t.elements == elements
    assert inventory.file_bytes == path.stat().st_size


def _header_order(raw: bytes) -> list[str]:
    n = struct.unpack("<Q", raw[:8])[0]
    return [k for k in json.loads(raw[8 : 8 + n]) if k != "__metadata__"]


def test_regions_and_tensors_cover_the_file_exactly() -> None:
    path = TESTDATA / "safetensors" / "llama-tiny" / "model.safetensors"
    inventory = ckptscan.read_inventory(path)
    covered = sum(r.nbytes for r in inventory.regions) + totals(inventory).stored_bytes
    assert covered == path.stat().st_size


def test_every_dtype_fixture_covers_the_table() -> None:
    inventory = ckptscan.read_inventory(TESTDATA / "safetensors" / "all_dtypes.safetensors")
    names = {t.dtype.name for t in inventory.tensors}
    assert {
        "F64",
        "F32",
        "F16",
        "BF16",
        "I64",
        "I8",
        "U8",
        "BOOL",
        "F8_E4M3",
        "F8_E5M2",
        "F8_E8M0",
        "F4",
        "C64",
    } <= names
    assert all(t.dtype.known for t in inventory.tensors)
    f4 = next(t for t in inventory.tensors if t.dtype.name == "F4")
    assert f4.nbytes * 2 == f4.elements  # two values a byte


@pytest.mark.parametrize("entry", real_entries("safetensors"))
def test_real_files_match_manifest(entry: dict[str, Any]) -> None:
    path = REAL_MODELS / entry["path"]
    truth = entry["truth"]
    inventory = ckptscan.read_inventory(path)
    assert_matches_truth(inventory, truth)
    assert (
        inventory.regions[1].nbytes + (inventory.regions[2].nbytes if len(inventory.regions) > 2 else 0)
        == (truth["header_bytes"])
    )
    assert (inventory.metadata.get("__metadata__") or None) == truth["metadata"]


# -- malformed inputs, built here -----------------------------------------------------------------


def write(
    tmp_path: Path, header: bytes | dict[str, Any] | str, data: bytes = b"", *, length: int | None = None
) -> Path:
    if isinstance(header, dict):
        header = json.dumps(header)
    if isinstance(header, str):
        header = header.encode()
    path = tmp_path / "bad.safetensors"
    path.write_bytes(struct.pack("<Q", len(header) if length is None else length) + header + data)
    return path


def entry(dtype: str, shape: list[int], begin: int, end: int) -> dict[str, Any]:
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


CASES: list[tuple[str, Any, bytes, int | None, tuple[str, ...]]] = [
    ("huge header length", {"a": entry("F32", [1], 0, 4)}, b"\0" * 4, 2**62, ("limit", "header length")),
    ("header past end", {"a": entry("F32", [1], 0, 4)}, b"", 5000, ("runs past the end",)),
    ("bad utf-8", b'{"\xff\xfe": 1}', b"", None, ("UTF-8",)),
    ("not json", "{nope", b"", None, ("not valid JSON",)),
    (
        "duplicate names",
        '{"a": {"dtype":"U8","shape":[1],"data_offsets":[0,1]}, "a": {"dtype":"U8","shape":[1],"data_offsets":[1,2]}}',
        b"\0\0",
        None,
        ("twice",),
    ),
    ("overlap", {"a": entry("U8", [4], 0, 4), "b": entry("U8", [4], 2, 6)}, b"\0" * 6, None, ("overlaps",)),
    ("gap", {"a": entry("U8", [4], 0, 4), "b": entry("U8", [2], 6, 8)}, b"\0" * 8, None, ("gap",)),
    ("size mismatch", {"a": entry("F32", [2, 2], 0, 12)}, b"\0" * 12, None, ("F32 [2, 2] = 16 bytes",)),
    ("truncated data", {"a": entry("F32", [4], 0, 16)}, b"\0" * 10, None, ("only 10 follow",)),
    ("trailing bytes", {"a": entry("U8", [4], 0, 4)}, b"\0" * 9, None, ("not covered",)),
    ("metadata not strings", {"__metadata__": {"a": 1}}, b"", None, ("__metadata__",)),
    ("NaN in header", '{"a": {"dtype":"F32","shape":[NaN],"data_offsets":[0,4]}}', b"\0" * 4, None, ("NaN",)),
    ("negative dim", {"a": entry("U8", [-1], 0, 0)}, b"", None, ("non-negative",)),
    ("offsets reversed", {"a": entry("U8", [0], 4, 0)}, b"", None, ("end before",)),
    ("sub-byte misaligned", {"a": entry("F4", [3], 0, 2)}, b"\0\0", None, ("inside a byte",)),
    ("deep nesting", '{"a":' * 100_000 + "1" + "}" * 100_000, b"", None, ("nested too deeply",)),
]


@pytest.mark.parametrize(("header", "data", "length", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_malformed_gives_one_line_error(
    tmp_path: Path, header: Any, data: bytes, length: int | None, expected: tuple[str, ...]
) -> None:
    path = write(tmp_path, header, data, length=length)
    error = assert_one_line_error(path, "safetensors", *expected)
    assert error["code"] in ("malformed", "truncated", "limit-exceeded")


def test_truncated_prefix(tmp_path: Path) -> None:
    path = tmp_path / "short.safetensors"
    path.write_bytes(b"\x10\0\0")
    # three bytes are not even a header length: nothing claims it
    assert_one_line_error(path, "not a recognized checkpoint")


def test_unknown_dtype_is_reported_not_fatal(tmp_path: Path) -> None:
    path = write(tmp_path, {"a": entry("F3_MYSTERY", [2, 3], 0, 5), "b": entry("U8", [2], 5, 7)}, b"\0" * 7)
    inventory = ckptscan.read_inventory(path)
    a = inventory.tensors[0]
    assert a.dtype.name == "F3_MYSTERY" and not a.dtype.known
    assert a.nbytes == 5 and a.elements == 6
    assert any("unknown dtype" in w for w in inventory.warnings)


def test_header_must_be_an_object() -> None:
    from ckptscan.errors import MalformedFile
    from ckptscan.formats.safetensors import parse_header

    with pytest.raises(MalformedFile, match="JSON object"):
        parse_header(b"[1, 2]")


def test_header_only_on_a_huge_sparse_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A 64 GiB tensor declared in the header: inventoried without reading its bytes."""
    size = 64 << 30
    header = json.dumps({"big": entry("BF16", [size // 2], 0, size)}).encode()
    path = tmp_path / "sparse.safetensors"
    with path.open("wb") as f:
        f.write(struct.pack("<Q", len(header)) + header)
        f.truncate(8 + len(header) + size)  # sparse: no disk used
    reads: list[int] = []
    original = ckptscan.source.Source.read_at

    def counting(self: ckptscan.source.Source, offset: int, length: int, what: str = "data") -> bytes:
        reads.append(length)
        return original(self, offset, length, what)

    monkeypatch.setattr(ckptscan.source.Source, "read_at", counting)
    inventory = ckptscan.read_inventory(path)
    assert inventory.tensors[0].nbytes == size
    assert sum(reads) < 10_000
