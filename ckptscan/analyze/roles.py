"""What each tensor is for: its role, decided by one ordered table of rules (first match wins).

Roles: ``weight``, ``bias``, ``embedding``, ``output_head``, ``norm``, ``buffer``,
``optimizer_state``, ``master_weight``, ``ema``, ``quantization``, ``training_state``, ``other``.

Evidence, strongest first, as the table orders it:

1. where the tensor sits in the checkpoint tree: what the reader recorded (``attrs["structure"]``,
   ``attrs["optimizer_state"]``/``attrs["slot"]``, ``Tensor.section``) or what the path says
   (``optimizer_states.0.state.3.exp_avg``, ``model_ema.``, ``lr_schedulers``...);
2. graph structure where the reader provides it (ONNX ``attrs["consumers"]``: an initializer that a
   ``Gather`` reads as its table is an embedding, ``LayerNormalization`` input 1 a norm scale...);
3. names and naming conventions of each ecosystem (HF transformers, timm, GGUF ``token_embd`` /
   ``blk.N.attn_norm`` / ``output``, Keras ``kernel``/``gamma``/``moving_mean``, TF slots);
4. neighbours: a module that also holds ``running_mean`` is a BatchNorm, so its ``weight`` and
   ``bias`` are its scale and shift; shapes that mirror a model parameter name an optimizer slot's
   parameter when the reader could not.

Each decision carries the rule's id and a short reason that ``--explain`` and the JSON show. A tensor
no rule recognizes is ``other``: never a guess presented as fact.
"""

from __future__ import annotations

import enum
import functools
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from ckptscan.inventory import Inventory, Tensor


class Role(str, enum.Enum):
    WEIGHT = "weight"
    BIAS = "bias"
    EMBEDDING = "embedding"
    OUTPUT_HEAD = "output_head"
    NORM = "norm"
    BUFFER = "buffer"
    OPTIMIZER_STATE = "optimizer_state"
    MASTER_WEIGHT = "master_weight"
    EMA = "ema"
    QUANTIZATION = "quantization"
    TRAINING_STATE = "training_state"
    OTHER = "other"


# Roles whose tensors are model parameters (counted by ckptscan.analyze.parameters).
PARAMETER_ROLES = frozenset({Role.WEIGHT, Role.BIAS, Role.EMBEDDING, Role.OUTPUT_HEAD, Role.NORM})


@dataclass(frozen=True, slots=True)
class RoleDecision:
    """What one tensor is (role and detail), the evidence for it, and the rule that decided."""

    role: Role
    detail: str  # e.g. "token", "exp_avg", "batchnorm-scale", "tied to model.embed_tokens.weight"
    reason: str  # one short sentence: the evidence
    rule: str  # id of the rule that decided


# -- the evidence a rule looks at ----------------------------------------------------------------

_SPLIT = re.compile(r"[./:]")
_TF_VALUE_SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"
_TF_INDEX_SUFFIX = re.compile(r":\d+$")

# Leading components that only wrap the model (``state_dict.``, DDP ``module.``, torch.compile's
# ``_orig_mod.``): skipped when a rule asks for a top-level module such as ``head``.
WRAPPERS = frozenset(
    {"state_dict", "model_state_dict", "model", "module", "_orig_mod", "base_model", "net", "network",
     "params", "model_weights", "weights"}
)  # fmt: skip
# TorchScript constants and ONNX Constant nodes belong to the model: inference reads them
MODEL_STRUCTURES = frozenset({"", "model", "state_dict", "module", "weights", "params", "constants"})
MODEL_SECTIONS = frozenset({"state_dict", "model", "model_state_dict", "model_weights", "initializer", "layers",
                            "module", "params", "weights", "variables", "variable", "constants", "constant",
                            "sparse_initializer", "subgraph_initializer", "subgraph_constant",
                            "function_constant"})  # fmt: skip


@functools.lru_cache(maxsize=1 << 16)  # names repeat across the tensors and files of an audit
def name_parts(name: str) -> tuple[str, ...]:
    """Lower-cased components of a tensor name: ``a.b/c:0`` -> (a, b, c); TF suffixes dropped."""
    if name.endswith(_TF_VALUE_SUFFIX):
        name = name[: -len(_TF_VALUE_SUFFIX)]
    name = _TF_INDEX_SUFFIX.sub("", name)
    return tuple(p for p in _SPLIT.split(name.lower()) if p)


def module_path(parts: tuple[str, ...]) -> str:
    return ".".join(parts[:-1])


@dataclass(frozen=True, slots=True)
class Context:
    """Inventory-wide facts some rules need (the neighbours of a tensor)."""

    format: str = ""
    leaves: Mapping[str, frozenset[str]] | None = None  # module path -> the leaf names it holds
    model_shapes: Mapping[tuple[int, ...], tuple[str, ...]] | None = None  # shape -> model tensor names
    # container path -> the largest numbered child holding a matrix (``classifier`` -> 3 for
    # ``classifier.0`` / ``classifier.3``): in a head, the earlier layers are hidden transforms
    last_child: Mapping[str, int] | None = None
    vector_weights: frozenset[str] = frozenset()  # module paths whose ``weight`` is 1-D
    token_shapes: frozenset[tuple[int, ...]] = frozenset()  # shapes of token embedding tables
    batch_counters: bool = False  # some module of the file holds ``num_batches_tracked``
    nested: bool = False  # some tensor's name is another tensor's name plus a leaf (``w.weight.absmax``)
    disabled: int = 0  # bits of RULES (as in _candidates) whose file-wide precondition fails: never tried


@dataclass(frozen=True, slots=True)
class Facts:
    """What the rules look at for one tensor, computed once: its name's parts, its place, the Context."""

    tensor: Tensor
    parts: tuple[str, ...]  # components of the name (of attrs["variable"] when the reader set it)
    tree: tuple[str, ...]  # components of the entry's own name: where it sits
    structure: str
    slot: str
    consumers: tuple[tuple[str, int], ...]  # (op type, input index) of ONNX nodes reading it
    context: Context
    leaf: str = ""  # the last component of ``parts``
    section: str = ""  # the tensor's section, lower-cased
    tree_set: frozenset[str] = frozenset()  # the components ``in_tree`` looks at
    ops: frozenset[str] = frozenset()  # op types of the ONNX nodes reading it
    enclosing: frozenset[str] = frozenset()  # every module component (``parts`` without the leaf)
    top0: str = ""  # the first component of ``top``
    module: str = ""  # the component before the leaf
    top: tuple[str, ...] = ()  # the module path without wrapper components (see top_module)
    path: str = ""  # ``module_path(parts)``, computed once

    @property
    def siblings(self) -> frozenset[str]:
        """Leaf names of the tensors in the same module (itself included)."""
        leaves = self.context.leaves
        return leaves.get(self.path, frozenset()) if leaves else frozenset()

    @property
    def children(self) -> frozenset[str]:
        """Leaf names of the tensors stored under this tensor's own name (``w.weight.absmax``)."""
        leaves = self.context.leaves
        return leaves.get(".".join(self.parts), frozenset()) if leaves else frozenset()

    @property
    def ndim(self) -> int:
        return len(self.tensor.shape)

    def top_module(self) -> tuple[str, ...]:
        """The module path without wrapper components (``state_dict.model.head`` -> ``head``)."""
        return self.top


