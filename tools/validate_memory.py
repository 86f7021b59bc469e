#!/usr/bin/env python3
"""Check ``ckptscan memory``'s estimates against real ``transformers`` models (``pip install
"ckptscan[validate]"``: torch, transformers, peft; never a runtime dependency).

Each scenario builds a small model from a config with random weights (Llama with grouped-query
attention, GPT-2, BERT, T5, Mixtral), saves it with ``save_pretrained`` (safetensors + config.json),
asks ckptscan for its estimate (the same code path as ``ckptscan memory --json``), then runs it and
measures, on the device it runs on:

- weights, gradients, optimizer state: the bytes of their storages, each storage once;
- activations: the bytes autograd saves for backward in one forward pass, seen through
  ``torch.autograd.graph.saved_tensors_hooks``, each storage once, parameters excluded; the
  low-precision weight copies autocast saves are counted apart (``weight copies``);
- peak: on CUDA ``torch.cuda.max_memory_allocated`` over one whole training step (forward, backward,
  optimizer step) or one prefill forward; on CPU the highest total of live tensor storages over the
  same step, tracked op by op with a ``TorchDispatchMode`` and weak references to the storages
  (what ``max_memory_allocated`` counts, minus the CUDA allocator's rounding).

On CPU the estimate is asked for the CPU's kernel rules (``--device cpu``): PyTorch's CPU SDPA runs
its flash kernel where CUDA might run another; the kernel that actually ran is recorded and shown.

    python tools/validate_memory.py                # table on stdout
    python tools/validate_memory.py --markdown     # the table for docs/memory.md
    python tools/validate_memory.py --only llama   # scenarios whose name contains this
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from ckptscan.analyze import memory  # noqa: E402
from ckptscan.analyze.analysis import AnalysisOptions, analyze  # noqa: E402
from ckptscan.scan import scan  # noqa: E402

VOCAB = 8192


@dataclass(frozen=True)
class Scenario:
    name: str
    model: str  # llama, gpt2, bert, t5, mixtral
    train: bool = True
    precision: str = "fp32"  # fp32, bf16-mixed (autocast), bf16-true
    optimizer: str = "adamw"
    impl: str = "foreach"
    checkpointing: bool = False
    freeze_embeddings: bool = False
    lora: bool = False
    batch: int = 4
    seq: int = 256
    extra: dict[str, Any] = field(default_factory=dict)


SCENARIOS = (
    Scenario("llama-gqa train fp32 adamw", "llama"),
    Scenario("llama-gqa train bf16-mixed (autocast) adamw", "llama", precision="bf16-mixed"),
    Scenario("llama-gqa train bf16-true adamw", "llama", precision="bf16-true"),
    Scenario("llama-gqa train fp32 checkpointing", "llama", checkpointing=True, batch=8),
    Scenario("llama-gqa train fp32 frozen embeddings", "llama", freeze_embeddings=True),
    Scenario("llama-gqa train fp32 sgd-momentum", "llama", optimizer="sgd-momentum"),
    Scenario("llama-gqa train fp32 adamw for-loop", "llama", impl="for-loop"),
    Scenario("llama-gqa train fp32 LoRA r8 q,v", "llama", lora=True),
    Scenario("llama-gqa train bf16-mixed LoRA r8 q,v", "llama", lora=True, precision="bf16-mixed"),
    Scenario("gpt2 train fp32 adamw (dropout 0.1)", "gpt2"),
    Scenario("gpt2 train bf16-mixed adamw", "gpt2", precision="bf16-mixed"),
    Scenario("bert-mlm train fp32 adamw (dropout 0.1)", "bert"),
    Scenario("t5 train fp32 adamw", "t5", batch=2),
    Scenario("mixtral-moe train fp32 adamw", "mixtral"),
    Scenario("mixtral-moe train bf16-true adamw", "mixtral", precision="bf16-true"),
    Scenario("mixtral-moe train bf16-mixed adamw", "mixtral", precision="bf16-mixed"),
    Scenario("bert-mlm train bf16-mixed adamw", "bert", precision="bf16-mixed"),
    Scenario("vit train fp32 adamw (197 patches)", "vit", batch=8, seq=197),
    Scenario("whisper train fp32 adamw (300 frames, 128 tokens)", "whisper", batch=4, seq=128),
    Scenario("llama-gqa infer fp32", "llama", train=False, batch=4, seq=512),
    Scenario("llama-gqa infer bf16", "llama", train=False, precision="bf16-true", batch=4, seq=512),
    Scenario("gpt2 infer fp32", "gpt2", train=False, batch=4, seq=512),
    Scenario("bert infer fp32", "bert", train=False, batch=4, seq=512),
    Scenario("t5 infer fp32 (encoder 256 + decoder 256 tokens)", "t5", train=False, batch=4, seq=256),
    Scenario("vit infer fp32", "vit", train=False, batch=8, seq=197),
    Scenario("mixtral-moe infer bf16", "mixtral", train=False, precision="bf16-true", batch=4, seq=512),
)


def build(name: str) -> Any:
    import transformers as T

    if name == "llama":
        config = T.LlamaConfig(vocab_size=VOCAB, hidden_size=256, intermediate_size=688, num_hidden_layers=4,
                               num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=1024)  # fmt: skip
        return T.LlamaForCausalLM(config)
    if name == "gpt2":
        config = T.GPT2Config(vocab_size=VOCAB, n_embd=256, n_layer=4, n_head=8, n_positions=1024, attn_pdrop=0.0,
                              bos_token_id=0, eos_token_id=0)  # fmt: skip
        return T.GPT2LMHeadModel(config)
    if name == "bert":
        config = T.BertConfig(vocab_size=VOCAB, hidden_size=256, num_hidden_layers=4, num_attention_heads=8,
                              intermediate_size=1024, attention_probs_dropout_prob=0.0,
                              max_position_embeddings=512)  # fmt: skip
        return T.BertForMaskedLM(config)
    if name == "t5":
        config = T.T5Config(vocab_size=VOCAB, d_model=256, d_kv=32, d_ff=1024, num_layers=3, num_decoder_layers=3,
                            num_heads=8, dropout_rate=0.0)  # fmt: skip
        return T.T5ForConditionalGeneration(config)
    if name == "whisper":
        config = T.WhisperConfig(vocab_size=VOCAB, d_model=256, encoder_layers=2, decoder_layers=2,
                                 encoder_attention_heads=8, decoder_attention_heads=8, encoder_ffn_dim=1024,
                                 decoder_ffn_dim=1024, max_source_positions=150, max_target_positions=256,
                                 num_mel_bins=80, dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
                                 pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1)  # fmt: skip
        return T.WhisperForConditionalGeneration(config)
    if name == "vit":
        config = T.ViTConfig(hidden_size=256, num_hidden_layers=4, num_attention_heads=8, intermediate_size=1024,
                             image_size=224, patch_size=16, num_labels=10)  # fmt: skip
        return T.ViTForImageClassification(config)
    if name == "mixtral":
        config = T.MixtralConfig(vocab_size=VOCAB, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                                 num_attention_heads=8, num_key_value_heads=2, num_local_experts=4,
                                 num_experts_per_tok=2, max_position_embeddings=1024)  # fmt: skip
        return T.MixtralForCausalLM(config)
    raise ValueError(name)


# -- measuring -------------------------------------------------------------------------------------


def storage_bytes(tensors: Any) -> int:
    seen: dict[int, int] = {}
    for t in tensors:
        if isinstance(t, torch.Tensor):
            st = t.untyped_storage()
            seen[st.data_ptr()] = st.nbytes()
    return sum(seen.values())


class LiveBytes(TorchDispatchMode):
    """The highest total of live tensor storages, op by op: each new storage is counted once and
    uncounted when its last reference dies (a weak-reference finalizer)."""

    def __init__(self, existing: Any = ()) -> None:
        super().__init__()
        self.sizes: dict[int, int] = {}
        self.current = self.peak = 0
        for t in existing:
            self._add(t)

    def _free(self, key: int) -> None:
        self.current -= self.sizes.pop(key, 0)

    def _add(self, t: Any) -> None:
        if not isinstance(t, torch.Tensor) or t.device.type == "meta":
            return
        st = t.untyped_storage()
        key = st.data_ptr()
        if key in self.sizes or st.nbytes() == 0:
            return
        self.sizes[key] = st.nbytes()
        self.current += st.nbytes()
        self.peak = max(self.peak, self.current)
        weakref.finalize(st, self._free, key)

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            self._add(t)
        return out


@contextlib.contextmanager
def peak_meter(device: torch.device, existing: Any) -> Iterator[Callable[[], int]]:
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        yield lambda: int(torch.cuda.max_memory_allocated())
        torch.cuda.synchronize()
        return
    meter = LiveBytes(existing)
    with meter:
        yield lambda: meter.peak


VIEWS = ("TBackward0", "ViewBackward0", "TransposeBackward0", "UnsafeViewBackward0", "PermuteBackward0",
         "ExpandBackward0", "AsStridedBackward0", "SelectBackward0")  # fmt: skip


def _weight_copy(t: torch.Tensor, frozen_shapes: set[tuple[int, ...]]) -> bool:
    """A tensor autocast made from a parameter: ToCopy (under views only) straight from AccumulateGrad;
    for a frozen parameter (no autograd history), a low-precision tensor of a frozen weight's shape."""
    if t.grad_fn is None:
        return t.dtype in (torch.bfloat16, torch.float16) and (
            tuple(t.shape) in frozen_shapes or tuple(reversed(t.shape)) in frozen_shapes
        )
    fn = t.grad_fn
    while fn is not None and fn.name() in VIEWS:
        fn = fn.next_functions[0][0] if fn.next_functions else None
    if fn is not None and fn.name() == "ToCopyBackward0":
        return any(type(n).__name__ == "AccumulateGrad" for n, _ in fn.next_functions if n is not None)
    return False


