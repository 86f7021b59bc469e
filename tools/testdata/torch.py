"""PyTorch fixtures, made with the real torch (and lightning): every container and structure we read.

Deterministic: fixed seeds, and the one random field torch writes (``.data/serialization_id``) is
overwritten with a constant (same length, CRCs fixed), so re-running gives the same bytes.
"""

from __future__ import annotations

import argparse
import io
import json
import pickle
import struct
import tarfile
import warnings
import zlib
from pathlib import Path
from typing import Any

FIXED_ID = b"0" * 40


def generate(out: Path) -> list[Path]:
    import torch

    warnings.filterwarnings("ignore")
    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    written = [
        _dtypes(out),
        _tied_and_views(out),
        _legacy(out),
        _legacy_tar(out),
        _torchscript(out),
        _quantized_meta(out),
        _numpy_objects(out),
        _training(out),
        _lightning(out),
        *_sharded(out),
        *_trainer_folder(out),
    ]
    for path in written:
        if path.suffix in (".pt", ".bin", ".ckpt", ".pth"):
            _fix_serialization_id(path)
    return written


def _dtypes(out: Path) -> Path:
    import torch

    sd = {
        "f32": torch.randn(4, 3),
        "f16": torch.randn(5).half(),
        "bf16": torch.randn(2, 2).bfloat16(),
        "f64": torch.randn(3).double(),
        "i64": torch.arange(6).reshape(2, 3),
        "i32": torch.arange(4, dtype=torch.int32),
        "i16": torch.arange(3, dtype=torch.int16),
        "i8": torch.arange(3, dtype=torch.int8),
        "u8": torch.arange(7, dtype=torch.uint8),
        "bool": torch.tensor([True, False, True]),
        "c64": torch.randn(2, dtype=torch.complex64),
        "f8_e4m3": torch.randn(8).to(torch.float8_e4m3fn),
        "f8_e5m2": torch.randn(8).to(torch.float8_e5m2),
        "scalar": torch.tensor(3.5),
        "empty": torch.zeros(0, 4),
    }
    path = out / "dtypes.pt"
    torch.save(sd, path)
    return path


def _tied_and_views(out: Path) -> Path:
    """A pytorch_model.bin-like state dict: tied embeddings, a transposed view, a slice of a larger storage."""
    import torch

    embed = torch.randn(10, 4)
    base = torch.randn(6, 5)
    sd = {
        "model.embed_tokens.weight": embed,
        "model.layers.0.weight": torch.randn(4, 4),
        "model.layers.0.weight_t": base.t(),  # non-contiguous view of base's storage
        "model.layers.0.rows": base[2:4],  # a view at an offset into the same storage
        "model.partial": torch.randn(100)[10:20],  # saves the whole 100-element storage: 90 dead elements
        "lm_head.weight": embed,  # tied: the same tensor again
    }
    path = out / "tied.bin"
    torch.save(sd, path)
    return path


def _legacy(out: Path) -> Path:
    import torch

    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 2))
    path = out / "legacy.pt"
    sd = dict(model.state_dict())
    sd["shared_view"] = sd["0.weight"][1:]
    torch.save(sd, path, _use_new_zipfile_serialization=False)
    _renumber_legacy_keys(path)
    return path


def _renumber_legacy_keys(path: Path) -> None:
    """Legacy storage keys are memory addresses (sorted as text, so the storage order varies too):
    rename them 0, 1, ... in order of first use and lay the storages out in that order."""
    import pickletools
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    import ckptscan

    inventory = ckptscan.read_inventory(path)
    data = path.read_bytes()
    order: list[str] = []
    for tensor in inventory.tensors:
        key = next(s.attrs["torch_key"] for s in inventory.storages if s.key == tensor.storage)
        if key not in order:
            order.append(key)
    rename = {key: str(i) for i, key in enumerate(order)}
    stream = io.BytesIO(data)
    spans = []
    for _ in range(4):  # magic, protocol, sys info, object pickle
        start = stream.tell()
        ops = list(pickletools.genops(stream))
        spans.append((start, stream.tell(), ops))
    start, end, ops = spans[3]
    parts = [data[:start]]
    positions = [pos for _, _, pos in ops] + [end]
    for (op, arg, pos), next_pos in zip(ops, positions[1:], strict=True):
        if op.name == "BINUNICODE" and arg in rename:
            new = rename[arg].encode()
            parts.append(b"X" + struct.pack("<I", len(new)) + new)
        else:
            parts.append(data[pos:next_pos])
    parts.append(pickle.dumps([rename[k] for k in order], protocol=2))
    by_key = {s.attrs["torch_key"]: s for s in inventory.storages}
    for key in order:
        storage = by_key[key]
        parts.append(data[storage.offset - 8 : storage.offset + storage.nbytes])
    path.write_bytes(b"".join(parts))