def _top_module(parts: tuple[str, ...]) -> tuple[str, ...]:
    path = parts[:-1]
    i = 0
    while i < len(path) - 1 and path[i] in WRAPPERS:
        i += 1
    return path[i:]


def facts_of(tensor: Tensor, context: Context) -> Facts:
    attrs = tensor.attrs
    variable = _variable(tensor)
    tree = name_parts(tensor.name)
    parts = name_parts(variable) if variable else tree
    if variable and tensor.section == "variable":
        # a TF model variable: Keras 3 saves model weights under optimizer/_trainable_variables/N, so its
        # path says nothing about what it is; its variable name does
        tree = parts
    slot = attrs.get("optimizer_state") or attrs.get("slot") or ""
    consumers: list[tuple[str, int]] = []
    raw = attrs.get("consumers")
    if isinstance(raw, (list, tuple)):
        for c in raw:
            if isinstance(c, Mapping) and isinstance(c.get("op"), str) and isinstance(c.get("input"), int):
                consumers.append((c["op"], c["input"]))
    # a pipeline component's tensors are prefixed by the component (``unet/``): not a module of the model
    top = _top_module(parts[1:] if attrs.get("component") and len(parts) > 1 else parts)
    return Facts(
        tensor=tensor,
        parts=parts,
        tree=tree,
        structure=str(attrs.get("structure") or "").lower(),
        slot=str(slot),
        consumers=tuple(consumers),
        context=context,
        leaf=parts[-1] if parts else "",
        section=tensor.section.lower(),
        tree_set=frozenset(tree[:-1] or tree),
        ops=frozenset(op for op, _ in consumers),
        enclosing=frozenset(parts[:-1]),
        top0=top[0] if top else "",
        module=parts[-2] if len(parts) > 1 else "",
        top=top,
        path=module_path(parts),
    )


def context_of(inventory: Inventory) -> Context:
    leaves: dict[str, set[str]] = {}
    last_child: dict[str, int] = {}
    vector_weights: set[str] = set()
    token_shapes: set[tuple[int, ...]] = set()
    for t in inventory.tensors:
        parts = name_parts(_evidence_name(t))
        if not parts:
            continue
        leaves.setdefault(module_path(parts), set()).add(parts[-1])
        if parts[-1] == "weight" and len(t.shape) == 1:
            vector_weights.add(module_path(parts))
        if len(t.shape) >= 2 and parts[-1] in ("weight", "kernel"):
            if len(parts) > 1 and parts[-2] in TOKEN_EMBEDDINGS and len(t.shape) == 2:
                token_shapes.add(t.shape)
            if _in_head(parts):
                for k in range(1, len(parts) - 1):
                    if parts[k].isdigit():
                        container = ".".join(parts[:k])
                        last_child[container] = max(last_child.get(container, -1), int(parts[k]))
    context = Context(
        format=inventory.format,
        leaves={k: frozenset(v) for k, v in leaves.items()},
        last_child=last_child,
        vector_weights=frozenset(vector_weights),
        token_shapes=frozenset(token_shapes),
        batch_counters=any("num_batches_tracked" in v for v in leaves.values()),
        nested=any(p.rsplit(".", 1)[-1] in ("weight", "bias") for p in leaves),
    )
    return replace(context, disabled=_disabled(context))


def _disabled(context: Context) -> int:
    """Rules whose neighbour evidence the file lacks altogether: skipped for every tensor."""
    off = {"bnb-weight": not context.nested, "frozen-batchnorm": not context.batch_counters,
           "tied-proj-out": not context.token_shapes}  # fmt: skip
    return sum(1 << _RULE_INDEX[rule] for rule, skip in off.items() if skip)


def _in_head(parts: tuple[str, ...]) -> bool:
    top = _top_module(parts)
    return (bool(top) and top[0] in _HEAD_TOP) or not _HEAD_ANYWHERE.isdisjoint(parts)


def _variable(t: Tensor) -> str:
    """The variable name a reader recorded (Keras ``variable``, TF ``variable_name``), or ""."""
    for key in ("variable", "variable_name"):
        value = t.attrs.get(key)
        if isinstance(value, str) and value:
            return value
    return ""


def _evidence_name(t: Tensor) -> str:
    return _variable(t) or t.name


# the modules that hold an output head (used by matchers defined before the vocabularies)
HEAD_ANYWHERE_NAMES = ("lm_head", "embed_out", "vocab_projector")
HEAD_TOP_NAMES = ("head", "classifier", "score", "fc", "output", "cls", "output_layer", "heads", "head_dist")


# -- matchers: each returns the captures for the reason text, or None ----------------------------

Captures = dict[str, str]
Matcher = Callable[[Facts], "Captures | None"]


def _gated(match: Matcher, field: str, allowed: frozenset[str]) -> Matcher:
    """Record a necessary condition of ``match`` (a Facts field's value, or for ``tree_set`` one of
    its members, is in ``allowed``) so that ``decide`` can skip the rule with one set lookup."""
    match.gates = ((field, allowed),)  # type: ignore[attr-defined]
    return match


def gates_of(match: Matcher) -> tuple[tuple[str, frozenset[str]], ...]:
    return getattr(match, "gates", ())


def in_tree(components: Iterable[str]) -> Matcher:
    """Some component of the entry's path is one of ``components``."""
    wanted = frozenset(components)

    def match(f: Facts) -> Captures | None:
        for part in f.tree[:-1] or f.tree:
            if part in wanted:
                return {"part": part}
        return None

    return _gated(match, "tree_set", wanted)


def file_named(pattern: str) -> Matcher:
    """The file holding the tensor is named so (HF Trainer writes ``rng_state.pth``, ``scheduler.pt``)."""
    regex = re.compile(pattern)

    def match(f: Facts) -> Captures | None:
        name = f.tensor.file.replace("\\", "/").rsplit("/", 1)[-1].lower()
        return {"file": name} if regex.fullmatch(name) else None

    return match


