"""The memory model of issue 11: SDPA kernel selection, precisions as users name them, LoRA/QLoRA,
sharding, prefill inference, "will it fit?", and (with torch + transformers installed) the estimate
against what autograd really saves in a transformers model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ckptscan import cli
from ckptscan.analyze import memory
from ckptscan.analyze.analysis import AnalysisOptions, analyze
from ckptscan.analyze.memory import InferenceOptions, LoraOptions, TrainingOptions, select_kernel
from ckptscan.inventory import Inventory
from tests._analysis_helpers import packed, tensor

H, F, L, V, A, KV = 64, 176, 2, 500, 4, 2
LLAMA = {"model_type": "llama", "hidden_size": H, "intermediate_size": F, "num_hidden_layers": L,
         "num_attention_heads": A, "num_key_value_heads": KV, "vocab_size": V, "max_position_embeddings": 256,
         "rms_norm_eps": 1e-6, "tie_word_embeddings": False, "hidden_act": "silu"}  # fmt: skip


def _llama() -> Inventory:
    d = H // A
    tensors = [tensor("model.embed_tokens.weight", (V, H))]
    for i in range(L):
        p = f"model.layers.{i}"
        tensors += [tensor(f"{p}.input_layernorm.weight", (H,)), tensor(f"{p}.self_attn.q_proj.weight", (H, H)),
                    tensor(f"{p}.self_attn.k_proj.weight", (KV * d, H)),
                    tensor(f"{p}.self_attn.v_proj.weight", (KV * d, H)), tensor(f"{p}.self_attn.o_proj.weight", (H, H)),
                    tensor(f"{p}.post_attention_layernorm.weight", (H,)), tensor(f"{p}.mlp.gate_proj.weight", (F, H)),
                    tensor(f"{p}.mlp.up_proj.weight", (F, H)), tensor(f"{p}.mlp.down_proj.weight", (H, F))]  # fmt: skip
    tensors += [tensor("model.norm.weight", (H,)), tensor("lm_head.weight", (V, H))]
    return packed(tensors, sidecars={"config.json": LLAMA})


def _train(inventory: Inventory, **options: Any) -> memory.TrainingEstimate:
    t = analyze(inventory, AnalysisOptions(training=TrainingOptions(**options))).training
    assert t is not None
    return t


# -- kernel selection -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("device", "width", "head_dim", "grouped", "mask", "grad_mask", "dropout", "kernel", "expanded"),
    [
        # torch docs: flash takes fp16/bf16 only; GQA runs on flash and math only; flash takes no mask
        ("cuda", 2, 128, False, False, False, False, "flash", False),
        ("cuda", 2, 128, True, False, False, False, "flash", False),  # enable_gqa on flash
        ("cuda", 4, 128, False, False, False, False, "efficient", False),  # fp32: no flash
        ("cuda", 4, 128, True, False, False, False, "math", False),  # fp32 + GQA: efficient has no enable_gqa
        ("cuda", 2, 128, True, True, False, False, "efficient", True),  # padding mask: HF repeats K/V
        ("cuda", 2, 320, False, False, False, False, "efficient", False),  # flash: head_dim <= 256
        ("cuda", 2, 100, False, False, False, False, "math", False),  # neither: not 16-byte aligned
        ("cuda", 2, 128, False, False, False, True, "flash", False),  # flash takes dropout
        ("cpu", 4, 64, True, False, False, False, "flash", False),  # CPU flash: fp32, grouped heads
        ("cpu", 4, 64, False, True, True, False, "math", False),  # T5's learned position bias
        ("cpu", 2, 64, False, False, False, True, "math", False),  # CPU flash takes no dropout
    ],
)
def test_sdpa_kernel_selection(
    device: str, width: int, head_dim: int, grouped: bool, mask: bool, grad_mask: bool, dropout: bool, kernel: str,
    expanded: bool,
) -> None:  # fmt: skip
    got = select_kernel(device, width, head_dim, grouped, mask, grad_mask, dropout)
    assert (got.name, got.expanded_kv) == (kernel, expanded), got.reason
    assert select_kernel(device, width, head_dim, grouped, mask, requested="eager").name == "eager"


def test_kernel_selection_matches_torch_on_cuda() -> None:
    """Where a GPU is present, torch's own predicates agree with ours."""
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    from torch.backends.cuda import SDPAParams, can_use_efficient_attention, can_use_flash_attention

    for dtype, width in ((torch.bfloat16, 2), (torch.float32, 4)):
        for kv in (8, 2):
            q = torch.empty(1, 8, 16, 64, dtype=dtype, device="cuda")
            k = torch.empty(1, kv, 16, 64, dtype=dtype, device="cuda")
            params = SDPAParams(q, k, k, None, 0.0, True, kv < 8)
            expected = ("flash" if can_use_flash_attention(params, False)
                        else "efficient" if can_use_efficient_attention(params, False) else "math")  # fmt: skip
            assert select_kernel("cuda", width, 64, kv < 8, False).name == expected