def saved_bytes(model: Any, run: Callable[[], Any]) -> tuple[int, int, set[str]]:
    """(activation bytes, weight-copy bytes, kernels) autograd keeps for one forward."""
    exclude = {p.untyped_storage().data_ptr() for p in model.parameters()}
    exclude |= {b.untyped_storage().data_ptr() for b in model.buffers()}
    kept: dict[int, tuple[int, bool]] = {}
    frozen = {tuple(p.shape) for p in model.parameters() if not p.requires_grad and p.dim() >= 2}
    mixed = [next(model.parameters()).dtype == torch.float32]

    def pack(t: torch.Tensor) -> torch.Tensor:
        st = t.untyped_storage()
        if st.data_ptr() not in exclude and t.device.type != "meta":
            copy = _weight_copy(t, frozen if mixed[0] else set())
            kept[st.data_ptr()] = (st.nbytes(), copy or kept.get(st.data_ptr(), (0, False))[1])
        return t

    with OpNames() as names, torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = run()
    del out
    acts = sum(n for n, copy in kept.values() if not copy)
    copies = sum(n for n, copy in kept.values() if copy)
    return acts, copies, names.kernels


class OpNames(TorchDispatchMode):
    """Which attention kernel ran."""

    def __init__(self) -> None:
        super().__init__()
        self.kernels: set[str] = set()

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        name = str(func)
        if "flash_attention" in name:
            self.kernels.add("flash")
        elif "efficient_attention" in name:
            self.kernels.add("efficient")
        elif "_safe_softmax" in name:
            self.kernels.add("math")
        return func(*args, **(kwargs or {}))