def attr_matches(key: str, pattern: str) -> Matcher:
    """A reader attribute (e.g. Keras ``layer_class``) has a matching value."""
    regex = re.compile(pattern)

    def match(f: Facts) -> Captures | None:
        value = f.tensor.attrs.get(key)
        return {key: value} if isinstance(value, str) and regex.fullmatch(value) else None

    return match


def structure_in(values: Iterable[str]) -> Matcher:
    wanted = frozenset(values)
    return _gated(lambda f: {"structure": f.structure} if f.structure in wanted else None, "structure", wanted)


def other_structure() -> Matcher:
    """The reader placed it in a part of the checkpoint that is not the model."""
    known = MODEL_STRUCTURES | {"optimizer", "ema", "master"}
    return lambda f: {"structure": f.structure} if f.structure not in known else None


def section_in(values: Iterable[str]) -> Matcher:
    wanted = frozenset(values)
    return _gated(lambda f: {"section": f.tensor.section} if f.section in wanted else None, "section", wanted)


def has_slot() -> Matcher:
    return lambda f: {"slot": f.slot} if f.slot else None


def leaf_in(values: Iterable[str]) -> Matcher:
    wanted = frozenset(values)
    return _gated(lambda f: {"match": f.leaf} if f.leaf in wanted else None, "leaf", wanted)


def leaf_matches(pattern: str) -> Matcher:
    regex = re.compile(pattern)
    return lambda f: {"match": f.leaf} if regex.fullmatch(f.leaf) else None


def module_in(values: Iterable[str]) -> Matcher:
    """The tensor's own module (the component before the leaf) is one of ``values``."""
    wanted = frozenset(values)
    return _gated(lambda f: {"match": f.module} if f.module in wanted else None, "module", wanted)


def module_matches(pattern: str) -> Matcher:
    regex = re.compile(pattern)
    return lambda f: {"match": f.module} if f.module and regex.fullmatch(f.module) else None


def any_module_in(values: Iterable[str]) -> Matcher:
    """Some enclosing module is one of ``values`` (``lm_head`` in ``lm_head.MatMul.weight``)."""
    wanted = frozenset(values)

    def match(f: Facts) -> Captures | None:
        for part in f.parts[:-1]:
            if part in wanted:
                return {"match": part}
        return None

    return _gated(match, "enclosing", wanted)


def top_module_in(values: Iterable[str]) -> Matcher:
    """The first component after the wrappers is one of ``values`` (``model.head.fc.weight``)."""
    wanted = frozenset(values)

    def match(f: Facts) -> Captures | None:
        top = f.top_module()
        return {"match": top[0]} if top and top[0] in wanted else None

    return _gated(match, "top0", wanted)


def consumed_as(op_inputs: Mapping[str, Iterable[int]]) -> Matcher:
    """An ONNX node of one of these op types reads the initializer as one of these inputs."""
    wanted = {op: frozenset(inputs) for op, inputs in op_inputs.items()}

    def match(f: Facts) -> Captures | None:
        for op, index in f.consumers:
            if index in wanted.get(op, ()):
                return {"op": op, "input": str(index)}
        return None

    return _gated(match, "ops", frozenset(wanted))


def stats_sibling() -> Matcher:
    """Its module also holds running (PyTorch) or moving (Keras) statistics: a BatchNorm."""

    def match(f: Facts) -> Captures | None:
        if f.siblings & _STATS_LEAVES:
            return {"match": f.module or module_path(f.parts)}
        return None

    return match


def beta_sibling() -> Matcher:
    """Its module also holds a ``beta``."""
    return lambda f: {} if "beta" in f.siblings else None


def learned_vector() -> Matcher:
    """A 1-D floating initializer (not the value of a Constant node, which is graph arithmetic)."""

    def match(f: Facts) -> Captures | None:
        t = f.tensor
        return {} if len(t.shape) == 1 and t.dtype.is_floating and "constant" not in t.section else None

    return match


def in_model_part() -> Matcher:
    """The reader placed it in the model (structure or section), whatever its name."""
    structures = MODEL_STRUCTURES - {""}
    return lambda f: {} if f.structure in structures or f.tensor.section.lower() in MODEL_SECTIONS else None


def in_module() -> Matcher:
    return lambda f: {} if len(f.parts) > 1 else None


def ndim_at_least(n: int) -> Matcher:
    return lambda f: {} if f.ndim >= n else None


def at_most_elements(n: int) -> Matcher:
    return lambda f: {} if f.tensor.elements <= n else None


def children_in(values: Iterable[str]) -> Matcher:
    """Tensors stored under its own name include one of ``values`` (bitsandbytes ``weight.absmax``)."""
    wanted = frozenset(values)

    def match(f: Facts) -> Captures | None:
        if not f.context.nested:  # no tensor of the file sits under another tensor's name
            return None
        found = sorted(f.children & wanted)
        return {"child": found[0]} if found else None

    return match


def frozen_batchnorm() -> Matcher:
    """Running statistics beside it but no ``num_batches_tracked``, in a file whose other BatchNorms
    have one: torchvision/detectron2 ``FrozenBatchNorm2d``, whose scale and shift are buffers."""

    def match(f: Facts) -> Captures | None:
        siblings = f.siblings
        if (
            f.context.batch_counters
            and siblings & {"running_mean", "running_var"}
            and ("num_batches_tracked" not in siblings)
        ):
            return {"match": f.module or module_path(f.parts)}
        return None

    return match


def vector_weight_module() -> Matcher:
    """Its module's ``weight`` is 1-D: a per-channel scale (LayerNorm in a Sequential, ``stem.1``),
    never a Linear, Conv or Embedding, whose weights are matrices."""
    return lambda f: {"match": f.module} if f.path in f.context.vector_weights else None


def hidden_in_head() -> Matcher:
    """Inside an output head, a layer before the last one (``classifier.0`` of ``classifier.0/.3``) or a
    hidden transform (``cls.predictions.transform.dense``, RoBERTa ``classifier.dense``)."""

    def match(f: Facts) -> Captures | None:
        path = f.parts[:-1]
        if f.top0 not in _HEAD_TOP and not f.enclosing & _HEAD_ANYWHERE:
            return None
        if "transform" in path or (f.module == "dense" and len(f.top) > 1):
            return {"match": ".".join(f.top)}
        last = f.context.last_child
        if last:
            for k in range(1, len(path)):
                if path[k].isdigit():
                    biggest = last.get(".".join(path[:k]), -1)
                    if int(path[k]) < biggest:
                        return {"match": ".".join(f.top)}
        return None

    return match


_HEAD_TOP = frozenset(HEAD_TOP_NAMES)
_HEAD_ANYWHERE = frozenset(HEAD_ANYWHERE_NAMES)