def test_math_kernel_keeps_the_square_and_flash_does_not() -> None:
    inventory = _llama()
    flash = _train(inventory, precision="bf16-true", seq=128).activations
    math = _train(inventory, precision="bf16-true", seq=128, attention="math").activations
    assert flash is not None and math is not None and flash.kernel.name == "flash"
    square = 2 * 128 * 128 * A * 2  # batch 1 x heads x s^2 x 2 B, per layer... plus expanded k, v
    assert math.bytes - flash.bytes >= L * square // 2


# -- precisions, the breakdown's lines --------------------------------------------------------------


def test_bf16_means_autocast_and_each_line_is_right() -> None:
    inventory = _llama()
    n = sum(t.elements for t in inventory.tensors)
    matmul = n - V * H - (2 * L + 1) * H  # every weight but the embedding and the norms
    mixed = _train(inventory, precision="bf16", seq=64)
    assert mixed.precision == "bf16-mixed"
    assert mixed.line("weights") == 4 * n and mixed.line("gradients") == 4 * n
    assert mixed.line("master_weights") == 0 and mixed.line("weight_copies") == 2 * matmul
    true = _train(inventory, precision="bf16-true", seq=64)
    assert (true.line("weights"), true.line("gradients"), true.line("weight_copies")) == (2 * n, 2 * n, 0)
    zero = _train(inventory, precision="bf16-master", seq=64)
    assert (zero.line("weights"), zero.line("master_weights"), zero.line("gradients")) == (2 * n, 4 * n, 2 * n)
    assert zero.line("optimizer_state") == mixed.line("optimizer_state")  # fp32 moments either way


