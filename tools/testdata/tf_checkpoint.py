"""TensorFlow checkpoints (tensor bundles), written by TensorFlow, with what TensorFlow reads back.

TensorFlow is not a dependency of ckptscan or of its tests: this generator runs under a private
virtual environment (``python3 -m venv /work/venvs/tf && /work/venvs/tf/bin/pip install
tensorflow-cpu``; override with ``CKPTSCAN_TF_PYTHON=/path/to/python``) and re-executes itself
there when ``tensorflow`` is not importable. Each checkpoint gets an ``expected.json`` written
from ``tf.train.list_variables`` / ``tf.train.load_checkpoint`` (names, shapes, dtypes, a SHA-256
of each tensor's bytes) and from the live optimizer objects (which variable each slot belongs to),
so the tests can check the reader against TensorFlow without importing it.

- ``tf2_module/``: a ``tf.Module`` with variables of many dtypes, trained 2 steps with
  ``tf.compat.v1.train.AdamOptimizer`` in eager mode, saved by ``tf.train.Checkpoint.save``
  (object-based keys, ``.OPTIMIZER_SLOT`` slots, ``_CHECKPOINTABLE_OBJECT_GRAPH``).
- ``keras3/``: a Keras 3 ``Sequential`` trained 2 steps with ``keras.optimizers.Adam``, saved by
  ``tf.train.Checkpoint`` (slots are ``_momentums`` / ``_velocities`` lists of the optimizer).
- ``tf1_saver/``: a TF1 graph (``tf.compat.v1``) with a partitioned variable and a global step,
  trained 2 steps with Adam, saved by ``tf.compat.v1.train.Saver`` (name-based keys, slices).
- ``sharded/``: the ``tf2_module`` model saved in several ``.data-NNNNN-of-NNNNN`` shards
  (``MaxShardSizePolicy``).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

VENV_PYTHON = os.environ.get("CKPTSCAN_TF_PYTHON", "/work/venvs/tf/bin/python")
SETUP = "python3 -m venv /work/venvs/tf && /work/venvs/tf/bin/pip install tensorflow-cpu"


def generate(out: Path) -> list[Path]:
    if importlib.util.find_spec("tensorflow") is None:
        return _in_venv(out)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    written: list[Path] = []
    for name, make in (("tf2_module", _tf2_module), ("keras3", _keras3), ("tf1_saver", _tf1_saver),
                       ("sharded", _sharded)):  # fmt: skip
        folder = out / name
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        prefix, slots = make(folder)
        (folder / "expected.json").write_text(json.dumps(_expected(prefix, slots), indent=1, sort_keys=True) + "\n")
        for leftover in folder.glob("*.meta"):  # the TF1 MetaGraphDef: large, and not a checkpoint
            leftover.unlink()
        state = folder / "checkpoint"  # Saver records absolute paths: keep the fixture relocatable
        state.write_text(state.read_text().replace(str(folder) + os.sep, ""))
        written.extend(sorted(folder.iterdir()))
    return written


def _in_venv(out: Path) -> list[Path]:
    if not Path(VENV_PYTHON).is_file():
        raise SystemExit(f"tensorflow is not importable and {VENV_PYTHON} does not exist; create it with:\n  {SETUP}")
    print(f"tensorflow is not importable here: running under {VENV_PYTHON}", flush=True)
    result = subprocess.run(
        [VENV_PYTHON, __file__, str(out)], check=True, stdout=subprocess.PIPE, text=True, env={**os.environ}
    )
    return [Path(line) for line in result.stdout.splitlines() if line.strip()]


def _expected(prefix: str, slots: dict[str, dict[str, str]]) -> dict[str, Any]:
    import tensorflow as tf

    reader = tf.train.load_checkpoint(prefix)
    dtypes = reader.get_variable_to_dtype_map()
    variables = {}
    for name, shape in tf.train.list_variables(prefix):
        value = reader.get_tensor(name)
        entry: dict[str, Any] = {"shape": list(shape), "dtype": dtypes[name].name}
        if dtypes[name] != tf.string:
            entry["sha256"] = hashlib.sha256(value.tobytes()).hexdigest()
        variables[name] = entry
    data_files = sorted(p.name for p in Path(prefix).parent.glob(Path(prefix).name + ".data-*"))
    return {
        "tensorflow": tf.__version__,
        "prefix": Path(prefix).name,
        "data_files": data_files,
        "variables": variables,
        "slots": slots,
    }


def _train_step(variables: list[Any], optimizer: Any, loss_fn: Any) -> None:
    import tensorflow as tf

    with tf.GradientTape() as tape:
        loss = loss_fn()
    optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=True))


def _module() -> tuple[Any, Any, Any]:
    import numpy as np
    import tensorflow as tf

    class Model(tf.Module):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__(name="model")
            normal = tf.random.stateless_normal
            self.embedding = tf.Variable(normal([10, 4], seed=[1, 1]), name="embedding")
            self.kernel = tf.Variable(normal([4, 3], seed=[1, 2]), name="kernel")
            self.bias = tf.Variable(tf.zeros([3]), name="bias")
            self.half = tf.Variable(tf.cast(normal([2, 2], seed=[1, 3]), tf.float16), name="half")
            self.brain = tf.Variable(tf.cast(normal([3], seed=[1, 4]), tf.bfloat16), name="brain", trainable=False)
            self.wide = tf.Variable(tf.cast(normal([2], seed=[1, 5]), tf.float64), name="wide")
            self.counts = tf.Variable(tf.range(5, dtype=tf.int32), name="counts", trainable=False)
            self.big = tf.Variable(tf.constant([1 << 40, -3], tf.int64), name="big", trainable=False)
            self.flags = tf.Variable([True, False, True], name="flags", trainable=False)
            self.bytes = tf.Variable(tf.constant(np.arange(6, dtype=np.uint8)), name="bytes", trainable=False)
            self.cplx = tf.Variable(tf.constant([1 + 2j, 3 - 4j], tf.complex64), name="cplx", trainable=False)
            self.vocab = tf.Variable(tf.constant(["alpha", "", "\u00e9t\u00e9"]), name="vocab", trainable=False)

        def loss(self) -> Any:
            rows = tf.nn.embedding_lookup(self.embedding, [1, 3])
            out = tf.matmul(rows, self.kernel) + self.bias
            extra = tf.reduce_sum(tf.cast(self.half, tf.float32)) + tf.cast(tf.reduce_sum(self.wide), tf.float32)
            return tf.reduce_sum(out * out) + extra

    model = Model()
    optimizer = tf.compat.v1.train.AdamOptimizer(0.01)
    trainable = [model.embedding, model.kernel, model.bias, model.half, model.wide]
    for _ in range(2):
        _train_step(trainable, optimizer, model.loss)
    return model, optimizer, trainable


def _object_keys(prefix: str) -> dict[str, str]:
    """Variable name (as TensorFlow names it) -> checkpoint key, from the saved object graph."""
    import tensorflow as tf
    from tensorflow.core.protobuf import trackable_object_graph_pb2

    graph = trackable_object_graph_pb2.TrackableObjectGraph()
    graph.ParseFromString(tf.train.load_checkpoint(prefix).get_tensor("_CHECKPOINTABLE_OBJECT_GRAPH"))
    return {a.full_name: a.checkpoint_key for node in graph.nodes for a in node.attributes}


def _v1_slots(prefix: str, optimizer: Any, trainable: list[Any]) -> dict[str, dict[str, str]]:
    keys = _object_keys(prefix)
    slots = {}
    for variable in trainable:
        for slot_name in optimizer.get_slot_names():
            slot = optimizer.get_slot(variable, slot_name)
            key = keys[slot.name.split(":")[0]]
            slots[key] = {"slot": slot_name, "slot_of": keys[variable.name.split(":")[0]]}
    return slots


def _tf2_module(folder: Path) -> tuple[str, dict[str, dict[str, str]]]:
    import tensorflow as tf

    model, optimizer, trainable = _module()
    prefix = tf.train.Checkpoint(model=model, optimizer=optimizer).save(str(folder / "ckpt"))
    return prefix, _v1_slots(prefix, optimizer, trainable)


def _sharded(folder: Path) -> tuple[str, dict[str, dict[str, str]]]:
    import tensorflow as tf

    model, optimizer, trainable = _module()
    policy = tf.train.experimental.MaxShardSizePolicy(max_shard_size=256)
    options = tf.train.CheckpointOptions(experimental_sharding_callback=policy)
    prefix = tf.train.Checkpoint(model=model, optimizer=optimizer).save(str(folder / "ckpt"), options=options)
    return prefix, _v1_slots(prefix, optimizer, trainable)


def _keras3(folder: Path) -> tuple[str, dict[str, dict[str, str]]]:
    import keras
    import numpy as np
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    layers = [keras.Input((4,)), keras.layers.Dense(3, name="dense"), keras.layers.Dense(2, name="out")]
    model = keras.Sequential(layers)
    optimizer = keras.optimizers.Adam(0.01)
    model.compile(optimizer=optimizer, loss="mse")
    model.fit(np.ones((4, 4), np.float32), np.ones((4, 2), np.float32), epochs=1, batch_size=2, verbose=0)
    prefix = tf.train.Checkpoint(model=model, optimizer=optimizer).save(str(folder / "ckpt"))
    keys = _object_keys(prefix)
    slots = {}
    for index, variable in enumerate(optimizer._trainable_variables):
        for slot_name, slot_list in (("momentum", optimizer._momentums), ("velocity", optimizer._velocities)):
            slots[keys[slot_list[index].path]] = {"slot": slot_name, "slot_of": keys[variable.path]}
    return prefix, slots


def _tf1_saver(folder: Path) -> tuple[str, dict[str, dict[str, str]]]:
    import numpy as np
    import tensorflow as tf

    tf1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default():
        tf1.set_random_seed(0)
        x = tf1.placeholder(tf.float32, [None, 4])
        kernel = tf1.get_variable("dense/kernel", [4, 3])
        bias = tf1.get_variable("dense/bias", [3], initializer=tf1.zeros_initializer())
        embedding = tf1.get_variable("embedding", [10, 4], partitioner=tf1.fixed_size_partitioner(2))
        step = tf1.train.get_or_create_global_step()
        rows = tf.nn.embedding_lookup(embedding, [1, 7])
        loss = tf.reduce_sum(tf.matmul(x, kernel) + bias) + tf.reduce_sum(rows * rows)
        optimizer = tf1.train.AdamOptimizer(0.01)
        train = optimizer.minimize(loss, global_step=step)
        saver = tf1.train.Saver()
        with tf1.Session(graph=graph) as session:
            session.run(tf1.global_variables_initializer())
            for _ in range(2):
                session.run(train, {x: np.ones((2, 4), np.float32)})
            prefix = saver.save(session, str(folder / "model.ckpt"), global_step=step)
        slots = {}
        for variable in (kernel, bias):
            for slot_name in optimizer.get_slot_names():
                slot = optimizer.get_slot(variable, slot_name)
                slots[slot.op.name] = {"slot": slot_name, "slot_of": variable.op.name}
    return str(prefix), slots


if __name__ == "__main__":
    for path in generate(Path(sys.argv[1])):
        print(path)
