#!/usr/bin/env python3
"""Build the labelled roles corpus: tiny real architectures, saved as users meet them, every tensor
labelled from the live module that owns it.

    python tools/make_roles_corpus.py            # every model, into testdata/roles/
    python tools/make_roles_corpus.py bert vit   # only some

Each model is built from a config by its own library (transformers, diffusers, timm, torchvision)
with random weights from a fixed seed, saved in one layout (``save_pretrained`` safetensors, a
``torch.save`` state dict ``.bin``, a training checkpoint with optimizer state, a GPTQ-style or a
bitsandbytes-style quantized layout) and written to ``testdata/roles/<name>/`` with ``labels.json``:

- ``parameters``: ``sum(p.numel() for p in model.parameters())`` (tied weights once: torch
  deduplicates shared parameters); for the quantized layouts the same number, which is the documented
  answer (a packed weight counts as the weights it holds, its scales and zero points are not parameters);
- ``tensors``: for every tensor in the saved file, the role it has, decided from the module that owns it
  in the live model (its class and the attribute name), never from the tensor's name: a parameter of a
  ``*Norm*`` module is a norm, of an ``Embedding`` an embedding, of the module the model reports as its
  output layer the output head, of a ``Linear``/``Conv*`` a weight or bias; a buffer is a buffer; the
  few parameters that live directly on a model-specific module are labelled in ``OWN_PARAMETERS`` by
  (class, attribute). A parameter nobody labelled stops the generator.

Requires torch, transformers, diffusers, timm and torchvision; the tests that read the corpus need none.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "testdata" / "roles"

# Parameters held directly by a model-specific module: (class name, attribute) -> role.
OWN_PARAMETERS: dict[tuple[str, str], str] = {
    ("MixtralExperts", "gate_up_proj"): "weight",
    ("MixtralExperts", "down_proj"): "weight",
    ("Qwen2MoeExperts", "gate_up_proj"): "weight",
    ("Qwen2MoeExperts", "down_proj"): "weight",
    ("MixtralTopKRouter", "weight"): "weight",
    ("Qwen2MoeTopKRouter", "weight"): "weight",
    ("ViTEmbeddings", "cls_token"): "embedding",
    ("ViTEmbeddings", "position_embeddings"): "embedding",
    ("CLIPVisionEmbeddings", "class_embedding"): "embedding",
    ("CLIPModel", "logit_scale"): "weight",
    ("Wav2Vec2Model", "masked_spec_embed"): "embedding",
    ("ParametrizationList", "original0"): "weight",
    ("ParametrizationList", "original1"): "weight",
    ("VisionTransformer", "cls_token"): "embedding",
    ("VisionTransformer", "pos_embed"): "embedding",
    ("Encoder", "pos_embedding"): "embedding",  # torchvision ViT
    ("VisionTransformer", "class_token"): "embedding",  # torchvision ViT
    ("SwinRelativePositionBias", "relative_position_bias_table"): "embedding",
    ("LayerScale", "gamma"): "weight",
    ("Conv1D", "weight"): "weight",  # GPT-2's transposed Linear
    ("Conv1D", "bias"): "bias",
    ("DebertaV2Embeddings", "position_embeddings"): "embedding",
    ("T5LayerNorm", "weight"): "norm",
    ("ConvNextLayer", "layer_scale_parameter"): "weight",
    ("BertLMPredictionHead", "bias"): "output_head",  # the decoder's bias, saved under the head module
    ("LegacyDebertaV2LMPredictionHead", "bias"): "output_head",
    ("ConvNeXtBlock", "gamma"): "weight",  # timm's layer scale
    ("GptOssExperts", "gate_up_proj"): "weight",
    ("GptOssExperts", "down_proj"): "weight",
    ("GptOssExperts", "gate_up_proj_bias"): "bias",
    ("GptOssExperts", "down_proj_bias"): "bias",
    ("GptOssTopKRouter", "weight"): "weight",
    ("GptOssTopKRouter", "bias"): "bias",
    ("GptOssAttention", "sinks"): "weight",  # learned attention-sink logits, one per head
    ("DeepseekV3Experts", "gate_up_proj"): "weight",
    ("DeepseekV3Experts", "down_proj"): "weight",
    ("DeepseekV3TopkRouter", "weight"): "weight",
    ("VisionTransformerDistilled", "cls_token"): "embedding",
    ("VisionTransformerDistilled", "dist_token"): "embedding",
    ("VisionTransformerDistilled", "pos_embed"): "embedding",
    ("MultiheadAttention", "in_proj_weight"): "weight",
    ("MultiheadAttention", "in_proj_bias"): "bias",
}


@dataclass(frozen=True, slots=True)
class Built:
    model: Any
    library: str
    heads: tuple[Any, ...]  # the modules that are the model's output layer(s)
    config: dict[str, Any] | None  # written as config.json (save_pretrained writes its own)
    layout: str  # safetensors | bin | training | gptq | bnb4


# -- the models ------------------------------------------------------------------------------------


def _hf(cls_name: str, config_name: str, layout: str = "safetensors", **config: Any) -> Callable[[], Built]:
    def build() -> Built:
        import transformers

        cfg = getattr(transformers, config_name)(**config)
        model = getattr(transformers, cls_name)(cfg)
        out = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        heads = tuple(h for h in (out, *_classifiers(model)) if h is not None)
        return Built(model, "transformers", heads, None, layout)

    return build


def _classifiers(model: Any) -> list[Any]:
    """The classification layer: the module itself, or the last Linear of a head made of several
    (RoBERTa's ``dense`` + ``out_proj``, ``Sequential(Flatten, Linear)``)."""
    import torch

    found = []
    for name in ("classifier", "score", "qa_outputs", "lm_head"):
        module = getattr(model, name, None)
        if module is None:
            continue
        if hasattr(module, "weight"):
            found.append(module)
        else:
            linears = [m for m in module.modules() if isinstance(m, torch.nn.Linear)]
            found.extend(linears[-1:])
    return found


LM = {"vocab_size": 96, "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2}
ENC = {"vocab_size": 96, "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
       "max_position_embeddings": 32}  # fmt: skip

# the encoder-decoder sizes BART and Whisper share
SEQ2SEQ: dict[str, Any] = dict(
    vocab_size=96,
    d_model=16,
    encoder_layers=1,
    decoder_layers=1,
    encoder_attention_heads=2,
    decoder_attention_heads=2,
    encoder_ffn_dim=32,
    decoder_ffn_dim=32,
)
WHISPER: dict[str, Any] = dict(
    SEQ2SEQ,
    num_mel_bins=8,
    max_source_positions=16,
    max_target_positions=16,
    decoder_start_token_id=1,
    pad_token_id=0,
    bos_token_id=1,
    eos_token_id=2,
)


def _diffusers(kind: str) -> Callable[[], Built]:
    def build() -> Built:
        import diffusers

        if kind == "unet":
            model = diffusers.UNet2DConditionModel(
                sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(8, 16),
                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D",
                "CrossAttnUpBlock2D"), cross_attention_dim=8, attention_head_dim=2, norm_num_groups=4,
            )  # fmt: skip
        elif kind == "vae":
            model = diffusers.AutoencoderKL(
                in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16), latent_channels=4,
                norm_num_groups=4, layers_per_block=1,
            )  # fmt: skip
        else:
            model = diffusers.SD3Transformer2DModel(
                sample_size=8, patch_size=2, in_channels=4, num_layers=2, attention_head_dim=4, num_attention_heads=2,
                joint_attention_dim=8, caption_projection_dim=8, pooled_projection_dim=8, out_channels=4,
                pos_embed_max_size=8,
            )  # fmt: skip
        return Built(model, "diffusers", (), None, "safetensors")

    return build