def test_lora_trains_adapters_only_and_qlora_quantizes_the_base() -> None:
    inventory = _llama()
    lora = _train(inventory, lora=LoraOptions(rank=8), seq=64, precision="fp32")
    adapters = L * 8 * ((H + H) + (H + KV * H // A))  # q_proj (H x H) and v_proj (KV*d x H): A + B
    assert lora.trainable_parameters == adapters
    assert lora.line("gradients") == 4 * adapters
    assert lora.line("optimizer_state") == 8 * adapters + 4 * 2 * 2 * L  # two moments, a step per A and B
    q = _train(inventory, lora=LoraOptions(rank=8, quantized_base=True), seq=64, optimizer="paged-adamw-8bit")
    assert q.line("weights") < lora.line("weights") // 3
    assert memory.nf4_bytes(4096) == 2048 + 64 + 8


def test_sharding_divides_per_gpu() -> None:
    inventory = _llama()
    one = _train(inventory, precision="fp32", seq=64)
    z2 = _train(inventory, precision="fp32", seq=64, gpus=4, sharding="zero2")
    z3 = _train(inventory, precision="fp32", seq=64, gpus=4, sharding="fsdp")
    ddp = _train(inventory, precision="fp32", seq=64, gpus=4)
    assert z2.line("weights") == one.line("weights") and z2.line("gradients") == one.line("gradients") // 4
    assert z3.line("weights") == one.line("weights") // 4 and z3.line("gathered_layer") > 0
    assert ddp.line("gradient_buckets") == one.line("gradients")
    assert z3.sharding == "zero3" and z3.total_bytes < one.total_bytes


# -- inference, fit ---------------------------------------------------------------------------------


def test_prefill_counts_logits_and_follows_the_weights_dtype() -> None:
    inventory = _llama()
    full = analyze(inventory, AnalysisOptions(inference=InferenceOptions(batch=2, seq=128))).inference
    last_options = InferenceOptions(batch=2, seq=128, last_token_logits=True)
    last = analyze(inventory, AnalysisOptions(inference=last_options)).inference
    assert full is not None and last is not None and full.kv_cache is not None
    assert full.compute_bytes == 4 and full.kv_cache.bytes == 2 * L * KV * (H // A) * 128 * 2 * 4
    assert full.logits_bytes >= 2 * 128 * V * 4 > last.logits_bytes
    assert full.activations_bytes >= full.logits_bytes
    assert full.total_bytes == (full.weights_bytes or 0) + full.kv_cache.bytes + full.activations_bytes


def test_encoder_only_has_no_kv_cache() -> None:
    config = {"model_type": "bert", "hidden_size": H, "num_hidden_layers": L, "num_attention_heads": A,
              "intermediate_size": F, "vocab_size": V, "max_position_embeddings": 128}  # fmt: skip
    inventory = packed([tensor("bert.embeddings.word_embeddings.weight", (V, H))], sidecars={"config.json": config})
    a = analyze(inventory)
    assert a.inference is not None and a.inference.kv_cache is None and a.inference.activations_bytes > 0


@pytest.mark.parametrize(("text", "expected"), [("24GiB", 24 << 30), ("80GB", 80 * 10**9), ("16", 16 << 30),
                                                 ("H100", 81559 << 20), ("a10g", 23028 << 20)])  # fmt: skip
def test_parse_gpu(text: str, expected: int) -> None:
    assert memory.parse_gpu(text)[1] == expected


def test_parse_gpu_refuses_an_unknown_name_as_a_usage_error() -> None:
    from ckptscan.errors import UsageError

    with pytest.raises(UsageError, match="unknown GPU 'TPU9'"):
        memory.parse_gpu("TPU9")


def test_fit_finds_the_largest_batch_and_sequence() -> None:
    def at(batch: int, seq: int) -> int:
        return 1000 + batch * seq * 10

    got = memory.fit("toy", 10_000 + memory.DEFAULT_RESERVE, at(2, 100), at, 2, 100, 4096)
    assert got.fits and got.margin_bytes == 10_000 - 3000
    assert got.max_batch == 9 and got.max_seq == 450
    tight = memory.fit("toy", 500 + memory.DEFAULT_RESERVE, at(1, 1), at, 1, 1, 4096)
    assert not tight.fits and tight.max_batch is None and tight.max_seq is None


def test_cli_memory_gpu(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file

    gen = torch.Generator().manual_seed(0)
    save_file({t.name: torch.randn(t.shape, generator=gen) for t in _llama().tensors}, str(tmp_path / "m.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps(LLAMA))
    path = str(tmp_path / "m.safetensors")
    assert cli.main(["memory", path, "--gpu", "24GiB", "--seq", "128", "--no-color"]) == 0
    out = capsys.readouterr().out
    assert "training on 24GiB: fits" in out and "largest that fit: batch" in out
    assert cli.main(["memory", path, "--gpu", "A10G", "--json", "--lora-rank", "4", "--gpus", "2",
                     "--sharding", "zero2"]) == 0  # fmt: skip
    doc = json.loads(capsys.readouterr().out)
    jsonschema = pytest.importorskip("jsonschema")
    from ckptscan.report.json import schema

    jsonschema.validate(doc, schema())
    fit = doc["results"][0]["memory"]["training"]["fit"]
    assert fit["fits"] and fit["max_batch"] > 1 and fit["max_seq"] == 256  # the model's context
    assert cli.main([path, "--gpu", "1MiB", "--no-color"]) == 0
    assert "does not fit" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli.main(["memory", path, "--gpu", "a lot"])


# -- against what autograd keeps (torch + transformers) ---------------------------------------------


def test_estimate_matches_saved_tensors_of_a_transformers_llama(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from ckptscan.scan import scan

    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=V, hidden_size=H, intermediate_size=F, num_hidden_layers=L,
                                      num_attention_heads=A, num_key_value_heads=KV,
                                      max_position_embeddings=256)  # fmt: skip
    model = transformers.LlamaForCausalLM(config)
    model.save_pretrained(tmp_path)
    result = scan(tmp_path / "model.safetensors")
    assert result.inventory is not None
    options = TrainingOptions(precision="fp32", batch=2, seq=64, device="cpu")
    est = analyze(result.inventory, AnalysisOptions(training=options)).training
    assert est is not None and est.activations is not None
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    kept: dict[int, int] = {}

    def pack(t: Any) -> Any:
        if t.untyped_storage().data_ptr() not in params:
            kept[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    ids = torch.randint(0, V, (2, 64))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(input_ids=ids, labels=ids)
    measured = sum(kept.values())
    assert abs(est.activations.bytes - measured) / measured < 0.02, (est.activations.bytes, measured)


def test_seq_beyond_the_context_is_warned() -> None:
    t = _train(_llama(), seq=1024)
    assert any("exceeds the model's context (256)" in a for a in t.assumptions)


def test_trainer_checkpoint_folder_reads_its_config() -> None:
    from ckptscan.scan import scan

    result = scan(Path(__file__).parent.parent / "testdata/torch/checkpoint-4/pytorch_model.bin")
    assert result.inventory is not None
    assert "config.json" in result.inventory.sidecars  # read beside the weights in a Trainer checkpoint-N/
    from ckptscan.analyze import architecture

    assert architecture.hf_config(result.inventory)["hidden_size"] == 8


def test_moe_activations_follow_top_k_not_the_expert_count() -> None:
    def moe(experts: int, top_k: int) -> int:
        config = {**LLAMA, "model_type": "mixtral", "num_local_experts": experts, "num_experts_per_tok": top_k}
        inventory = packed([tensor("model.embed_tokens.weight", (V, H))], sidecars={"config.json": config})
        t = _train(inventory, precision="fp32", seq=64)
        assert t.activations is not None
        return t.activations.bytes

    per_slot = 64 * ((2 * H + 4 * F) * 4 + 4 + 24)  # one more routed slot per token, per layer
    assert moe(8, 2) - moe(4, 2) == L * 64 * 4 * 4  # only the router's softmax widens
    assert moe(8, 3) - moe(8, 2) == L * (per_slot + 64 * (8 + 4))