def inputs(sc: Scenario, device: torch.device) -> dict[str, torch.Tensor]:
    if sc.model == "whisper":
        features = torch.randn(sc.batch, 80, 300, device=device)
        ids = torch.randint(0, VOCAB, (sc.batch, sc.seq), device=device)
        return {"input_features": features, "decoder_input_ids": ids, "labels": ids}
    if sc.model == "vit":
        pixels = torch.randn(sc.batch, 3, 224, 224, device=device)
        return {"pixel_values": pixels, "labels": torch.randint(0, 10, (sc.batch,), device=device)}
    ids = torch.randint(0, VOCAB, (sc.batch, sc.seq), device=device)
    if sc.model == "t5":
        out = {"input_ids": ids, "decoder_input_ids": torch.randint(0, VOCAB, (sc.batch, sc.seq), device=device)}
        if sc.train:
            out["labels"] = ids
        return out
    return {"input_ids": ids, "labels": ids} if sc.train else {"input_ids": ids}


def make_optimizer(params: list[torch.nn.Parameter], sc: Scenario) -> torch.optim.Optimizer:
    if sc.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=1e-4, foreach=sc.impl == "foreach")
    if sc.optimizer == "sgd-momentum":
        return torch.optim.SGD(params, lr=1e-3, momentum=0.9, foreach=sc.impl == "foreach")
    raise ValueError(sc.optimizer)