def _legacy_tar(out: Path) -> Path:
    """The pre-0.4 tar format, written by hand the way torch 0.3 did (torch still loads it)."""
    import torch

    weight = torch.randn(3, 2)
    bias = torch.randn(3)
    # torch 0.3 keyed storages and tensors by int; the object pickle names tensors by the key's text
    storages = [(1, "cpu", torch.FloatStorage, weight.flatten()), (2, "cpu", torch.FloatStorage, bias)]
    tensors = [(10, 1, weight.shape, weight.stride()), (11, 2, bias.shape, bias.stride())]
    obj = {"weight": "10", "bias": "11", "epoch": 3}

    storage_blob = io.BytesIO()
    pickle.dump(len(storages), storage_blob, protocol=2)
    for key, location, cls, values in storages:
        pickle.dump((key, location, cls), storage_blob, protocol=2)
        raw = values.numpy().tobytes()
        storage_blob.write(struct.pack("<q", values.numel()) + raw)
    pickle.dump([], storage_blob, protocol=2)

    tensor_blob = io.BytesIO()
    pickle.dump(len(tensors), tensor_blob, protocol=2)
    for key, storage_key, shape, stride in tensors:
        pickle.dump((key, storage_key, "torch.FloatTensor"), tensor_blob, protocol=2)
        tensor_blob.write(struct.pack("<i", len(shape)) + b"\0" * 4)
        tensor_blob.write(struct.pack(f"<{2 * len(shape) + 1}q", *shape, *stride, 0))

    class _Pickler(pickle.Pickler):
        def persistent_id(self, value: Any) -> Any:
            return value if isinstance(value, str) and value.isdigit() and len(value) == 2 else None

    main = io.BytesIO()
    _Pickler(main, protocol=2).dump(obj)
    sys_info = pickle.dumps({"protocol_version": 1001, "little_endian": True}, protocol=2)

    path = out / "legacy.tar"
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for name, blob in (
            ("sys_info", sys_info),
            ("pickle", main.getvalue()),
            ("tensors", tensor_blob.getvalue()),
            ("storages", storage_blob.getvalue()),
        ):
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(blob), 0
            tar.addfile(info, io.BytesIO(blob))
    loaded = torch.load(path, weights_only=False)  # our own file: a check that torch reads it
    assert torch.equal(loaded["weight"], weight) and torch.equal(loaded["bias"], bias)
    return path


def _torchscript(out: Path) -> Path:
    import torch

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = torch.nn.Linear(3, 2)
            self.register_buffer("counts", torch.arange(4))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x) * torch.tensor([1.0, 2.0])

    module = torch.jit.trace(Net(), torch.ones(1, 3))
    path = out / "torchscript.pt"
    torch.jit.save(module, str(path))
    return path


def _quantized_meta(out: Path) -> Path:
    import torch

    x = torch.randn(2, 4)
    sd = {
        "per_tensor": torch.quantize_per_tensor(x, 0.1, 3, torch.quint8),
        "per_channel": torch.quantize_per_channel(
            x, torch.tensor([0.1, 0.2], dtype=torch.float64), torch.tensor([0, 1]), 0, torch.qint8
        ),
        "packed4": torch.quantize_per_tensor(torch.randn(8), 0.1, 0, torch.quint4x2),
        "meta": torch.empty(3, 5, device="meta"),
        "param": torch.nn.Parameter(torch.ones(2)),
    }
    path = out / "quantized.pt"
    torch.save(sd, path)
    return path


def _numpy_objects(out: Path) -> Path:
    """Like chemprop's checkpoints: an argparse.Namespace, numpy arrays and scalars beside tensors."""
    import numpy as np
    import torch

    obj = {
        "args": argparse.Namespace(hidden=8, lr=0.001, name="demo"),
        "state_dict": {"w": torch.randn(2, 2)},
        "scaler": {"means": np.array([1.5, 2.5]), "scale": np.float64(0.25), "count": np.int64(7)},
    }
    path = out / "numpy_objects.pt"
    torch.save(obj, path)
    return path


def _small_model() -> Any:
    import torch

    return torch.nn.Sequential(
        torch.nn.Linear(6, 8), torch.nn.BatchNorm1d(8), torch.nn.ReLU(), torch.nn.Linear(8, 8), torch.nn.Linear(8, 3)
    )


def _train(model: Any, optimizer: Any, steps: int, scheduler: Any = None) -> None:
    import torch

    for _ in range(steps):
        optimizer.zero_grad()
        loss = model(torch.randn(4, 6)).pow(2).mean()
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()


def _training(out: Path) -> Path:
    """A hand-rolled training checkpoint: model, Adam state, scheduler, EMA, epoch and step."""
    import copy

    import torch

    torch.manual_seed(1)
    model = _small_model()
    model[3].weight.requires_grad_(False)  # a frozen parameter: in the state dict, not in the optimizer
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2)
    _train(model, optimizer, 3, scheduler)
    ema = copy.deepcopy(model)
    named = torch.optim.SGD(model.named_parameters(), lr=0.1, momentum=0.9)
    _train(model, named, 2)
    checkpoint = {
        "epoch": 3,
        "global_step": 3,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "optimizer_named": named.state_dict(),
        "scheduler": scheduler.state_dict(),
        "ema": ema.state_dict(),
        "best_metric": 0.125,
    }
    path = out / "training.pt"
    torch.save(checkpoint, path)
    return path


