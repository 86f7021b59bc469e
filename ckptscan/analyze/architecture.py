"""The shape of a transformer, for memory estimates: from a ``config.json`` beside the file, from
GGUF metadata, or, failing both, from the tensor shapes (saying what had to be assumed).

Only what the estimates need: layers, hidden size, attention heads and key/value heads (grouped-query
attention), head size, feed-forward size and whether it is gated (SwiGLU), vocabulary, context
length, the norm kind and the dropout probability.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ckptscan.analyze.roles import name_parts
from ckptscan.inventory import Inventory, Tensor

CONFIG = "config.json"
# HF model types whose MLP is gated (gate_proj / up_proj / down_proj), when no tensor says so
GATED_MODEL_TYPES = frozenset(
    {"llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "gemma", "gemma2", "gemma3_text",
     "phi3", "granite", "granitemoe", "olmo", "olmo2", "cohere", "deepseek_v2", "deepseek_v3", "internlm2", "yi",
     "stablelm", "starcoder2", "exaone", "smollm3"}
)  # fmt: skip
GATE_MODULES = frozenset({"gate_proj", "ffn_gate", "w1", "wi_0", "gate_up_proj", "w3", "ffn_gate_exps"})
ATTENTION_K = frozenset({"k_proj", "attn_k", "key", "wk", "k"})
ATTENTION_Q = frozenset({"q_proj", "attn_q", "query", "wq", "q"})
FUSED_QKV = frozenset({"c_attn", "attn_qkv", "qkv_proj", "query_key_value", "qkv", "wqkv", "in_proj"})
MLP_UP = frozenset({"up_proj", "ffn_up", "c_fc", "fc1", "dense_h_to_4h", "w1", "wi", "intermediate", "lin1"})
DROPOUT_KEYS = ("attn_pdrop", "resid_pdrop", "embd_pdrop", "attention_dropout", "hidden_dropout",
                "hidden_dropout_prob", "attention_probs_dropout_prob", "dropout",
                "attention_probs_dropout")  # fmt: skip


@dataclass(frozen=True, slots=True)
class Architecture:
    source: str  # "config.json", "gguf metadata" or "tensor shapes"
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    ffn: int
    gated_mlp: bool
    vocab: int
    context: int | None  # the model's maximum positions, when known
    norm: str  # "layernorm" or "rmsnorm"
    dropout: float  # the largest dropout probability the config sets (0 when none)
    assumptions: tuple[str, ...] = ()

    @property
    def kv_dim(self) -> int:
        """Width of K (and of V) per token and layer: kv_heads x head_dim."""
        return self.kv_heads * self.head_dim

    @property
    def q_dim(self) -> int:
        return self.heads * self.head_dim

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "layers": self.layers,
            "hidden_size": self.hidden,
            "attention_heads": self.heads,
            "kv_heads": self.kv_heads,
            "head_dim": self.head_dim,
            "ffn_size": self.ffn,
            "gated_mlp": self.gated_mlp,
            "vocab_size": self.vocab,
            "context_length": self.context,
            "norm": self.norm,
            "dropout": self.dropout,
            "assumptions": list(self.assumptions),
        }


def hf_config(inventory: Inventory) -> Mapping[str, Any]:
    """The HF config beside the model; a multimodal config's ``text_config`` when the top lacks layers."""
    config = inventory.sidecars.get(CONFIG)
    if not isinstance(config, Mapping):
        return {}
    if _first_int(config, "num_hidden_layers", "n_layer", "num_layers", "n_layers") is None:
        text = config.get("text_config")
        if isinstance(text, Mapping):
            return {**{k: v for k, v in config.items() if k != "text_config"}, **text}
    return config


def tie_word_embeddings(inventory: Inventory) -> bool | None:
    value = hf_config(inventory).get("tie_word_embeddings")
    return value if isinstance(value, bool) else None


def detect(inventory: Inventory) -> Architecture | None:
    """The architecture, from the best evidence available; None when it is not a transformer we see."""
    for finder in (_from_config, _from_gguf, _from_shapes):
        found = finder(inventory)
        if found is not None:
            return found
    return None


# -- config.json ---------------------------------------------------------------------------------


