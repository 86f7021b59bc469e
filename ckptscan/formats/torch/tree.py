"""Walking the object tree a pickle describes: tensors by path, structures, and everything else.

A tensor's name is its dotted path from the root: dict keys, list indices, and the attribute names
of opaque objects' state (``state_dict.model.layers.0.weight``,
``optimizer_states.0.state.3.exp_avg``, ``hyper_parameters.predictor._buffers.scale``). Every
occurrence counts: a tensor reached by two paths is listed twice (the storage tells that they
share bytes). Cycles are cut, and the walk is bounded in depth and in nodes visited, so that a
memo-sharing "billion laughs" pickle ends with an error instead of running for ever.

Structures are labelled by the keys that hold them (``state_dict`` -> model, ``optimizer`` ->
optimizer, ...) and by their shape (a dict with ``state`` and ``param_groups`` is an optimizer
state dict wherever it sits). Labels are inherited downwards and never overwritten inside a
labelled structure, so a model's own ``module`` key does not relabel it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ckptscan.errors import LimitExceeded
from ckptscan.formats.torch.objects import (
    Global,
    NumpyArray,
    NumpyDType,
    Opaque,
    PickleSet,
    TensorRef,
    TorchValue,
    type_name,
)

MAX_TREE_DEPTH = 200
MAX_WALK_NODES = 5_000_000
MAX_REPEATED_VISITS = 100_000  # containers reached again through the memo (billion-laughs pickles)
# A container reached again is walked again (its tensors appear under both names, as torch.load
# would give them) only while the nodes walked that way stay below the nodes walked the first time
# plus this slack: the walk stays linear in the pickle (each first visit is an object it built).
SHARED_WALK_SLACK = 10_000
MAX_SCALARS = 2000
MAX_OBJECT_PATHS = 5
MAX_STRING_CHARS = 200
MAX_LIST_PREVIEW = 16

# structure labels by the key that holds them (lower case)
KEY_LABELS: dict[str, str] = {
    **dict.fromkeys(
        ["state_dict", "model", "module", "model_state_dict", "model_state", "net", "network", "model_dict",
         "weights", "params", "generator", "discriminator", "student", "teacher", "unet", "vae", "text_encoder",
         "transformer", "backbone", "encoder_state_dict", "decoder_state_dict", "g", "d"],
        "model",
    ),
    **dict.fromkeys(
        ["ema", "model_ema", "ema_model", "ema_state_dict", "ema_state", "state_dict_ema", "shadow_params",
         "averaged_model", "swa_model", "ema_params", "model_ema_state_dict"],
        "ema",
    ),
    **dict.fromkeys(
        ["optimizer", "optimizers", "optimizer_state_dict", "optimizer_state", "optimizer_states", "optim",
         "opt", "optim_state", "optimizer_dict"],
        "optimizer",
    ),
    **dict.fromkeys(
        ["scheduler", "schedulers", "lr_scheduler", "lr_schedulers", "scheduler_state_dict", "lr_scheduler_state_dict"],
        "scheduler",
    ),
    **dict.fromkeys(
        ["scaler", "grad_scaler", "amp", "amp_scaler", "scaler_state_dict", "native_amp_scaling_state"], "scaler"
    ),
    **dict.fromkeys(
        ["rng_state", "rng_states", "rng", "cpu_rng_state", "cuda_rng_state", "torch_rng_state", "numpy_rng_state",
         "random_state", "python_rng_state"],
        "rng",
    ),
    **dict.fromkeys(
        ["hyper_parameters", "hparams", "hyperparameters", "args", "config", "cfg", "opts"], "hyper_parameters"
    ),
    "callbacks": "callbacks",
    **dict.fromkeys(["loops", "trainer_state", "train_state", "training_state"], "training"),
}  # fmt: skip


@dataclass(slots=True)
class FoundTensor:
    path: tuple[str, ...]
    ref: TensorRef
    structure: str | None
    optimizer_root: tuple[str, ...] | None = None


@dataclass(slots=True)
class OptimizerFound:
    path: tuple[str, ...]
    groups: list[list[int]]  # param indices per group, in order
    group_settings: list[dict[str, Any]]
    param_names: list[list[str]] | None  # torch >= 2.6 keeps names when built from named_parameters
    state_entries: int
    state_keys: list[str]


@dataclass
class TreeSummary:
    tensors: list[FoundTensor] = field(default_factory=list)
    numpy_arrays: list[dict[str, Any]] = field(default_factory=list)
    objects: dict[str, dict[str, Any]] = field(default_factory=dict)
    scalars: dict[str, Any] = field(default_factory=dict)
    scalars_omitted: int = 0
    structures: dict[str, str] = field(default_factory=dict)
    optimizers: list[OptimizerFound] = field(default_factory=list)
    top_level: dict[str, str] = field(default_factory=dict)
    repeated_paths: int = 0  # containers reached again through the memo (walked again)
    repeats_not_walked: int = 0  # ... and not walked again: over the shared-walk budget


def key_name(key: Any) -> str:
    if isinstance(key, str):
        return key
    if isinstance(key, bool | int | float) or key is None:
        return str(key)
    if isinstance(key, bytes):
        return key.decode("latin-1")
    if isinstance(key, tuple):
        return "(" + ",".join(key_name(k) for k in key) + ")"
    return f"<{type_name(key)}>"


def is_optimizer_state(value: Any) -> bool:
    return isinstance(value, dict) and "state" in value and "param_groups" in value


class _Walker:
    def __init__(self) -> None:
        self.summary = TreeSummary()
        self.nodes = 0
        self.first_nodes = 0  # nodes walked outside any container reached again
        self.repeating = 0  # depth of containers being walked again
        self.on_path: set[int] = set()
        self.seen: set[int] = set()
        self.path: list[str] = []

    def visit(self, value: Any, label: str | None, opt_root: tuple[str, ...] | None) -> None:
        self.nodes += 1
        if not self.repeating:
            self.first_nodes += 1
        if self.nodes > MAX_WALK_NODES:
            raise LimitExceeded(f"object tree has more than {MAX_WALK_NODES:,} nodes (memo-shared containers?)")
        if isinstance(value, TensorRef):
            self.summary.tensors.append(FoundTensor(tuple(self.path), value, label, opt_root))
            for name, q in (("scales", 0), ("zero_points", 1)):
                tensors = value.extra.get("quantizer_tensors", [])
                if q < len(tensors):
                    self.child(tensors[q], f"_q_{name}", label, opt_root)
            return
        if isinstance(value, str | int | float | bool | bytes | bytearray | complex) or value is None:
            self.scalar(value)
            return
        if isinstance(value, NumpyArray):
            entry = {
                "name": self.name(),
                "shape": list(value.shape),
                "dtype": value.dtype,
                "data_bytes": value.data_bytes,
            }
            if value.file_offset is not None:
                entry["offset"] = value.file_offset
                entry["fortran_order"] = value.fortran_order
            self.summary.numpy_arrays.append(entry)
            return
        if isinstance(value, Global | TorchValue | NumpyDType):
            self.scalar(_describe_leaf(value))
            return
        ident = id(value)
        if ident in self.on_path:
            return  # a cycle: the object contains itself
        if len(self.path) >= MAX_TREE_DEPTH:
            raise LimitExceeded(f"object tree is nested deeper than {MAX_TREE_DEPTH}", where=self.name())
        repeat = ident in self.seen
        if repeat:
            self.summary.repeated_paths += 1
            if self.summary.repeated_paths > MAX_REPEATED_VISITS:
                raise LimitExceeded(
                    f"object tree reaches shared containers more than {MAX_REPEATED_VISITS:,} times (memo bomb?)"
                )
            if self.nodes - self.first_nodes > self.first_nodes + SHARED_WALK_SLACK:
                self.summary.repeats_not_walked += 1
                return
        self.seen.add(ident)
        self.on_path.add(ident)
        self.repeating += repeat
        try:
            self.container(value, label, opt_root)
        finally:
            self.on_path.discard(ident)
            self.repeating -= repeat

    def container(self, value: Any, label: str | None, opt_root: tuple[str, ...] | None) -> None:
        if isinstance(value, dict):
            if is_optimizer_state(value) and opt_root is None:
                label, opt_root = "optimizer", tuple(self.path)
                self.summary.structures[self.name()] = "optimizer"
                self.summary.optimizers.append(_optimizer(tuple(self.path), value))
            elif label is None and _looks_like_scheduler(value):
                label = "scheduler"
                self.summary.structures[self.name()] = label
            if self.scalar_list(value):
                return
            for key, item in value.items():
                self.child(item, key_name(key), self.relabel(label, key), opt_root)
        elif isinstance(value, list | tuple | PickleSet):
            if self.scalar_list(value):
                return
            for index, item in enumerate(value):
                self.child(item, str(index), label, opt_root)
        elif isinstance(value, Opaque):
            self.opaque(value, label, opt_root)

    def opaque(self, value: Opaque, label: str | None, opt_root: tuple[str, ...] | None) -> None:
        entry = self.summary.objects.setdefault(value.callee, {"count": 0, "paths": []})
        entry["count"] += 1
        if len(entry["paths"]) < MAX_OBJECT_PATHS:
            entry["paths"].append(self.name())
        for index, arg in enumerate(value.args):
            if not isinstance(arg, Global | TorchValue):
                self.child(arg, f"args.{index}" if len(value.args) > 1 else "args", label, opt_root)
        for key, item in (value.kwargs or {}).items():
            self.child(item, key_name(key), label, opt_root)
        for state in value.states:
            self.state(state, label, opt_root)
        for key, item in value.entries.items():
            self.child(item, key_name(key), self.relabel(label, key), opt_root)
        for index, item in enumerate(value.items):
            self.child(item, str(index), label, opt_root)

    def state(self, state: Any, label: str | None, opt_root: tuple[str, ...] | None) -> None:
        if state is None:
            return
        if isinstance(state, tuple) and len(state) == 2 and all(isinstance(s, dict | None) for s in state):
            for part in state:  # (__dict__, __slots__ values)
                self.state(part, label, opt_root)
        elif isinstance(state, dict) and not is_optimizer_state(state):
            for key, item in state.items():
                self.child(item, key_name(key), self.relabel(label, key), opt_root)
        else:
            self.child(state, "state", label, opt_root)

    def child(self, value: Any, name: str, label: str | None, opt_root: tuple[str, ...] | None) -> None:
        self.path.append(name)
        try:
            self.visit(value, label, opt_root)
        finally:
            self.path.pop()

    def relabel(self, label: str | None, key: Any) -> str | None:
        if label is not None or not isinstance(key, str):
            return label
        found = KEY_LABELS.get(key.lower())
        if found is not None:
            self.summary.structures[".".join([*self.path, key])] = found
        return found

    def name(self) -> str:
        return ".".join(self.path)

    def scalar(self, value: Any) -> None:
        if len(self.summary.scalars) >= MAX_SCALARS:
            self.summary.scalars_omitted += 1
            return
        self.summary.scalars[self.name()] = json_scalar(value)

    def scalar_list(self, value: Any) -> bool:
        """Record a dict or list of plain scalars as one value (``param_groups.0.params``, betas)."""
        items = list(value.values()) if isinstance(value, dict) else value
        if not items or not all(isinstance(v, int | float | str | bool) or v is None for v in items):
            return False
        if isinstance(value, dict):
            if not all(isinstance(k, str) for k in value) or len(value) > MAX_LIST_PREVIEW:
                return False
            self.scalar({k: json_scalar(v) for k, v in value.items()})
        elif len(items) <= MAX_LIST_PREVIEW:
            self.scalar([json_scalar(v) for v in items])
        else:
            self.scalar({"type": "list", "count": len(items), "head": [json_scalar(v) for v in items[:8]]})
        return True


def _describe_leaf(value: Global | TorchValue | NumpyDType) -> str:
    if isinstance(value, Global):
        return f"<global {value.qualname}>"
    if isinstance(value, TorchValue):
        return f"torch.{value.name}" if value.kind != "device" else f"device({value.name})"
    return f"<numpy dtype {value.spec}>"


def json_scalar(value: Any) -> Any:
    if isinstance(value, str):
        return value if len(value) <= MAX_STRING_CHARS else value[:MAX_STRING_CHARS] + f"... ({len(value):,} chars)"
    if isinstance(value, bytes | bytearray):
        return {"type": "bytes", "count": len(value)}
    if isinstance(value, complex):
        return str(value)
    if isinstance(value, float) and value != value:
        return "nan"
    if isinstance(value, float) and value in (float("inf"), float("-inf")):
        return str(value)
    return value


def _looks_like_scheduler(value: dict[Any, Any]) -> bool:
    return "base_lrs" in value and ("last_epoch" in value or "_step_count" in value)


def _optimizer(path: tuple[str, ...], value: dict[Any, Any]) -> OptimizerFound:
    groups: list[list[int]] = []
    settings: list[dict[str, Any]] = []
    names: list[list[str]] | None = []
    raw_groups = value.get("param_groups")
    for group in raw_groups if isinstance(raw_groups, list) else []:
        if not isinstance(group, dict):
            continue
        params = group.get("params")
        groups.append([p for p in params if isinstance(p, int)] if isinstance(params, list) else [])
        group_names = group.get("param_names")
        if names is not None and isinstance(group_names, list) and all(isinstance(n, str) for n in group_names):
            names.append(group_names)
        else:
            names = None
        settings.append(
            {
                key_name(k): _setting(v)
                for k, v in group.items()
                if k not in ("params", "param_names") and _setting(v) is not _SKIP
            }
        )
    state = value.get("state")
    state_keys: set[str] = set()
    entries = 0
    if isinstance(state, dict):
        entries = len(state)
        for per_param in state.values():
            if isinstance(per_param, dict):
                state_keys.update(key_name(k) for k in per_param)
    return OptimizerFound(path, groups, settings, names or None, entries, sorted(state_keys))


_SKIP = object()


def _setting(value: Any) -> Any:
    if isinstance(value, str | int | float | bool) or value is None:
        return json_scalar(value)
    if isinstance(value, tuple | list) and all(isinstance(v, int | float | bool) for v in value) and len(value) <= 8:
        return [json_scalar(v) for v in value]
    return _SKIP


def walk(root: Any) -> TreeSummary:
    walker = _Walker()
    if isinstance(root, dict):
        walker.summary.top_level = {key_name(k): type_name(v) for k, v in list(root.items())[:200]}
    walker.visit(root, None, None)
    return walker.summary
