"""What changed between two models: ``ckptscan diff A B``.

Pure: two inventories and their analyses in, a :class:`Diff` out; nothing here opens a file. The
value comparison (``--stats``) is read by :mod:`ckptscan.stats.compare` and handed in as
:class:`~ckptscan.stats.compare.ValueDiff` records, with content hashes for rename matching.

Tensors are matched in four steps, each over what the earlier ones left:

1. ``name``: the same name.
2. ``prefix``: the same name once wrapper prefixes are dropped (``model.``, ``base_model.model.``
   from PEFT, ``module.`` from DDP, ``_orig_mod.`` from ``torch.compile``).
3. ``gguf-name``: llama.cpp's names (``blk.3.attn_q.weight``) mapped to Hugging Face's
   (``layers.3.self_attn.q_proj.weight``) by the table :data:`GGUF_NAMES` (our own, for the
   llama-family layout that most GGUF files use).
4. ``content`` (with ``--stats``): the same shape and the same content hash; then ``shape``: the one
   tensor of its shape on each side. What is left is added or removed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ckptscan.inventory import Inventory, Tensor

if TYPE_CHECKING:
    from ckptscan.analyze.analysis import Analysis
    from ckptscan.stats.compare import ValueDiff

# wrapper prefixes that do not change what a tensor is, longest first
PREFIXES = ("base_model.model.", "_orig_mod.", "module.", "model.")

# llama.cpp tensor names -> Hugging Face module names (without the ``model.`` prefix)
GGUF_NAMES = {
    "token_embd": "embed_tokens",
    "output_norm": "norm",
    "output": "lm_head",
}
GGUF_BLOCK_NAMES = {
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
    "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "ffn_gate_inp": "mlp.gate",
}
# the Hugging Face top-level names that are not under ``model.`` (lm_head) keep no prefix either
_GGUF_BLOCK = re.compile(r"blk\.(\d+)\.([a-z_]+)\.(weight|bias)")
_GGUF_TOP = re.compile(r"([a-z_]+)\.(weight|bias)")

METADATA_VALUE_CHARS = 200  # a changed metadata value is shown up to this many characters
HIDDEN_METADATA = frozenset({"kv_types"})  # GGUF's value types: they follow the values


@dataclass(frozen=True, slots=True)
class Side:
    """One of the two models compared: its path, format, and its sizes for the summary."""

    path: str
    format: str
    file_bytes: int
    tensors: int
    tensor_bytes: int
    parameters: int


@dataclass(frozen=True, slots=True)
class Pair:
    """A tensor of A and the tensor of B it was matched with."""

    a: Tensor
    b: Tensor
    match: str  # "name", "prefix", "gguf-name", "content", "shape"

    @property
    def dtype_changed(self) -> bool:
        return self.a.dtype.name != self.b.dtype.name

    @property
    def shape_changed(self) -> bool:
        return self.a.shape != self.b.shape


@dataclass(frozen=True, slots=True)
class RoleDelta:
    """One role's tensors, bytes and parameters in A and in B."""

    role: str
    tensors_a: int
    tensors_b: int
    bytes_a: int
    bytes_b: int
    parameters_a: int
    parameters_b: int


@dataclass(frozen=True, slots=True)
class MetadataChange:
    """One metadata key added, removed or changed between A and B, with both values."""

    key: str
    change: str  # "added", "removed", "changed"
    a: str | None  # JSON text, shortened
    b: str | None


@dataclass(frozen=True, slots=True)
class Diff:
    """What changed between two models: matched tensors, removed and added ones, roles, metadata."""

    a: Side
    b: Side
    pairs: tuple[Pair, ...]
    removed: tuple[Tensor, ...]  # in A only
    added: tuple[Tensor, ...]  # in B only
    roles: tuple[RoleDelta, ...]
    metadata: tuple[MetadataChange, ...]
    values: tuple[ValueDiff, ...] | None = None  # with --stats: one per pair, same order
    notes: tuple[str, ...] = field(default=())

    @property
    def renamed(self) -> tuple[Pair, ...]:
        return tuple(p for p in self.pairs if p.match != "name")

    @property
    def dtype_changes(self) -> tuple[Pair, ...]:
        return tuple(p for p in self.pairs if p.dtype_changed)

    @property
    def shape_changes(self) -> tuple[Pair, ...]:
        return tuple(p for p in self.pairs if p.shape_changed)

    @property
    def changed_values(self) -> tuple[ValueDiff, ...]:
        """Pairs whose values differ (compared and not identical)."""
        return tuple(v for v in self.values or () if v.skipped is None and not v.identical)


