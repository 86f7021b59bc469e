"""GGUF fixtures, written by the `gguf` package's GGUFWriter (quantized with gguf.quants).

- llama-tiny-q8_0.gguf: a 2-layer llama-architecture model: Q8_0 attention/FFN weights, Q4_0
  token embedding, F16 output head, F32 norms, a 1,000-token vocabulary (tokens, scores, types).
- all-ggml-types.gguf: one tensor of every type in gguf's GGML_QUANT_SIZES (the quantized ones
  with gguf.quants where it can quantize, otherwise raw blocks of the exact block size), with
  general.alignment = 64.
- tiny-big-endian.gguf: a small model written with GGUFWriter(endianess=BIG).
"""

from __future__ import annotations

from pathlib import Path

VOCAB, HIDDEN, LAYERS, HEADS, KV_HEADS, FFN = 1000, 64, 2, 4, 2, 128


def generate(out: Path) -> list[Path]:
    return [llama_tiny(out / "llama-tiny-q8_0.gguf"), all_types(out / "all-ggml-types.gguf"),
            big_endian(out / "tiny-big-endian.gguf")]  # fmt: skip


def _finish(writer: object, path: Path) -> Path:
    writer.write_header_to_file()  # type: ignore[attr-defined]
    writer.write_kv_data_to_file()  # type: ignore[attr-defined]
    writer.write_tensors_to_file()  # type: ignore[attr-defined]
    writer.close()  # type: ignore[attr-defined]
    return path


def llama_tiny(path: Path) -> Path:
    import gguf
    import numpy as np
    from gguf.constants import GGMLQuantizationType as T

    rng = np.random.default_rng(0)
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("ckptscan tiny llama")
    w.add_context_length(512)
    w.add_embedding_length(HIDDEN)
    w.add_block_count(LAYERS)
    w.add_feed_forward_length(FFN)
    w.add_head_count(HEADS)
    w.add_head_count_kv(KV_HEADS)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_rope_dimension_count(HIDDEN // HEADS)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0)
    w.add_tokenizer_model("llama")
    w.add_token_list([f"tok{i}" for i in range(VOCAB)])
    w.add_token_scores([float(-i) for i in range(VOCAB)])
    w.add_token_types([1] * VOCAB)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)

    def weight(name: str, rows: int, cols: int, qtype: T) -> None:
        data = (rng.standard_normal((rows, cols)) * 0.02).astype(np.float32)
        if qtype == T.F16:
            w.add_tensor(name, data.astype(np.float16))
        else:
            w.add_tensor(name, gguf.quants.quantize(data, qtype), raw_dtype=qtype)

    weight("token_embd.weight", VOCAB, HIDDEN, T.Q4_0)
    head_dim = HIDDEN // HEADS
    for i in range(LAYERS):
        w.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(HIDDEN, dtype=np.float32))
        weight(f"blk.{i}.attn_q.weight", HEADS * head_dim, HIDDEN, T.Q8_0)
        weight(f"blk.{i}.attn_k.weight", KV_HEADS * head_dim, HIDDEN, T.Q8_0)
        weight(f"blk.{i}.attn_v.weight", KV_HEADS * head_dim, HIDDEN, T.Q8_0)
        weight(f"blk.{i}.attn_output.weight", HIDDEN, HEADS * head_dim, T.Q8_0)
        w.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(HIDDEN, dtype=np.float32))
        weight(f"blk.{i}.ffn_gate.weight", FFN, HIDDEN, T.Q8_0)
        weight(f"blk.{i}.ffn_up.weight", FFN, HIDDEN, T.Q8_0)
        weight(f"blk.{i}.ffn_down.weight", HIDDEN, FFN, T.Q8_0)
    w.add_tensor("output_norm.weight", np.ones(HIDDEN, dtype=np.float32))
    weight("output.weight", VOCAB, HIDDEN, T.F16)
    return _finish(w, path)


def all_types(path: Path) -> Path:
    import gguf
    import numpy as np
    from gguf.constants import GGML_QUANT_SIZES
    from gguf.constants import GGMLQuantizationType as T

    rng = np.random.default_rng(1)
    w = gguf.GGUFWriter(str(path), "ckptscan-test")
    w.add_custom_alignment(64)
    plain = {T.F32: np.float32, T.F16: np.float16, T.F64: np.float64, T.I8: np.int8, T.I16: np.int16,
             T.I32: np.int32, T.I64: np.int64}  # fmt: skip
    rows, cols = 2, 256
    for qtype, (block, type_size) in GGML_QUANT_SIZES.items():
        name = f"t.{qtype.name.lower()}"
        values = rng.standard_normal((rows, max(cols, block))).astype(np.float32)
        if qtype in plain:
            w.add_tensor(name, values.astype(plain[qtype]))
            continue
        try:
            data = gguf.quants.quantize(values, qtype)
        except NotImplementedError:
            # no quantizer in the gguf package: valid-sized raw blocks (only the layout matters here)
            n_bytes = values.shape[1] // block * type_size
            data = rng.integers(0, 256, size=(rows, n_bytes), dtype=np.uint8)
        w.add_tensor(name, data, raw_dtype=qtype)
    return _finish(w, path)


def big_endian(path: Path) -> Path:
    import gguf
    import numpy as np

    rng = np.random.default_rng(2)
    w = gguf.GGUFWriter(str(path), "llama", endianess=gguf.GGUFEndian.BIG)
    w.add_name("big endian")
    w.add_block_count(1)
    w.add_token_list(["a", "b", "c"])
    # the writer byte-swaps native arrays itself when asked for big-endian output
    w.add_tensor("blk.0.ffn_up.weight", rng.standard_normal((8, 32)).astype(np.float32))
    w.add_tensor("blk.0.attn_norm.weight", np.ones(32, dtype=np.float32))
    return _finish(w, path)
