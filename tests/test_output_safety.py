"""Issue 13, hostile names and odd files: every case builds its input in tmp_path and checks that no
output crashes, hangs, prints a raw escape sequence or interprets a name as markup."""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path

import pytest

from ckptscan.safe_text import DEPTH_MARKER, capped, clean, json_text, markup
from tests.conftest import TESTDATA
from tests.hostile import ANSI, assert_safe_output, nested, run_strict, safetensors, safetensors_raw

MARKUP_NAMES = ["[/]", "[link=file:///etc/passwd]x[/link]", "[bold red]x[/]"]
ESCAPE_NAMES = ["a\x1b]0;TITLE\x07b", "\x1b[2Jclear", "bidi\u202eevil", "nl\nname", "c1\x9bx"]


# -- the escaping layer itself ---------------------------------------------------------------------


def test_clean_escapes_every_unsafe_character_visibly() -> None:
    assert clean("plain.name[0]") == "plain.name[0]"
    assert clean("a\x1b[2Jb") == "a\\x1b[2Jb"
    assert clean("x\u202ey\ud800\n\t\x9b") == "x\\u202ey\\ud800\\x0a\\x09\\x9b"
    assert markup("[/]") == "\\[/]"
    assert markup("[bold]x\x1b") == "\\[bold]x\\x1b"


def test_json_text_keeps_values_and_is_plain_utf8() -> None:
    value = {"k\u202e": ["\ud800", "\x1b", "\x85", float("nan")]}
    text = json_text(value)
    text.encode("utf-8")  # no lone surrogate left raw
    assert re.search("[\x00-\x1f\x7f-\x9f\u202e\ud800]", text) is None
    back = json.loads(text)
    assert back == {"k\u202e": ["\ud800", "\x1b", "\x85", "nan"]}


def test_capped_depth_marker() -> None:
    deep = nested(1000)
    cut = capped(deep)
    depth = 0
    while isinstance(cut, dict):
        cut = cut["a"]
        depth += 1
    assert cut == DEPTH_MARKER and depth == 64


# -- case 1: all-strippable files ------------------------------------------------------------------


def test_all_strippable_files_report_with_several_paths() -> None:
    folder = TESTDATA / "torch" / "checkpoint-4"
    run = run_strict(folder / "optimizer.pt", folder / "rng_state.pth", folder / "pytorch_model.bin")
    assert_safe_output(run)
    assert run.code == 0
    for name in ("optimizer.pt", "rng_state.pth", "pytorch_model.bin"):
        assert name in run.out  # every report printed, none lost to a crash


# -- case 2: names are never markup -----------------------------------------------------------------


def test_markup_names_are_printed_literally(tmp_path: Path) -> None:
    path = safetensors(tmp_path / "m.safetensors", MARKUP_NAMES, {"[/]": "[bold]v", "[link=x]k": "[/link]"})
    for args in ([path], [path, "--tensors", "--explain"]):
        run = run_strict(*args)
        assert_safe_output(run)
        for name in MARKUP_NAMES:
            assert name in run.out, name  # shown as written: not interpreted, not escaped visibly
    colored = run_strict(path, "--tensors", env={"FORCE_COLOR": "1", "COLUMNS": "200"})
    assert "\x1b]8;" not in colored.out  # no live hyperlink
    assert "[bold red]x[/]" in ANSI.sub("", colored.out)


def test_markup_in_an_hdf5_dataset_name(tmp_path: Path) -> None:
    h5py = pytest.importorskip("h5py")
    path = tmp_path / "m.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("[/]", data=[1.0, 2.0])
        f.create_dataset("[bold red]x[/]", data=[1.0])
    run = run_strict(path, "--tensors")
    assert_safe_output(run)
    assert "[bold red]x[/]" in run.out and "[/]" in run.out


# -- case 3: escape sequences never reach the terminal ------------------------------------------------


def test_escape_sequences_in_names_and_metadata(tmp_path: Path) -> None:
    path = safetensors(tmp_path / "e.safetensors", ESCAPE_NAMES, {"k\x1b[31m": "v\x1b]0;t\x07"})
    for args in ([path], [path, "--tensors", "--explain"], ["audit", tmp_path, "--workers", "0"]):
        run = run_strict(*args)
        assert_safe_output(run)
    run = run_strict(path, "--tensors")
    assert "\\x1b[2Jclear" in run.out and "bidi\\u202eevil" in run.out