def _timm(name: str, layout: str = "safetensors", **kwargs: Any) -> Callable[[], Built]:
    def build() -> Built:
        import timm

        if name == "efficientnet_b0":  # its widths are fixed by name; the generator scales them down
            from timm.models.efficientnet import _gen_efficientnet

            model = _gen_efficientnet(name, channel_multiplier=0.1, depth_multiplier=0.1, **kwargs)
        else:
            model = timm.create_model(name, pretrained=False, **kwargs)
        heads = model.get_classifier()
        heads = heads if isinstance(heads, tuple) else (heads,)
        return Built(model, "timm", heads, {"architecture": name, **kwargs}, layout)

    return build


def _torchvision(kind: str, layout: str = "safetensors") -> Callable[[], Built]:
    def build() -> Built:
        import torchvision

        if kind == "resnet-frozenbn":
            from torchvision.models.resnet import BasicBlock, ResNet
            from torchvision.ops.misc import FrozenBatchNorm2d

            model = ResNet(BasicBlock, [1, 1, 1, 1], num_classes=5, norm_layer=FrozenBatchNorm2d)
            _shrink_resnet(model)
            return Built(model, "torchvision", (model.fc,), {"architecture": "resnet-frozenbn"}, layout)
        if kind == "vit":
            model = torchvision.models.VisionTransformer(image_size=8, patch_size=4, num_layers=1, num_heads=2,
                                                         hidden_dim=8, mlp_dim=16, num_classes=3)  # fmt: skip
            return Built(model, "torchvision", (model.heads.head,), {"architecture": "vit"}, layout)
        model = torchvision.models.mobilenet_v3_small(num_classes=4, width_mult=0.1)
        return Built(model, "torchvision", (model.classifier[-1],), {"architecture": "mobilenet_v3_small"}, layout)

    return build