def token_shaped() -> Matcher:
    """Its shape is the token embedding's (a projection to the vocabulary)."""
    return lambda f: {} if f.tensor.shape in f.context.token_shapes else None


def sibling_in(values: Iterable[str]) -> Matcher:
    """Its module also holds one of ``values``."""
    wanted = frozenset(values)
    return lambda f: {} if f.siblings & wanted else None


def gguf() -> Matcher:
    return lambda f: {} if f.context.format == "gguf" else None


def all_of(*matchers: Matcher) -> Matcher:
    gates = tuple(g for m in matchers for g in gates_of(m))

    def match(f: Facts) -> Captures | None:
        captured: Captures = {}
        for m in matchers:
            got = m(f)
            if got is None:
                return None
            for key, value in got.items():
                captured.setdefault(key, value)  # the first matcher's captures name the rule
        return captured

    match.gates = gates  # type: ignore[attr-defined]
    return match


# -- vocabularies --------------------------------------------------------------------------------

MASTER_PARTS = ("master_params", "master_weights", "fp32_from_fp16", "fp32_from_fp16_params", "fp32_master",
                "fp32_flat_groups", "single_partition_of_fp32_groups", "fp32_groups_flat", "fp32_weights")  # fmt: skip
EMA_PARTS = ("ema", "model_ema", "ema_model", "ema_state_dict", "state_dict_ema", "shadow", "shadow_params",
             "ema_params", "averaged_model", "swa_model", "module_ema", "ema_weights",
             "exponentialmovingaverage")  # fmt: skip
OPTIMIZER_PARTS = ("optimizer", "optimizers", "optimizer_states", "optimizer_state", "optimizer_state_dict", "optim",
                   "optim_state", "opt_state", "optimizer_weights", "optimizer_slot")  # fmt: skip
OPTIMIZER_SECTIONS = ("optimizer", "optimizers", "optimizer_states", "optimizer_state", "optimizer_state_dict",
                      "optimizer_weights", "optim", "opt_state")  # fmt: skip
RNG_PARTS = ("rng_state", "rng_states", "torch_rng_state", "cuda_rng_state", "cpu_rng_state", "numpy_rng_state",
             "python_rng_state", "random_state", "rng", "generator_state")  # fmt: skip
SCHEDULER_PARTS = ("lr_scheduler", "lr_schedulers", "scheduler", "schedulers", "lr_scheduler_state")
TRAINER_PARTS = ("callbacks", "loops", "trainer_state", "hyper_parameters", "hparams", "scaler", "grad_scaler",
                 "amp_scaler", "loss_scaler")  # fmt: skip
COUNTER_LEAVES = ("global_step", "epoch", "save_counter", "_step_count", "iteration", "iterations", "num_updates",
                  "n_averaged", "step", "iter", "steps")  # fmt: skip
# TF1 optimizers store slots as siblings of the variable: dense/kernel/Adam, dense/kernel/Adam_1
TF1_SLOT = r"(adam|adamw|momentum|rmsprop|adagrad|adadelta|ftrl|lamb|nadam)(_\d+)?"
TF1_VARIABLES = ("kernel", "bias", "weights", "biases", "embeddings", "gamma", "beta", "weight", "recurrent_kernel")

SLOT_MEANING = {
    "exp_avg": "Adam/AdamW first moment",
    "exp_avg_sq": "Adam/AdamW second moment",
    "max_exp_avg_sq": "AMSGrad running maximum of the second moment",
    "momentum_buffer": "SGD momentum",
    "exp_avg_sq_row": "Adafactor factored second moment (rows)",
    "exp_avg_sq_col": "Adafactor factored second moment (columns)",
    "row_var": "Adafactor factored second moment (rows)",
    "col_var": "Adafactor factored second moment (columns)",
    "variance": "Adafactor second moment",
    "exp_inf": "Adamax infinity norm",
    "square_avg": "RMSprop square average",
    "acc_delta": "Adadelta accumulated update",
    "sum": "Adagrad accumulator",
    "mu_product": "NAdam momentum product",
    "state1": "bitsandbytes 8-bit first state",
    "state2": "bitsandbytes 8-bit second state",
    "absmax1": "bitsandbytes 8-bit state scales",
    "absmax2": "bitsandbytes 8-bit state scales",
    "qmap1": "bitsandbytes quantization map",
    "qmap2": "bitsandbytes quantization map",
    "m": "first moment (Keras/TF)",
    "v": "second moment (Keras/TF)",
    "vhat": "AMSGrad maximum (Keras/TF)",
    "momentum": "momentum (Keras/TF)",
    "velocity": "velocity (Keras/TF)",
    "accumulator": "accumulator (Keras/TF)",
    "step": "step counter",
    "iterations": "step counter (Keras/TF)",
    "iter": "step counter",
    "_iterations": "step counter (Keras 3)",
    "learning_rate": "learning rate",
    "_learning_rate": "learning rate",
    "beta1_power": "Adam beta1 power (TF1)",
    "beta2_power": "Adam beta2 power (TF1)",
}
STEP_SLOTS = frozenset({"step", "iterations", "iter", "_step", "_iterations"})

# Packed quantized weights: the weight itself, stored as integer words (GPTQ/AWQ ``qweight``,
# compressed-tensors ``weight_packed``, HQQ ``W_q``, MXFP4 ``*_blocks`` of GPT-OSS expert banks)
PACKED_WEIGHT = r"qweight|weight_packed|.+_blocks"
# tensors a bitsandbytes 4-bit weight keeps under its own name (``proj.weight.absmax``)
BNB_CHILDREN = ("absmax", "quant_map", "nested_absmax", "nested_quant_map", "quant_state")
# HQQ keeps its quantization metadata beside ``W_q``
HQQ_META = ("scale", "zero", "shape", "nbits", "group_size", "axis", "channel_wise", "compute_dtype", "packing",
            "unpack_view_dtype", "view_as_float", "quant_scale", "quant_zero", "round_zero", "encoded_state_dict",
            "offload_meta", "stores_quant_config", "meta")  # fmt: skip
QUANT_LEAVES = {
    "qzeros": "zero points",
    "weight_zero_point": "zero points",
    "input_zero_point": "zero points",
    "zeros": "zero points",
    "scales": "scales",
    "weight_scale": "scales",
    "weight_scale_inv": "scales",
    "weight_global_scale": "scales",
    "input_scale": "activation scale",
    "output_scale": "activation scale",
    "k_scale": "kv-cache scale",
    "v_scale": "kv-cache scale",
    "g_idx": "group index",
    "weight_g_idx": "group index",
    "weight_shape": "original shape",
    "absmax": "absmax",
    "nested_absmax": "absmax",
    "quant_map": "quantization map",
    "nested_quant_map": "quantization map",
    "scb": "LLM.int8 row scales",
    "weight_format": "layout flag",
}
QUANT_STATE_PARTS = ("quant_state",)

