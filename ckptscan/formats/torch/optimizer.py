"""Naming optimizer state: which model parameter ``state.<i>`` belongs to.

``optimizer.state_dict()`` numbers parameters in the order of its ``param_groups`` (``params``
lists of ints) and forgets their names, unless it was built from ``named_parameters()`` (torch
>= 2.6 then keeps ``param_names`` beside ``params``). Without names, the order usually follows
``model.parameters()``, i.e. the model's state_dict order minus its buffers. So:

1. ``param_names`` present: names are taken from the file (``param_name_guessed`` False).
2. Exactly as many float model tensors (buffers with well-known names dropped) as parameter
   indices, and every state tensor's shape equals its parameter's: taken as established
   (``param_name_guessed`` False).
3. Otherwise each index takes the next model tensor in order whose shape matches its state (extra
   model tensors are taken to be buffers or frozen parameters); group by group when there are
   several groups. Marked ``param_name_guessed`` True.
4. When no assignment fits, no names are given.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from ckptscan.dtypes import DTypeKind
from ckptscan.inventory import Tensor

BUFFER_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked", "position_ids", "inv_freq", "_float_tensor")


def _shape_of_state(tensors: Sequence[Tensor]) -> dict[int, tuple[int, ...]]:
    shapes: dict[int, tuple[int, ...]] = {}
    for t in tensors:
        index = t.attrs.get("param_index")
        if isinstance(index, int) and t.shape and index not in shapes:
            shapes[index] = t.shape
    return shapes


def _candidates(model: Sequence[Tensor], *, drop_buffers: bool) -> list[Tensor]:
    kept = [t for t in model if t.dtype.kind in (DTypeKind.FLOAT, DTypeKind.COMPLEX, DTypeKind.QUANTIZED)]
    if drop_buffers:
        kept = [t for t in kept if not t.name.endswith(BUFFER_SUFFIXES)]
    return kept


def _exact(order: list[int], shapes: dict[int, tuple[int, ...]], candidates: list[Tensor]) -> dict[int, str] | None:
    if len(order) != len(candidates):
        return None
    if any(i in shapes and shapes[i] != c.shape for i, c in zip(order, candidates, strict=True)):
        return None
    return {i: c.name for i, c in zip(order, candidates, strict=True)}


def _greedy(
    groups: list[list[int]], shapes: dict[int, tuple[int, ...]], candidates: list[Tensor]
) -> dict[int, str] | None:
    mapping: dict[int, str] = {}
    used: set[int] = set()
    for group in groups:
        position = 0
        for index in group:
            while position < len(candidates) and (
                position in used or (index in shapes and candidates[position].shape != shapes[index])
            ):
                position += 1
            if position >= len(candidates):
                return None
            mapping[index] = candidates[position].name
            used.add(position)
            position += 1
    return mapping


def assign(
    groups: list[list[int]], names: list[list[str]] | None, state: Sequence[Tensor], model: Sequence[Tensor]
) -> tuple[dict[int, str], bool] | None:
    """(index -> parameter name, guessed) or None when no assignment fits."""
    order = [i for g in groups for i in g]
    if names is not None and [len(n) for n in names] == [len(g) for g in groups]:
        # the file's names are the module's; give the inventory's name of that tensor where there is one
        full = {t.name.removeprefix(f"{t.section}.") if t.section else t.name: t.name for t in model}
        return {
            i: full.get(n, n) for g, ns in zip(groups, names, strict=True) for i, n in zip(g, ns, strict=True)
        }, False
    if not order or not model:
        return None
    shapes = _shape_of_state(state)
    for drop in (False, True):
        exact = _exact(order, shapes, _candidates(model, drop_buffers=drop))
        if exact is not None:
            return exact, False
    for drop in (True, False):
        greedy = _greedy(groups if len(groups) > 1 else [order], shapes, _candidates(model, drop_buffers=drop))
        if greedy is not None:
            return greedy, True
    return None


def name_optimizer_state(
    tensors: Sequence[Tensor], optimizers: Sequence[dict[str, Any]], model: Sequence[Tensor]
) -> tuple[list[Tensor], list[str]]:
    """Tensors with ``param_name`` (and ``param_name_guessed``) set where an assignment fits.

    ``optimizers`` are the ``metadata["optimizers"]`` entries (path, params, param_names);
    returns the new tensor list and a note per optimizer saying how its names were found.
    """
    result = list(tensors)
    notes = []
    for optimizer in optimizers:
        path = optimizer["path"]
        members = [i for i, t in enumerate(result) if t.attrs.get("optimizer") == path]
        found = assign(optimizer["params"], optimizer.get("param_names"), [result[i] for i in members], model)
        if found is None:
            notes.append(f"{path or '<root>'}: parameter names not established")
            continue
        mapping, guessed = found
        notes.append(
            f"{path or '<root>'}: parameter names {'guessed from order and shapes' if guessed else 'established'}"
        )
        for i in members:
            index = result[i].attrs.get("param_index")
            if isinstance(index, int) and index in mapping:
                attrs = {**result[i].attrs, "param_name": mapping[index], "param_name_guessed": guessed}
                result[i] = replace(result[i], attrs=attrs)
    return result, notes
