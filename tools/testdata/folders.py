"""Folders that are one model (ckptscan.folders), written by the real libraries.

- two-formats/: a tiny Llama saved by transformers' ``save_pretrained`` twice, as many Hub repos
  hold it: ``model.safetensors`` (tied head dropped) and ``pytorch_model.bin``
  (``torch.save`` of the state dict, as transformers 4's ``safe_serialization=False``), with its
  ``config.json``.
- pipeline/: a tiny Stable Diffusion pipeline saved by diffusers' ``StableDiffusionPipeline.
  save_pretrained``: ``model_index.json``, ``unet/``, ``vae/``, ``text_encoder/`` (transformers
  CLIPTextModel), ``tokenizer/``, ``scheduler/``; plus the UNet's fp16 variant
  (``diffusion_pytorch_model.fp16.safetensors``), the same component stored again.
"""

from __future__ import annotations

import json
from pathlib import Path


def generate(out: Path) -> list[Path]:
    import torch

    torch.manual_seed(0)
    return [*_two_formats(out / "two-formats"), *_pipeline(out / "pipeline")]


def _two_formats(folder: Path) -> list[Path]:
    import transformers

    config = transformers.LlamaConfig(
        vocab_size=96,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        tie_word_embeddings=True,
    )
    model = transformers.LlamaForCausalLM(config)
    model.save_pretrained(folder, safe_serialization=True)
    # transformers 5 writes only safetensors; transformers 4's safe_serialization=False wrote the state
    # dict with torch.save, tied head and all, which is what older repos hold
    import torch

    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    return sorted(p for p in folder.iterdir() if p.is_file())


def _pipeline(folder: Path) -> list[Path]:
    import diffusers
    import transformers

    unet = diffusers.UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(8, 16),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=16,
        attention_head_dim=2,
        norm_num_groups=4,
    )
    vae = diffusers.AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        block_out_channels=(8, 16),
        latent_channels=4,
        norm_num_groups=4,
        layers_per_block=1,
    )
    text_config = transformers.CLIPTextConfig(
        vocab_size=32,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=16,
    )
    text_encoder = transformers.CLIPTextModel(text_config)
    vocab_dir = folder.parent / "_clip_vocab"
    vocab_dir.mkdir(parents=True, exist_ok=True)
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    vocab = {t: i for i, t in enumerate(["<|startoftext|>", "<|endoftext|>", *letters, *(c + "</w>" for c in "aei")])}
    (vocab_dir / "vocab.json").write_text(json.dumps(vocab))
    (vocab_dir / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = transformers.CLIPTokenizer(str(vocab_dir / "vocab.json"), str(vocab_dir / "merges.txt"))
    scheduler = diffusers.DDIMScheduler()
    pipe = diffusers.StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(folder, safe_serialization=True)
    unet.half().save_pretrained(folder / "unet", variant="fp16")
    for path in vocab_dir.iterdir():
        path.unlink()
    vocab_dir.rmdir()
    return sorted(p for p in folder.rglob("*") if p.is_file())