STATS_LEAVES = {
    "running_mean": "batchnorm running mean",
    "running_var": "batchnorm running variance",
    "num_batches_tracked": "batchnorm counter",
    "moving_mean": "batchnorm moving mean",
    "moving_variance": "batchnorm moving variance",
    "moving_var": "batchnorm moving variance",
}
_STATS_LEAVES = frozenset(STATS_LEAVES)
BUFFER_LEAVES = {
    **STATS_LEAVES,
    "inv_freq": "rotary inv_freq",
    "cos_cached": "rotary cache",
    "sin_cached": "rotary cache",
    "_cos_cached": "rotary cache",
    "_sin_cached": "rotary cache",
    "freqs_cis": "rotary cache",
    "cos_cache": "rotary cache",
    "sin_cache": "rotary cache",
    "position_ids": "position ids",
    "token_type_ids": "token type ids",
    "causal_mask": "attention mask",
    "attn_mask": "attention mask",
    "attention_mask": "attention mask",
    "mask": "mask",
    "masked_bias": "attention mask",
    "e_score_correction_bias": "router score correction (DeepSeek-V3 registers it as a buffer)",
    "final_logits_bias": "logits bias (BART/Marian/Pegasus register it as a buffer of zeros)",
    "relative_position_index": "relative position index",
    "_float_tensor": "dtype marker",
}
ROTARY_MODULES = ("rope_freqs", "rotary_emb", "rotary_embedding")

NORM_MODULE = r"(.*norm.*|ln(_?\d+|_?f|_[a-z0-9_]+)?|bn\d*|gn\d*)"
NORM_LEAVES = ("weight", "bias", "gamma", "beta", "scale", "g", "b", "offset")
SHIFT_LEAVES = frozenset({"bias", "beta", "b", "offset"})

TOKEN_EMBEDDINGS = ("embed_tokens", "wte", "word_embeddings", "word_embedding", "tok_embeddings", "tok_embedding",
                    "token_embd", "token_embedding", "token_embeddings", "embed_in", "tok_emb", "word_emb")  # fmt: skip
POSITION_EMBEDDINGS = ("wpe", "position_embeddings", "position_embedding", "embed_positions", "position_embd",
                       "pos_embedding", "pos_embeddings", "positional_embedding", "pos_emb",
                       "relative_attention_bias")  # fmt: skip
TYPE_EMBEDDINGS = ("token_type_embeddings", "token_types", "segment_embeddings", "type_embeddings")
LEARNED_TOKENS = {"cls_token": "class token", "dist_token": "distillation token", "reg_token": "register tokens",
                  "mask_token": "mask token", "pos_embed": "position", "class_embedding": "class token",
                  "class_token": "class token", "masked_spec_embed": "mask token", "position_embeddings": "position",
                  "pos_embedding": "position", "position_embedding": "position",
                  "relative_position_bias_table": "relative position"}  # fmt: skip
# learned scales that are neither a norm nor a matrix: CLIP's temperature, ConvNeXt/BEiT layer scale
LEARNED_SCALES = ("logit_scale", "layer_scale_parameter", "gamma_1", "gamma_2", "lambda_1", "lambda_2", "sinks")
# MoE expert banks: every expert's matrix in one 3-D tensor [experts, out, in] (transformers 5 ``experts``)
EXPERT_MODULES = ("experts",)

HEAD_ANYWHERE = HEAD_ANYWHERE_NAMES
HEAD_TOP = HEAD_TOP_NAMES

WEIGHT_CONSUMERS = {"Conv": (1,), "ConvTranspose": (1,), "Gemm": (1,), "MatMul": (1,), "MatMulInteger": (1,),
                    "LSTM": (1, 2), "GRU": (1, 2), "RNN": (1, 2), "Einsum": (1,)}  # fmt: skip
BIAS_CONSUMERS = {"Conv": (2,), "ConvTranspose": (2,), "Gemm": (2,), "LSTM": (3,), "GRU": (3,), "RNN": (3,)}
NORM_CONSUMERS_SCALE = {"LayerNormalization": (1,), "SimplifiedLayerNormalization": (1,),
                        "RMSNormalization": (1,), "SkipLayerNormalization": (2,),
                        "SkipSimplifiedLayerNormalization": (2,), "BatchNormalization": (1,),
                        "InstanceNormalization": (1,), "GroupNormalization": (1,)}  # fmt: skip
NORM_CONSUMERS_SHIFT = {"LayerNormalization": (2,), "SkipLayerNormalization": (3,), "BatchNormalization": (2,),
                        "InstanceNormalization": (2,), "GroupNormalization": (2,)}  # fmt: skip


# -- the table -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Rule:
    """One row of the role table: a matcher over a tensor's Facts, and the role and reason it gives."""

    id: str
    match: Matcher
    role: Role
    detail: str  # format string over the captures
    reason: str  # format string over the captures


def _norm_kind(f: Facts) -> str:
    """batchnorm, rmsnorm, groupnorm or layernorm where the evidence says so; "norm" otherwise (HF names
    Llama's RMSNorm ``input_layernorm``: a LayerNorm name without a shift beside it may be either)."""
    module = f.module
    siblings = f.siblings
    layer_class = str(f.tensor.attrs.get("layer_class", "")).lower()
    if layer_class:
        module = layer_class
    if re.search(r"batch_?norm|^bn\d*$", module) or siblings & _STATS_LEAVES:
        kind = "batchnorm"
    elif "rms" in module:
        kind = "rmsnorm"
    elif re.search(r"group_?norm|^gn\d*$", module):
        kind = "groupnorm"
    elif re.search(r"layer_?norm|^ln", module) and siblings & SHIFT_LEAVES:
        kind = "layernorm"
    else:
        kind = "norm"
    return f"{kind}-{'shift' if f.leaf in SHIFT_LEAVES else 'scale'}"


