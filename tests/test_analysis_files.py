"""The analyzer end to end on real files: made here with the official libraries, committed fixtures of
every format (as they land), and the third-party models in ../shared/real-models. JSON output is
validated against the published schema; the CLI's analysis options are exercised."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import ckptscan
from ckptscan import cli, pipeline, registry
from ckptscan.analyze.analysis import analyze
from ckptscan.analyze.roles import Role
from ckptscan.errors import CkptscanError
from ckptscan.report.json import document, schema
from ckptscan.source import Source
from tests.conftest import REAL_MODELS, TESTDATA, real_manifest

V, H, L = 256, 32, 2


def _validate(doc: dict[str, Any]) -> None:
    import jsonschema

    jsonschema.validate(doc, schema())


def _hf_tensors(rng: np.random.Generator, head: bool) -> dict[str, np.ndarray]:
    tensors = {"model.embed_tokens.weight": rng.standard_normal((V, H), dtype=np.float32)}
    for i in range(L):
        p = f"model.layers.{i}"
        for proj, shape in (("self_attn.q_proj", (H, H)), ("self_attn.k_proj", (H // 2, H)),
                            ("self_attn.v_proj", (H // 2, H)), ("self_attn.o_proj", (H, H)),
                            ("mlp.gate_proj", (64, H)), ("mlp.up_proj", (64, H)),
                            ("mlp.down_proj", (H, 64))):  # fmt: skip
            tensors[f"{p}.{proj}.weight"] = rng.standard_normal(shape, dtype=np.float32)
        tensors[f"{p}.input_layernorm.weight"] = np.ones(H, np.float32)
        tensors[f"{p}.post_attention_layernorm.weight"] = np.ones(H, np.float32)
    tensors["model.norm.weight"] = np.ones(H, np.float32)
    if head:
        tensors["lm_head.weight"] = tensors["model.embed_tokens.weight"].copy()
    return tensors


CONFIG = {"model_type": "llama", "num_hidden_layers": L, "hidden_size": H, "num_attention_heads": 4,
          "num_key_value_heads": 2, "intermediate_size": 64, "vocab_size": V, "max_position_embeddings": 512,
          "rms_norm_eps": 1e-6}  # fmt: skip


@pytest.fixture
def hf_folder(tmp_path: Path) -> Path:
    from safetensors.numpy import save_file

    save_file(_hf_tensors(np.random.default_rng(0), head=False), str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps({**CONFIG, "tie_word_embeddings": True}))
    return tmp_path


def test_safetensors_tied_head_dropped_counts_embedding_once(hf_folder: Path) -> None:
    """What transformers' save_pretrained writes for a tied model: no lm_head, tie_word_embeddings true."""
    inventory = ckptscan.read_inventory(hf_folder / "model.safetensors")
    a = analyze(inventory)
    expected = sum(t.elements for t in inventory.tensors)
    assert a.parameters.total == expected
    assert [(t.head, t.stored) for t in a.parameters.ties] == [("", "absent")]
    assert a.overhead.exact and sum(p.bytes for p in a.overhead.parts.values()) == inventory.file_bytes
    assert a.architecture is not None and a.architecture.source == "config.json"
    assert a.inference is not None and a.inference.kv_cache is not None
    assert a.inference.kv_cache.bytes == 2 * L * 2 * 8 * 512 * 1 * a.inference.kv_cache.bytes_per_element
    roles = {t.name: d.role for t, d in zip(inventory.tensors, a.decisions, strict=True)}
    assert roles["model.embed_tokens.weight"] is Role.EMBEDDING
    assert roles["model.norm.weight"] is Role.NORM
    assert roles["model.layers.1.mlp.down_proj.weight"] is Role.WEIGHT


def test_safetensors_tied_head_stored_twice_is_a_duplicate(tmp_path: Path) -> None:
    from safetensors.numpy import save_file

    save_file(_hf_tensors(np.random.default_rng(0), head=True), str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps({**CONFIG, "tie_word_embeddings": True}))
    inventory = ckptscan.read_inventory(tmp_path / "model.safetensors")
    a = analyze(inventory)
    head_bytes = V * H * 4
    assert a.parameters.total == sum(t.elements for t in inventory.tensors) - V * H
    assert a.overhead.parts["duplicates"].bytes == head_bytes and a.overhead.exact
    targets = {t.name: t for t in a.targets}
    assert targets["strip"].bytes - targets["dedupe"].bytes == head_bytes


