"""Keras checkpoints: what the three Keras readers share.

- ``keras-h5`` (:mod:`.legacy`): the legacy HDF5 file of ``model.save("x.h5")`` / ``save_weights``;
- ``keras-weights-h5`` (:mod:`.weights`): the Keras 3 ``.weights.h5`` (``layers/<name>/vars/N``);
- ``keras-v3`` (:mod:`.v3`): the Keras 3 ``.keras`` zip (``config.json``, ``metadata.json``,
  ``model.weights.h5``).

Configs are only ever parsed with ``json.loads`` (size-capped); nothing in them is imported,
deserialized or run. :func:`config_findings` reports what *loading* the model with Keras would
execute or import: ``Lambda`` layers (marshalled Python bytecode or a function reference), and
objects whose ``module`` is not part of Keras/TensorFlow.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from ckptscan.errors import LimitExceeded, MalformedFile
from ckptscan.inventory import Finding, Severity
from ckptscan.source import Head

MAX_CONFIG_BYTES = 16 << 20
MAX_CONFIG_NODES = 2_000_000
MAX_LAYERS_LISTED = 10_000

# Module roots of objects Keras itself provides; anything else must be imported to load the model.
_KERAS_MODULE_ROOTS = frozenset({"keras", "tensorflow", "tf_keras", "keras_core", "keras_hub", "keras_nlp", "keras_cv"})
# Module roots whose functions run commands, touch files or load code: a config naming them is hostile.
_DANGEROUS_MODULE_ROOTS = frozenset(
    {
        "builtins", "os", "posix", "nt", "subprocess", "sys", "shutil", "importlib", "runpy", "pickle",
        "marshal", "code", "codeop", "ctypes", "socket", "pty", "webbrowser", "pathlib", "io", "shlex",
        "multiprocessing", "threading", "asyncio", "urllib", "http", "requests", "operator", "functools",
    }
)  # fmt: skip


def hdf5_root_names(head: Head) -> tuple[frozenset[str], frozenset[str]] | None:
    """(link names, attribute names) of an HDF5 file's root group, or None if it cannot be opened.

    For sniffing only: listing names neither follows links nor reads values.
    """
    from ckptscan.formats import hdf5

    if hdf5.signature_offset(head) is None:
        return None
    try:
        h5py = hdf5.import_h5py()
        opener = head.source.opener()
        with h5py.File(opener, "r") if hasattr(opener, "read") else h5py.File(opener, "r", locking=False) as h5:
            return frozenset(h5), frozenset(h5.attrs)
    except Exception:  # sniffing never fails: the generic HDF5 reader will report what is wrong
        return None


def parse_json(raw: str | bytes, what: str) -> Any:
    if len(raw) > MAX_CONFIG_BYTES:
        raise LimitExceeded(f"{what} is {len(raw):,} bytes; the limit is {MAX_CONFIG_BYTES:,}", where=what)
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise MalformedFile(f"{what} is not valid JSON ({e})", where=what) from e
    except RecursionError as e:
        raise LimitExceeded(f"{what} is nested too deeply", where=what) from e


# -- security ----------------------------------------------------------------------------------


def config_findings(config: Any, where: str) -> list[Finding]:
    """What loading this config with Keras would run or import (the config itself is never run)."""
    findings: list[Finding] = []
    stack: list[Any] = [config]
    visited = 0
    while stack:
        node = stack.pop()
        visited += 1
        if visited > MAX_CONFIG_NODES:
            raise LimitExceeded(f"{where} has more than {MAX_CONFIG_NODES:,} values", where=where)
        if isinstance(node, list):
            stack.extend(node)
            continue
        if not isinstance(node, dict):
            continue
        class_name = node.get("class_name")
        inner = node.get("config")
        if class_name == "Lambda" and isinstance(inner, dict):
            findings.append(_lambda_finding(inner, where))
            stack.extend(v for k, v in inner.items() if k != "function")
            stack.extend(v for k, v in node.items() if k != "config")
            continue
        if class_name == "__lambda__":
            findings.append(
                Finding(
                    "keras-lambda",
                    Severity.CRITICAL,
                    "config holds a serialized Python lambda (marshalled bytecode) that Keras runs when "
                    "loading with safe_mode=False",
                    where,
                )
            )
            continue
        if class_name in ("TFOpLambda", "SlicingOpLambda") and isinstance(inner, dict):
            findings.append(
                Finding(
                    "keras-tf-op-lambda",
                    Severity.LOW,
                    f"layer {inner.get('name')!r} calls TensorFlow function {inner.get('function')!r} by name",
                    where,
                )
            )
        module = node.get("module")
        if isinstance(class_name, str) and isinstance(module, str):
            finding = _module_finding(module, class_name, node.get("registered_name"), where)
            if finding is not None:
                findings.append(finding)
        stack.extend(node.values())
    return findings


def _lambda_finding(config: dict[str, Any], where: str) -> Finding:
    name = config.get("name")
    function = config.get("function")
    function_type = config.get("function_type")
    bytecode = (isinstance(function, dict) and function.get("class_name") == "__lambda__") or function_type == "lambda"
    if bytecode or isinstance(function, (list, tuple)):
        return Finding(
            "keras-lambda",
            Severity.CRITICAL,
            f"Lambda layer {name!r} holds marshalled Python bytecode that Keras runs when the model is loaded "
            "(with safe_mode=False, or by any legacy loader); not run",
            where,
        )
    severity, subject = Severity.HIGH, ""
    if isinstance(function, dict) and isinstance(function.get("module"), str):
        target = function.get("config") if isinstance(function.get("config"), str) else function.get("class_name")
        if isinstance(target, str):
            from ckptscan.formats.torch.safety import classify

            subject = f"{function['module']}.{target}".encode("unicode_escape").decode("ascii")
            if classify(function["module"], target) is Severity.CRITICAL:
                severity = Severity.CRITICAL
    shown = subject or _short(function)
    return Finding(
        "keras-lambda",
        severity,
        f"Lambda layer {name!r} calls function {shown} by reference; loading imports and runs it",
        where,
        subject=subject,
    )


def _module_finding(module: str, class_name: str, registered_name: Any, where: str) -> Finding | None:
    from ckptscan.formats.torch.safety import classify, describe

    root = module.split(".", 1)[0]
    if root in _KERAS_MODULE_ROOTS:
        return None
    qualname = f"{module}.{class_name}".encode("unicode_escape").decode("ascii")
    # the same table as pickles: a config naming module "os", class "system" is os.system
    severity = classify(module, class_name)
    if severity is None and root in _DANGEROUS_MODULE_ROOTS:
        severity = Severity.HIGH
    if severity is not None:
        return Finding(
            "keras-dangerous-module",
            severity,
            f"config names {qualname}: loading the model would import and call it, which {describe(severity)}",
            where,
            subject=qualname,
        )
    return Finding(
        "keras-custom-object",
        Severity.LOW,
        f"config needs custom object {registered_name or class_name!r} from module {module!r}; "
        "loading imports that module (its code runs)",
        where,
        subject=qualname,
    )


def _short(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


# -- model configs -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LayerInfo:
    name: str
    class_name: str
    config: dict[str, Any]
    order: int

    @property
    def trainable(self) -> bool:
        return self.config.get("trainable", True) is not False


def layer_table(model_config: Any) -> dict[str, LayerInfo]:
    """Every layer of a (possibly nested) model config, by name, in config order."""
    table: dict[str, LayerInfo] = {}
    stack: list[Any] = [model_config]
    visited = 0
    while stack:
        node = stack.pop(0)
        visited += 1
        if visited > MAX_CONFIG_NODES:
            break
        if not isinstance(node, dict):
            continue
        config = node.get("config")
        layers = config.get("layers") if isinstance(config, dict) else config if isinstance(config, list) else None
        for layer in layers or ():
            if not isinstance(layer, dict) or not isinstance(layer.get("class_name"), str):
                continue
            raw_inner = layer.get("config")
            inner: dict[str, Any] = raw_inner if isinstance(raw_inner, dict) else {}
            name = inner.get("name", layer.get("name"))
            if isinstance(name, str) and name not in table:
                table[name] = LayerInfo(name, layer["class_name"], inner, len(table))
            stack.append(layer)
            if isinstance(inner.get("layer"), dict):  # wrappers: Bidirectional, TimeDistributed
                stack.append({"config": {"layers": [inner["layer"]]}})
    return table


def model_summary(model_config: Any) -> dict[str, Any]:
    if not isinstance(model_config, dict):
        return {}
    inner = model_config.get("config")
    summary: dict[str, Any] = {"class_name": model_config.get("class_name")}
    if isinstance(inner, dict) and isinstance(inner.get("name"), str):
        summary["name"] = inner["name"]
    layers = layer_table(model_config)
    summary["layer_count"] = len(layers)
    summary["layers"] = [
        {"name": i.name, "class_name": i.class_name} for i in list(layers.values())[:MAX_LAYERS_LISTED]
    ]
    return summary


def optimizer_summary(optimizer: Any) -> dict[str, Any] | None:
    """Class name and scalar settings of an optimizer config (Keras 2 ``optimizer_config`` or Keras 3)."""
    if not isinstance(optimizer, dict) or not optimizer.get("class_name"):
        return None
    raw_config = optimizer.get("config")
    config: dict[str, Any] = raw_config if isinstance(raw_config, dict) else {}
    settings: dict[str, Any] = {k: v for k, v in config.items() if isinstance(v, (str, int, float, bool)) or v is None}
    if isinstance(config.get("learning_rate"), dict):
        settings["learning_rate"] = {"schedule": config["learning_rate"].get("class_name")}
    return {"class_name": optimizer_class(optimizer.get("class_name")), "config": settings}


def optimizer_class(name: Any) -> str | None:
    """``Custom>Adam`` (tf.keras 2.11), ``adam_1`` (a Keras 3 variable-path name) -> ``Adam``."""
    if not isinstance(name, str):
        return None
    bare = re.sub(r"_\d+$", "", name.rsplit(">", 1)[-1])
    for known in _OPTIMIZER_NAMES:
        if known.lower() == bare.lower():
            return known
    return bare


_OPTIMIZER_NAMES = (
    "SGD", "RMSprop", "Adam", "AdamW", "Adadelta", "Adagrad", "Adamax", "Adafactor", "Nadam", "Ftrl",
    "Lion", "Lamb", "Muon", "LossScaleOptimizer",
)  # fmt: skip


# -- Keras 3 weight layouts ----------------------------------------------------------------------

# Variables of a Keras 3 layer in creation order (the order of ``vars/N``): (name, trainable, flag)
# where a flag names the config switch that must be true for the variable to exist.
_KERAS3_WEIGHTS: dict[str, tuple[tuple[str, bool, str], ...]] = {
    "Dense": (("kernel", True, ""), ("bias", True, "use_bias")),
    "EinsumDense": (("kernel", True, ""), ("bias", True, "bias_axes")),
    "Embedding": (("embeddings", True, ""),),
    "BatchNormalization": (
        ("gamma", True, "scale"),
        ("beta", True, "center"),
        ("moving_mean", False, ""),
        ("moving_variance", False, ""),
    ),
    "LayerNormalization": (("gamma", True, "scale"), ("beta", True, "center")),
    "GroupNormalization": (("gamma", True, "scale"), ("beta", True, "center")),
    "LSTMCell": (("kernel", True, ""), ("recurrent_kernel", True, ""), ("bias", True, "use_bias")),
    "GRUCell": (("kernel", True, ""), ("recurrent_kernel", True, ""), ("bias", True, "use_bias")),
    "SimpleRNNCell": (("kernel", True, ""), ("recurrent_kernel", True, ""), ("bias", True, "use_bias")),
    "PReLU": (("alpha", True, ""),),
    "SeparableConv1D": (("depthwise_kernel", True, ""), ("pointwise_kernel", True, ""), ("bias", True, "use_bias")),
    "SeparableConv2D": (("depthwise_kernel", True, ""), ("pointwise_kernel", True, ""), ("bias", True, "use_bias")),
}
for _conv in (
    "Conv1D", "Conv2D", "Conv3D", "Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose",
    "DepthwiseConv1D", "DepthwiseConv2D",
):  # fmt: skip
    _KERAS3_WEIGHTS[_conv] = (("kernel", True, ""), ("bias", True, "use_bias"))

# The sub-object holding an RNN layer's variables: layers/<lstm>/cell/vars
_NESTED_CLASSES = {("LSTM", "cell"): "LSTMCell", ("GRU", "cell"): "GRUCell", ("SimpleRNN", "cell"): "SimpleRNNCell"}
_SNAKE_TO_CLASS = {
    re.sub(r"(?<!^)(?=[A-Z])", "_", c).lower(): c for c in (*_KERAS3_WEIGHTS, "LSTM", "GRU", "SimpleRNN")
}
_SNAKE_TO_CLASS.update({"conv1d": "Conv1D", "conv2d": "Conv2D", "conv3d": "Conv3D", "lstm": "LSTM", "gru": "GRU"})
_SNAKE_TO_CLASS.update(
    {"p_re_lu": "PReLU", "depthwise_conv2d": "DepthwiseConv2D", "separable_conv2d": "SeparableConv2D"}
)


def class_from_group_name(name: str) -> str | None:
    """``dense_3`` -> ``Dense``: Keras 3 names layer groups after the snake-cased class."""
    return _SNAKE_TO_CLASS.get(re.sub(r"_\d+$", "", name))


def nested_class(parent_class: str | None, attribute: str) -> str | None:
    return _NESTED_CLASSES.get((parent_class or "", attribute))


def keras3_variables(class_name: str | None, config: dict[str, Any]) -> list[tuple[str, bool]] | None:
    """(name, trainable) of each variable a layer of this class creates, in order; None if unknown."""
    spec = _KERAS3_WEIGHTS.get(class_name or "")
    if spec is None:
        return None
    trainable = config.get("trainable", True) is not False
    return [
        (name, trainable and is_trainable) for name, is_trainable, flag in spec if not flag or config.get(flag, True)
    ]


# -- optimizer slot layouts --------------------------------------------------------------------

# Keras 3 (verified against Keras 3.15 optimizer.variables): after ``iteration`` and
# ``learning_rate``, the slot variables as blocks; within a block, the slots of one model variable
# are interleaved, blocks follow one another. Each candidate is (blocks, trailing scalar names).
_K3 = tuple[tuple[tuple[str, ...], ...], tuple[str, ...]]
KERAS3_OPTIMIZER_LAYOUTS: dict[str, tuple[_K3, ...]] = {
    "Adam": (((("momentum", "velocity"),), ()), ((("momentum", "velocity"), ("velocity_hat",)), ())),
    "AdamW": (((("momentum", "velocity"),), ()), ((("momentum", "velocity"), ("velocity_hat",)), ())),
    "Lamb": (((("momentum", "velocity"),), ()),),
    "Nadam": (((("momentum", "velocity"),), ("u_product",)),),
    "Adamax": (((("momentum", "norm"),), ()),),
    "SGD": (((("momentum",),), ()), ((), ())),
    "Lion": (((("momentum",),), ()),),
    "Adagrad": (((("accumulator",),), ()),),
    "Adadelta": (((("accumulated_grad", "accumulated_delta_var"),), ()),),
    "Ftrl": (((("accumulator", "linear"),), ()),),
    "RMSprop": (
        ((("velocity",),), ()),
        ((("velocity",), ("momentum",)), ()),
        ((("velocity",), ("average_gradient",)), ()),
        ((("velocity",), ("momentum",), ("average_gradient",)), ()),
    ),
}

# Keras 2 (keras/optimizers.py): the unnamed ``Variable_N`` slots come as whole blocks, one per slot.
KERAS2_OPTIMIZER_SLOTS: dict[str, tuple[str, ...]] = {
    "Adam": ("m", "v", "vhat"),
    "Adamax": ("m", "u"),
    "Nadam": ("m", "v"),
    "SGD": ("momentum",),
    "RMSprop": ("accumulator",),
    "Adagrad": ("accumulator",),
    "Adadelta": ("accumulator", "delta_accumulator"),
}