R = Role
RULES: tuple[Rule, ...] = (
    # 1. where it sits: the parts of a training checkpoint that are not the model
    Rule("rng-file", file_named(r"rng_state(_\d+)?\.(pth?|bin)"), R.TRAINING_STATE, "rng",
         "in `{file}`, where HF Trainer saves random-generator states"),
    Rule("scheduler-file", file_named(r"(lr_)?scheduler\.(pth?|bin)"), R.TRAINING_STATE, "scheduler",
         "in `{file}`, where HF Trainer saves the learning-rate scheduler"),
    Rule("master-path", in_tree(MASTER_PARTS), R.MASTER_WEIGHT, "fp32 master copy",
         "sits under `{part}`, where mixed-precision trainers keep fp32 master weights"),
    Rule("master-structure", structure_in(["master"]), R.MASTER_WEIGHT, "fp32 master copy",
         "the reader found it among the master weights"),
    Rule("ema-structure", structure_in(["ema"]), R.EMA, "ema copy",
         "the reader found it in the EMA part of the checkpoint"),
    Rule("optimizer-slot", has_slot(), R.OPTIMIZER_STATE, "{slot_detail}",
         "optimizer slot `{slot}`{meaning}{param}"),
    Rule("optimizer-structure", structure_in(["optimizer"]), R.OPTIMIZER_STATE, "{slot_detail}",
         "the reader found it in the optimizer state{meaning}{param}"),
    Rule("training-structure", other_structure(), R.TRAINING_STATE, "{structure}",
         "the reader found it in the `{structure}` part of the checkpoint, not in the model"),
    Rule("training-section", section_in(["training_state"]), R.TRAINING_STATE, "counter",
         "the reader found it among the training state (save counter, global step)"),
    Rule("object-graph", section_in(["object_graph"]), R.OTHER, "checkpoint object graph",
         "the TF checkpoint's serialized object graph: the format's own bookkeeping"),
    Rule("optimizer-section", section_in(OPTIMIZER_SECTIONS), R.OPTIMIZER_STATE, "{slot_detail}",
         "in the optimizer section `{section}`{meaning}{param}"),
    Rule("optimizer-path", in_tree(OPTIMIZER_PARTS), R.OPTIMIZER_STATE, "{slot_detail}",
         "sits under `{part}`{meaning}{param}"),
    Rule("tf1-slot", all_of(leaf_matches(TF1_SLOT), module_in(TF1_VARIABLES)), R.OPTIMIZER_STATE, "{match}",
         "TF1 optimizer slot `{match}` stored beside its variable"),
    Rule("tf1-beta-power", leaf_in(["beta1_power", "beta2_power"]), R.OPTIMIZER_STATE, "{match}",
         "TF1 Adam bookkeeping variable `{match}`"),
    Rule("ema-path", in_tree(EMA_PARTS), R.EMA, "ema copy",
         "sits under `{part}`: an exponential-moving-average copy of the model"),
    Rule("rng-path", in_tree(RNG_PARTS), R.TRAINING_STATE, "rng", "sits under `{part}`: random-generator state"),
    Rule("scheduler-path", in_tree(SCHEDULER_PARTS), R.TRAINING_STATE, "scheduler",
         "sits under `{part}`: learning-rate scheduler state"),
    Rule("trainer-path", in_tree(TRAINER_PARTS), R.TRAINING_STATE, "{part}",
         "sits under `{part}`: trainer bookkeeping, not the model"),
    Rule("counter-leaf", all_of(leaf_in(COUNTER_LEAVES), at_most_elements(1)), R.TRAINING_STATE, "counter",
         "a scalar named `{match}`: a training counter"),
    # 2. quantization data: scales, zero points and packed codes beside (or instead of) a weight
    Rule("quant-consumer", consumed_as({"QuantizeLinear": (1, 2), "DequantizeLinear": (1, 2),
                                        "MatMulNBits": (1, 2, 3, 4), "DynamicQuantizeMatMul": (1, 2, 3),
                                        "MatMulIntegerToFloat": (2, 3, 4, 5), "QLinearMatMul": (1, 2, 4, 5, 6, 7),
                                        "QLinearConv": (1, 2, 4, 5, 6, 7)}),
         R.QUANTIZATION, "{op} input {input}", "an ONNX `{op}` node reads it as input {input}"),
    Rule("packed-weight", leaf_matches(PACKED_WEIGHT), R.WEIGHT, "packed",
         "named `{match}`: the weight itself, its quantized codes packed into integer words"),
    Rule("bnb-weight", all_of(leaf_in(["weight"]), children_in(BNB_CHILDREN)), R.WEIGHT, "packed",
         "a weight with `{child}` stored under its name: bitsandbytes 4-bit codes, the weight itself"),
    Rule("hqq-weight", all_of(leaf_in(["w_q"]), sibling_in(["scale", "zero", "meta"])), R.WEIGHT, "packed",
         "HQQ `W_q` with its scale and zero beside it: the weight itself, its codes packed"),
    Rule("hqq-meta", all_of(leaf_in(HQQ_META), sibling_in(["w_q"])), R.QUANTIZATION, "hqq {match}",
         "named `{match}` beside an HQQ `W_q`: quantization metadata"),
    Rule("quant-leaf", leaf_in(QUANT_LEAVES), R.QUANTIZATION, "{quant}",
         "named `{match}`: {quant} of a quantized weight (GPTQ/AWQ/bitsandbytes/compressed-tensors)"),
    Rule("quant-state", in_tree(QUANT_STATE_PARTS), R.QUANTIZATION, "quant state",
         "sits under `{part}`: bitsandbytes quantization state"),
    Rule("quant-suffix", leaf_matches(r"(weight|input|output|act|activation|q|k|v|kv)_(scale|scale_inv|zero_point|zp)"),
         R.QUANTIZATION, "scales",
         "named `{match}`: a quantization scale or zero point"),
    Rule("dequantized-weight", consumed_as({"DequantizeLinear": (0,)}), R.WEIGHT, "quantized",
         "an ONNX DequantizeLinear node reads it as its quantized input: a weight stored quantized"),
    # 3. buffers: state a module keeps but does not train
    Rule("stats-consumer", consumed_as({"BatchNormalization": (3, 4)}), R.BUFFER, "batchnorm statistics",
         "an ONNX BatchNormalization node reads it as input {input} (running statistics)"),
    Rule("rotary-consumer", consumed_as({"RotaryEmbedding": (2, 3), "GroupQueryAttention": (7, 8)}), R.BUFFER,
         "rotary cache", "an ONNX `{op}` node reads it as input {input}: a rotary cos/sin table"),
    Rule("buffer-leaf", leaf_in(BUFFER_LEAVES), R.BUFFER, "{buffer}", "named `{match}`: a module buffer ({buffer})"),
    Rule("causal-mask", all_of(leaf_in(["bias", "masked_bias"]), ndim_at_least(4)), R.BUFFER, "attention mask",
         "a 4-D `{match}`: GPT-2 style causal-mask buffer, not a learned bias"),
    Rule("frozen-batchnorm", all_of(leaf_in(["weight", "bias"]), frozen_batchnorm()), R.BUFFER,
         "frozen batchnorm {leaf}",
         "module `{match}` has running statistics but no `num_batches_tracked`, which the file's other "
         "BatchNorms have: a FrozenBatchNorm, whose scale and shift are buffers"),
    Rule("fixed-position-table", all_of(module_in(["pos_embed"]), leaf_in(["pos_embed"])), R.BUFFER,
         "fixed position table", "`pos_embed.pos_embed`: diffusers' PatchEmbed sin-cos table, a buffer"),
    Rule("rotary-module", module_in(ROTARY_MODULES), R.BUFFER, "rotary frequencies",
         "in module `{match}`: rotary-embedding frequencies"),
    # 4. normalization layers
    Rule("keras-norm-layer", all_of(attr_matches("layer_class", r".*Normalization"), leaf_in(NORM_LEAVES)),
         R.NORM, "{norm}", "a variable of a Keras `{layer_class}` layer"),
    Rule("batchnorm-sibling", all_of(stats_sibling(), leaf_in(NORM_LEAVES)), R.NORM, "{norm}",
         "its module `{match}` also holds running statistics: a BatchNorm {side}"),
    Rule("norm-consumer-scale", consumed_as(NORM_CONSUMERS_SCALE), R.NORM, "{op} scale",
         "an ONNX `{op}` node reads it as its scale (input {input})"),
    Rule("norm-consumer-shift", consumed_as(NORM_CONSUMERS_SHIFT), R.NORM, "{op} shift",
         "an ONNX `{op}` node reads it as its shift (input {input})"),
    Rule("norm-module", all_of(module_matches(NORM_MODULE), leaf_in(NORM_LEAVES)), R.NORM, "{norm}",
         "module `{match}` is named like a normalization layer"),
    Rule("vector-weight", all_of(leaf_in(["weight", "bias"]), vector_weight_module()), R.NORM, "{norm}",
         "module `{match}` has a 1-D weight: a per-channel scale (and shift), a normalization layer"),
    Rule("keras-norm", all_of(leaf_in(["gamma", "beta"]), beta_sibling()), R.NORM, "{norm}",
         "`gamma` (scale) and `beta` (shift) side by side: a Keras-style normalization layer"),
    Rule("layer-scale", leaf_in(["gamma"]), R.WEIGHT, "scale",
         "a learned scale named `gamma` with no `beta` beside it (LayerScale, or a norm without shift)"),
    Rule("learned-scale", leaf_in(LEARNED_SCALES), R.WEIGHT, "scale",
         "named `{match}`: a learned scale or logit (temperature, layer scale, GPT-OSS attention sinks)"),
    # 5. embeddings
    Rule("keras-embedding-layer", attr_matches("layer_class", r"Embedding"), R.EMBEDDING, "token",
         "the table of a Keras `Embedding` layer"),
    Rule("embedding-consumer", all_of(consumed_as({"Gather": (0,)}), ndim_at_least(2)), R.EMBEDDING, "lookup",
         "an ONNX Gather node reads it as its table: an embedding lookup"),
    Rule("token-embedding", module_in(TOKEN_EMBEDDINGS), R.EMBEDDING, "token",
         "module `{match}` is a token embedding"),
    Rule("position-embedding", module_in(POSITION_EMBEDDINGS), R.EMBEDDING, "position",
         "module `{match}` is a position embedding"),
    Rule("type-embedding", module_in(TYPE_EMBEDDINGS), R.EMBEDDING, "type",
         "module `{match}` is a token-type embedding"),
    Rule("learned-token", leaf_in(LEARNED_TOKENS), R.EMBEDDING, "{token}",
         "named `{match}`: a learned {token} embedding"),
    Rule("keras-embeddings", leaf_in(["embeddings"]), R.EMBEDDING, "token",
         "Keras names an Embedding layer's table `embeddings`"),
    Rule("shared-embedding", all_of(top_module_in(["shared"]), ndim_at_least(2)), R.EMBEDDING, "token",
         "top-level `shared`: the token embedding T5/BART share between encoder and decoder"),
    # 6. output heads
    Rule("head-hidden-weight", all_of(leaf_in(["weight", "kernel"]), hidden_in_head()), R.WEIGHT, "head transform",
         "in `{match}`, a layer before the head's last one: a hidden transform, not the output projection"),
    Rule("head-hidden-bias", all_of(leaf_in(["bias"]), hidden_in_head()), R.BIAS, "head transform",
         "in `{match}`, a layer before the head's last one: a hidden transform's bias"),
    Rule("tied-proj-out", all_of(top_module_in(["proj_out"]), token_shaped()), R.OUTPUT_HEAD, "lm head",
         "top-level `proj_out` with the token embedding's shape: Whisper's output projection"),
    Rule("head-module", any_module_in(HEAD_ANYWHERE), R.OUTPUT_HEAD, "lm head",
         "module `{match}` projects hidden states to the vocabulary"),
    Rule("head-top", top_module_in(HEAD_TOP), R.OUTPUT_HEAD, "{match}",
         "top-level module `{match}`: the model's output head"),
    # 7. plain weights and biases
    Rule("weight-consumer", consumed_as(WEIGHT_CONSUMERS), R.WEIGHT, "",
         "an ONNX `{op}` node reads it as its weight (input {input})"),
    Rule("bias-consumer", consumed_as(BIAS_CONSUMERS), R.BIAS, "", "an ONNX `{op}` node reads it as its bias"),
    Rule("bias-add", all_of(consumed_as({"Add": (0, 1)}), learned_vector()), R.BIAS, "",
         "a 1-D floating initializer an ONNX Add node adds: a bias"),
    Rule("expert-bank", all_of(module_in(EXPERT_MODULES), ndim_at_least(3)), R.WEIGHT, "expert bank",
         "a {ndim}-D `{leaf}` in module `{match}`: one matrix per MoE expert, stacked"),
    Rule("weight-norm", all_of(leaf_in(["original0", "original1"]), in_tree(["parametrizations"])), R.WEIGHT,
         "{weight_norm}", "`parametrizations.weight.{leaf}`: torch weight_norm's {weight_norm} of the weight"),
    Rule("bias-leaf", leaf_matches(r"bias|biases|bias_.+|.+_bias"), R.BIAS, "", "named `{match}`"),
    Rule("weight-leaf", leaf_matches(r"weight|weights|kernel|weight_.+|.+_weight|.+_kernel"), R.WEIGHT, "",
         "named `{match}`"),
    Rule("bias-letter", all_of(leaf_in(["b"]), in_module()), R.BIAS, "", "named `b` inside module `{module}`"),
    Rule("weight-letter", all_of(leaf_in(["w"]), in_module()), R.WEIGHT, "", "named `w` inside module `{module}`"),
    # 8. nothing says what it is
    Rule("model-part", in_model_part(), R.OTHER, "",
         "in the model part of the checkpoint, but nothing in its name says what it is"),
)  # fmt: skip