def _shrink_resnet(model: Any) -> None:
    """torchvision's ResNet has fixed widths (64..512): swap in narrow layers of the same classes. The
    stem and the first stage use FrozenBatchNorm2d, the later stages BatchNorm2d, as detectron2 and
    torchvision detection backbones do when the early layers are frozen (``freeze_at``/``trainable_layers``)."""
    import torch
    from torchvision.models.resnet import BasicBlock
    from torchvision.ops.misc import FrozenBatchNorm2d

    widths = (4, 8, 8, 8)
    model.conv1 = torch.nn.Conv2d(3, 4, 7, 2, 3, bias=False)
    model.bn1 = FrozenBatchNorm2d(4)
    inplanes = 4
    for i, width in enumerate(widths):
        stride = 1 if i == 0 else 2
        down = None
        if stride != 1 or inplanes != width:
            conv = torch.nn.Conv2d(inplanes, width, 1, stride, bias=False)
            down = torch.nn.Sequential(conv, FrozenBatchNorm2d(width))
        norm = FrozenBatchNorm2d if i == 0 else torch.nn.BatchNorm2d
        if down is not None and norm is not FrozenBatchNorm2d:
            down[1] = torch.nn.BatchNorm2d(width)
        setattr(model, f"layer{i + 1}", torch.nn.Sequential(BasicBlock(inplanes, width, stride, down,
                                                                       norm_layer=norm)))  # fmt: skip
        inplanes = width
    model.fc = torch.nn.Linear(inplanes, 5)


