"""A generated tree of mixed checkpoints for the audit tests, with its exact expected totals.

Made with the real libraries (safetensors, gguf); every number in :data:`EXPECTED` follows from
the tensors written here. The layout::

    runs/exp1/checkpoint-{100,200,300}/   HF Trainer folders: copies of testdata/torch/checkpoint-4
                                          (weights, optimizer, scheduler, RNG state, training args)
    finetune/step-{100,200,300}/          model.safetensors (same frozen base, new head), config.json
    hf-model/                             2 safetensors shards + index, config.json, tokenizer.json
    torch/                                sharded/ (PyTorch .bin shards + index), lightning.ckpt (copies
                                          of testdata/torch), evil.pt (a pickle that calls os.system)
    keras/tiny.keras, numpy/f32.npy,      copies of testdata fixtures
    onnx/external_per_tensor/, tf/sharded/
    gguf/tiny.gguf
    standalone/copy.safetensors           a byte copy of finetune/step-100's model
    broken/                               malformed.safetensors (failed), truncated.safetensors and
                                          pointer.safetensors (incomplete), README.txt (not a
                                          checkpoint), garbage.gguf (named like one, is not)
    zlinks/alias.safetensors -> ../standalone/copy.safetensors   (audited once)
    loop -> .                             (a link loop)
    .hidden/, .git/                       (skipped, each with a checkpoint inside)
"""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

BASE_EMBED = ("base.embed.weight", (16, 8))  # F32: 512 bytes
BASE_NORM = ("base.norm.weight", (8,))  # F32: 32 bytes
HEAD = ("head.weight", (4, 8))  # F32: 128 bytes
CHECKPOINTS = (100, 200, 300)
REPO = Path(__file__).resolve().parent.parent
TESTDATA = REPO / "testdata"
# fixture (under testdata/) -> where it goes in the tree; each is one model
FIXTURES = {
    "torch/checkpoint-4": "runs/exp1/checkpoint-{step}",
    "torch/sharded": "torch/sharded",
    "torch/lightning.ckpt": "torch/lightning.ckpt",
    "keras/tiny.keras": "keras/tiny.keras",
    "numpy/f32.npy": "numpy/f32.npy",
    "onnx/external_per_tensor": "onnx/external_per_tensor",  # model.onnx + one data file per tensor
    "tf_checkpoint/sharded": "tf/sharded",  # ckpt-1.index + 4 data shards, checkpoint, expected.json
}
# a PyTorch zip whose pickle calls os.system: read, never run; a critical finding
EVIL_PICKLE = b"\x80\x02cos\nsystem\nq\x00X\x0a\x00\x00\x00echo pwnedq\x01\x85q\x02Rq\x03."

LFS_POINTER = (
    "version https://git-lfs.github.com/spec/v1\n"
    "oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\n"
    "size 123456789\n"
)


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def checkpoint_tensors(step: int) -> dict[str, np.ndarray[Any, Any]]:
    base = _rng(0)
    return {
        BASE_EMBED[0]: base.standard_normal(BASE_EMBED[1]).astype(np.float32),
        BASE_NORM[0]: base.standard_normal(BASE_NORM[1]).astype(np.float32),
        HEAD[0]: _rng(step).standard_normal(HEAD[1]).astype(np.float32),
    }


