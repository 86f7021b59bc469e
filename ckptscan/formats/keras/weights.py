"""Keras 3 ``.weights.h5`` (format ``keras-weights-h5``), and the Keras 3 variable mapping ``.keras`` shares.

Keras 3 stores each object's variables as ``<object path>/vars/<N>``, ``N`` the creation order:
``layers/<group>/vars/N`` for a layer (``<group>`` is the snake-cased class, uniquified:
``dense``, ``dense_1``), ``layers/<group>/<attribute>/vars/N`` for objects a layer holds (the
``cell`` of an LSTM), ``optimizer/vars/N`` for the optimizer and ``vars/N`` for the model itself.
Since Keras 3.x each ``vars`` group carries a ``name`` attribute: the layer's real name.

Each layer's ``vars/N`` is mapped back to a variable name (``attrs["variable"]`` e.g.
``dense_1/kernel``) from a table of what each built-in layer class creates, in order; the class
comes from ``config.json`` (``.keras``) or from the group name. When the count of variables does
not match the table (a custom or quantized layer) nothing is named and a warning says so.

The optimizer's variables are ``iteration``, ``learning_rate`` (absent with a schedule), then the
slot variables in a layout that depends on the optimizer (verified against Keras 3.15): for Adam,
``momentum`` and ``velocity`` interleaved per trainable model variable, then the ``velocity_hat``
block when ``amsgrad``. Slots are mapped to model variables positionally (the model's trainable
variables in layer order) and the mapping is accepted only when every shape matches; it is marked
``param_name_guessed`` because the file itself does not name them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ckptscan.dtypes import DTypeKind
from ckptscan.formats import _bounded, hdf5
from ckptscan.formats.keras import (
    KERAS3_OPTIMIZER_LAYOUTS,
    class_from_group_name,
    hdf5_root_names,
    keras3_variables,
    layer_table,
    nested_class,
    optimizer_class,
)
from ckptscan.inventory import FileRef, Inventory, Tensor
from ckptscan.source import Head, Source

FORMAT = "keras-weights-h5"
_VARS = re.compile(r"^(?:(?P<owner>.+)/)?vars/(?P<index>\d+)$")
_LEGACY_MARKERS = frozenset({"keras_version", "layer_names", "model_config"})


def sniff(head: Head) -> bool:
    names = hdf5_root_names(head)
    if names is None:
        return False
    links, attributes = names
    return not (attributes & _LEGACY_MARKERS) and "model_weights" not in links and bool({"layers", "vars"} & links)


def read(source: Source) -> Inventory:
    """libhdf5 runs in a bounded worker (time, memory, files it may open): see ``formats/_bounded.py``."""
    return _bounded.call(_read, source, what="HDF5")


def _read(source: Source) -> Inventory:
    with hdf5.open_file(source) as h5:
        walk = hdf5.walk_file(h5)
        names = vars_names(walk)
    hdf5.check_extents(walk, source.size)
    mapping = Keras3Mapping(walk, names, model_config=None, optimizer_config=None)
    tensors = mapping.tensors(source.name)
    return Inventory(
        format=FORMAT,
        path=str(source.path),
        root=str(source.root),
        files=(FileRef(source.name, source.size),),
        tensors=tuple(tensors),
        regions=tuple(hdf5.structure_regions(walk, source.name, source.size)),
        metadata={"hdf5": hdf5.summary(walk), "keras": mapping.metadata()},
        findings=tuple(walk.findings),
        warnings=tuple(walk.warnings + mapping.warnings),
    )


def vars_names(walk: hdf5.Walk) -> dict[str, str]:
    """The ``name`` attribute of every ``.../vars`` group, by owner path (read while the file is open)."""
    found: dict[str, str] = {}
    for path, group in walk.groups.items():
        if path == "vars" or path.endswith("/vars"):
            value = hdf5.read_attr(group, "name", 4096)
            if isinstance(value, str):
                found[path[: -len("vars")].rstrip("/")] = value
    return found


@dataclass(frozen=True, slots=True)
class _Owner:
    path: str  # "layers/dense", "layers/lstm/cell", "optimizer", "" (the model)
    variables: tuple[tuple[int, hdf5.Dataset], ...]  # (N, dataset) sorted by N


class Keras3Mapping:
    """Names, structure and optimizer roles of the datasets of a Keras 3 weights file."""

    def __init__(
        self,
        walk: hdf5.Walk,
        names: dict[str, str],
        *,
        model_config: Any,
        optimizer_config: Any,
    ) -> None:
        self.walk = walk
        self.names = names
        self.layers = layer_table(model_config) if model_config is not None else {}
        self.optimizer_config = optimizer_config if isinstance(optimizer_config, dict) else None
        self.warnings: list[str] = []
        self.owners: dict[str, _Owner] = {}
        self.others: list[hdf5.Dataset] = []
        self.attrs: dict[str, dict[str, Any]] = {}
        self.walk_position = {d.path: i for i, d in enumerate(walk.datasets)}
        self._group_owners()
        self.model_order = self._map_layers()
        self.optimizer_mapped = self._map_optimizer()

    def _group_owners(self) -> None:
        grouped: dict[str, list[tuple[int, hdf5.Dataset]]] = {}
        for dataset in self.walk.datasets:
            match = _VARS.match(dataset.path)
            if match is None:
                self.others.append(dataset)
                continue
            grouped.setdefault(match["owner"] or "", []).append((int(match["index"]), dataset))
        for owner, variables in grouped.items():
            self.owners[owner] = _Owner(owner, tuple(sorted(variables, key=lambda v: v[0])))

    # -- layers --------------------------------------------------------------------------------

    def _map_layers(self) -> list[str]:
        """Map every layer-owned variable; returns the owners in the model's variable order."""
        layer_owners = [o for o in self.owners if o.startswith("layers/") or o == ""]
        for owner in layer_owners:
            self._map_layer(self.owners[owner])
        return sorted(layer_owners, key=self._order_key)

    def _map_layer(self, owner: _Owner) -> None:
        parts = owner.path.split("/") if owner.path else []
        top = "/".join(parts[:2])
        layer_name = self.names.get(top) or (parts[1] if len(parts) > 1 else self.names.get("", "model"))
        info = self.layers.get(layer_name)
        class_name = info.class_name if info else class_from_group_name(parts[1]) if len(parts) > 1 else None
        config = info.config if info else {}
        chain = [layer_name]
        current = class_name
        for depth, attribute in enumerate(parts[2:], start=3):
            current = nested_class(current, attribute) or class_from_group_name(attribute)
            chain.append(self.names.get("/".join(parts[:depth])) or attribute)
        expected = keras3_variables(current, config) if owner.path else None
        if expected is not None and len(expected) != len(owner.variables):
            self.warnings.append(
                f"{owner.path}: {len(owner.variables)} variables where a {current} has {len(expected)}; not named"
            )
            expected = None
        for position, (index, dataset) in enumerate(owner.variables):
            attrs: dict[str, Any] = {"structure": "model", "layer": layer_name, "var_index": index}
            if class_name:
                attrs["layer_class"] = class_name
            if expected is not None:
                name, trainable = expected[position]
                attrs["variable"] = "/".join([*chain, name])
                attrs["trainable"] = trainable
            self.attrs[dataset.path] = attrs

    def _order_key(self, owner: str) -> tuple[int, int, int]:
        """Config order of the layer when the config is known, else the walk order of the file."""
        parts = owner.split("/")
        info = self.layers.get(self.names.get("/".join(parts[:2]), ""))
        walked = self.walk_position[self.owners[owner].variables[0][1].path]
        if info is not None:
            return (info.order, len(parts), walked)
        return (1 << 62 if not owner else 1 << 61, 0, walked)

    def trainable_params(self, owners: list[str] | None = None) -> list[tuple[str, tuple[int, ...]]]:
        params = []
        for owner in self.model_order if owners is None else owners:
            for _, dataset in self.owners[owner].variables:
                attrs = self.attrs.get(dataset.path, {})
                if attrs.get("trainable") and "variable" in attrs:
                    params.append((attrs["variable"], dataset.shape))
        return params

    def _infer_params(self, shapes: list[tuple[int, ...]]) -> list[tuple[str | None, tuple[int, ...]]]:
        """Without a config, the model's variable order is unknown: find the one order of the layers
        whose trainable variables, concatenated, give ``shapes`` (each owner's variables stay
        together and in order). Where no such order is unique, the names stay unknown."""
        units = {o: self.trainable_params([o]) for o in self.model_order}
        units = {o: p for o, p in units.items() if p}
        found: list[tuple[str | None, tuple[int, ...]]] = []
        while len(found) < len(shapes) and units:
            position = len(found)
            matches = [o for o, p in units.items() if [s for _, s in p] == shapes[position : position + len(p)]]
            if len(matches) != 1:
                break
            found.extend(units.pop(matches[0]))
        if len(found) != len(shapes) or units:
            return [(None, shape) for shape in shapes]
        return list(found)

    # -- optimizer -----------------------------------------------------------------------------

    def optimizer_class(self) -> str | None:
        if self.optimizer_config is not None:
            return optimizer_class(self.optimizer_config.get("class_name"))
        return optimizer_class(self.names.get("optimizer"))

    def _map_optimizer(self) -> bool:
        owner = self.owners.get("optimizer")
        if owner is None:
            for name, other in self.owners.items():
                if name.startswith("optimizer/"):
                    for _, dataset in other.variables:
                        self.attrs[dataset.path] = {"structure": "optimizer"}
            return False
        variables = [d for _, d in owner.variables]
        class_name = self.optimizer_class()
        roles: list[dict[str, Any]] = [{"structure": "optimizer"} for _ in variables]
        position = 0
        if variables and not variables[0].shape and variables[0].dtype.kind in (DTypeKind.INT, DTypeKind.UINT):
            roles[0]["optimizer_state"] = "iterations"
            position = 1
        candidate = variables[position] if position < len(variables) else None
        if (
            candidate is not None
            and not candidate.shape
            and candidate.dtype.kind == DTypeKind.FLOAT
            and not self._schedule()
        ):
            roles[position]["optimizer_state"] = "learning_rate"
            position += 1
        rest = variables[position:]
        layout = self._match_layout(class_name, rest)
        if layout is None and rest:
            self.warnings.append(
                f"optimizer/vars: {len(rest)} slot variables of {class_name or 'an unknown optimizer'} "
                "could not be matched to the model's variables by shape; not named"
            )
        for offset, (slot, param) in enumerate(layout or ()):
            role = roles[position + offset]
            role["optimizer_state"] = slot
            if param is not None:
                role["param_name"] = param
                role["param_name_guessed"] = True
        for role, dataset in zip(roles, variables, strict=True):
            if class_name:
                role["optimizer"] = class_name
            self.attrs[dataset.path] = role
        return layout is not None

    def _schedule(self) -> bool:
        config = (self.optimizer_config or {}).get("config")
        return isinstance(config, dict) and isinstance(config.get("learning_rate"), dict)

    def _match_layout(self, class_name: str | None, rest: list[hdf5.Dataset]) -> list[tuple[str, str | None]] | None:
        """(slot, model variable) for each slot variable, from the first known layout that fits every shape."""
        for blocks, trailing in KERAS3_OPTIMIZER_LAYOUTS.get(class_name or "", ()):
            per_param = sum(len(block) for block in blocks)
            count = len(rest) - len(trailing)
            if count < 0 or (count % per_param if per_param else count):
                continue
            params: list[tuple[str | None, tuple[int, ...]]]
            if self.layers:
                params = list(self.trainable_params())
            elif per_param:
                params = self._infer_params([d.shape for d in rest[: count : len(blocks[0])]][: count // per_param])
            else:
                params = []
            expected: list[tuple[str, str | None, tuple[int, ...]]] = [
                (slot, name, shape) for block in blocks for name, shape in params for slot in block
            ]
            expected.extend((scalar, None, ()) for scalar in trailing)
            if len(expected) == len(rest) and all(d.shape == e[2] for d, e in zip(rest, expected, strict=True)):
                return [(slot, name) for slot, name, _ in expected]
        return None

    # -- output --------------------------------------------------------------------------------

    def ordered(self) -> Iterable[hdf5.Dataset]:
        for owner in self.model_order:
            yield from (d for _, d in self.owners[owner].variables)
        optimizer_owners = [o for o in self.owners if o not in self.model_order]
        for owner in optimizer_owners:
            yield from (d for _, d in self.owners[owner].variables)
        yield from self.others

    def tensors(
        self, file: str, *, base: int = 0, addressable: bool = True, extra: dict[str, Any] | None = None
    ) -> list[Tensor]:
        result = []
        for dataset in self.ordered():
            attrs = {**self.attrs.get(dataset.path, {}), **(extra or {})}
            result.append(hdf5.dataset_tensor(dataset, file, base=base, attrs=attrs, addressable=addressable))
        return result

    def metadata(self) -> dict[str, Any]:
        layers, seen = [], set()
        for owner in self.model_order:
            top = "/".join(owner.split("/")[:2])
            if owner and top not in seen:
                seen.add(top)
                attrs = self.attrs.get(self.owners[owner].variables[0][1].path, {})
                layers.append({"group": top, "name": attrs.get("layer"), "class_name": attrs.get("layer_class")})
        info: dict[str, Any] = {"layers_with_variables": layers}
        if "optimizer" in self.owners:
            info["optimizer"] = {
                "class_name": self.optimizer_class(),
                "variables": len(self.owners["optimizer"].variables),
                "slots_mapped": self.optimizer_mapped,
            }
        return info
