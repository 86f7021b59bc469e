"""``ckptscan diff``: name matching, structural changes, and the streamed value comparison against numpy.

Fixtures: testdata/diff (tools/testdata/diff.py): one model's weights as safetensors, GGUF (F32 and
Q8_0) and ONNX, a copy with two tensors perturbed, and a PEFT-prefixed copy with one rename.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from ckptscan import cli
from ckptscan.analyze.analysis import AnalysisOptions, analyze
from ckptscan.diff import canonical_name, compare, gguf_to_hf, match_tensors, metadata_changes
from ckptscan.scan import read_inventory

DATA = Path(__file__).resolve().parent.parent / "testdata" / "diff"
BASE = DATA / "base.safetensors"


def run_json(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    code = cli.main(["diff", *args, "--json"])
    out = capsys.readouterr().out
    assert code == 0, out
    doc: dict[str, Any] = json.loads(out)
    jsonschema = pytest.importorskip("jsonschema")
    from ckptscan.report.diff import schema

    jsonschema.validate(doc, schema())
    return doc


# -- name matching -----------------------------------------------------------------------------------


def test_canonical_names() -> None:
    assert canonical_name("base_model.model.model.layers.0.mlp.up_proj.weight") == "layers.0.mlp.up_proj.weight"
    assert canonical_name("module._orig_mod.fc.weight") == "fc.weight"
    assert canonical_name("model.") == "model."  # nothing left after the prefix: kept
    assert gguf_to_hf("blk.12.attn_q.weight") == "layers.12.self_attn.q_proj.weight"
    assert gguf_to_hf("blk.0.ffn_down.bias") == "layers.0.mlp.down_proj.bias"
    assert gguf_to_hf("token_embd.weight") == "embed_tokens.weight"
    assert gguf_to_hf("output.weight") == "lm_head.weight"
    assert gguf_to_hf("blk.0.unknown_thing.weight") is None
    assert gguf_to_hf("model.layers.0.mlp.up_proj.weight") is None


def test_ambiguous_names_and_shapes_match_nothing() -> None:
    inv_a = read_inventory(BASE)
    q = next(t for t in inv_a.tensors if t.name.endswith("0.self_attn.q_proj.weight"))
    k = next(t for t in inv_a.tensors if t.name.endswith("0.self_attn.k_proj.weight"))
    # two same-shape tensors renamed on the other side: shape alone cannot tell which is which
    from dataclasses import replace

    b = [replace(q, name="x"), replace(k, name="y")]
    pairs, removed, added = match_tensors([q, k], b)
    assert pairs == [] and len(removed) == 2 and len(added) == 2
    # one of each: the shape match is unique
    pairs, removed, added = match_tensors([q], [replace(q, name="x")])
    assert [(p.a.name, p.b.name, p.match) for p in pairs] == [(q.name, "x", "shape")]
    # content hashes break the tie
    pairs, removed, added = match_tensors([q, k], b, {q.name: "h1", k.name: "h2"}, {"x": "h2", "y": "h1"})
    assert sorted((p.a.name, p.b.name, p.match) for p in pairs) == sorted([(q.name, "y", "content"),
                                                                          (k.name, "x", "content")])  # fmt: skip


def test_metadata_changes() -> None:
    changes = metadata_changes({"a": 1, "cfg": {"h": 2, "w": 3}, "kv_types": {"x": "u32"}},
                               {"a": 1, "cfg": {"h": 4}, "new": "x" * 500})  # fmt: skip
    got = {(c.key, c.change) for c in changes}
    assert got == {("cfg.h", "changed"), ("cfg.w", "removed"), ("new", "added")}
    long = next(c for c in changes if c.key == "new")
    assert long.b is not None and len(long.b) == 200 and long.b.endswith("…")


# -- the same weights in three formats ---------------------------------------------------------------


@pytest.mark.parametrize("other", ["same.gguf", "same.onnx"])
def test_same_weights_other_format(capsys: pytest.CaptureFixture[str], other: str) -> None:
    pytest.importorskip("numpy")
    doc = run_json(capsys, str(BASE), str(DATA / other), "--stats")
    s = doc["summary"]
    assert (s["matched"], s["added"], s["removed"], s["dtype_changed"], s["shape_changed"]) == (21, 0, 0, 0, 0)
    assert s["values_compared"] == 21 and s["values_changed"] == 0
    assert s["parameters_delta"] == 0
    expected_match = "gguf-name" if other.endswith(".gguf") else "name"
    assert {m["match"] for m in doc["matched"]} == {expected_match}
    for m in doc["matched"]:
        v = m["values"]
        assert v["identical"] is True and v["changed"] == 0 and v["max_abs_diff"] == 0
        assert v["sqnr_db"] is None  # infinite
        assert v["cosine"] == pytest.approx(1.0, abs=1e-12) or v["cosine"] is None
    assert all(r["bytes_delta"] == 0 for r in doc["roles"])


def test_gguf_vs_onnx_structure_only(capsys: pytest.CaptureFixture[str]) -> None:
    doc = run_json(capsys, str(DATA / "same.gguf"), str(DATA / "same.onnx"))
    assert doc["summary"]["matched"] == 21 and doc["summary"]["added"] == 0
    assert doc["summary"]["values_compared"] is None
    assert all(m["values"] is None for m in doc["matched"])


# -- a model against a copy with two tensors perturbed -----------------------------------------------


def test_two_perturbed_tensors(capsys: pytest.CaptureFixture[str]) -> None:
    np = pytest.importorskip("numpy")
    st = pytest.importorskip("safetensors.numpy")
    doc = run_json(capsys, str(BASE), str(DATA / "perturbed.safetensors"), "--stats")
    changed = {m["a"]: m["values"] for m in doc["matched"] if not m["values"]["identical"]}
    assert set(changed) == {"model.layers.0.self_attn.q_proj.weight", "model.layers.1.mlp.down_proj.weight"}
    assert doc["summary"]["values_changed"] == 2
    a, b = st.load_file(str(BASE)), st.load_file(str(DATA / "perturbed.safetensors"))
    for name, v in changed.items():
        x, y = a[name].astype(np.float64).ravel(), b[name].astype(np.float64).ravel()
        d = y - x
        assert v["changed"] == int(np.count_nonzero(d))
        assert v["max_abs_diff"] == pytest.approx(float(np.abs(d).max()), rel=1e-12)
        assert v["rel_frobenius"] == pytest.approx(float(np.linalg.norm(d) / np.linalg.norm(x)), rel=1e-9)
        cos = float(x @ y / (np.linalg.norm(x) * np.linalg.norm(y)))
        assert v["cosine"] == pytest.approx(cos, rel=1e-12)
        assert v["sqnr_db"] == pytest.approx(10 * math.log10(float(x @ x) / float(d @ d)), abs=1e-9)
    q = changed["model.layers.0.self_attn.q_proj.weight"]
    assert q["changed"] == 32 and q["max_abs_diff"] == pytest.approx(0.01, rel=1e-4)  # one row + 0.01
    assert changed["model.layers.1.mlp.down_proj.weight"]["rel_frobenius"] == pytest.approx(0.01, rel=1e-4)  # x1.01


def test_perturbed_terminal(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("numpy")
    monkeypatch.setenv("COLUMNS", "200")
    assert cli.main(["diff", str(BASE), str(DATA / "perturbed.safetensors"), "--stats", "--no-color"]) == 0
    out = capsys.readouterr().out
    assert "2 with changed values" in out and "19 identical" in out


# -- fp32 against Q8_0: SQNR per tensor as numpy computes it -----------------------------------------


def test_q8_0_sqnr_matches_numpy(capsys: pytest.CaptureFixture[str]) -> None:
    np = pytest.importorskip("numpy")
    st = pytest.importorskip("safetensors.numpy")
    gguf = pytest.importorskip("gguf")
    doc = run_json(capsys, str(BASE), str(DATA / "q8_0.gguf"), "--stats")
    assert doc["summary"]["dtype_changed"] == 16
    a = st.load_file(str(BASE))
    reader = gguf.GGUFReader(str(DATA / "q8_0.gguf"))
    b = {t.name: gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float64).ravel() for t in reader.tensors}
    checked = 0
    for m in doc["matched"]:
        x, y = a[m["a"]].astype(np.float64).ravel(), b[m["b"]]
        d = y - x
        if m["dtype_b"] != "Q8_0":
            assert m["values"]["identical"] is True
            continue
        expected = 10 * np.log10(float(x @ x) / float(d @ d))
        assert abs(m["values"]["sqnr_db"] - expected) < 0.01
        assert m["values"]["max_abs_diff"] == pytest.approx(float(np.abs(d).max()), rel=1e-9)
        checked += 1
    assert checked == 16


# -- renames -------------------------------------------------------------------------------------------


def test_peft_prefix_and_rename(capsys: pytest.CaptureFixture[str]) -> None:
    doc = run_json(capsys, str(BASE), str(DATA / "peft.safetensors"))
    matches = {m["a"]: (m["b"], m["match"]) for m in doc["matched"]}
    assert matches["lm_head.weight"] == ("output_projection.weight", "shape")
    assert matches["model.norm.weight"] == ("base_model.model.model.norm.weight", "prefix")
    assert doc["summary"]["added"] == doc["summary"]["removed"] == 0
    pytest.importorskip("numpy")
    doc = run_json(capsys, str(BASE), str(DATA / "peft.safetensors"), "--stats")
    matches = {m["a"]: (m["b"], m["match"]) for m in doc["matched"]}
    assert matches["lm_head.weight"] == ("output_projection.weight", "content")
    assert doc["summary"]["values_changed"] == 0


# -- streaming -----------------------------------------------------------------------------------------


def test_small_chunks_give_the_same_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("numpy")
    pytest.importorskip("gguf")
    from ckptscan.stats import compare as cmp

    a, b = read_inventory(BASE), read_inventory(DATA / "q8_0.gguf")
    options = AnalysisOptions(memory=False)
    diff = compare(a, b, analyze(a, options), analyze(b, options))
    pairs = [(p.a, p.b) for p in diff.pairs]
    whole = cmp.compare_pairs(a, b, pairs)
    monkeypatch.setattr(cmp, "CHUNK_ELEMENTS", 48)  # rounded down to one Q8_0 block of 32
    pieces = cmp.compare_pairs(a, b, pairs)
    for x, y in zip(whole, pieces, strict=True):
        assert x.changed == y.changed and x.max_abs_diff == y.max_abs_diff
        assert x.sqnr_db == pytest.approx(y.sqnr_db, rel=1e-9) if x.sqnr_db is not None else y.sqnr_db is None


def test_different_element_counts_are_skipped() -> None:
    pytest.importorskip("numpy")
    from dataclasses import replace

    from ckptscan.stats.compare import compare_pairs

    a = read_inventory(BASE)
    q = next(t for t in a.tensors if t.name.endswith("0.self_attn.q_proj.weight"))
    norm = next(t for t in a.tensors if t.name == "model.norm.weight")
    [v] = compare_pairs(a, a, [(q, norm)])
    assert v.skipped is not None and "element counts differ" in v.skipped
    # a reshaped tensor with the same count is compared in order, with a note
    [v] = compare_pairs(a, a, [(q, replace(q, shape=(16, 64)))])
    assert v.identical and "shapes differ" in v.note


def test_nan_positions(tmp_path: Path) -> None:
    np = pytest.importorskip("numpy")
    st = pytest.importorskip("safetensors.numpy")
    from ckptscan.stats.compare import compare_pairs

    x = np.array([1.0, np.nan, np.inf, 2.0, np.nan], dtype=np.float32)
    y = np.array([1.0, np.nan, 3.0, 2.5, 0.0], dtype=np.float32)
    st.save_file({"t": x}, str(tmp_path / "a.safetensors"))
    st.save_file({"t": y}, str(tmp_path / "b.safetensors"))
    a, b = read_inventory(tmp_path / "a.safetensors"), read_inventory(tmp_path / "b.safetensors")
    [v] = compare_pairs(a, b, [(a.tensors[0], b.tensors[0])])
    assert v.nonfinite_mismatch == 2 and v.changed == 3 and v.max_abs_diff == pytest.approx(0.5)


def test_unreadable_input_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\xff" * 20)
    assert cli.main(["diff", str(BASE), str(bad)]) == cli.EXIT_INPUT_FAILED
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bad.safetensors" in err[0] and "Traceback" not in err[0]


def test_memory_is_bounded_by_the_piece_not_the_tensor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    np = pytest.importorskip("numpy")
    st = pytest.importorskip("safetensors.numpy")
    import tracemalloc

    from ckptscan.stats import compare as cmp

    rng = np.random.default_rng(1)
    x = rng.standard_normal(1 << 22, dtype=np.float32)  # 16 MiB per file; 64 MiB as float64 pairs
    st.save_file({"w": x}, str(tmp_path / "a.safetensors"))
    st.save_file({"w": x * np.float32(1.5)}, str(tmp_path / "b.safetensors"))
    del x
    a, b = read_inventory(tmp_path / "a.safetensors"), read_inventory(tmp_path / "b.safetensors")
    monkeypatch.setattr(cmp, "CHUNK_ELEMENTS", 1 << 16)
    tracemalloc.start()
    try:
        [v] = cmp.compare_pairs(a, b, [(a.tensors[0], b.tensors[0])])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert v.rel_frobenius == pytest.approx(0.5, rel=1e-6) and v.changed > 0
    assert peak < 8 << 20, f"peak {peak:,} bytes for a 16 MiB tensor pair"