def canonical_name(name: str) -> str:
    """A tensor name without wrapper prefixes: ``base_model.model.model.layers.0.x`` -> ``layers.0.x``."""
    changed = True
    while changed:
        changed = False
        for prefix in PREFIXES:
            if name.startswith(prefix) and len(name) > len(prefix):
                name = name[len(prefix) :]
                changed = True
    return name


def gguf_to_hf(name: str) -> str | None:
    """The canonical Hugging Face name of a llama.cpp tensor name, or None when it is not one."""
    block = _GGUF_BLOCK.fullmatch(name)
    if block is not None:
        module = GGUF_BLOCK_NAMES.get(block.group(2))
        return None if module is None else f"layers.{block.group(1)}.{module}.{block.group(3)}"
    top = _GGUF_TOP.fullmatch(name)
    if top is not None and top.group(1) in GGUF_NAMES:
        return f"{GGUF_NAMES[top.group(1)]}.{top.group(2)}"
    return None


def match_tensors(
    a: Sequence[Tensor],
    b: Sequence[Tensor],
    hashes_a: Mapping[str, str] | None = None,
    hashes_b: Mapping[str, str] | None = None,
    *,
    by_shape: bool = True,
) -> tuple[list[Pair], list[Tensor], list[Tensor]]:
    """Pairs (in A's order), tensors only in A, tensors only in B (in B's order).

    ``by_shape=False`` stops after the name steps: what is left is what content hashes could match."""
    pairs: dict[int, Pair] = {}
    left = dict(enumerate(a))
    right = dict(enumerate(b))

    def by_key(key_of: Any, how: str) -> None:
        keys_b: dict[str, list[int]] = {}
        for j, t in right.items():
            key = key_of(t.name)
            if key is not None:
                keys_b.setdefault(key, []).append(j)
        keys_a: dict[str, list[int]] = {}
        for i, t in left.items():
            key = key_of(t.name)
            if key is not None:
                keys_a.setdefault(key, []).append(i)
        for key, found_a in keys_a.items():
            found_b = keys_b.get(key, [])
            if len(found_a) == 1 and len(found_b) == 1:  # an ambiguous key matches nothing
                i, j = found_a[0], found_b[0]
                pairs[i] = Pair(left.pop(i), right.pop(j), how)

    by_key(lambda name: name, "name")
    by_key(canonical_name, "prefix")
    by_key(lambda name: gguf_to_hf(canonical_name(name)) or canonical_name(name), "gguf-name")
    if hashes_a is not None and hashes_b is not None:
        by_key_pairs(left, right, pairs, lambda t, h: (t.shape, h.get(t.name)), hashes_a, hashes_b, "content")
    if by_shape:
        by_key_pairs(left, right, pairs, lambda t, h: (t.shape,), {}, {}, "shape")
    return [pairs[i] for i in sorted(pairs)], list(left.values()), list(right.values())


def by_key_pairs(
    left: dict[int, Tensor],
    right: dict[int, Tensor],
    pairs: dict[int, Pair],
    key_of: Any,
    hashes_a: Mapping[str, str],
    hashes_b: Mapping[str, str],
    how: str,
) -> None:
    """Match what is left by a property of the tensor (shape, content): only where it is unique."""
    groups_a: dict[Any, list[int]] = {}
    groups_b: dict[Any, list[int]] = {}
    for i, t in left.items():
        groups_a.setdefault(key_of(t, hashes_a), []).append(i)
    for j, t in right.items():
        groups_b.setdefault(key_of(t, hashes_b), []).append(j)
    for key, found_a in groups_a.items():
        if any(part is None for part in key) or not key[0]:  # no hash, or a scalar: too weak to match on
            continue
        found_b = groups_b.get(key, [])
        if len(found_a) == 1 and len(found_b) == 1:
            i, j = found_a[0], found_b[0]
            pairs[i] = Pair(left.pop(i), right.pop(j), how)


