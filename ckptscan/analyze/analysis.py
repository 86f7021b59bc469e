"""Every analysis of one inventory, computed once: roles, parameters, overhead, reduction, memory.

``analyze`` is what the reports call. It is pure (the inventory and the options in, the answers out)
and remembers its last answer, so that the terminal sections and the JSON document of one result
share one computation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ckptscan.analyze import architecture, memory, moe, overhead, parameters, reduction, roles
from ckptscan.analyze.moe import MoE
from ckptscan.analyze.roles import Role, RoleDecision
from ckptscan.analyze.summary import Count
from ckptscan.inventory import Inventory


@dataclass(frozen=True, slots=True)
class AnalysisOptions:
    reduction: reduction.Options = field(default_factory=reduction.Options)
    training: memory.TrainingOptions = field(default_factory=memory.TrainingOptions)
    inference: memory.InferenceOptions = field(default_factory=memory.InferenceOptions)
    # reduction targets to compute, in this order (None: every target); an audit asks for a few
    targets: tuple[str, ...] | None = None
    # inference and training memory estimates (an audit leaves them to `ckptscan memory`)
    memory: bool = True


@dataclass(frozen=True, slots=True)
class Analysis:
    decisions: list[RoleDecision]  # one per tensor, ties marked
    by_role: dict[str, Count]  # every tensor entry, by role
    parameters: parameters.Parameters
    overhead: overhead.Overhead
    targets: list[reduction.Target]
    architecture: architecture.Architecture | None
    inference: dict[str, Any] | None  # None when not asked for (AnalysisOptions.memory)
    training: dict[str, Any] | None
    moe: MoE | None = None  # routed experts: total vs active parameters, expert vs shared bytes


_last: list[tuple[Inventory, AnalysisOptions, Analysis]] = []


def analyze(inventory: Inventory, options: AnalysisOptions | None = None) -> Analysis:
    options = options or AnalysisOptions()
    if _last and _last[0][0] is inventory and _last[0][1] == options:
        return _last[0][2]
    result = _analyze(inventory, options)
    _last[:] = [(inventory, options, result)]
    return result


def _analyze(inventory: Inventory, options: AnalysisOptions) -> Analysis:
    decisions = roles.classify(inventory)
    ties, decisions = parameters.find_ties(inventory, decisions)
    params = parameters.count_parameters(inventory, decisions, ties)
    split = overhead.split(inventory, decisions, ties)
    arch = architecture.detect(inventory)
    reduce_options = options.reduction
    if arch is not None and reduce_options.n_gqa == 1 and arch.kv_heads:
        reduce_options = reduction.Options(reduce_options.group_size, reduce_options.zero_points,
                                           max(1, arch.heads // arch.kv_heads))  # fmt: skip
    wanted = options.targets or reduction.TARGETS
    targets = reduction.reduce(inventory, decisions, ties, split, reduce_options, wanted)
    embeddings = frozenset(
        t.name for t, d in zip(inventory.tensors, decisions, strict=True) if d.role is Role.EMBEDDING
    )
    return Analysis(
        decisions=decisions,
        by_role=by_role(inventory, decisions),
        parameters=params,
        overhead=split,
        targets=targets,
        architecture=arch,
        inference=memory.inference(arch, targets, options.inference) if options.memory else None,
        training=memory.training(inventory, params, arch, options.training, embeddings) if options.memory else None,
        moe=moe.detect(inventory, params, arch),
    )


def by_role(inventory: Inventory, decisions: list[RoleDecision]) -> dict[str, Count]:
    """Every tensor entry by role, largest bytes first."""
    groups: dict[str, Count] = {}
    for t, d in zip(inventory.tensors, decisions, strict=True):
        groups[d.role.value] = groups.get(d.role.value, Count()).add(t)
    return dict(sorted(groups.items(), key=lambda item: (-item[1].bytes, item[0])))
