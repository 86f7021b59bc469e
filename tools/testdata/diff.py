"""Fixtures for ``ckptscan diff``: one small llama-shaped model's weights written several ways.

    base.safetensors       float32 weights, Hugging Face names (model.layers.N.self_attn.q_proj.weight, ...)
    same.gguf              the same values, llama.cpp names (blk.N.attn_q.weight, ...), F32 (gguf.GGUFWriter)
    same.onnx              the same values as ONNX initializers (raw_data), Hugging Face names (onnx.helper)
    perturbed.safetensors  base with two tensors changed: layers.0 q_proj + 0.01 on its first row,
                           layers.1 down_proj x 1.01; everything else bit-identical
    peft.safetensors       base's tensors under PEFT's ``base_model.model.`` prefix, lm_head renamed
                           to ``output_projection.weight`` (a rename only shape can match)
    q8_0.gguf              base's 2-D weights quantized to Q8_0 by gguf.quants, norms F32, llama.cpp names

The GGUF files keep HF's row order for q/k (no llama.cpp rotary permutation), so that values
compare equal; a real convert_hf_to_gguf.py output permutes them (see docs/diff.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

SEED = 15
HIDDEN, FFN, VOCAB, LAYERS = 32, 64, 64, 2

HF_TO_GGUF = {
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
}


def weights() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(SEED)

    def w(rows: int, cols: int) -> np.ndarray:
        return (rng.standard_normal((rows, cols)) * 0.02).astype(np.float32)

    out = {"model.embed_tokens.weight": w(VOCAB, HIDDEN)}
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        out[p + "input_layernorm.weight"] = (1 + 0.1 * rng.standard_normal(HIDDEN)).astype(np.float32)
        out[p + "self_attn.q_proj.weight"] = w(HIDDEN, HIDDEN)
        out[p + "self_attn.k_proj.weight"] = w(HIDDEN, HIDDEN)
        out[p + "self_attn.v_proj.weight"] = w(HIDDEN, HIDDEN)
        out[p + "self_attn.o_proj.weight"] = w(HIDDEN, HIDDEN)
        out[p + "post_attention_layernorm.weight"] = (1 + 0.1 * rng.standard_normal(HIDDEN)).astype(np.float32)
        out[p + "mlp.gate_proj.weight"] = w(FFN, HIDDEN)
        out[p + "mlp.up_proj.weight"] = w(FFN, HIDDEN)
        out[p + "mlp.down_proj.weight"] = w(HIDDEN, FFN)
    out["model.norm.weight"] = np.ones(HIDDEN, dtype=np.float32)
    out["lm_head.weight"] = w(VOCAB, HIDDEN)
    return out


def perturbed() -> dict[str, np.ndarray]:
    out = {k: v.copy() for k, v in weights().items()}
    out["model.layers.0.self_attn.q_proj.weight"][0, :] += np.float32(0.01)
    out["model.layers.1.mlp.down_proj.weight"] *= np.float32(1.01)
    return out


def gguf_name(hf: str) -> str:
    if hf == "model.embed_tokens.weight":
        return "token_embd.weight"
    if hf == "model.norm.weight":
        return "output_norm.weight"
    if hf == "lm_head.weight":
        return "output.weight"
    _, _, layer, rest = hf.split(".", 3)
    module, leaf = rest.rsplit(".", 1)
    return f"blk.{layer}.{HF_TO_GGUF[module]}.{leaf}"


def generate(out: Path) -> list[Path]:
    from safetensors.numpy import save_file

    base = weights()
    save_file(base, str(out / "base.safetensors"), metadata={"format": "pt"})
    save_file(perturbed(), str(out / "perturbed.safetensors"), metadata={"format": "pt"})
    peft = {("output_projection.weight" if k == "lm_head.weight" else "base_model.model." + k): v
            for k, v in base.items()}  # fmt: skip
    save_file(peft, str(out / "peft.safetensors"), metadata={"format": "pt"})
    return [
        out / "base.safetensors",
        out / "perturbed.safetensors",
        out / "peft.safetensors",
        _gguf(out / "same.gguf", base, quantize=False),
        _gguf(out / "q8_0.gguf", base, quantize=True),
        _onnx(out / "same.onnx", base),
    ]


def _gguf(path: Path, tensors: dict[str, np.ndarray], *, quantize: bool) -> Path:
    import gguf
    from gguf.constants import GGMLQuantizationType as T

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("ckptscan diff fixture")
    w.add_context_length(128)
    w.add_embedding_length(HIDDEN)
    w.add_block_count(LAYERS)
    w.add_feed_forward_length(FFN)
    w.add_head_count(4)
    w.add_head_count_kv(4)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0 if quantize else gguf.LlamaFileType.ALL_F32)
    for name, values in tensors.items():
        if quantize and values.ndim == 2:
            w.add_tensor(gguf_name(name), gguf.quants.quantize(values, T.Q8_0), raw_dtype=T.Q8_0)
        else:
            w.add_tensor(gguf_name(name), values)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def _onnx(path: Path, tensors: dict[str, np.ndarray]) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    inits = [numpy_helper.from_array(v, name=k) for k, v in tensors.items()]
    x = helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 4])
    y = helper.make_tensor_value_info("hidden", TensorProto.FLOAT, [1, 4, HIDDEN])
    node = helper.make_node("Gather", ["model.embed_tokens.weight", "ids"], ["hidden"])
    graph = helper.make_graph([node], "diff-fixture", [x], [y], initializer=inits)
    model: Any = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="ckptscan-tests")
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    path.write_bytes(model.SerializeToString(deterministic=True))
    return path