def _extra_captures(rule: Rule, f: Facts, captured: Captures) -> Captures:
    """Values some reasons and details mention beyond what the matcher captured."""
    values: Captures = {
        "leaf": f.leaf,
        "module": f.module,
        "structure": f.structure,
        "section": f.tensor.section,
        "ndim": str(f.ndim),
        "weight_norm": "magnitude g" if f.leaf == "original0" else "direction v",
    }
    values.update(captured)
    if rule.role is Role.OPTIMIZER_STATE:
        slot = f.slot or (f.leaf if f.leaf in SLOT_MEANING or not f.leaf.isdigit() else "")
        values["slot"] = slot or "state"
        values["slot_detail"] = "step counter" if slot in STEP_SLOTS else (slot or "state")
        meaning = SLOT_MEANING.get(slot)
        values["meaning"] = f" ({meaning})" if meaning else ""
        values["param"] = _param_note(f)
    elif rule.role is Role.NORM:
        values["norm"] = _norm_kind(f)
        values["side"] = "shift" if f.leaf in SHIFT_LEAVES else "scale"
    values["quant"] = QUANT_LEAVES.get(f.leaf, "")
    values["buffer"] = BUFFER_LEAVES.get(f.leaf, "")
    values["token"] = LEARNED_TOKENS.get(f.leaf, "")
    return values


