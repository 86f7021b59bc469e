"""Keras fixtures, written by real Keras 3 (torch backend) after one training step with Adam.

Run with the private venv that has Keras (it sees the system torch):
    /work/venvs/keras/bin/python tools/make_testdata.py keras

Determinism: fixed seeds (``keras.utils.set_random_seed``), one full-batch step on fixed data.
``.keras`` archives embed the save time (zip member times, ``metadata.json`` ``date_saved``) and
Python object ids (``shared_object_id`` in ``config.json``); after saving, each archive is rewritten
member by member, in the same order and still stored, with ``date_time`` 1980-01-01, ``date_saved``
``2024-01-01@00:00:00`` and shared object ids renumbered 1, 2, ... in order of first appearance.
The HDF5 files Keras writes carry no timestamps (h5py does not track times by default).
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any

FIXED_DATE = "2024-01-01@00:00:00"


def generate(out: Path) -> list[Path]:
    os.environ.setdefault("KERAS_BACKEND", "torch")
    import keras
    import numpy as np

    if keras.backend.backend() != "torch":
        raise SystemExit("run with KERAS_BACKEND=torch")
    keras.utils.set_random_seed(0)
    model = _tiny_model(keras)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    model.fit(rng.integers(0, 50, (8, 6)), rng.integers(0, 3, (8,)), epochs=1, batch_size=8, verbose=0, shuffle=False)

    written = []
    path = out / "tiny.keras"
    model.save(path)
    written.append(_normalize_archive(path))
    path = out / "tiny.weights.h5"
    model.save_weights(path)
    written.append(path)
    path = out / "tiny_legacy.h5"
    model.save(path)  # Keras 3 writes the legacy HDF5 format, optimizer weights included
    written.append(path)

    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,), name="x")
    # compiled under a fixed file name so that the marshalled bytecode does not embed this checkout's path
    double = eval(compile("lambda t: t * 2.0", "<ckptscan-fixture>", "eval"))
    doubled = keras.layers.Lambda(double, name="double")(inputs)
    outputs = keras.layers.Dense(2, name="head")(doubled)
    lam = keras.Model(inputs, outputs, name="with_lambda")
    path = out / "lambda.keras"
    lam.save(path)
    written.append(_normalize_archive(path))
    return written


def _tiny_model(keras: Any) -> Any:
    inputs = keras.Input((6,), dtype="int32", name="tokens")
    x = keras.layers.Embedding(50, 8, name="embed")(inputs)
    x = keras.layers.LSTM(12, name="lstm")(x)
    x = keras.layers.LayerNormalization(name="ln")(x)
    x = keras.layers.Dense(16, name="dense_1")(x)
    x = keras.layers.BatchNormalization(name="bn")(x)
    outputs = keras.layers.Dense(3, activation="softmax", name="dense_2")(x)
    return keras.Model(inputs, outputs, name="tiny")


def _normalize_archive(path: Path) -> Path:
    with zipfile.ZipFile(path) as archive:
        members = [(info, archive.read(info.filename)) for info in archive.infolist()]
    with zipfile.ZipFile(path, "w") as archive:
        for info, data in members:
            if info.filename == "config.json":
                data = json.dumps(_renumber(json.loads(data), {})).encode()
            elif info.filename == "metadata.json":
                meta = json.loads(data)
                meta["date_saved"] = FIXED_DATE
                data = json.dumps(meta).encode()
            fixed = zipfile.ZipInfo(info.filename, date_time=(1980, 1, 1, 0, 0, 0))
            fixed.compress_type = info.compress_type
            fixed.external_attr = info.external_attr
            archive.writestr(fixed, data)
    return path


def _renumber(node: Any, ids: dict[int, int]) -> Any:
    if isinstance(node, dict):
        result = {}
        for key, value in node.items():
            if key == "shared_object_id" and isinstance(value, int):
                value = ids.setdefault(value, len(ids) + 1)
            result[key] = _renumber(value, ids)
        return result
    if isinstance(node, list):
        return [_renumber(v, ids) for v in node]
    return node