def test_gguf_tied_without_output_counts_token_embd_once(tmp_path: Path) -> None:
    import gguf

    path = tmp_path / "tied.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(1)
    writer.add_embedding_length(H)
    writer.add_head_count(4)
    writer.add_head_count_kv(1)
    writer.add_context_length(256)
    writer.add_feed_forward_length(64)
    writer.add_layer_norm_rms_eps(1e-5)
    rng = np.random.default_rng(1)
    writer.add_tensor("token_embd.weight", rng.standard_normal((V, H), dtype=np.float32).astype(np.float16))
    writer.add_tensor("blk.0.attn_q.weight", rng.standard_normal((H, H), dtype=np.float32).astype(np.float16))
    writer.add_tensor("blk.0.attn_k.weight", rng.standard_normal((8, H), dtype=np.float32).astype(np.float16))
    writer.add_tensor("blk.0.attn_norm.weight", np.ones(H, np.float32))
    writer.add_tensor("output_norm.weight", np.ones(H, np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    inventory = ckptscan.read_inventory(path)
    a = analyze(inventory)
    reader = gguf.GGUFReader(str(path))
    assert a.parameters.total == sum(int(t.n_elements) for t in reader.tensors)
    assert [(t.head, t.stored) for t in a.parameters.ties] == [("", "absent")]
    assert a.overhead.exact
    assert a.architecture is not None and a.architecture.kv_heads == 1
    assert a.inference is not None and a.inference.kv_cache is not None
    assert a.inference.kv_cache.bytes == 2 * 1 * 8 * 256 * a.inference.kv_cache.bytes_per_element


def test_real_gguf_split_and_roles(real_models: Path) -> None:
    path = real_models / "gguf" / "ollama_llama-2-tiny-random.gguf"
    truth = next(e for e in real_manifest()["files"] if e["path"] == "gguf/ollama_llama-2-tiny-random.gguf")["truth"]  # type: ignore[index]
    a = analyze(ckptscan.read_inventory(path))
    assert a.parameters.total == truth["total_params"]
    assert a.overhead.exact and a.overhead.parts["inference_weights"].bytes == truth["total_tensor_bytes"]
    assert a.overhead.parts["format_overhead"].bytes == truth["data_offset"]
    assert {d.role.value for d in a.decisions} == {"embedding", "weight", "norm", "output_head"}
    assert a.architecture is not None and a.architecture.source == "gguf metadata"


# -- the Lightning checkpoint (needs the torch reader) -----------------------------------------------

LIGHTNING = "lightning/chemprop_example_model_v2_regression_mol.ckpt"


def test_lightning_checkpoint_model_optimizer_training_split(real_models: Path) -> None:
    result = ckptscan.scan(real_models / LIGHTNING)
    if result.error is not None and result.error.code == "unrecognized-format":
        pytest.skip("no PyTorch reader registered yet")
    assert result.inventory is not None, result.error
    inventory = result.inventory
    truth = next(e for e in real_manifest()["files"] if e["path"] == LIGHTNING)["truth"]  # type: ignore[index]
    parts = truth["by_top_level_key"]
    a = analyze(inventory)
    o = a.overhead
    model = o.parts["inference_weights"].elements + o.parts["buffers"].elements
    assert model == parts["state_dict"]["total_params"] == 319_505
    assert o.parts["optimizer_state"].elements == parts["optimizer_states"]["total_params"] == 637_812
    assert o.parts["optimizer_state"].bytes == parts["optimizer_states"]["total_tensor_bytes"]
    assert o.parts["inference_weights"].bytes + o.parts["buffers"].bytes == parts["state_dict"]["total_tensor_bytes"]
    assert o.parts["training_state"].tensors >= 1
    assert sum(p.bytes for p in o.parts.values()) == inventory.file_bytes
    roles = {t.name: d for t, d in zip(inventory.tensors, a.decisions, strict=True)}
    by_suffix = {name.split("state_dict.", 1)[-1]: d for name, d in roles.items() if "state_dict" in name}
    assert by_suffix["bn.weight"].role is Role.NORM and by_suffix["bn.weight"].detail == "batchnorm-scale"
    assert by_suffix["bn.running_mean"].role is Role.BUFFER
    assert by_suffix["message_passing.W_i.weight"].role is Role.WEIGHT
    steps = [d for d in a.decisions if d.role is Role.OPTIMIZER_STATE and d.detail == "step counter"]
    assert len(steps) == 10


# -- committed fixtures of every format --------------------------------------------------------------


def _fixture_files() -> list[Path]:
    skip = {".json", ".md", ".txt", ".py"}
    if not TESTDATA.is_dir():
        return []
    return sorted(p for p in TESTDATA.rglob("*") if p.is_file() and p.suffix not in skip and "bad" not in p.name)


def _model_files() -> list[Path]:
    """Fixtures that are models by content; the rest are parts of one (external data, TF shards)."""
    models = []
    for p in _fixture_files():
        with Source(p) as source:
            try:
                registry.detect(source)
            except CkptscanError:
                continue
        models.append(p)
    return models


MODEL_FIXTURES = _model_files()


def test_every_fixture_file_is_a_model_or_part_of_one() -> None:
    claimed = set()
    for path in MODEL_FIXTURES:
        result = ckptscan.scan(path)
        if result.inventory is not None:
            claimed |= {(Path(result.inventory.root) / f.path).resolve() for f in result.inventory.files}
    # TF's `checkpoint` file only names the latest checkpoint; no bundle contains it
    others = {p.resolve() for p in _fixture_files() if p.name != "checkpoint"} - {p.resolve() for p in MODEL_FIXTURES}
    assert others, "expected data files read through another file (ONNX external data, TF data shards)"
    assert others <= claimed, sorted(str(p) for p in others - claimed)


@pytest.mark.parametrize("path", MODEL_FIXTURES, ids=lambda p: str(p.relative_to(TESTDATA)))
def test_every_fixture_analyzes_and_adds_up(path: Path) -> None:
    result = ckptscan.scan(path)
    assert result.inventory is not None, result.error
    a = analyze(result.inventory)
    assert len(a.decisions) == len(result.inventory.tensors)
    assert sum(p.bytes for p in a.overhead.parts.values()) == result.inventory.file_bytes
    # a packed quantized weight counts as the weights it holds, more than its stored words
    assert a.parameters.total <= sum(t.elements for t in result.inventory.tensors) + a.parameters.packed.elements
    _validate(document([pipeline.build(result)], explain=True, tensor_plans=True))


def _real_files() -> list[str]:
    manifest = real_manifest()
    if manifest is None:
        return []
    return [e["path"] for e in manifest["files"] if e["format"] not in ("json-config", "onnx-external-data")]


@pytest.mark.parametrize("rel", _real_files() or [None])
def test_every_real_model_json_validates(rel: str | None) -> None:
    if rel is None:
        pytest.skip(f"{REAL_MODELS} not present")
    result = ckptscan.scan(REAL_MODELS / rel)
    doc = document([pipeline.build(result)], explain=True)
    _validate(doc)
    record = doc["results"][0]
    if result.inventory is not None and result.inventory.complete:
        parts = record["overhead"]["parts"]
        assert sum(parts.values()) == record["file_bytes"]


# -- CLI --------------------------------------------------------------------------------------------


def test_cli_scan_json_explain(hf_folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main([str(hf_folder / "model.safetensors"), "--json", "--explain", "--tensors", "--group-size", "64"])
    assert code == 0
    doc = json.loads(capsys.readouterr().out)
    _validate(doc)
    record = doc["results"][0]
    assert {"by_role", "parameters", "overhead", "reduction", "memory"} <= set(record)
    assert all("role" in t and "role_reason" in t for t in record["tensors"])
    int4 = next(t for t in record["reduction"]["targets"] if t["name"] == "int4")
    assert "groups of 64" in int4["assumptions"][0] and len(int4["tensors"]) == len(record["tensors"])


def test_cli_terminal_report_has_the_analysis_sections(
    hf_folder: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "250")
    assert cli.main([str(hf_folder / "model.safetensors"), "--explain", "--no-color"]) == 0
    out = capsys.readouterr().out
    for title in ("By role", "Where the bytes go", "Reduction", "Memory", "Roles and why", "parameters", "tied"):
        assert title in out
    assert "model.layers.[0-1].mlp.down_proj.weight" in out  # blocks collapsed in --explain


def test_cli_memory(hf_folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = str(hf_folder / "model.safetensors")
    assert cli.main(["memory", path, "--optimizer", "adamw", "--precision", "bf16-mixed", "--batch", "8", "--seq",
                     "128", "--checkpointing", "--freeze", "model.embed_tokens.*", "--no-color"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "Training: adamw, bf16-mixed, batch 8 x 128 tokens" in out and "gradient checkpointing" in out
    assert "KV cache" in out and "assumptions" in out
    assert cli.main(["memory", path, "--json", "--optimizer", "adafactor", "--precision", "fp32", "--seq", "64"]) == 0
    doc = json.loads(capsys.readouterr().out)
    _validate(doc)
    training = doc["results"][0]["memory"]["training"]
    assert training["optimizer"] == "adafactor" and training["precision"] == "fp32" and training["seq"] == 64


def test_cli_memory_rejects_bad_options(hf_folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["memory", str(hf_folder / "model.safetensors"), "--optimizer", "adagrad"])
    assert exit_info.value.code == 2
    with pytest.raises(SystemExit):
        cli.main(["memory", str(hf_folder / "model.safetensors"), "--batch", "0"])


# -- committed fixtures, checked against the libraries that wrote them ---------------------------------


def _fixture(relative: str | Path) -> Path:
    path = TESTDATA / relative
    if not path.exists():
        pytest.skip(f"fixture {relative} not present")
    return path


def _torch_elements(obj: Any) -> int:
    """Elements of the distinct tensors (by storage and view) in a torch-loaded object tree."""
    import torch

    seen: set[tuple[int, int, tuple[int, ...]]] = set()
    total = 0

    def walk(value: Any) -> None:
        nonlocal total
        if isinstance(value, torch.Tensor):
            key = (value.untyped_storage().data_ptr(), value.storage_offset(), tuple(value.shape))
            if key not in seen:
                seen.add(key)
                total += value.numel()
        elif isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, (list, tuple)):
            for v in value:
                walk(v)

    walk(obj)
    return total


def test_fixture_lightning_weights_vs_optimizer_split_exact() -> None:
    torch = pytest.importorskip("torch")
    path = _fixture("torch/lightning.ckpt")
    loaded = torch.load(path, weights_only=True, map_location="cpu")
    a = analyze(ckptscan.read_inventory(path))
    o = a.overhead
    assert o.exact
    assert o.parts["inference_weights"].elements + o.parts["buffers"].elements == _torch_elements(loaded["state_dict"])
    assert o.parts["optimizer_state"].elements == _torch_elements([s["state"] for s in loaded["optimizer_states"]])
    model_params = sum(v.numel() for k, v in loaded["state_dict"].items() if v.is_floating_point()
                       and not k.endswith(("running_mean", "running_var")))  # fmt: skip
    assert a.parameters.total == model_params


def test_fixture_torch_tied_embedding_counted_once() -> None:
    torch = pytest.importorskip("torch")
    path = _fixture("torch/tied.bin")
    loaded = torch.load(path, weights_only=True, map_location="cpu")
    assert loaded["lm_head.weight"].data_ptr() == loaded["model.embed_tokens.weight"].data_ptr()
    a = analyze(ckptscan.read_inventory(path))
    assert [(t.head, t.stored) for t in a.parameters.ties] == [("lm_head.weight", "shared")]
    counted = {ckptscan.read_inventory(path).tensors[i].name for i in a.parameters.counted}
    assert "model.embed_tokens.weight" in counted and "lm_head.weight" not in counted
    assert a.overhead.exact and a.overhead.parts["dead_storage"].bytes > 0


def test_fixture_training_checkpoint_has_ema_and_two_optimizers() -> None:
    path = _fixture("torch/training.pt")
    a = analyze(ckptscan.read_inventory(path))
    assert a.overhead.parts["ema_master"].tensors == 11
    assert a.overhead.exact
    strip = next(t for t in a.targets if t.name == "strip")
    assert strip.tensor_bytes == a.overhead.parts["inference_weights"].bytes + a.overhead.parts["buffers"].bytes


def test_fixture_hf_trainer_folder_rng_and_optimizer() -> None:
    a = analyze(ckptscan.read_inventory(_fixture("torch/checkpoint-4")))
    assert a.overhead.parts["training_state"].bytes == 5056  # rng_state.pth's CPU generator state
    assert a.overhead.parts["optimizer_state"].bytes > 0 and a.overhead.exact


def test_fixture_safetensors_llama_tied() -> None:
    path = _fixture("safetensors/llama-tiny/model.safetensors")
    from safetensors import safe_open

    with safe_open(str(path), "np") as f:
        keys = list(f.keys())
    assert "lm_head.weight" not in keys
    a = analyze(ckptscan.read_inventory(path))
    assert [(t.head, t.stored) for t in a.parameters.ties] == [("", "absent")]
    assert a.architecture is not None and (a.architecture.kv_heads, a.architecture.head_dim) == (2, 16)


def test_fixture_keras_model_vs_optimizer() -> None:
    h5py = pytest.importorskip("h5py")
    path = _fixture("keras/tiny_legacy.h5")
    sizes: dict[str, int] = {"model_weights": 0, "optimizer_weights": 0}
    with h5py.File(path, "r") as f:
        for group in sizes:
            f[group].visititems(lambda _, o, g=group: sizes.__setitem__(g, sizes[g] + o.size)
                                if isinstance(o, h5py.Dataset) else None)  # fmt: skip
    o = analyze(ckptscan.read_inventory(path)).overhead
    assert o.parts["inference_weights"].elements + o.parts["buffers"].elements == sizes["model_weights"]
    assert o.parts["optimizer_state"].elements == sizes["optimizer_weights"]
    assert o.exact


@pytest.mark.parametrize("name", ["hdf5/layouts.h5", "numpy/compressed.npz", "numpy/objects.npy"])
def test_fixture_compressed_and_inside_region_data_add_up_exactly(name: str) -> None:
    path = _fixture(name)
    o = analyze(ckptscan.read_inventory(path)).overhead
    assert o.exact and o.parts["unaccounted"].bytes == 0
