"""Rolling tensors up by module, with repeated blocks collapsed: ``model.layers.[0-21]``.

A tensor's module is its name without the last component. The rollup key keeps the module path up
to its first numeric component (the block index, replaced by ``[N]``), or its first two components
when there is none; so every layer of a transformer lands in one row, as do GGUF's ``blk.N``.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass

from ckptscan.inventory import Tensor

_SEPARATORS = re.compile(r"[./]")


@dataclass(frozen=True, slots=True)
class ModuleGroup:
    """One row of the per-module rollup (repeated blocks collapsed): tensors, elements, bytes."""

    name: str  # e.g. "model.layers.[0-21]" or "lm_head"
    blocks: int  # repeated blocks collapsed into this row (1 when not repeated)
    tensors: int
    elements: int
    bytes: int


@functools.lru_cache(maxsize=1 << 16)  # names repeat across the tensors and files of an audit
def module_key(name: str) -> tuple[str, int | None]:
    """The rollup key of a tensor name, and its block index when it sits in a repeated block."""
    parts = _SEPARATORS.split(name.split(":", 1)[0].strip("./"))
    module = parts[:-1] or parts
    for i, part in enumerate(module):
        if part.isdigit() and i > 0:
            return ".".join([*module[:i], "[N]"]), int(part)
    return ".".join(module[:2]), None


def rollup(tensors: Iterable[Tensor]) -> list[ModuleGroup]:
    keys: dict[str, list[int]] = {}
    indices: dict[str, set[int]] = {}
    for t in tensors:
        key, index = module_key(t.name)
        acc = keys.setdefault(key, [0, 0, 0])
        acc[0] += 1
        acc[1] += t.elements
        acc[2] += t.nbytes
        if index is not None:
            indices.setdefault(key, set()).add(index)
    groups = []
    for key, (n, elements, nbytes) in keys.items():
        seen = sorted(indices.get(key, ()))
        name = key.replace("[N]", format_indices(seen)) if seen else key
        groups.append(ModuleGroup(name, max(1, len(seen)), n, elements, nbytes))
    return groups


def format_indices(indices: list[int]) -> str:
    """``[0-21]`` for a contiguous run, ``[0-3,8,10-11]`` otherwise, a bare ``5`` for one index."""
    if len(indices) == 1:
        return str(indices[0])
    runs: list[str] = []
    start = prev = indices[0]
    for i in [*indices[1:], None]:
        if i is not None and i == prev + 1:
            prev = i
            continue
        runs.append(str(start) if start == prev else f"{start}-{prev}")
        if i is not None:
            start = prev = i
    return "[" + ",".join(runs) + "]"
