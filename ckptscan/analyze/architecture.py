"""The shape of a transformer, for memory estimates: from a ``config.json`` beside the file, from
GGUF metadata, or, failing both, from the tensor shapes (saying what had to be assumed).

Only what the estimates need: layers, hidden size, attention heads and key/value heads (grouped-query
attention), head size, feed-forward size and whether it is gated (SwiGLU), vocabulary, context
length, the norm kind and the dropout probability; the layout of the stacks (decoder-only,
encoder-only, encoder-decoder), the modality (text, vision: patches, audio: frames), mixture-of-experts
routing and, for multimodal configs, the vision tower.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
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
# model types whose transformer is an encoder only (no causal mask, no KV cache, no LM head over every token)
ENCODER_MODEL_TYPES = frozenset(
    {"bert", "roberta", "distilbert", "albert", "electra", "deberta", "deberta-v2", "xlm-roberta", "camembert",
     "mpnet", "modernbert", "nomic_bert", "nomic-bert", "jina-bert-v2", "xlm-roberta-xl", "ernie", "megatron-bert",
     "vit", "deit", "beit", "dinov2", "vit_mae", "clip_vision_model", "siglip_vision_model", "wav2vec2", "hubert",
     "wavlm", "data2vec-audio", "data2vec-text", "data2vec-vision"}
)  # fmt: skip
VISION_MODEL_TYPES = frozenset({"vit", "deit", "beit", "dinov2", "vit_mae", "clip_vision_model",
                                "siglip_vision_model", "data2vec-vision", "swin", "convnext"})  # fmt: skip
AUDIO_MODEL_TYPES = frozenset({"whisper", "wav2vec2", "hubert", "wavlm", "data2vec-audio", "speech_to_text",
                               "seamless_m4t"})  # fmt: skip
GGUF_ENCODER_ARCHS = frozenset({"bert", "nomic-bert", "jina-bert-v2", "t5encoder"})
KINDS = ("decoder-only", "encoder-only", "encoder-decoder")
MODALITIES = ("text", "vision", "audio", "multimodal")
ATTENTION_DROPOUT_KEYS = ("attn_pdrop", "attention_dropout", "attention_probs_dropout_prob", "attention_probs_dropout")
DROPOUT_KEYS = ("attn_pdrop", "resid_pdrop", "embd_pdrop", "attention_dropout", "hidden_dropout",
                "hidden_dropout_prob", "attention_probs_dropout_prob", "dropout",
                "attention_probs_dropout")  # fmt: skip


@dataclass(frozen=True, slots=True)
class Architecture:
    """A model's shape (layers, widths, heads, context...): what the memory estimates need."""

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
    # stacks: for "encoder-decoder", ``layers`` is the decoder's and ``encoder_layers`` the encoder's; for
    # "encoder-only", ``layers`` is the encoder's and nothing is generated (no KV cache)
    kind: str = "decoder-only"
    encoder_layers: int = 0
    modality: str = "text"  # "text", "vision" (image patches), "audio" (frames), "multimodal" (see ``vision``)
    model_type: str = ""  # the config's model_type / GGUF general.architecture ("" from shapes)
    activation: str = ""  # hidden_act as the config names it ("" when unknown)
    # mixture of experts: None when the model is dense
    experts: int | None = None  # routed experts per MoE layer (num_local_experts / num_experts)
    experts_per_token: int | None = None  # num_experts_per_tok (top-k)
    shared_experts: int | None = None  # experts every token goes through (DeepSeek n_shared_experts, Qwen-MoE: 1)
    expert_ffn: int | None = None  # width of one expert's MLP (moe_intermediate_size; Mixtral: intermediate_size)
    shared_expert_ffn: int | None = None  # width of the shared expert(s) MLP, all together
    dense_layers: int = 0  # leading layers with a dense MLP (DeepSeek first_k_dense_replace)
    attention_dropout: float = 0.0  # dropout on the attention probabilities (decides the SDPA kernel)
    # inputs that are not tokens: the encoder sequence they make
    image_size: int | None = None
    patch_size: int | None = None
    encoder_seq: int | None = None  # tokens the encoder sees (ViT: patches + 1; Whisper: max_source_positions)
    tie_embeddings: bool | None = None
    vision: Architecture | None = None  # the vision tower of a multimodal model (nested vision_config)

    @property
    def moe(self) -> bool:
        return bool(self.experts)

    @property
    def guessed(self) -> bool:
        """True when the shape of the model was read off tensor shapes (heads and more assumed)."""
        return self.source == "tensor shapes"

    @property
    def kv_dim(self) -> int:
        """Width of K (and of V) per token and layer: kv_heads x head_dim."""
        return self.kv_heads * self.head_dim

    @property
    def q_dim(self) -> int:
        return self.heads * self.head_dim


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


def _raw_config(inventory: Inventory) -> Mapping[str, Any]:
    config = inventory.sidecars.get(CONFIG)
    return config if isinstance(config, Mapping) else {}


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
    raw = _raw_config(inventory)
    config = hf_config(inventory)
    found = _arch_from_config(config, inventory)
    vision_config = raw.get("vision_config")
    vision = _arch_from_config(vision_config, None) if isinstance(vision_config, Mapping) else None
    if vision is not None:
        vision = replace(vision, kind="encoder-only", modality="vision", vocab=0)
    if found is None:
        return vision
    if vision is not None:
        found = replace(found, modality="multimodal", vision=vision)
    return found