def _first_int(config: Mapping[str, Any], *keys: str) -> int | None:
    for key in keys:
        value = config.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def _from_config(inventory: Inventory) -> Architecture | None:
    config = hf_config(inventory)
    layers = _first_int(config, "num_hidden_layers", "n_layer", "num_layers", "n_layers")
    hidden = _first_int(config, "hidden_size", "n_embd", "d_model", "dim", "model_dim")
    heads = _first_int(config, "num_attention_heads", "n_head", "num_heads", "n_heads")
    if layers is None or hidden is None or heads is None:
        return None
    assumptions: list[str] = []
    kv_heads = _first_int(config, "num_key_value_heads", "num_kv_heads", "n_kv_heads", "n_head_kv")
    if kv_heads is None:
        kv_heads = 1 if config.get("multi_query") is True else heads
    head_dim = _first_int(config, "head_dim", "kv_channels") or hidden // heads
    ffn = _first_int(config, "intermediate_size", "n_inner", "ffn_dim", "d_ff", "ffn_hidden_size", "encoder_ffn_dim")
    if ffn is None:
        ffn = 4 * hidden
        assumptions.append("feed-forward size not in config.json: assumed 4 x hidden")
    vocab = _first_int(config, "vocab_size", "padded_vocab_size") or _vocab_from_tensors(inventory) or 0
    if not vocab:
        assumptions.append("vocabulary size unknown: logits not counted")
    model_type = str(config.get("model_type", ""))
    gated = _gated_from_tensors(inventory)
    if gated is None:
        gated = model_type in GATED_MODEL_TYPES or "glu" in str(config.get("hidden_act", "")).lower()
    norm = "rmsnorm" if "rms_norm_eps" in config or model_type in GATED_MODEL_TYPES else "layernorm"
    dropouts = [
        float(v) for k in DROPOUT_KEYS if isinstance(v := config.get(k), (int, float)) and not isinstance(v, bool)
    ]
    return Architecture(
        source=CONFIG,
        layers=layers,
        hidden=hidden,
        heads=heads,
        kv_heads=kv_heads,
        head_dim=head_dim,
        ffn=ffn,
        gated_mlp=gated,
        vocab=vocab,
        context=_first_int(config, "max_position_embeddings", "n_positions", "n_ctx", "max_seq_len", "seq_length"),
        norm=norm,
        dropout=max(dropouts, default=0.0),
        assumptions=tuple(assumptions),
    )


# -- GGUF metadata -------------------------------------------------------------------------------


def _gguf_int(kv: Mapping[str, Any], key: str) -> int | None:
    value = kv.get(key)
    if isinstance(value, list):  # per-layer values (e.g. head_count_kv of hybrid models): the largest
        value = max((v for v in value if isinstance(v, int)), default=None)
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    return None


def _from_gguf(inventory: Inventory) -> Architecture | None:
    kv = inventory.metadata.get("kv") if inventory.format == "gguf" else None
    if not isinstance(kv, Mapping):
        return None
    arch = kv.get("general.architecture")
    if not isinstance(arch, str):
        return None
    layers = _gguf_int(kv, f"{arch}.block_count")
    hidden = _gguf_int(kv, f"{arch}.embedding_length")
    heads = _gguf_int(kv, f"{arch}.attention.head_count")
    if layers is None or hidden is None or heads is None:
        return None
    assumptions: list[str] = []
    kv_heads = _gguf_int(kv, f"{arch}.attention.head_count_kv") or heads
    head_dim = _gguf_int(kv, f"{arch}.attention.key_length") or hidden // heads
    ffn = _gguf_int(kv, f"{arch}.feed_forward_length")
    if ffn is None:
        ffn = 4 * hidden
        assumptions.append("feed_forward_length not in the metadata: assumed 4 x hidden")
    vocab = _gguf_int(kv, f"{arch}.vocab_size") or _token_count(kv.get("tokenizer.ggml.tokens"))
    vocab = vocab or _vocab_from_tensors(inventory) or 0
    gated = _gated_from_tensors(inventory)
    rms = f"{arch}.attention.layer_norm_rms_epsilon" in kv
    return Architecture(
        source="gguf metadata",
        layers=layers,
        hidden=hidden,
        heads=heads,
        kv_heads=kv_heads,
        head_dim=head_dim,
        ffn=ffn,
        gated_mlp=bool(gated) if gated is not None else arch in GATED_MODEL_TYPES,
        vocab=vocab,
        context=_gguf_int(kv, f"{arch}.context_length"),
        norm="rmsnorm" if rms else "layernorm",
        dropout=0.0,
        assumptions=tuple(assumptions),
    )