MODELS: dict[str, Callable[[], Built]] = {
    "llama": _hf("LlamaForCausalLM", "LlamaConfig", num_key_value_heads=1, **LM),
    "llama-tied-bin": _hf("LlamaForCausalLM", "LlamaConfig", "bin", tie_word_embeddings=True, **LM),
    "mistral": _hf("MistralForCausalLM", "MistralConfig", num_key_value_heads=1, **LM),
    "qwen2": _hf("Qwen2ForCausalLM", "Qwen2Config", num_key_value_heads=1, **LM),
    "gemma": _hf("GemmaForCausalLM", "GemmaConfig", num_key_value_heads=1, head_dim=8, **LM),
    "phi3": _hf("Phi3ForCausalLM", "Phi3Config", pad_token_id=0, **LM),
    "mixtral": _hf(
        "MixtralForCausalLM", "MixtralConfig", num_key_value_heads=1, num_local_experts=4, num_experts_per_tok=2, **LM
    ),
    "qwen2-moe": _hf(
        "Qwen2MoeForCausalLM",
        "Qwen2MoeConfig",
        num_key_value_heads=1,
        num_experts=4,
        num_experts_per_tok=2,
        moe_intermediate_size=8,
        shared_expert_intermediate_size=16,
        **LM,
    ),
    "gpt-oss": _hf(
        "GptOssForCausalLM",
        "GptOssConfig",
        num_key_value_heads=1,
        num_local_experts=4,
        num_experts_per_tok=2,
        head_dim=8,
        **{**LM, "intermediate_size": 24},
    ),
    "deepseek-v3": _hf(
        "DeepseekV3ForCausalLM",
        "DeepseekV3Config",
        num_key_value_heads=1,
        n_routed_experts=4,
        num_experts_per_tok=2,
        moe_intermediate_size=8,
        n_shared_experts=1,
        first_k_dense_replace=1,
        kv_lora_rank=8,
        q_lora_rank=8,
        qk_rope_head_dim=4,
        qk_nope_head_dim=4,
        v_head_dim=8,
        n_group=1,
        topk_group=1,
        **LM,
    ),
    "gpt2": _hf("GPT2LMHeadModel", "GPT2Config", vocab_size=96, n_embd=16, n_layer=2, n_head=2, n_positions=32),
    "gpt2-bin": _hf(
        "GPT2LMHeadModel", "GPT2Config", "bin", vocab_size=96, n_embd=16, n_layer=2, n_head=2, n_positions=32
    ),
    "gpt-neox": _hf("GPTNeoXForCausalLM", "GPTNeoXConfig", max_position_embeddings=32, **LM),
    "opt": _hf(
        "OPTForCausalLM",
        "OPTConfig",
        vocab_size=96,
        hidden_size=16,
        ffn_dim=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=32,
        word_embed_proj_dim=16,
    ),
    "bloom": _hf("BloomForCausalLM", "BloomConfig", vocab_size=96, hidden_size=16, n_layer=2, n_head=2),
    "falcon": _hf(
        "FalconForCausalLM", "FalconConfig", vocab_size=96, hidden_size=16, num_hidden_layers=2, num_attention_heads=2
    ),
    "bert": _hf("BertForMaskedLM", "BertConfig", **ENC),
    "bert-bin": _hf("BertForMaskedLM", "BertConfig", "bin", **ENC),
    "roberta-cls": _hf("RobertaForSequenceClassification", "RobertaConfig", num_labels=3, pad_token_id=1, **ENC),
    "distilbert": _hf(
        "DistilBertForMaskedLM",
        "DistilBertConfig",
        vocab_size=96,
        dim=16,
        hidden_dim=32,
        n_layers=2,
        n_heads=2,
        max_position_embeddings=32,
    ),
    "electra": _hf("ElectraForPreTraining", "ElectraConfig", embedding_size=16, **ENC),
    "deberta-v2": _hf("DebertaV2ForMaskedLM", "DebertaV2Config", **ENC),
    "t5": _hf(
        "T5ForConditionalGeneration", "T5Config", vocab_size=96, d_model=16, d_kv=8, d_ff=32, num_layers=2, num_heads=2
    ),
    "bart": _hf("BartForConditionalGeneration", "BartConfig", max_position_embeddings=32, **SEQ2SEQ),
    "whisper": _hf("WhisperForConditionalGeneration", "WhisperConfig", **WHISPER),
    "whisper-bin": _hf("WhisperForConditionalGeneration", "WhisperConfig", "bin", **WHISPER),
    "vit": _hf(
        "ViTForImageClassification",
        "ViTConfig",
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=16,
        patch_size=8,
        num_labels=3,
    ),
    "clip": _hf(
        "CLIPModel",
        "CLIPConfig",
        text_config={
            "vocab_size": 96,
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "max_position_embeddings": 16,
            "projection_dim": 8,
        },
        vision_config={
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": 16,
            "patch_size": 8,
            "projection_dim": 8,
        },
        projection_dim=8,
    ),
    "wav2vec2": _hf(
        "Wav2Vec2ForCTC",
        "Wav2Vec2Config",
        vocab_size=32,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        conv_dim=(8, 8),
        conv_stride=(5, 2),
        conv_kernel=(10, 3),
        num_conv_pos_embeddings=4,
        num_conv_pos_embedding_groups=2,
    ),
    "swin": _hf(
        "SwinForImageClassification",
        "SwinConfig",
        image_size=16,
        patch_size=4,
        embed_dim=8,
        depths=[1, 1],
        num_heads=[1, 2],
        window_size=2,
        num_labels=3,
    ),
    "convnext-hf": _hf(
        "ConvNextForImageClassification",
        "ConvNextConfig",
        hidden_sizes=[8, 16],
        depths=[1, 1],
        num_stages=2,
        num_labels=3,
    ),
    "resnet-hf": _hf(
        "ResNetForImageClassification",
        "ResNetConfig",
        embedding_size=8,
        hidden_sizes=[8, 16],
        depths=[1, 1],
        num_labels=3,
    ),
    "llama-training": _hf("LlamaForCausalLM", "LlamaConfig", "training", num_key_value_heads=1, **LM),
    "llama-gptq": _hf(
        "LlamaForCausalLM",
        "LlamaConfig",
        "gptq",
        num_key_value_heads=1,
        **{**LM, "hidden_size": 32, "intermediate_size": 64},
    ),
    "llama-bnb4": _hf(
        "LlamaForCausalLM",
        "LlamaConfig",
        "bnb4",
        num_key_value_heads=1,
        **{**LM, "hidden_size": 32, "intermediate_size": 64},
    ),
    "unet": _diffusers("unet"),
    "vae": _diffusers("vae"),
    "sd3-transformer": _diffusers("sd3"),
    "timm-vit": _timm(
        "vit_tiny_patch16_224",
        img_size=16,
        patch_size=8,
        embed_dim=16,
        depth=1,
        num_heads=2,
        num_classes=3,
        init_values=1e-5,
    ),
    "timm-convnext": _timm("convnext_atto", dims=(8, 16, 16, 16), depths=(1, 1, 1, 1), num_classes=3),
    "timm-efficientnet": _timm("efficientnet_b0", num_classes=3),
    "timm-deit-distilled": _timm(
        "deit_tiny_distilled_patch16_224", img_size=16, patch_size=8, embed_dim=16, depth=1, num_heads=2, num_classes=3
    ),
    "timm-resnet-training": _timm("resnet10t", "training", num_classes=3, stem_width=4, channels=(4, 8, 8, 8)),
    "torchvision-resnet-frozenbn": _torchvision("resnet-frozenbn"),
    "torchvision-vit": _torchvision("vit"),
    "torchvision-mobilenet": _torchvision("mobilenet"),
}