def estimate(path: Path, sc: Scenario, device: torch.device) -> memory.TrainingEstimate | memory.InferenceEstimate:
    result = scan(path)
    assert result.inventory is not None, result.error
    dev = "cuda" if device.type == "cuda" else "cpu"
    freeze = ("model.embed_tokens.*",) if sc.freeze_embeddings else ()
    lora = memory.LoraOptions(rank=8, alpha=16, targets=("q_proj", "v_proj")) if sc.lora else None
    training = memory.TrainingOptions(optimizer=sc.optimizer, precision=sc.precision, batch=sc.batch, seq=sc.seq,
                                      checkpointing=sc.checkpointing, freeze=freeze, optimizer_impl=sc.impl,
                                      device=dev, lora=lora)  # fmt: skip
    compute = 4 if sc.precision == "fp32" else 2
    inference = memory.InferenceOptions(batch=sc.batch, seq=sc.seq, device=dev, compute_bytes=compute)
    analysis = analyze(result.inventory, AnalysisOptions(training=training, inference=inference))
    got = analysis.training if sc.train else analysis.inference
    assert got is not None
    return got


def measure(sc: Scenario, device: torch.device, folder: Path) -> tuple[dict[str, int], dict[str, int], str, str]:
    torch.manual_seed(0)
    model = build(sc.model)
    model.config.use_cache = True
    if not sc.train and sc.precision == "bf16-true":
        model = model.to(torch.bfloat16)  # stored as it runs
    model.save_pretrained(folder)
    est = estimate(folder / "model.safetensors", sc, device)
    if sc.precision == "bf16-true":
        model = model.to(torch.bfloat16)
    model = model.to(device)
    batch = inputs(sc, device)
    if not sc.train:
        assert isinstance(est, memory.InferenceEstimate)
        model.eval()
        existing = [*model.parameters(), *model.buffers(), *batch.values()]
        with torch.no_grad(), peak_meter(device, existing) as peak:
            out = model(**batch, use_cache=sc.model != "bert")
            measured_peak = peak()
        kv = storage_bytes(_cache_tensors(getattr(out, "past_key_values", None)))
        got = {"weights": storage_bytes(model.parameters()), "kv": kv, "peak": measured_peak}
        ests = {"weights": est.weights_bytes or 0, "kv": est.kv_cache.bytes if est.kv_cache else 0,
                "peak": est.total_bytes}  # fmt: skip
        return ests, got, est.kernel or "-", "-"
    assert isinstance(est, memory.TrainingEstimate)
    model.train()
    if sc.freeze_embeddings:
        model.get_input_embeddings().weight.requires_grad_(False)
    if sc.lora:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"]))
    if sc.checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(params, sc)
    autocast = (
        torch.autocast(device.type, dtype=torch.bfloat16) if sc.precision == "bf16-mixed" else contextlib.nullcontext()
    )

    def forward() -> Any:
        with autocast:
            return model(**batch).loss

    def step() -> None:
        loss = forward()
        loss.backward()
        del loss
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()  # creates the optimizer state
    got = {"weights": storage_bytes(params) + storage_bytes(p for p in model.parameters() if not p.requires_grad)}
    got["optimizer_state"] = storage_bytes(t for s in optimizer.state.values() for t in s.values())
    loss = forward()
    loss.backward()
    del loss
    got["gradients"] = storage_bytes(p.grad for p in model.parameters() if p.grad is not None)
    optimizer.zero_grad(set_to_none=True)
    kernels = "-"
    if not sc.checkpointing:
        got["activations"], got["weight_copies"], ran = saved_bytes(model, forward)
        kernels = "+".join(sorted(ran)) or "-"
    states = [t for s in optimizer.state.values() for t in s.values()]
    existing = [*model.parameters(), *model.buffers(), *states, *batch.values()]
    with peak_meter(device, existing) as peak:
        step()
        got["peak"] = peak()
    ests = {
        "weights": est.line("weights") + est.line("master_weights"),
        "gradients": est.line("gradients"),
        "optimizer_state": est.line("optimizer_state"),
        "activations": est.line("activations"),
        "weight_copies": est.line("weight_copies"),
        "peak": est.total_bytes,
    }
    return ests, got, est.attention, kernels