def test_escape_sequences_in_a_file_name_and_error_lines(tmp_path: Path) -> None:
    bad = tmp_path / "evil\x1b[2J\u202e.safetensors"
    safetensors_raw(bad, '{"a\\u001b]0;x\\u0007\\n": {"dtype": "F32", "shape": [9], "data_offsets": [0, 99]}}')
    for args in ([bad], [bad, "--json"], ["audit", tmp_path, "--workers", "0"], ["audit", tmp_path, "--jsonl"]):
        run = run_strict(*args)
        assert_safe_output(run)
        assert run.code == 1
        assert "evil\\x1b[2J\\u202e" in run.out + run.err  # the file name, escaped visibly
        errors = [line for line in run.err.splitlines() if line.startswith("ckptscan:")]
        assert len(errors) == len(run.err.splitlines())  # machine modes: each error one line


def test_zip_member_names_with_newlines_keep_errors_on_one_line(tmp_path: Path) -> None:
    path = tmp_path / "z.pt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("arch\nive\x1b[2J/data.pkl", b"\x80\x02}q\x00.")
        archive.writestr("arch\nive\x1b[2J/data/0", b"\0" * 4)
    for args in ([path], [path, "--json"]):
        run = run_strict(*args)
        assert_safe_output(run)
        assert all(line.startswith("ckptscan:") for line in run.err.splitlines()), run.err


# -- case 4: lone surrogates -----------------------------------------------------------------------------


def test_lone_surrogate_in_a_name(tmp_path: Path) -> None:
    safetensors_raw(
        tmp_path / "s.safetensors", '{"\\ud800x": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}', b"\0" * 4
    )
    safetensors(tmp_path / "ok.safetensors", ["w"])
    path = tmp_path / "s.safetensors"
    for args in ([path], [path, "--tensors", "--explain"], ["audit", tmp_path, "--workers", "0"]):
        run = run_strict(*args)
        assert_safe_output(run)
        assert run.code == 0
    doc = run_strict(path, "--json").json()
    assert doc["results"][0]["tensors"][0]["name"] == "\ud800x"  # the exact name survives, escaped
    lines = run_strict("audit", tmp_path, "--jsonl", "--workers", "0").out.splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["record"] for r in records] == ["model", "model", "summary"]  # the whole audit survives
    audit = run_strict("audit", tmp_path, "--json", "--workers", "0").json()
    assert len(audit["results"]) == 2


# -- case 5: deep JSON ------------------------------------------------------------------------------------