UNLABELLED: list[str] = []


# -- labels --------------------------------------------------------------------------------------


def label_of(model: Any, name: str, heads: tuple[Any, ...], kind: str) -> dict[str, str]:
    """The role of state-dict entry ``name``, from the module that owns it in the live model."""
    import torch

    module_name, _, attr = name.rpartition(".")
    owner = model.get_submodule(module_name) if module_name else model
    cls = type(owner).__name__
    if kind == "buffer":
        role = "buffer"
    elif any(owner is h for h in heads):
        role = "output_head"
    elif (cls, attr) in OWN_PARAMETERS:
        role = OWN_PARAMETERS[(cls, attr)]
    elif "Norm" in cls or cls in ("LayerNorm", "GroupNorm"):
        role = "norm"
    elif isinstance(owner, torch.nn.Embedding):
        role = "embedding"
    elif isinstance(owner, (torch.nn.Linear, torch.nn.modules.conv._ConvNd)) and attr in ("weight", "bias"):
        role = attr
    else:
        UNLABELLED.append(f"{type(model).__name__}: {name} ({cls}.{attr})")
        role = "?"

    return {"role": role, "module": cls, "attr": attr, "kind": kind}


def labels(model: Any, heads: tuple[Any, ...]) -> dict[str, dict[str, str]]:
    params = {n for n, _ in model.named_parameters(remove_duplicate=False)}
    out = {}
    for name in model.state_dict(keep_vars=True):
        out[name] = label_of(model, name, heads, "parameter" if name in params else "buffer")
    return out


# -- layouts -------------------------------------------------------------------------------------


def save(name: str, built: Built, out: Path) -> dict[str, Any]:
    import torch

    model = built.model
    model.eval()
    state = labels(model, built.heads)
    count = sum(p.numel() for p in model.parameters())
    folder = out / name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    tensors: dict[str, dict[str, str]]
    if built.layout == "safetensors":
        if hasattr(model, "save_pretrained"):
            model.save_pretrained(folder, safe_serialization=True)
            written = _safetensors_names(folder)
            if not set(written) <= set(state):
                # transformers 5 converts some layouts back on save (Mixtral's fused expert banks to
                # per-expert w1/w2/w3): keep the live layout, which is what the model holds in memory
                for path in folder.glob("*.safetensors"):
                    path.unlink()
                from safetensors.torch import save_model

                save_model(model, str(folder / "model.safetensors"), metadata={"format": "pt"})
                written = _safetensors_names(folder)
        else:
            from safetensors.torch import save_model

            save_model(model, str(folder / "model.safetensors"))
            written = _safetensors_names(folder)
        tensors = {n: state[n] for n in written}
    elif built.layout == "bin":
        model.config.to_json_file(folder / "config.json")
        torch.save(model.state_dict(), folder / "pytorch_model.bin")
        tensors = state
    elif built.layout == "training":
        tensors = _training(model, state, folder)
    elif built.layout == "gptq":
        tensors = _gptq(model, state, folder)
    elif built.layout == "bnb4":
        tensors = _bnb4(model, state, folder)
    else:
        raise SystemExit(f"unknown layout {built.layout}")
    if built.config is not None:
        (folder / "config.json").write_text(json.dumps(built.config, indent=1) + "\n")
    missing = set(tensors) - {n for n in tensors}
    assert not missing
    doc = {
        "model": name,
        "library": built.library,
        "class": type(model).__name__,
        "layout": built.layout,
        "parameters": count,
        "tensors": tensors,
    }
    (folder / "labels.json").write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    return doc


