"""The common model, the dtype table, format detection and path safety."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import ckptscan
from ckptscan.dtypes import DTYPES, DTypeKind, lookup
from ckptscan.errors import UnsafePath
from ckptscan.registry import FORMATS, candidates
from ckptscan.source import Source, resolve_inside
from tests.conftest import TESTDATA
from tests.helpers import assert_one_line_error, run_cli


def test_dtype_sizes_are_exact_integers() -> None:
    assert lookup("F32").nbytes(3) == 12
    assert lookup("F4").nbytes(6) == 3
    assert lookup("F6_E2M3").nbytes(4) == 3
    assert lookup("Q4_K").nbytes(512) == 288
    big = 10**30  # beyond any float's exactness
    assert lookup("BF16").nbytes(big) == 2 * big
    with pytest.raises(ValueError, match="inside a byte"):
        lookup("F4").nbytes(3)
    with pytest.raises(ValueError, match="blocks of 256"):
        lookup("Q4_K").nbytes(100)


def test_unknown_dtype_is_not_a_crash() -> None:
    d = lookup("NF4_SOMETHING")
    assert d.kind == DTypeKind.UNKNOWN and not d.known
    with pytest.raises(ValueError, match="not known"):
        d.nbytes(4)


def test_table_has_every_safetensors_dtype() -> None:
    names = "BOOL F4 F6_E2M3 F6_E3M2 U8 I8 F8_E5M2 F8_E4M3 F8_E8M0 F8_E4M3FNUZ F8_E5M2FNUZ I16 U16 F16 BF16 I32 U32"
    for name in [*names.split(), "F32", "C64", "F64", "I64", "U64"]:
        assert name in DTYPES


def test_extension_orders_candidates_content_decides(tmp_path: Path) -> None:
    assert next(candidates("model.gguf")).name == "gguf"
    assert next(candidates("x.safetensors.index.json")).name == "sharded"
    disguised = tmp_path / "weights.gguf"
    disguised.write_bytes((TESTDATA / "safetensors" / "edge_cases.safetensors").read_bytes())
    assert ckptscan.read_inventory(disguised).format == "safetensors"


def test_unrecognized_file_lists_what_was_tried(tmp_path: Path) -> None:
    path = tmp_path / "notes.bin"
    path.write_bytes(b"hello world, not a checkpoint")
    error = assert_one_line_error(path, "not a recognized checkpoint (tried:")
    assert error["code"] == "unrecognized-format"
    for spec in FORMATS:
        assert spec.name in error["message"]


def test_empty_file_and_missing_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    assert_one_line_error(empty, "not a recognized checkpoint")
    error = assert_one_line_error(tmp_path / "absent.safetensors", "no such file")
    assert error["code"] == "missing-file"


def test_lfs_pointer_file(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    path.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:" + "0" * 64 + "\nsize 4923019144\n")
    error = assert_one_line_error(path, "Git LFS pointer", "4,923,019,144 bytes", "git lfs pull")
    assert error["code"] == "lfs-pointer"
    result = ckptscan.scan(path)
    assert result.inventory is not None and result.inventory.metadata["lfs"]["size"] == 4923019144


@pytest.mark.parametrize("name", ["/etc/passwd", "../x", "a/../../x", "C:\\windows\\x", ""])
def test_paths_out_of_the_folder_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(UnsafePath):
        resolve_inside(tmp_path, name, referrer="test")


def test_links_out_of_the_folder_are_refused(tmp_path: Path) -> None:
    model = tmp_path / "model"
    (model / "sub").mkdir(parents=True)
    (tmp_path / "secret").write_text("x")
    (model / "link").symlink_to(tmp_path / "secret")
    (model / "sub" / "inside").write_text("y")
    (model / "ok_link").symlink_to(model / "sub" / "inside")
    with pytest.raises(UnsafePath, match="link"):
        resolve_inside(model, "link", referrer="test")
    assert resolve_inside(model, "sub/inside", referrer="test") == model / "sub" / "inside"
    assert resolve_inside(model, "ok_link", referrer="test") == model / "ok_link"


def test_source_reads_are_bounded(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"0123456789")
    with Source(path) as source:
        assert source.read_at(2, 3) == b"234"
        assert source.read_up_to(8, 100) == b"89"
        with pytest.raises(ckptscan.CkptscanError, match=r"needs bytes 8\.\.13"):
            source.read_at(8, 5)
        with pytest.raises(ckptscan.CkptscanError):
            source.read_at(-1, 1)


def test_a_directory_is_not_a_file(tmp_path: Path) -> None:
    error = assert_one_line_error(tmp_path, "no checkpoint found")
    assert error["code"] == "unrecognized-format"


def test_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "model.safetensors"
    os.mkfifo(fifo)
    assert_one_line_error(fifo, "not a regular file")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads everything")
def test_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "locked.safetensors"
    path.write_bytes(b"x")
    path.chmod(0)
    assert_one_line_error(path, "cannot open")


def test_header_scan_does_not_import_heavy_modules() -> None:
    import subprocess
    import sys

    code = (
        "import sys, ckptscan.cli as c, io, contextlib\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        f"    c.main(['--json', {str(TESTDATA / 'gguf' / 'llama-tiny-q8_0.gguf')!r}, "
        f"{str(TESTDATA / 'safetensors' / 'sharded-tiny')!r}])\n"
        "print(sorted(m for m in ('numpy', 'rich', 'h5py', 'onnx', 'torch') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).parent.parent).stdout  # fmt: skip
    assert out.strip() == "[]"


def test_local_json_scan_does_not_import_remote() -> None:
    """ckptscan.remote (threading, bisect, its dataclasses) is for URLs only: a local path never loads
    it, and ckptscan.scan.is_remote, which answers a local path without it, agrees with it."""
    import subprocess
    import sys

    paths = [TESTDATA / "safetensors" / "llama-tiny" / "model.safetensors", TESTDATA / "safetensors" / "sharded-tiny"]
    code = (
        "import sys, ckptscan.cli as c, io, contextlib\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        f"    c.main(['--json', *{[str(p) for p in paths]!r}])\n"
        "print('ckptscan.remote' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).parent.parent).stdout  # fmt: skip
    assert out.strip() == "False"
    from ckptscan import remote
    from ckptscan.scan import is_remote

    for path in ("hf://org/model", "s3://b/k", "HTTPS://x/y", "file:///tmp/x", "FILE:///x", "/tmp/x", "C:\\x",
                 "a://b", "1a://b", "x/://y", "://x", "", Path("s3://b/k"), None):  # fmt: skip
        assert is_remote(path) == remote.is_remote(path), path


def test_public_api() -> None:
    result = ckptscan.scan(TESTDATA / "gguf" / "llama-tiny-q8_0.gguf")
    assert result.ok and result.inventory is not None and result.format == "gguf"
    assert ckptscan.__version__
    with pytest.raises(SystemExit) as exit_info:
        run_cli("--version")
    assert exit_info.value.code == 0
