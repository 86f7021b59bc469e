"""Every analysis of one inventory, computed once: roles, parameters, overhead, reduction, memory.

``analyze`` is pure (the inventory and the options in, the answers out). ``ckptscan.pipeline`` calls
it once per model and hands the answer to every renderer inside a ``ModelReport``; nothing else in
the package calls it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from ckptscan.analyze import architecture, memory, moe, overhead, parameters, reduction, roles
from ckptscan.analyze.moe import MoE
from ckptscan.analyze.roles import Role, RoleDecision
from ckptscan.analyze.summary import Count
from ckptscan.inventory import Inventory


@dataclass(frozen=True, slots=True)
class AnalysisOptions:
    """What ``analyze`` computes and under which assumptions (reduction, memory, GPU)."""

    reduction: reduction.Options = field(default_factory=reduction.Options)
    training: memory.TrainingOptions = field(default_factory=memory.TrainingOptions)
    inference: memory.InferenceOptions = field(default_factory=memory.InferenceOptions)
    # reduction targets to compute, in this order (None: every target); an audit asks for a few
    targets: tuple[str, ...] | None = None
    # inference and training memory estimates (an audit leaves them to `ckptscan memory`)
    memory: bool = True
    # "will it fit?": (label, bytes) of a GPU; the estimates then carry a memory.Fit
    gpu: tuple[str, int] | None = None


@dataclass(frozen=True, slots=True)
class Analysis:
    """Every analysis of one inventory, computed once by ``analyze`` and shared by the renderers."""

    decisions: list[RoleDecision]  # one per tensor, ties marked
    by_role: dict[str, Count]  # every tensor entry, by role
    parameters: parameters.Parameters
    overhead: overhead.Overhead
    targets: list[reduction.Target]
    architecture: architecture.Architecture | None
    inference: memory.InferenceEstimate | None  # None when not asked for (AnalysisOptions.memory)
    training: memory.TrainingEstimate | None
    moe: MoE | None = None  # routed experts: total vs active parameters, expert vs shared bytes


def analyze(inventory: Inventory, options: AnalysisOptions | None = None) -> Analysis:
    options = options or AnalysisOptions()
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
    param_roles = {inventory.tensors[i].name: decisions[i].role.value for i in params.counted}
    inference = training = None
    if options.memory:
        inference = memory.inference(arch, targets, options.inference)
        training = memory.training(inventory, params, arch, options.training, embeddings, param_roles)
        if options.gpu is not None:
            inference, training = _fits(inventory, params, arch, targets, options, embeddings, param_roles,
                                        inference, training)  # fmt: skip
    return Analysis(
        decisions=decisions,
        by_role=by_role(inventory, decisions),
        parameters=params,
        overhead=split,
        targets=targets,
        architecture=arch,
        inference=inference,
        training=training,
        moe=moe.detect(inventory, params, arch),
    )


def _fits(
    inventory: Inventory,
    params: parameters.Parameters,
    arch: architecture.Architecture | None,
    targets: list[reduction.Target],
    options: AnalysisOptions,
    embeddings: frozenset[str],
    roles: dict[str, str],
    inference: memory.InferenceEstimate,
    training: memory.TrainingEstimate,
) -> tuple[memory.InferenceEstimate, memory.TrainingEstimate]:
    """Both estimates against the GPU, with the largest batch and sequence that fit each."""
    assert options.gpu is not None
    label, capacity = options.gpu
    inf_opts, train_opts = options.inference, options.training

    def inference_at(batch: int, seq: int) -> int:
        return memory.inference(arch, targets, replace(inf_opts, batch=batch, seq=seq)).total_bytes

    def training_at(batch: int, seq: int) -> int:
        opts = replace(train_opts, batch=batch, seq=seq)
        return memory.training(inventory, params, arch, opts, embeddings, roles).total_bytes

    limit = (arch.context if arch else None) or memory.DEFAULT_INFERENCE_SEQ
    inf_fit = memory.fit(label, capacity, inference.total_bytes, inference_at, inference.batch,
                         inference.seq or 1, limit)  # fmt: skip
    train_fit = memory.fit(label, capacity, training.total_bytes, training_at, training.batch,
                           training.seq or 1, limit)  # fmt: skip
    return replace(inference, fit=inf_fit), replace(training, fit=train_fit)


def by_role(inventory: Inventory, decisions: list[RoleDecision]) -> dict[str, Count]:
    """Every tensor entry by role, largest bytes first."""
    groups: dict[str, Count] = {}
    for t, d in zip(inventory.tensors, decisions, strict=True):
        groups[d.role.value] = groups.get(d.role.value, Count()).add(t)
    return dict(sorted(groups.items(), key=lambda item: (-item[1].bytes, item[0])))