def build(root: Path) -> Path:
    from safetensors.numpy import save_file

    root.mkdir(parents=True, exist_ok=True)
    for source, target in FIXTURES.items():
        for step in CHECKPOINTS if "{step}" in target else (None,):
            copy(TESTDATA / source, root / target.format(step=step))
    with zipfile.ZipFile(root / "torch" / "evil.pt", "w") as archive:
        archive.writestr("archive/data.pkl", EVIL_PICKLE)
        archive.writestr("archive/version", "3\n")

    for step in CHECKPOINTS:
        folder = root / "finetune" / f"step-{step}"
        folder.mkdir(parents=True)
        save_file(checkpoint_tensors(step), str(folder / "model.safetensors"), metadata={"format": "np"})
        (folder / "config.json").write_text(json.dumps({"model_type": "tiny", "hidden_size": 8}))

    hf = root / "hf-model"
    hf.mkdir()
    shard1 = {"a.weight": _rng(1).standard_normal((32, 32)).astype(np.float16)}
    shard2 = {
        "b.weight": _rng(2).standard_normal((32,)).astype(np.float16),
        "a.bias": _rng(3).standard_normal((32,)).astype(np.float32),
    }
    save_file(shard1, str(hf / "model-00001-of-00002.safetensors"))
    save_file(shard2, str(hf / "model-00002-of-00002.safetensors"))
    weight_map = {name: "model-00001-of-00002.safetensors" for name in shard1}
    weight_map.update({name: "model-00002-of-00002.safetensors" for name in shard2})
    index = {"metadata": {"total_size": 2048 + 64 + 128}, "weight_map": weight_map}
    (hf / "model.safetensors.index.json").write_text(json.dumps(index))
    (hf / "config.json").write_text(json.dumps({"model_type": "tiny"}))
    (hf / "tokenizer.json").write_text(json.dumps({"model": {"vocab": {"a": 0}}}))

    write_gguf(root / "gguf" / "tiny.gguf")

    standalone = root / "standalone"
    standalone.mkdir()
    shutil.copyfile(root / "finetune/step-100/model.safetensors", standalone / "copy.safetensors")

    broken = root / "broken"
    broken.mkdir()
    header = b"{not json at all"
    (broken / "malformed.safetensors").write_bytes(len(header).to_bytes(8, "little") + header)
    whole = (standalone / "copy.safetensors").read_bytes()
    (broken / "truncated.safetensors").write_bytes(whole[: len(whole) - 100])
    (broken / "pointer.safetensors").write_text(LFS_POINTER)
    (broken / "README.txt").write_text("notes about these files\n")
    (broken / "garbage.gguf").write_bytes(bytes(range(256)) * 4)

    links = root / "zlinks"
    links.mkdir()
    os.symlink("../standalone/copy.safetensors", links / "alias.safetensors")
    os.symlink(".", root / "loop")

    for hidden in (".hidden", ".git/objects"):
        folder = root / hidden
        folder.mkdir(parents=True)
        save_file({"x": np.zeros((2, 2), np.float32)}, str(folder / "x.safetensors"))
    return root


def copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if source.is_dir():
        shutil.copytree(source, target)
    else:
        shutil.copyfile(source, target)


def write_gguf(path: Path) -> None:
    import gguf

    path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(1)
    writer.add_tensor("tok_embd.weight", _rng(4).standard_normal((16, 8)).astype(np.float32))  # 512 bytes
    writer.add_tensor("output.weight", _rng(5).standard_normal((4, 8)).astype(np.float16))  # 64 bytes
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


CKPT_BYTES = 512 + 32 + 128
CKPT_ELEMENTS = 128 + 8 + 32
HF_BYTES = 2048 + 64 + 128
GGUF_BYTES = 512 + 64

# What `ckptscan audit ROOT` must report for the generated part of the tree (the copied fixtures
# are added in the tests from single-file scans).
GENERATED: dict[str, Any] = {
    # 3 finetunes, hf-model, tiny.gguf, copy, evil.pt, malformed, truncated, pointer
    "models": 10,
    "ok": 7,
    "failed": 1,  # malformed
    "incomplete": 2,  # truncated, LFS pointer
    "tensors": 3 * 3 + 3 + 2 + 3,
    "tensor_bytes": 4 * CKPT_BYTES + HF_BYTES + GGUF_BYTES,
    "parameters": 4 * CKPT_ELEMENTS + (1024 + 32 + 32) + (128 + 32),
    # base.embed, base.norm and head: 4 copies each by metadata (the head differs in content)
    "dedupe_metadata_bytes": 3 * CKPT_BYTES,
    # int8: F32/F16 matrices only (base.embed 512->128, head 128->32; a.weight 2048->1024;
    # tok_embd 512->128, output F16 64->32)
    "quantize_int8_bytes": 4 * (384 + 96) + 1024 + (384 + 32),
    "by_format_models": {"safetensors": 6, "safetensors-sharded": 1, "gguf": 1, "git-lfs-pointer": 1, "pytorch": 1},
}
# files that are no checkpoint: README.txt, config.json x7 (3 trainer folders, 3 finetunes,
# hf-model), tokenizer.json, tf/sharded's checkpoint and expected.json
NOT_A_CHECKPOINT = 1 + 7 + 1 + 2
UNRECOGNIZED_CHECKPOINT_NAMES = ["broken/garbage.gguf"]
