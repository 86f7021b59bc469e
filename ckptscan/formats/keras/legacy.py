"""Legacy Keras HDF5 (format ``keras-h5``): ``model.save("x.h5")`` and ``save_weights("x.h5")``.

A full model file has root attributes ``keras_version``, ``backend``, ``model_config`` and
``training_config`` (JSON strings), a ``model_weights`` group whose ``layer_names`` attribute
lists the layers in order, one group per layer whose ``weight_names`` attribute lists its
weights in order (``dense_1/kernel:0``, stored at ``model_weights/dense_1/dense_1/kernel:0``), and an
``optimizer_weights`` group whose ``weight_names`` lists the optimizer's variables. A weights-only
file (``save_weights``) has the layer groups and ``layer_names`` at the root.

Tensors come in Keras order (layers, then weights, then optimizer variables); anything the name
lists do not mention follows in HDF5 walk order. Model weights get ``attrs`` ``structure="model"``,
``layer``, ``variable`` and ``trainable``; optimizer variables ``structure="optimizer"``,
``optimizer_state`` and, when it can be established, ``param_name``: from the name itself in
tf.keras 2.x (``Adam/dense_1/kernel/m:0``) and Keras 3 (``adam/dense_1_kernel_momentum``), or by
position for Keras 2's unnamed ``training/Adam/Variable_N:0`` (blocks of m, v, vhat over the
trainable weights, accepted only when every shape matches, and marked ``param_name_guessed``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from ckptscan.formats import _bounded, hdf5
from ckptscan.formats.keras import (
    KERAS2_OPTIMIZER_SLOTS,
    config_findings,
    hdf5_root_names,
    layer_table,
    model_summary,
    optimizer_class,
    optimizer_summary,
    parse_json,
)
from ckptscan.inventory import FileRef, Inventory, Tensor
from ckptscan.source import Head, Source

FORMAT = "keras-h5"
MODEL, OPTIMIZER = "model_weights", "optimizer_weights"
_MARKERS = frozenset({"keras_version", "layer_names", "model_config"})
_NON_TRAINABLE = frozenset({"moving_mean", "moving_variance"})
_ITERATIONS = frozenset({"iterations", "iter", "iteration"})
_HYPERPARAMETERS = frozenset({"beta_1", "beta_2", "decay", "epsilon", "rho", "momentum", "nesterov", "schedule_decay"})
_SLOTS = tuple(
    sorted(
        (
            "velocity_hat", "velocity", "momentum", "average_gradient", "accumulated_grad", "accumulated_delta_var",
            "delta_accumulator", "accumulator", "norm", "linear", "vhat", "rms", "mg", "mom", "ms", "m", "v", "u",
        ),
        key=len,
        reverse=True,
    )
)  # fmt: skip
_POSITIONAL = re.compile(r"^Variable(_\d+)?$")


def sniff(head: Head) -> bool:
    names = hdf5_root_names(head)
    return names is not None and (bool(names[1] & _MARKERS) or MODEL in names[0])


@dataclass
class _KerasAttrs:
    keras_version: Any = None
    backend: Any = None
    model_config: Any = None
    training_config: Any = None
    prefix: str = ""  # "model_weights/" or "" (weights-only file)
    layer_names: list[str] = field(default_factory=list)
    weight_names: dict[str, list[str]] = field(default_factory=dict)
    optimizer_names: list[str] = field(default_factory=list)


def read(source: Source) -> Inventory:
    """libhdf5 runs in a bounded worker (time, memory, files it may open): see ``formats/_bounded.py``."""
    return _bounded.call(_read, source, what="HDF5")


def _read(source: Source) -> Inventory:
    with hdf5.open_file(source) as h5:
        walk = hdf5.walk_file(h5)
        keras = _read_attrs(walk)
        attr_findings = hdf5.pickle_attr_findings(walk)
    hdf5.check_extents(walk, source.size)
    mapping = _Mapping(walk, keras)
    findings = list(walk.findings) + attr_findings
    if keras.model_config is not None:
        findings += config_findings(keras.model_config, "model_config attribute")
    if keras.training_config is not None:
        findings += config_findings(keras.training_config, "training_config attribute")
    return Inventory(
        format=FORMAT,
        path=str(source.path),
        root=str(source.root),
        files=(FileRef(source.name, source.size),),
        tensors=tuple(mapping.tensors(source.name)),
        regions=tuple(hdf5.structure_regions(walk, source.name, source.size)),
        metadata={"keras": _metadata(keras), "hdf5": hdf5.summary(walk)},
        findings=tuple(dict.fromkeys(findings)),
        warnings=tuple(walk.warnings + mapping.warnings),
    )


def _read_attrs(walk: hdf5.Walk) -> _KerasAttrs:
    root = walk.group("")
    keras = _KerasAttrs(prefix=MODEL + "/" if walk.group(MODEL) is not None else "")
    weights = walk.group(keras.prefix)
    keras.keras_version = hdf5.read_attr(root, "keras_version") or hdf5.read_attr(weights, "keras_version")
    keras.backend = hdf5.read_attr(root, "backend") or hdf5.read_attr(weights, "backend")
    for name in ("model_config", "training_config"):
        raw = hdf5.read_attr(root, name)
        if raw is not None:
            setattr(keras, name, parse_json(raw if isinstance(raw, str) else str(raw), f"{name} attribute"))
    keras.layer_names = _strings(hdf5.read_attr(weights, "layer_names"))
    for layer in keras.layer_names:
        group = walk.group(keras.prefix + layer)
        if group is not None:
            keras.weight_names[layer] = _strings(hdf5.read_attr(group, "weight_names"))
    optimizer = walk.group(OPTIMIZER)
    if optimizer is not None:
        keras.optimizer_names = _strings(hdf5.read_attr(optimizer, "weight_names"))
    return keras


def _strings(value: Any) -> list[str]:
    if value is None:
        return []
    values = value if isinstance(value, list) else [value]
    return [v for v in values if isinstance(v, str)]


class _Mapping:
    def __init__(self, walk: hdf5.Walk, keras: _KerasAttrs) -> None:
        self.walk = walk
        self.keras = keras
        self.warnings: list[str] = []
        self.by_path = {d.path: d for d in walk.datasets}
        self.order: list[str] = []
        self.attrs: dict[str, dict[str, Any]] = {}
        self.params: list[tuple[str, tuple[int, ...]]] = []
        self._map_model()
        self._map_optimizer()

    def _map_model(self) -> None:
        layers = layer_table(self.keras.model_config)
        for layer in self.keras.layer_names:
            info = layers.get(layer)
            if layer not in self.keras.weight_names:
                self.warnings.append(f"layer {layer!r} is listed in layer_names but has no group")
                continue
            for weight in self.keras.weight_names[layer]:
                path = f"{self.keras.prefix}{layer}/{weight}"
                dataset = self.by_path.get(path)
                if dataset is None:
                    self.warnings.append(f"weight {weight!r} of layer {layer!r} is listed but /{path} is not there")
                    continue
                variable = re.sub(r":\d+$", "", weight)
                trainable = (info is None or info.trainable) and variable.rsplit("/", 1)[-1] not in _NON_TRAINABLE
                attrs: dict[str, Any] = {
                    "structure": "model",
                    "layer": layer,
                    "variable": variable,
                    "trainable": trainable,
                }
                if info is not None:
                    attrs["layer_class"] = info.class_name
                self._add(path, attrs)
                if trainable:
                    self.params.append((variable, dataset.shape))

    def _map_optimizer(self) -> None:
        optimizer = optimizer_class(_optimizer_config(self.keras.training_config).get("class_name"))
        flat = {name.replace("/", "_"): name for name, _ in self.params}
        known = {name for name, _ in self.params}
        positional: list[tuple[str, hdf5.Dataset]] = []
        for name in self.keras.optimizer_names:
            path = f"{OPTIMIZER}/{name}"
            dataset = self.by_path.get(path)
            if dataset is None:
                self.warnings.append(f"optimizer weight {name!r} is listed but /{path} is not there")
                continue
            attrs = _optimizer_role(name, flat, known)
            if attrs.pop("positional", False):
                positional.append((path, dataset))
            if optimizer:
                attrs["optimizer"] = optimizer
            self._add(path, attrs)
        if positional:
            self._map_positional(optimizer, positional)

    def _map_positional(self, optimizer: str | None, positional: list[tuple[str, hdf5.Dataset]]) -> None:
        """Keras 2 keeps unnamed slots in whole blocks (all m, then all v, ...) over the trainable weights."""
        slots = KERAS2_OPTIMIZER_SLOTS.get(optimizer or "", ())
        count = len(self.params)
        blocks, rest = divmod(len(positional), count) if count else (0, 1)
        if rest or not blocks or blocks > len(slots):
            self.warnings.append(
                f"{len(positional)} unnamed optimizer variables do not form {optimizer or 'optimizer'} slots "
                f"over the {count} trainable weights; not named"
            )
            return
        roles = []
        for index, (path, dataset) in enumerate(positional):
            slot = slots[index // count]
            name, shape = self.params[index % count]
            if dataset.shape == shape:
                roles.append((path, {"optimizer_state": slot, "param_name": name, "param_name_guessed": True}))
            elif slot == "vhat" and dataset.shape == (1,):  # Keras 2 Adam without amsgrad keeps a placeholder
                roles.append(
                    (
                        path,
                        {"optimizer_state": slot, "param_name": name, "param_name_guessed": True, "placeholder": True},
                    )
                )
            else:
                self.warnings.append(
                    f"unnamed optimizer variable /{path} has shape {list(dataset.shape)}, not "
                    f"{list(shape)} of {name!r}; the unnamed slots are not named"
                )
                return
        for path, role in roles:
            self.attrs[path].update(role)

    def _add(self, path: str, attrs: dict[str, Any]) -> None:
        if path not in self.attrs:
            self.order.append(path)
        self.attrs[path] = attrs

    def tensors(self, file: str) -> list[Tensor]:
        listed = set(self.order)
        paths = self.order + [d.path for d in self.walk.datasets if d.path not in listed]
        result = []
        for path in paths:
            dataset = self.by_path[path]
            attrs = self.attrs.get(path) or _structure_of(dataset)
            section = MODEL if not self.keras.prefix and dataset.section not in (OPTIMIZER,) else None
            result.append(hdf5.dataset_tensor(dataset, file, section=section, attrs=attrs))
        return result


def _structure_of(dataset: hdf5.Dataset) -> dict[str, Any]:
    return {MODEL: {"structure": "model"}, OPTIMIZER: {"structure": "optimizer"}}.get(dataset.section, {})


def _optimizer_config(training_config: Any) -> dict[str, Any]:
    found = training_config.get("optimizer_config") if isinstance(training_config, dict) else None
    return found if isinstance(found, dict) else {}


def _optimizer_role(name: str, flat: dict[str, str], known: set[str]) -> dict[str, Any]:
    """What one optimizer variable is, from its name alone."""
    role: dict[str, Any] = {"structure": "optimizer"}
    parts = re.sub(r":\d+$", "", name).split("/")
    while len(parts) > 1 and (parts[0] == "training" or optimizer_class(parts[0]) in KNOWN_OPTIMIZERS):
        parts = parts[1:]
    last = parts[-1]
    if last in _ITERATIONS:
        role["optimizer_state"] = "iterations"
    elif len(parts) == 1 and last in ("lr", "learning_rate"):
        role["optimizer_state"] = "learning_rate"
    elif len(parts) == 1 and last in _HYPERPARAMETERS:
        role.update(optimizer_state="hyperparameter", hyperparameter=last)
    elif len(parts) == 1 and _POSITIONAL.match(last):
        role["positional"] = True
    elif len(parts) > 1 and last in _SLOTS:  # tf.keras 2.x: Adam/dense_1/kernel/m:0
        role.update(optimizer_state=last, param_name="/".join(parts[:-1]))
    elif len(parts) > 1 and parts[0] in _SLOTS:  # tf.keras 2.11+: m/dense/kernel:0
        role.update(optimizer_state=parts[0], param_name="/".join(parts[1:]))
    else:
        for slot in _SLOTS:  # Keras 3 legacy h5: adam/dense_1_kernel_momentum
            if len(parts) == 1 and last.endswith("_" + slot) and last[: -len(slot) - 1] in flat:
                role.update(optimizer_state=slot, param_name=flat[last[: -len(slot) - 1]])
                break
    if "param_name" in role and role["param_name"] not in known:
        role["param_name_guessed"] = True
    return role


KNOWN_OPTIMIZERS = frozenset(KERAS2_OPTIMIZER_SLOTS) | {"AdamW", "Ftrl", "Lion", "Lamb", "Adafactor"}


def _metadata(keras: _KerasAttrs) -> dict[str, Any]:
    info: dict[str, Any] = {
        "keras_version": keras.keras_version,
        "backend": keras.backend,
        "weights_only": keras.model_config is None,
        "layer_names": keras.layer_names[:10_000],
    }
    if keras.model_config is not None:
        info["model"] = model_summary(keras.model_config)
    optimizer = optimizer_summary(_optimizer_config(keras.training_config))
    if optimizer is not None:
        info["optimizer"] = optimizer
    if isinstance(keras.training_config, dict):
        loss = keras.training_config.get("loss")
        if isinstance(loss, (str, type(None))):
            info["loss"] = loss
    return info