def _safetensors_names(folder: Path) -> list[str]:
    from safetensors import safe_open

    names: list[str] = []
    for path in sorted(folder.glob("*.safetensors")):
        with safe_open(str(path), "pt") as f:
            names.extend(f.keys())
    return names


def _training(model: Any, state: dict[str, dict[str, str]], folder: Path) -> dict[str, dict[str, str]]:
    """One Adam step, then a Lightning-like dict: model state, optimizer state, counters."""
    import torch

    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for p in model.parameters():
        p.grad = torch.full_like(p, 0.01)
    optimizer.step()
    checkpoint = {"epoch": 1, "global_step": 1, "state_dict": model.state_dict(),
                  "optimizer": optimizer.state_dict()}  # fmt: skip
    torch.save(checkpoint, folder / "checkpoint.pt")
    if hasattr(model, "config") and hasattr(model.config, "to_json_file"):
        model.config.to_json_file(folder / "config.json")
    tensors = {f"state_dict.{n}": label for n, label in state.items()}
    for index, slots in optimizer.state_dict()["state"].items():
        for slot in slots:
            tensors[f"optimizer.state.{index}.{slot}"] = {"role": "optimizer_state", "module": "AdamW",
                                                          "attr": slot, "kind": "optimizer"}  # fmt: skip
    return tensors


def _quantizable(model: Any) -> list[str]:
    """The Linear layers a GPTQ/bitsandbytes quantizer replaces: those in the decoder blocks."""
    import torch

    return [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and ".layers." in f".{n}"]


def _gptq(model: Any, state: dict[str, dict[str, str]], folder: Path) -> dict[str, dict[str, str]]:
    """AutoGPTQ's layout, 4 bits, group 16: qweight [in/8, out] I32, qzeros [groups, out/8] I32,
    scales [groups, out] F16, g_idx [in] I32; the rest as save_pretrained writes it."""
    import torch
    from safetensors.torch import save_file

    bits, group = 4, 16
    linears = set(_quantizable(model))
    sd = model.state_dict()
    out: dict[str, Any] = {}
    tensors: dict[str, dict[str, str]] = {}
    for name, value in sd.items():
        module_name = name.rsplit(".", 1)[0]
        if module_name in linears and name.endswith(".weight"):
            w = value.detach().float()
            rows, cols = w.shape  # [out, in]
            groups = cols // group
            g = w.reshape(rows, groups, group)
            scale = (g.abs().amax(dim=2) / 7).clamp(min=1e-8)  # [out, groups]
            codes = (torch.round(g / scale[:, :, None]) + 8).clamp(0, 15).to(torch.int64).reshape(rows, cols)
            qweight = _pack(codes.t().contiguous(), bits, axis=0)  # [in/8, out]
            qzeros = _pack(torch.full((groups, rows), 8, dtype=torch.int64), bits, axis=1)
            out[f"{module_name}.qweight"] = qweight
            out[f"{module_name}.qzeros"] = qzeros
            out[f"{module_name}.scales"] = scale.t().contiguous().half()
            out[f"{module_name}.g_idx"] = torch.arange(cols, dtype=torch.int32) // group
            owner = type(model.get_submodule(module_name)).__name__
            tensors[f"{module_name}.qweight"] = {"role": "weight", "module": owner, "attr": "weight",
                                                 "kind": "parameter"}  # fmt: skip
            for leaf in ("qzeros", "scales", "g_idx"):
                tensors[f"{module_name}.{leaf}"] = {"role": "quantization", "module": owner, "attr": leaf,
                                                    "kind": "quantization"}  # fmt: skip
        else:
            if name in out or any(value is v for v in out.values()):
                continue
            out[name] = value.detach().clone().contiguous()
            tensors[name] = state[name]
    if model.config.tie_word_embeddings:
        raise SystemExit("gptq layout expects an untied head")
    save_file(out, str(folder / "model.safetensors"), metadata={"format": "pt"})
    config = model.config.to_dict()
    config["quantization_config"] = {"quant_method": "gptq", "bits": bits, "group_size": group, "desc_act": False,
                                     "sym": True}  # fmt: skip
    (folder / "config.json").write_text(json.dumps(config, indent=1, sort_keys=True, default=str) + "\n")
    return tensors