def test_deep_index_metadata(tmp_path: Path) -> None:
    safetensors(tmp_path / "model-00001-of-00001.safetensors", ["w"])
    index = {"metadata": nested(800), "weight_map": {"w": "model-00001-of-00001.safetensors"}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    run = run_strict(tmp_path, "--json")
    assert_safe_output(run)
    assert run.code == 0 and DEPTH_MARKER in run.out
    assert_safe_output(run_strict(tmp_path))


def test_deep_config_beside_good_weights(tmp_path: Path) -> None:
    safetensors(tmp_path / "model.safetensors", ["w"])
    (tmp_path / "config.json").write_text("[" * 100_000 + "]" * 100_000)
    run = run_strict(tmp_path / "model.safetensors", "--json")
    assert_safe_output(run)
    assert run.code == 0 and run.json()["results"][0]["error"] is None


# -- case 7 --------------------------------------------------------------------------------------------------


def test_stats_on_huge_finite_values(tmp_path: Path) -> None:
    np = pytest.importorskip("numpy")
    values = np.array([3.4028235e38, -3.4028235e38, 1e38, 1e-45] * 64, dtype=np.float32).reshape(2, -1)
    header = json.dumps({"w": {"dtype": "F32", "shape": list(values.shape), "data_offsets": [0, values.nbytes]}})
    path = safetensors_raw(tmp_path / "big.safetensors", header, values.tobytes())
    run = run_strict(path, "--stats", "--stats-workers", "1", "--json")
    assert_safe_output(run)
    assert "NaN" not in run.out and "Infinity" not in run.out
    stats = run.json()["results"][0]["tensors"][0]["stats"]
    assert stats["sqnr_int8_db"] is None and "not measurable" in stats["notes"]["int8"]
    assert_safe_output(run_strict(path, "--stats", "--stats-workers", "1"))


def test_gguf_scalar_of_a_block_type_is_malformed(tmp_path: Path) -> None:
    from tests.test_gguf import Builder

    b = Builder()
    b.tensors = [("s", [], 8, 0)]  # Q8_0 (32-element blocks) with no dims: one element
    b.data = bytes(34)
    run = run_strict(b.write(tmp_path), "--json")
    assert_safe_output(run)
    assert run.code == 1 and run.json()["results"][0]["error"]["code"] == "malformed"


def test_hash_in_names_with_explain(tmp_path: Path) -> None:
    path = safetensors(tmp_path / "h.safetensors", ["a#b.weight", "layers.0.x#1", "layers.1.x#1", "#"])
    run = run_strict(path, "--explain")
    assert_safe_output(run)
    assert "a#b.weight" in run.out and "layers.[0-1].x#1" in run.out


# -- case 10: piped output ------------------------------------------------------------------------------------


def test_piped_tensor_table_keeps_whole_names_and_every_column(tmp_path: Path) -> None:
    long_name = "model.layers.0.self_attention.query_key_value_projection_with_a_long_name.weight"
    path = safetensors(tmp_path / "t.safetensors", [long_name, "b"])
    run = run_strict(path, "--tensors")
    lines = [line for line in run.out.splitlines() if long_name in line]
    assert lines, run.out  # grep finds the whole name on one line
    for column in ("[2]", "F32", "8 B", "weight"):
        assert column in lines[0]


def test_no_color_and_NO_COLOR(tmp_path: Path) -> None:
    path = safetensors(tmp_path / "c.safetensors", ["w"])
    forced = run_strict(path, env={"FORCE_COLOR": "1"})
    assert "\x1b[" in forced.out  # a forced terminal gets styles...
    plain = run_strict(path, "--no-color", env={"FORCE_COLOR": "1"})
    assert "\x1b[" not in plain.out  # ... --no-color none at all
    no_color = run_strict(path, env={"FORCE_COLOR": "1", "NO_COLOR": "1"})
    assert re.search(r"\x1b\[[0-9;]*3[0-7]m", no_color.out) is None  # NO_COLOR: no colours


def test_a_renderer_bug_loses_only_its_own_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ckptscan.report import terminal

    good = safetensors(tmp_path / "good.safetensors", ["w"])
    bad = safetensors(tmp_path / "bad.safetensors", ["w"])

    def broken(inventory: object, analysis: object, options: object) -> None:  # a section's signature
        if str(getattr(inventory, "path", "")).endswith("bad.safetensors"):
            raise IndexError("a renderer bug")

    monkeypatch.setattr(terminal, "SECTIONS", [broken, *terminal.SECTIONS])
    run = run_strict(bad, good)
    assert run.code == 1 and "good.safeten" in run.out and "parameters" in run.out
    assert "internal error in the report (IndexError: a renderer bug)" in run.err


# -- fuzzing findings (tools/fuzz.py), kept as regression tests ------------------------------------------------


def test_fuzz_numpy_record_field_without_a_size(tmp_path: Path) -> None:
    header = "{'descr': [('a', '<g0')], 'fortran_order': False, 'shape': (1,), }"
    header += " " * (-(len(header) + 11) % 64) + "\n"
    path = tmp_path / "r.npy"
    path.write_bytes(b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode() + b"\0" * 16)
    run = run_strict(path, "--json")
    assert_safe_output(run)
    assert run.json()["results"][0]["error"]["code"] == "malformed"


def test_fuzz_onnx_external_location_with_a_newline(tmp_path: Path) -> None:
    data = (TESTDATA / "onnx" / "external_one_file" / "model.onnx").read_bytes()
    assert b"model.onnx.data" in data
    path = tmp_path / "model.onnx"
    path.write_bytes(data.replace(b"model.onnx.data", b"model\n\x1b[2J.data"))
    for args in ([path], [path, "--json"]):
        run = run_strict(*args)
        assert_safe_output(run)
        assert run.code == 1
    error = run.json()["results"][0]["error"]
    assert "\n" not in error["message"] and "\\x0a\\x1b[2J" in error["message"]