def _cache_tensors(cache: Any) -> list[torch.Tensor]:
    if cache is None:
        return []
    out: list[torch.Tensor] = []
    for layer in getattr(cache, "layers", []):
        out += [t for t in (getattr(layer, "keys", None), getattr(layer, "values", None)) if t is not None]
    for sub in ("self_attention_cache", "cross_attention_cache"):
        out += _cache_tensors(getattr(cache, sub, None))
    return out


def error(estimated: int, measured: int) -> float | None:
    return (estimated - measured) / measured if measured else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    parser.add_argument("--only", help="run only scenarios whose name contains this")
    args = parser.parse_args(argv)
    import transformers

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rows: list[tuple[Scenario, dict[str, int], dict[str, int], str, str]] = []
    started = time.time()
    for sc in SCENARIOS:
        if args.only and args.only not in sc.name:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            est, got, assumed, ran = measure(sc, device, Path(tmp))
        rows.append((sc, est, got, assumed, ran))
        print(f"{sc.name}: {time.time() - started:.0f} s", file=sys.stderr)
    where = (
        f"GPU {torch.cuda.get_device_name()}: peak = torch.cuda.max_memory_allocated"
        if device.type == "cuda"
        else "CPU (no GPU): peak = highest live tensor-storage bytes, op by op"
    )
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, {where}\n")
    header = ["scenario", "part", "estimate (MB)", "measured (MB)", "error"]
    table: list[list[str]] = []
    peaks: list[float] = []
    for sc, est, got, assumed, ran in rows:
        first = True
        for part in ("weights", "gradients", "optimizer_state", "weight_copies", "activations", "kv", "peak"):
            if part not in got or (part == "weight_copies" and not got[part] and not est[part]):
                continue
            e = error(est[part], got[part])
            label = part.replace("_", " ")
            if part == "activations":
                label += f" ({assumed}; ran {ran})"
            cell = f"{e:+.1%}" if e is not None else "-"
            if part == "peak":
                label = f"**{label}**" if args.markdown else label.upper()
                if e is not None:
                    peaks.append(e)
            table.append([sc.name if first else "", label, f"{est[part] / 1e6:,.2f}", f"{got[part] / 1e6:,.2f}", cell])
            first = False
    if args.markdown:
        print("| " + " | ".join(header) + " |")
        print("|" + "---|" * len(header))
        for row in table:
            print("| " + " | ".join(row) + " |")
    else:
        widths = [max(len(r[i]) for r in [header, *table]) for i in range(len(header))]
        for row in [header, *table]:
            cells = zip(row, widths, strict=True)
            print("  ".join(cell.ljust(w) if i < 2 else cell.rjust(w) for i, (cell, w) in enumerate(cells)))
    if peaks:
        print(f"\npeak: {len(peaks)} scenarios, median |error| {statistics.median(abs(p) for p in peaks):.1%}, "
              f"worst low {min(peaks):+.1%}, worst high {max(peaks):+.1%}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