def _pack(codes: Any, bits: int, axis: int) -> Any:
    """Pack ``32 // bits`` codes per int32 along ``axis``, lowest bits first (AutoGPTQ's order)."""
    import torch

    per = 32 // bits
    codes = codes if axis == 0 else codes.t()
    rows = codes.shape[0] // per
    packed = torch.zeros((rows, codes.shape[1]), dtype=torch.int64)
    for j in range(per):
        packed |= codes[j::per][:rows] << (bits * j)
    packed = packed.to(torch.int32) if packed.max() < 2**31 else (packed - (packed >= 2**31) * 2**32).to(torch.int32)
    return packed if axis == 0 else packed.t().contiguous()


def _bnb4(model: Any, state: dict[str, dict[str, str]], folder: Path) -> dict[str, dict[str, str]]:
    """bitsandbytes' NF4 serialization (``Params4bit``): weight U8 [n/2, 1], weight.absmax F32 per block
    of 64, weight.quant_map F32 [16], weight.quant_state.bitsandbytes__nf4 U8 (a JSON blob)."""
    import torch
    from safetensors.torch import save_file

    block = 64
    linears = set(_quantizable(model))
    sd = model.state_dict()
    out: dict[str, Any] = {}
    tensors: dict[str, dict[str, str]] = {}
    for name, value in sd.items():
        module_name = name.rsplit(".", 1)[0]
        if module_name in linears and name.endswith(".weight"):
            w = value.detach().float().flatten()
            n = w.numel()
            blocks = w.reshape(-1, block)
            absmax = blocks.abs().amax(dim=1).clamp(min=1e-8)
            codes = (torch.round(blocks / absmax[:, None] * 7) + 8).clamp(0, 15).to(torch.uint8).flatten()
            packed = (codes[0::2] << 4) | codes[1::2]
            out[name] = packed.reshape(n // 2, 1)
            out[f"{name}.absmax"] = absmax
            out[f"{name}.quant_map"] = torch.linspace(-1, 1, 16)
            blob = json.dumps({"quant_type": "nf4", "blocksize": block, "dtype": "float32",
                               "shape": list(value.shape)}).encode()  # fmt: skip
            out[f"{name}.quant_state.bitsandbytes__nf4"] = torch.tensor(list(blob), dtype=torch.uint8)
            owner = type(model.get_submodule(module_name)).__name__
            tensors[name] = {"role": "weight", "module": owner, "attr": "weight", "kind": "parameter"}
            for leaf in ("absmax", "quant_map", "quant_state.bitsandbytes__nf4"):
                tensors[f"{name}.{leaf}"] = {"role": "quantization", "module": owner, "attr": leaf,
                                             "kind": "quantization"}  # fmt: skip
        else:
            out[name] = value.detach().clone().contiguous()
            tensors[name] = state[name]
    save_file(out, str(folder / "model.safetensors"), metadata={"format": "pt"})
    config = model.config.to_dict()
    config["quantization_config"] = {"quant_method": "bitsandbytes", "load_in_4bit": True,
                                     "bnb_4bit_quant_type": "nf4", "bnb_4bit_compute_dtype": "float32"}  # fmt: skip
    (folder / "config.json").write_text(json.dumps(config, indent=1, sort_keys=True, default=str) + "\n")
    return tensors


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="*", metavar="MODEL", help=f"default: all of {', '.join(MODELS)}")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.models) - set(MODELS))
    if unknown:
        parser.error(f"unknown model(s): {', '.join(unknown)}")
    import torch

    torch.use_deterministic_algorithms(True)
    for name in args.models or MODELS:
        torch.manual_seed(0)
        built = MODELS[name]()
        doc = save(name, built, OUT)
        size = sum(p.stat().st_size for p in (OUT / name).iterdir())
        if UNLABELLED:
            raise SystemExit("nobody labelled (add them to OWN_PARAMETERS):\n" + "\n".join(UNLABELLED))
        print(f"{name}: {len(doc['tensors'])} tensors, {doc['parameters']:,} parameters, {size:,} bytes", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