def _lightning(out: Path) -> Path:
    import lightning
    import torch
    from lightning.pytorch.callbacks import EarlyStopping

    class Module(lightning.LightningModule):
        def __init__(self, hidden: int = 8, lr: float = 0.01) -> None:
            super().__init__()
            self.save_hyperparameters()
            self.net = _small_model()

        def training_step(self, batch: Any, batch_idx: int) -> Any:
            (x,) = batch
            loss = self.net(x).pow(2).mean()
            self.log("train_loss", loss)
            return loss

        def configure_optimizers(self) -> Any:
            optimizer = torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
            return {"optimizer": optimizer, "lr_scheduler": torch.optim.lr_scheduler.StepLR(optimizer, 2)}

    lightning.seed_everything(0, verbose=False)
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(16, 6)), batch_size=4)
    trainer = lightning.Trainer(
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        deterministic=True,
        callbacks=[EarlyStopping(monitor="train_loss", mode="min")],
    )
    trainer.fit(Module(), data)
    path = out / "lightning.ckpt"
    trainer.save_checkpoint(path)
    return path


def _sharded(out: Path) -> list[Path]:
    import torch

    folder = out / "sharded"
    folder.mkdir(exist_ok=True)
    sd = _small_model().state_dict()
    names = list(sd)
    shards = {"pytorch_model-00001-of-00002.bin": names[:4], "pytorch_model-00002-of-00002.bin": names[4:]}
    weight_map = {}
    total = 0
    for shard, keys in shards.items():
        torch.save({k: sd[k] for k in keys}, folder / shard)
        weight_map.update(dict.fromkeys(keys, shard))
        total += sum(sd[k].numel() * sd[k].element_size() for k in keys)
    index = folder / "pytorch_model.bin.index.json"
    index.write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2) + "\n")
    return [*(folder / s for s in shards), index]


def _trainer_folder(out: Path) -> list[Path]:
    """A Hugging Face Trainer checkpoint-N/ folder: weights, AdamW in two groups, scheduler, RNG, state."""
    import random

    import numpy as np
    import torch

    folder = out / "checkpoint-4"
    folder.mkdir(exist_ok=True)
    torch.manual_seed(2)
    random.seed(0)
    np.random.seed(0)
    model = _small_model()
    decay = [p for n, p in model.named_parameters() if n.endswith("weight") and not n.startswith("1.")]
    no_decay = [p for n, p in model.named_parameters() if not (n.endswith("weight") and not n.startswith("1."))]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}])
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    _train(model, optimizer, 4, scheduler)
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    torch.save(optimizer.state_dict(), folder / "optimizer.pt")
    torch.save(scheduler.state_dict(), folder / "scheduler.pt")
    rng = {"python": random.getstate(), "numpy": np.random.get_state(), "cpu": torch.random.get_rng_state()}
    torch.save(rng, folder / "rng_state.pth")
    torch.save(argparse.Namespace(output_dir="out", learning_rate=0.001), folder / "training_args.bin")
    state = {"global_step": 4, "epoch": 1.0, "log_history": [{"loss": 0.5, "step": 4}], "best_metric": None}
    (folder / "trainer_state.json").write_text(json.dumps(state, indent=2) + "\n")
    (folder / "config.json").write_text(json.dumps({"model_type": "demo", "hidden_size": 8}, indent=2) + "\n")
    names = ["pytorch_model.bin", "optimizer.pt", "scheduler.pt", "rng_state.pth", "training_args.bin"]
    return [*(folder / n for n in names), folder / "trainer_state.json", folder / "config.json"]


def _fix_serialization_id(path: Path) -> None:
    """Overwrite the random ``.data/serialization_id`` with a constant and fix its three CRC copies."""
    import zipfile

    if not zipfile.is_zipfile(path):
        return  # the legacy format has no serialization id
    with zipfile.ZipFile(path) as archive:
        infos = [i for i in archive.infolist() if i.filename.endswith(".data/serialization_id")]
        if not infos:
            return
        info = infos[0]
        old = archive.read(info)
    if len(old) != len(FIXED_ID):
        return
    data = bytearray(path.read_bytes())
    name_len, extra_len = struct.unpack_from("<HH", data, info.header_offset + 26)
    start = info.header_offset + 30 + name_len + extra_len
    data[start : start + len(old)] = FIXED_ID
    old_crc, new_crc = struct.pack("<I", info.CRC), struct.pack("<I", zlib.crc32(FIXED_ID))
    data[info.header_offset + 14 : info.header_offset + 18] = new_crc
    after = start + len(old)
    if data[after : after + 4] == b"PK\x07\x08" and data[after + 4 : after + 8] == old_crc:
        data[after + 4 : after + 8] = new_crc
    central = data.rfind(info.filename.encode(), after)
    entry = data.rfind(b"PK\x01\x02", 0, central)
    if data[entry + 16 : entry + 20] == old_crc:
        data[entry + 16 : entry + 20] = new_crc
    path.write_bytes(bytes(data))
    with zipfile.ZipFile(path) as archive:
        assert archive.testzip() is None