def _number(config: Mapping[str, Any], *keys: str) -> float | None:
    for key in keys:
        value = config.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    return None


def _arch_from_config(config: Mapping[str, Any], inventory: Inventory | None) -> Architecture | None:
    model_type = str(config.get("model_type", ""))
    encoder_decoder = config.get("is_encoder_decoder") is True
    if encoder_decoder:
        layers = _first_int(config, "num_decoder_layers", "decoder_layers", "num_layers", "num_hidden_layers",
                            "n_layer")  # fmt: skip
        encoder_layers = _first_int(config, "encoder_layers", "num_layers", "num_hidden_layers") or 0
        heads = _first_int(config, "decoder_attention_heads", "num_heads", "num_attention_heads", "n_head")
    else:
        layers = _first_int(config, "num_hidden_layers", "n_layer", "num_layers", "n_layers")
        encoder_layers = 0
        heads = _first_int(config, "num_attention_heads", "n_head", "num_heads", "n_heads")
    hidden = _first_int(config, "hidden_size", "n_embd", "d_model", "dim", "model_dim")
    if layers is None or hidden is None or heads is None:
        return None
    assumptions: list[str] = []
    kv_heads = _first_int(config, "num_key_value_heads", "num_kv_heads", "n_kv_heads", "n_head_kv")
    if kv_heads is None:
        kv_heads = 1 if config.get("multi_query") is True else heads
    head_dim = _first_int(config, "head_dim", "kv_channels", "d_kv") or hidden // heads
    ffn = _first_int(config, "intermediate_size", "n_inner", "ffn_dim", "d_ff", "ffn_hidden_size", "decoder_ffn_dim",
                     "encoder_ffn_dim", "hidden_dim")  # fmt: skip
    if ffn is None:
        ffn = 4 * hidden
        assumptions.append("feed-forward size not in config.json: assumed 4 x hidden")
    vision = model_type in VISION_MODEL_TYPES or ("image_size" in config and "patch_size" in config)
    vocab = _first_int(config, "vocab_size", "padded_vocab_size")
    if vocab is None and inventory is not None and not vision:
        vocab = _vocab_from_tensors(inventory)
    if not vocab and not vision:
        assumptions.append("vocabulary size unknown: logits not counted")
    activation = str(config.get("hidden_act") or config.get("activation_function") or config.get("feed_forward_proj")
                     or config.get("hidden_activation") or "")  # fmt: skip
    gated = _gated_from_tensors(inventory) if inventory is not None else None
    if gated is None:
        gated = model_type in GATED_MODEL_TYPES or "glu" in activation.lower() or activation.startswith("gated-")
    norm = "rmsnorm" if "rms_norm_eps" in config or model_type in GATED_MODEL_TYPES or model_type in (
        "t5", "mt5", "umt5") else "layernorm"  # fmt: skip
    dropouts = [
        float(v) for k in DROPOUT_KEYS if isinstance(v := config.get(k), (int, float)) and not isinstance(v, bool)
    ]
    attention_dropouts = [
        float(v)
        for k in ATTENTION_DROPOUT_KEYS
        if isinstance(v := config.get(k), (int, float)) and not isinstance(v, bool)
    ]
    if model_type.startswith("t5") or model_type in ("mt5", "umt5"):
        dropouts.append(_number(config, "dropout_rate") or 0.0)
        attention_dropouts.append(_number(config, "dropout_rate") or 0.0)
    if encoder_decoder:
        kind = "encoder-decoder"
    elif model_type in ENCODER_MODEL_TYPES or vision or _encoder_architectures(config):
        kind = "encoder-only"
    else:
        kind = "decoder-only"
    modality = "vision" if vision else "audio" if model_type in AUDIO_MODEL_TYPES else "text"
    image_size, patch_size = _first_int(config, "image_size"), _first_int(config, "patch_size")
    encoder_seq = None
    if vision and image_size and patch_size:
        encoder_seq = (image_size // patch_size) ** 2 + (0 if model_type.startswith("siglip") else 1)
    elif modality == "audio":
        encoder_seq = _first_int(config, "max_source_positions")
    experts = _first_int(config, "num_local_experts", "num_experts", "n_routed_experts", "moe_num_experts")
    if experts is not None and experts <= 1:
        experts = None
    per_token = _first_int(config, "num_experts_per_tok", "moe_top_k", "top_k") if experts else None
    shared = _first_int(config, "n_shared_experts", "num_shared_experts") if experts else None
    shared_ffn = _first_int(config, "shared_expert_intermediate_size") if experts else None
    expert_ffn = _first_int(config, "moe_intermediate_size", "expert_intermediate_size") if experts else None
    if experts:
        expert_ffn = expert_ffn or ffn
        if shared_ffn and not shared:
            shared = 1  # Qwen-MoE: one shared expert of shared_expert_intermediate_size
        if shared and not shared_ffn:
            shared_ffn = shared * expert_ffn
        if per_token is None:
            per_token = 2
            assumptions.append("experts per token not in config.json: assumed 2")
    context = _first_int(config, "max_position_embeddings", "n_positions", "n_ctx", "max_seq_len", "seq_length",
                         "max_target_positions")  # fmt: skip
    if vision and encoder_seq:
        context = encoder_seq
    tie = config.get("tie_word_embeddings")
    return Architecture(
        source=CONFIG,
        layers=layers,
        hidden=hidden,
        heads=heads,
        kv_heads=kv_heads,
        head_dim=head_dim,
        ffn=ffn,
        gated_mlp=gated,
        vocab=0 if vision else vocab or 0,
        context=context,
        norm=norm,
        dropout=max(dropouts, default=0.0),
        assumptions=tuple(assumptions),
        kind=kind,
        encoder_layers=encoder_layers if encoder_decoder else 0,
        modality=modality,
        model_type=model_type,
        activation=activation,
        experts=experts,
        experts_per_token=per_token,
        shared_experts=shared,
        expert_ffn=expert_ffn,
        shared_expert_ffn=shared_ffn,
        dense_layers=_first_int(config, "first_k_dense_replace") or 0 if experts else 0,
        attention_dropout=max(attention_dropouts, default=0.0),
        image_size=image_size if vision else None,
        patch_size=patch_size if vision else None,
        encoder_seq=encoder_seq,
        tie_embeddings=tie if isinstance(tie, bool) else None,
    )


def _encoder_architectures(config: Mapping[str, Any]) -> bool:
    """HF ``architectures`` naming an encoder head (``BertForMaskedLM``, ``...ForSequenceClassification``)."""
    names = config.get("architectures")
    if not isinstance(names, list) or not names:
        return False
    heads = ("ForMaskedLM", "ForSequenceClassification", "ForTokenClassification", "ForImageClassification",
             "ForQuestionAnswering", "ForMultipleChoice")  # fmt: skip
    return all(isinstance(n, str) and n.endswith(heads) for n in names) and not any("CausalLM" in str(n) for n in names)


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
    experts = _gguf_int(kv, f"{arch}.expert_count")
    experts = experts if experts and experts > 1 else None
    expert_ffn = _gguf_int(kv, f"{arch}.expert_feed_forward_length") if experts else None
    shared = _gguf_int(kv, f"{arch}.expert_shared_count") if experts else None
    shared_ffn = _gguf_int(kv, f"{arch}.expert_shared_feed_forward_length") if experts else None
    if experts:
        expert_ffn = expert_ffn or ffn
        if shared_ffn and not shared:
            shared = 1
        if shared and not shared_ffn:
            shared_ffn = shared * expert_ffn
    encoder = arch in GGUF_ENCODER_ARCHS or kv.get(f"{arch}.attention.causal") is False
    decoder_start = f"{arch}.decoder_start_token_id" in kv or arch == "t5"
    kind = "encoder-decoder" if decoder_start else "encoder-only" if encoder else "decoder-only"
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
        kind=kind,
        encoder_layers=layers if kind == "encoder-decoder" else 0,
        model_type=arch,
        experts=experts,
        experts_per_token=_gguf_int(kv, f"{arch}.expert_used_count") if experts else None,
        shared_experts=shared,
        expert_ffn=expert_ffn,
        shared_expert_ffn=shared_ffn,
        dense_layers=(_gguf_int(kv, f"{arch}.leading_dense_block_count") or 0) if experts else 0,
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
    experts = _experts_from_names(inventory)
    if experts:
        assumptions.append(f"{experts} experts per layer seen in tensor names: assumed 2 per token")
    prefixes = {p for t in inventory.tensors for p in name_parts(t.name)[:2]}
    kind = "encoder-decoder" if {"encoder", "decoder"} <= prefixes else "decoder-only"
    if kind == "encoder-decoder":
        assumptions.append("encoder and decoder stacks seen in tensor names: assumed equal depth")
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
        kind=kind,
        encoder_layers=len(blocks) if kind == "encoder-decoder" else 0,
        experts=experts,
        experts_per_token=2 if experts else None,
        expert_ffn=ffn if experts else None,
    )


_EXPERT = re.compile(r"(?:^|\.)experts\.(\d+)\.")


def _experts_from_names(inventory: Inventory) -> int | None:
    """Routed experts per layer: distinct ``experts.N`` indices, or the leading dimension of GGUF's stacked
    ``ffn_*_exps`` tensors."""
    seen: set[int] = set()
    for t in inventory.tensors:
        found = _EXPERT.search(t.name)
        if found:
            seen.add(int(found.group(1)))
        elif "_exps." in t.name and len(t.shape) == 3:
            return t.shape[0]
    return len(seen) if len(seen) > 1 else None


def _other_dim(shape: tuple[int, ...], hidden: int) -> int | None:
    """Of a 2-D projection touching the hidden size, its other dimension (either orientation)."""
    a, b = shape
    if a == hidden:
        return b
    if b == hidden:
        return a
    return None