def _token_count(tokens: Any) -> int | None:
    if isinstance(tokens, Mapping) and isinstance(tokens.get("count"), int):
        return int(tokens["count"])
    if isinstance(tokens, list):
        return len(tokens)
    return None


# -- tensor shapes -------------------------------------------------------------------------------

_BLOCK_INDEX = re.compile(r"^\d+$")
_PROJECTIONS = ATTENTION_K | ATTENTION_Q | FUSED_QKV | MLP_UP


def _modules(t: Tensor) -> tuple[str, ...]:
    return name_parts(t.name)[:-1]


def _gated_from_tensors(inventory: Inventory) -> bool | None:
    names = [_modules(t) for t in inventory.tensors]
    if not names:
        return None
    if any(GATE_MODULES & set(parts) for parts in names):
        return True
    if any(MLP_UP & set(parts) for parts in names):
        return False
    return None


def _vocab_from_tensors(inventory: Inventory) -> int | None:
    for t in inventory.tensors:
        parts = name_parts(t.name)
        if len(t.shape) == 2 and set(parts) & {
            "embed_tokens",
            "wte",
            "word_embeddings",
            "token_embd",
            "tok_embeddings",
        }:
            return max(t.shape)
    return None


def _from_shapes(inventory: Inventory) -> Architecture | None:
    """Layers and widths from names and shapes alone; the number of heads cannot be seen there."""
    hidden = None
    vocab = None
    for t in inventory.tensors:
        parts = name_parts(t.name)
        if len(t.shape) == 2 and set(parts) & {"embed_tokens", "wte", "word_embeddings", "token_embd", "tok_embeddings",
                                               "embed_in"}:  # fmt: skip
            vocab, hidden = max(t.shape), min(t.shape)
            break
    if hidden is None:
        return None
    blocks: set[int] = set()
    kv_dim = q_dim = ffn = None
    for t in inventory.tensors:
        modules = _modules(t)
        if len(t.shape) != 2:
            continue
        index = next((int(p) for p in modules if _BLOCK_INDEX.match(p)), None)
        leaf_module = next((p for p in reversed(modules) if p in _PROJECTIONS), "")
        other = _other_dim(t.shape, hidden)
        if leaf_module in ATTENTION_K and other is not None:
            kv_dim = other
        elif leaf_module in ATTENTION_Q and other is not None:
            q_dim = other
        elif leaf_module in FUSED_QKV and other is not None and kv_dim is None:
            kv_dim = (other - hidden) // 2
        elif leaf_module in MLP_UP and other is not None and ffn is None:
            ffn = other
        if index is not None and leaf_module in ATTENTION_K | ATTENTION_Q | FUSED_QKV:
            blocks.add(index)
    if not blocks:
        return None
    q_dim = q_dim or hidden
    kv_dim = kv_dim or q_dim
    head_dim = next((d for d in (128, 64) if q_dim % d == 0 and kv_dim % d == 0), math.gcd(q_dim, kv_dim))
    assumptions = [f"heads not recorded in the file: assumed a head size of {head_dim} ({q_dim // head_dim} heads)"]
    if ffn is None:
        ffn = 4 * hidden
        assumptions.append("feed-forward size not found: assumed 4 x hidden")
    gated = _gated_from_tensors(inventory)
    return Architecture(
        source="tensor shapes",
        layers=len(blocks),
        hidden=hidden,
        heads=max(1, q_dim // head_dim),
        kv_heads=max(1, kv_dim // head_dim),
        head_dim=head_dim,
        ffn=ffn,
        gated_mlp=bool(gated),
        vocab=vocab or 0,
        context=None,
        norm="layernorm",
        dropout=0.0,
        assumptions=tuple(assumptions),
    )


def _other_dim(shape: tuple[int, ...], hidden: int) -> int | None:
    """Of a 2-D projection touching the hidden size, its other dimension (either orientation)."""
    a, b = shape
    if a == hidden:
        return b
    if b == hidden:
        return a
    return None