def _param_note(f: Facts) -> str:
    name = f.tensor.attrs.get("param_name") or f.tensor.attrs.get("slot_of")
    if isinstance(name, str) and name:
        guessed = " (guessed by position)" if f.tensor.attrs.get("param_name_guessed") else ""
        return f", for parameter `{name}`{guessed}"
    mirror = _mirrored_parameter(f)
    return f", mirroring the shape of `{mirror}`" if mirror else ""


def _mirrored_parameter(f: Facts) -> str:
    """A model tensor of the same shape whose name the slot's name contains (or the only one)."""
    shapes = f.context.model_shapes
    if not shapes or not f.tensor.shape:
        return ""
    candidates = shapes.get(f.tensor.shape, ())
    if len(candidates) == 1:
        return candidates[0]
    own = "/" + "/".join(f.tree) + "/"
    best, best_length = "", 1
    for name in candidates:
        parts = name_parts(name)
        for k in range(len(parts), best_length, -1):  # the longest tail of its path the slot's path contains
            if "/" + "/".join(parts[-k:]) + "/" in own:
                best, best_length = name, k
                break
    return best


def decide(f: Facts) -> RoleDecision:
    for rule in _candidates(_admitted_mask(f)):
        captured = rule.match(f)
        if captured is None:
            continue
        values = _extra_captures(rule, f, captured)
        return RoleDecision(rule.role, rule.detail.format(**values), rule.reason.format(**values), rule.id)
    return RoleDecision(Role.OTHER, "", "no rule recognizes its name or place in the file", "none")


# Rules skip by bitmask: bit i stands for RULES[i]. For each gated fact, the rules without a gate on
# it are always admitted; a gated rule is admitted by the values its gate allows (for tree_set: by
# any of its words). A tensor's candidates are the AND of one mask per fact, so names never seen
# before (unique leaves) share one mask and one cached rule list.
_SCALAR_FACTS = ("leaf", "module", "structure", "section", "top0")  # gate: the value is allowed
_SET_FACTS = ("tree_set", "ops", "enclosing")  # gate: one of the members is allowed


def _field_masks(field: str) -> tuple[int, dict[str, int]]:
    always, by_value = 0, defaultdict[str, int](int)
    for i, rule in enumerate(RULES):
        allowed_sets = [allowed for name, allowed in gates_of(rule.match) if name == field]
        if not allowed_sets:
            always |= 1 << i
            continue
        allowed = allowed_sets[0]
        if field in _SCALAR_FACTS:  # several gates on one scalar fact: all must hold
            for more in allowed_sets[1:]:
                allowed = allowed & more
        for value in allowed:
            by_value[value] |= 1 << i
    return always, dict(by_value)


_MASKS = {field: _field_masks(field) for field in (*_SCALAR_FACTS, *_SET_FACTS)}
_RULE_INDEX = {rule.id: i for i, rule in enumerate(RULES)}


def _admitted_mask(f: Facts) -> int:
    mask = ~f.context.disabled
    for field in _SCALAR_FACTS:
        always, by_value = _MASKS[field]
        mask &= always | by_value.get(getattr(f, field), 0)
    for field in _SET_FACTS:
        always, by_member = _MASKS[field]
        admitted = always
        for member in getattr(f, field):
            admitted |= by_member.get(member, 0)
        mask &= admitted
    return mask


@functools.lru_cache(maxsize=1 << 12)
def _candidates(mask: int) -> tuple[Rule, ...]:
    """The rules, in order, whose gates admit the facts: the only ones whose matchers can succeed."""
    return tuple(rule for i, rule in enumerate(RULES) if mask >> i & 1)


def classify(inventory: Inventory) -> list[RoleDecision]:
    """One decision per tensor of the inventory, in order."""
    context = context_of(inventory)
    facts = [facts_of(t, context) for t in inventory.tensors]
    if any(f.structure == "optimizer" or f.slot or _optimizer_place(f) for f in facts):
        context = _with_model_shapes(context, facts)
        facts = [facts_of(t, context) for t in inventory.tensors]
    return [decide(f) for f in facts]


def classify_tensor(tensor: Tensor, context: Context | None = None) -> RoleDecision:
    """The decision for one tensor on its own (neighbour rules see only what ``context`` says)."""
    return decide(facts_of(tensor, context or Context()))


def _optimizer_place(f: Facts) -> bool:
    return f.tensor.section.lower() in OPTIMIZER_SECTIONS or any(p in OPTIMIZER_PARTS for p in f.tree)


def _with_model_shapes(context: Context, facts: list[Facts]) -> Context:
    shapes: dict[tuple[int, ...], list[str]] = {}
    for f in facts:
        if f.structure in MODEL_STRUCTURES and not f.slot and not _optimizer_place(f) and f.tensor.shape:
            shapes.setdefault(f.tensor.shape, []).append(f.tensor.name)
    frozen = {shape: tuple(names) for shape, names in shapes.items()}
    return replace(context, model_shapes=frozen)


def rules_table() -> list[dict[str, Any]]:
    """The rules in order, for documentation and ``--explain``."""
    return [{"id": r.id, "role": r.role.value, "reason": r.reason} for r in RULES]