def compare(
    inventory_a: Inventory,
    inventory_b: Inventory,
    analysis_a: Analysis,
    analysis_b: Analysis,
    *,
    hashes_a: Mapping[str, str] | None = None,
    hashes_b: Mapping[str, str] | None = None,
    content: bool = False,
) -> Diff:
    """The structural comparison of two models (values come later, from :func:`with_values`).

    ``content``: the caller read the values (hashes are then given where names left tensors unmatched)."""
    pairs, removed, added = match_tensors(inventory_a.tensors, inventory_b.tensors, hashes_a, hashes_b)
    notes: list[str] = []
    if not content and (removed or added):
        notes.append("renames are matched by name patterns and unique shapes; --stats also matches by content")
    return Diff(
        a=_side(inventory_a, analysis_a),
        b=_side(inventory_b, analysis_b),
        pairs=tuple(pairs),
        removed=tuple(removed),
        added=tuple(added),
        roles=tuple(_roles(analysis_a, analysis_b)),
        metadata=tuple(metadata_changes(inventory_a.metadata, inventory_b.metadata)),
        notes=tuple(notes),
    )


def with_values(diff: Diff, values: Sequence[ValueDiff]) -> Diff:
    from dataclasses import replace

    return replace(diff, values=tuple(values))


def _side(inventory: Inventory, analysis: Analysis) -> Side:
    return Side(
        path=inventory.path,
        format=inventory.format,
        file_bytes=inventory.file_bytes,
        tensors=len(inventory.tensors),
        tensor_bytes=sum(t.nbytes for t in inventory.tensors),
        parameters=analysis.parameters.total,
    )


def _roles(a: Analysis, b: Analysis) -> Iterable[RoleDelta]:
    names = list(dict.fromkeys([*a.by_role, *b.by_role]))
    rows = []
    for role in names:
        ca, cb = a.by_role.get(role), b.by_role.get(role)
        rows.append(
            RoleDelta(
                role=role,
                tensors_a=ca.tensors if ca else 0,
                tensors_b=cb.tensors if cb else 0,
                bytes_a=ca.bytes if ca else 0,
                bytes_b=cb.bytes if cb else 0,
                parameters_a=a.parameters.by_role.get(role, 0),
                parameters_b=b.parameters.by_role.get(role, 0),
            )
        )
    return sorted(rows, key=lambda r: (-abs(r.bytes_b - r.bytes_a), r.role))


def metadata_changes(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[MetadataChange]:
    """Keys added, removed or changed, one level of nesting flattened (``config.hidden_size``)."""
    flat_a, flat_b = dict(_flatten(a)), dict(_flatten(b))
    changes = []
    for key in dict.fromkeys([*flat_a, *flat_b]):
        in_a, in_b = key in flat_a, key in flat_b
        if in_a and in_b:
            if flat_a[key] != flat_b[key]:
                changes.append(MetadataChange(key, "changed", flat_a[key], flat_b[key]))
        elif in_a:
            changes.append(MetadataChange(key, "removed", flat_a[key], None))
        else:
            changes.append(MetadataChange(key, "added", None, flat_b[key]))
    return changes


def _flatten(value: Mapping[str, Any], prefix: str = "", depth: int = 0) -> Iterable[tuple[str, str]]:
    for key, item in value.items():
        if key in HIDDEN_METADATA:
            continue
        name = f"{prefix}{key}"
        if isinstance(item, Mapping) and item and depth < 1:
            yield from _flatten(item, f"{name}.", depth + 1)
        else:
            yield name, _short(item)


def _short(value: Any) -> str:
    try:
        text = json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= METADATA_VALUE_CHARS else text[: METADATA_VALUE_CHARS - 1] + "…"
