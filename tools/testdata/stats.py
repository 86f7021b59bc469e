"""Fixtures for the value statistics pass: every dtype, GGUF quantized blocks, integrity defects.

    dtypes.safetensors    every dtype safetensors.torch writes (torch tensors, fixed seed), incl.
                          bf16, the fp8 variants, F8_E8M0 and F4 (E2M1, two per byte)
    integrity.safetensors NaN, Inf, all-zero, duplicated, 2:4-sparse and outlier-heavy tensors (numpy)
    quants.gguf           F32/F16/BF16, Q8_0..Q5_1 (gguf.quants.quantize), K- and IQ4 quants (random
                          blocks with fixed scales), I8/I16/I32 (gguf.GGUFWriter)
    bigendian.gguf        the same scalar types written big-endian

torch is used here only to produce real bf16/fp8 tensors; the tests read these files without it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

SEED = 6


def generate(out: Path) -> list[Path]:
    return [
        _dtypes(out / "dtypes.safetensors"),
        _integrity(out / "integrity.safetensors"),
        _gguf(out / "quants.gguf", big_endian=False),
        _gguf(out / "bigendian.gguf", big_endian=True),
    ]


def _dtypes(path: Path) -> Path:
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(SEED)
    weights = torch.randn(64, 256) * 0.05
    weights[3, :17] = 0
    tensors = {
        "f64": weights.double(),
        "f32": weights,
        "f16": weights.half(),
        "bf16": weights.bfloat16(),
        "f8_e4m3": (weights * 40).to(torch.float8_e4m3fn),
        "f8_e4m3fnuz": (weights * 40).to(torch.float8_e4m3fnuz),
        "f8_e5m2": (weights * 40).to(torch.float8_e5m2),
        "f8_e5m2fnuz": (weights * 40).to(torch.float8_e5m2fnuz),
        "i64": torch.arange(-50, 50, dtype=torch.int64) * 1_000_003,
        "i32": torch.arange(-50, 50, dtype=torch.int32) * 7919,
        "i16": torch.arange(-50, 50, dtype=torch.int16) * 301,
        "i8": torch.arange(-50, 50, dtype=torch.int8),
        "u8": torch.arange(0, 100, dtype=torch.uint8),
        "u16": torch.arange(0, 100, dtype=torch.int32).to(torch.uint16) * 601,
        "u32": torch.arange(0, 100, dtype=torch.int64).to(torch.uint32) * 40_000_003,
        "u64": torch.arange(0, 100, dtype=torch.int64).to(torch.uint64) * 9_000_000_000_000,
        "bool": torch.arange(33) % 3 == 0,
        "f8_e8m0": torch.randint(100, 140, (16, 4), dtype=torch.uint8).view(torch.float8_e8m0fnu),
        "f4": torch.randint(0, 256, (16, 64), dtype=torch.uint8).view(torch.float4_e2m1fn_x2),
        "c64": torch.complex(weights[:2], weights[2:4]),
        "scalar": torch.tensor(2.5),
        "empty": torch.zeros(0, 4),
    }
    save_file(tensors, str(path))
    return path


def _integrity(path: Path) -> Path:
    from safetensors.numpy import save_file

    rng = np.random.default_rng(SEED)
    weight = (rng.standard_normal((96, 256)) * 0.02).astype(np.float32)
    sparse = weight.copy().reshape(96, 64, 4)
    sparse[:, :, rng.permutation(4)[:2]] = 0  # 2 of every 4 along the last dimension
    outliers = weight.copy()
    outliers[:, 7] *= 400  # one outlier input channel, as in LLM activations folded into weights
    with_nan = weight[:8].copy()
    with_nan[1, 2] = np.nan
    with_nan[5, 9] = np.nan
    with_inf = weight[:8].copy()
    with_inf[0, 0] = np.inf
    with_inf[7, 255] = -np.inf
    tensors = {
        "layers.0.attn.weight": weight,
        "layers.0.mlp.weight": sparse.reshape(96, 256),
        "layers.1.attn.weight": weight.copy(),  # an exact duplicate
        "layers.1.mlp.weight": outliers,
        "layers.1.mlp.bias": np.zeros(96, dtype=np.float32),
        "layers.2.dead.weight": np.zeros((32, 128), dtype=np.float16),
        "layers.2.nan.weight": with_nan,
        "layers.2.inf.weight": with_inf,
    }
    save_file(tensors, str(path))
    return path


# byte offsets of the float16 scale fields inside one block (ggml-common.h block layouts)
K_QUANT_SCALES = {
    "Q2_K": (80, 82),
    "Q3_K": (108,),
    "Q4_K": (0, 2),
    "Q5_K": (0, 2),
    "Q6_K": (208,),
    "IQ4_NL": (0,),
    "IQ4_XS": (0,),
}


def _gguf(path: Path, *, big_endian: bool) -> Path:
    import gguf
    from gguf.quants import quantize

    rng = np.random.default_rng(SEED)
    endian = gguf.GGUFEndian.BIG if big_endian else gguf.GGUFEndian.LITTLE
    writer = gguf.GGUFWriter(str(path), "llama", endianess=endian)
    weights = (rng.standard_normal((32, 256)) * 0.02).astype(np.float32)
    writer.add_tensor("f32", weights)
    writer.add_tensor("f16", weights.astype(np.float16))
    writer.add_tensor("i8", np.arange(-64, 64, dtype=np.int8))
    writer.add_tensor("i16", np.arange(-64, 64, dtype=np.int16) * 257)
    writer.add_tensor("i32", np.arange(-64, 64, dtype=np.int32) * 65_537)
    if not big_endian:  # the writer byte-swaps scalar types only
        types = gguf.GGMLQuantizationType
        writer.add_tensor("bf16", quantize(weights, types.BF16), raw_dtype=types.BF16)
        for name in ("Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1"):
            qtype = getattr(types, name)
            writer.add_tensor(name.lower(), quantize(weights, qtype), raw_dtype=qtype)
        for name, scales in K_QUANT_SCALES.items():
            qtype = getattr(types, name)
            block_elements, block_bytes = gguf.GGML_QUANT_SIZES[qtype]
            rows, per_row = 16, 512 // block_elements
            blocks = rng.integers(0, 256, size=(rows * per_row, block_bytes), dtype=np.uint8)
            for offset in scales:
                values = (rng.uniform(0.001, 0.004, size=rows * per_row)).astype(np.float16)
                blocks[:, offset : offset + 2] = values.view(np.uint8).reshape(-1, 2)
            writer.add_tensor(name.lower(), blocks.reshape(rows, per_row * block_bytes), raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
