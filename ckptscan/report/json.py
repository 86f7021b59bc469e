"""The JSON document: a contract with dashboards.

Field names are fixed once published: add fields freely, bump ``SCHEMA_VERSION`` (minor for
additions, major for anything removed or changed), and never rename silently. The schema ships in
the package (``ckptscan/schema/ckptscan.schema.json``) and ``ckptscan schema`` prints it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from ckptscan._version import __version__
from ckptscan.analyze import architecture, memory, modules, moe, parameters, summary
from ckptscan.analyze.analysis import Analysis
from ckptscan.analyze.roles import RoleDecision
from ckptscan.analyze.summary import Count
from ckptscan.inventory import Finding, Inventory, Tensor
from ckptscan.safe_text import DEPTH_MARKER, MAX_DEPTH

if TYPE_CHECKING:
    from ckptscan.audit import aggregate
    from ckptscan.audit.model import Digest
    from ckptscan.audit.run import Audit
    from ckptscan.pipeline import ModelReport
    from ckptscan.stats import TensorStats
    from ckptscan.stats.summary import Amount, MeasuredError, PruneCounts, Ranked, SqnrTotal, StatsSummary

SCHEMA_VERSION = "1.4"
SCHEMA_RESOURCE = "ckptscan.schema.json"


def document(reports: Iterable[ModelReport], *, explain: bool = False, tensor_plans: bool = False) -> dict[str, Any]:
    """The --json document: one record per model report (with its value statistics when it has them)."""
    return {
        "schema_version": SCHEMA_VERSION,
        "tool": {"name": "ckptscan", "version": __version__},
        "results": [result_dict(r, explain=explain, tensor_plans=tensor_plans) for r in reports],
    }


def result_dict(
    report: ModelReport, *, include_tensors: bool = True, explain: bool = False, tensor_plans: bool = False
) -> dict[str, Any]:
    """One result. ``explain`` adds each tensor's role reason; ``tensor_plans`` each reduction
    target's per-tensor plan (large: one record per tensor and target); a report with stats adds the
    value statistics (per-tensor ``stats``, ``stats_summary``, their findings, measured reduction error)."""
    record = _result_dict(report, include_tensors=include_tensors, explain=explain, tensor_plans=tensor_plans)
    if report.stats is not None and report.inventory is not None:
        add_stats(record, report, include_tensors=include_tensors)
    if report.scan.remote is not None:
        record["remote"] = dict(report.scan.remote)
    return record


def _result_dict(report: ModelReport, *, include_tensors: bool, explain: bool, tensor_plans: bool) -> dict[str, Any]:
    result = report.scan
    inventory = result.inventory
    analysis = report.analysis
    error = {"code": result.error.code, "message": result.error.message} if result.error else None
    if inventory is None or analysis is None:
        return {
            "path": result.path,
            "format": result.format,
            "files": [],
            "file_bytes": None,
            "complete": False,
            "totals": None,
            "by_dtype": {},
            "by_role": {},
            "parameters": None,
            "overhead": None,
            "reduction": None,
            "memory": None,
            "modules": [],
            "tensors": [],
            "metadata": {},
            "warnings": [],
            "findings": [finding_dict(f) for f in result.error.findings] if result.error is not None else [],
            "error": error,
            "components": [],
        }
    return {
        "path": result.path,
        "format": inventory.format,
        "files": [{"path": f.path, "size": f.size, "role": f.role} for f in inventory.files],
        "file_bytes": inventory.file_bytes,
        "complete": inventory.complete,
        "totals": totals_dict(inventory),
        "by_dtype": {
            name: {"tensors": c.tensors, "elements": c.elements, "bytes": c.bytes}
            for name, c in summary.by_dtype(inventory.tensors).items()
        },
        "by_role": {name: count_dict(c) for name, c in analysis.by_role.items()},
        "parameters": parameters_dict(analysis),
        "overhead": overhead_dict(analysis),
        "reduction": reduction_dict(analysis, tensor_plans=tensor_plans),
        "memory": memory_dict(analysis),
        "modules": [
            {"name": g.name, "blocks": g.blocks, "tensors": g.tensors, "elements": g.elements, "bytes": g.bytes}
            for g in modules.rollup(inventory.tensors)
        ],
        "tensors": [
            tensor_dict(t, d, explain=explain) for t, d in zip(inventory.tensors, analysis.decisions, strict=True)
        ]
        if include_tensors
        else [],
        "metadata": jsonable(dict(inventory.metadata)),
        "warnings": list(inventory.warnings),
        "findings": [finding_dict(f) for f in inventory.findings],
        "error": error,
        "components": component_rows(inventory, analysis),
    }


def component_rows(inventory: Inventory, analysis: Analysis) -> list[dict[str, Any]]:
    """The components of a diffusers pipeline (ckptscan.folders), each with its parameters."""
    listed = inventory.metadata.get("components")
    if not isinstance(listed, list):
        return []
    by_component = analysis.parameters.by_component
    keys = ("name", "library", "class", "path", "format", "files", "file_bytes", "tensors")
    return [
        {**{k: row.get(k) for k in keys}, "parameters": by_component.get(str(row.get("name")), 0)}
        for row in listed
        if isinstance(row, Mapping)
    ]


def add_stats(record: dict[str, Any], report: ModelReport, *, include_tensors: bool = True) -> None:
    """Per-tensor ``stats``, the result's ``stats_summary``, the stats findings, and the quantization
    error measured for the tensors each int8/int4 reduction target quantizes."""
    stats = report.stats
    assert stats is not None
    if include_tensors:
        for tensor_record, tensor_stats in zip(record["tensors"], stats.tensors, strict=True):
            tensor_record["stats"] = stats_dict(tensor_stats)
    record["stats_summary"] = jsonable(stats_summary_dict(stats.summary))
    record["findings"].extend(finding_dict(f) for f in stats.findings)
    for target in record["reduction"]["targets"] if record.get("reduction") else ():
        if target["name"] in report.measured:
            target["measured"] = measured_dict(report.measured[target["name"]])


def stats_summary_dict(s: StatsSummary) -> dict[str, Any]:
    """The JSON ``stats_summary`` of a typed summary (field names and order are the schema's)."""
    from ckptscan.stats.summary import THRESHOLDS

    i, p, q = s.integrity, s.pruning, s.quantization
    pruning: dict[str, Any] = _prune_dict(p.counts)
    if p.by_role is not None:
        pruning["by_role"] = {role: _prune_dict(c) for role, c in p.by_role.items()}
    t24 = p.structured_2_4
    pruning["structured_2_4"] = {"tensors": list(t24.tensors), "elements": t24.elements, "bytes": t24.bytes}
    pruning["estimated"] = p.estimated
    return {
        "tensors": s.tensors,
        "skipped": [{"name": k.name, "reason": k.reason} for k in s.skipped],
        "elements": s.elements,
        "sampled": s.sampled,
        "sample_fraction": s.sample_fraction,
        "integrity": {
            "nan_values": i.nan_values,
            "inf_values": i.inf_values,
            "nan_tensors": list(i.nan_tensors),
            "inf_tensors": list(i.inf_tensors),
            "all_zero_tensors": list(i.all_zero_tensors),
            "duplicate_groups": [
                {"hash": g.hash, "tensors": list(g.tensors), "bytes": g.bytes, "copies": g.copies}
                for g in i.duplicate_groups
            ],
        },
        "pruning": pruning,
        "quantization": {
            "int8": _sqnr_dict(q.int8),
            "int4_g128": _sqnr_dict(q.int4_g128),
            "thresholds": dict(THRESHOLDS),
            "ranking": [_ranked_dict(r) for r in q.ranking],
            "keep_high_precision": [_ranked_dict(r) for r in q.keep_high_precision],
        },
        "seconds": s.seconds,
        "workers": s.workers,
        "bytes_read": s.bytes_read,
        "hash_algorithm": s.hash_algorithm,
    }


def _amount(a: Amount) -> dict[str, int]:
    return {"elements": a.elements, "bytes": a.bytes}


def _prune_dict(c: PruneCounts) -> dict[str, Any]:
    return {
        "elements": c.elements,
        "bytes": c.bytes,
        "zeros": _amount(c.zeros),
        "below": {k: _amount(a) for k, a in c.below.items()},
        "below_rel": {k: _amount(a) for k, a in c.below_rel.items()},
    }


def _sqnr_dict(t: SqnrTotal) -> dict[str, Any]:
    return {"tensors": t.tensors, "sqnr_db": t.sqnr_db, "min_db": t.min_db, "median_db": t.median_db}


def _ranked_dict(r: Ranked) -> dict[str, Any]:
    return {
        "name": r.name,
        "role": r.role,
        "sqnr_int8_db": r.sqnr_int8_db,
        "sqnr_int4_g128_db": r.sqnr_int4_g128_db,
        "outlier": r.outlier,
        "bytes": r.bytes,
        "reasons": list(r.reasons),
    }


def measured_dict(m: MeasuredError) -> dict[str, Any]:
    record = {"sqnr_db": m.sqnr_db, "min_db": m.min_db, "tensors": m.tensors, "of": m.of, "sampled": m.sampled}
    out: dict[str, Any] = jsonable({**record, "note": m.note})
    return out


def stats_dict(s: TensorStats) -> dict[str, Any]:
    if s.skipped is not None:
        return {"skipped": s.skipped}
    record: dict[str, Any] = {
        "elements": s.elements,
        "sampled": s.sampled,
        "fraction": s.fraction,
        "min": s.min,
        "max": s.max,
        "mean": s.mean,
        "std": s.std,
        "absmax": s.absmax,
        "l2": s.l2,
        "zeros": s.zeros,
        "near_zero": dict(s.near_zero) if s.near_zero is not None else None,
        "near_zero_rel": dict(s.near_zero_rel) if s.near_zero_rel is not None else None,
        "nan": s.nan,
        "inf": s.inf,
        "outlier": s.outlier,
        "sqnr_int8_db": s.sqnr_int8_db,
        "sqnr_int4_g128_db": s.sqnr_int4_g128_db,
        "structured_2_4": s.structured_2_4,
        "hash": s.hash,
    }
    if s.notes:
        record["notes"] = dict(s.notes)
    return record


def finding_dict(f: Finding) -> dict[str, str]:
    record = {"code": f.code, "severity": f.severity.value, "message": f.message, "where": f.where}
    if f.subject:
        record["subject"] = f.subject
    return record


def totals_dict(inventory: Inventory) -> dict[str, int]:
    t = summary.totals(inventory)
    return {
        "tensors": t.every.tensors,
        "elements": t.every.elements,
        "bytes": t.every.bytes,
        "unique_tensors": t.unique.tensors,
        "unique_elements": t.unique.elements,
        "unique_bytes": t.unique.bytes,
        "stored_bytes": t.stored_bytes,
    }


def tensor_dict(t: Tensor, decision: RoleDecision | None = None, *, explain: bool = False) -> dict[str, Any]:
    record: dict[str, Any] = {
        "name": t.name,
        "shape": list(t.shape),
        "dtype": t.dtype.name,
        "elements": t.elements,
        "bytes": t.nbytes,
        "offset": t.offset,
        "file": t.file,
    }
    if t.native_dtype and t.native_dtype != t.dtype.name:
        record["native_dtype"] = t.native_dtype
    if t.section:
        record["section"] = t.section
    if t.storage is not None:
        record["storage"] = t.storage
        record["storage_offset"] = t.storage_offset
    if t.strides is not None:
        record["strides"] = list(t.strides)
    if t.encoding != "raw":
        record["encoding"] = t.encoding
    if t.attrs:
        record["attrs"] = jsonable(dict(t.attrs))
    if decision is not None:
        record["role"] = decision.role.value
        if decision.detail:
            record["role_detail"] = decision.detail
        if explain:
            record["role_reason"] = decision.reason
            record["role_rule"] = decision.rule
    return record


# -- analysis sections (issue 5; see docs/analysis.md) -------------------------------------------


def count_dict(c: Count) -> dict[str, int]:
    return {"tensors": c.tensors, "elements": c.elements, "bytes": c.bytes}


def parameters_dict(analysis: Analysis) -> dict[str, Any]:
    p = analysis.parameters
    return {
        "total": p.total,
        "tensors": p.tensors,
        "bytes": p.bytes,
        "by_role": p.by_role,
        "by_dtype": p.by_dtype,
        "by_component": p.by_component,
        "modules": [
            {"name": g.name, "blocks": g.blocks, "tensors": g.tensors, "elements": g.elements, "bytes": g.bytes}
            for g in p.groups
        ],
        "ties": [tie_dict(t) for t in p.ties],
        "repeated_entries": p.repeated_entries,
        "duplicate_copies": list(p.duplicate_copies),
        "excluded": {role: count_dict(c) for role, c in p.excluded.items()},
        "notes": list(p.notes),
        "uncertain": {**count_dict(p.uncertain), "names": list(p.uncertain_names)},
        "packed": {**count_dict(p.packed), "bits": p.packed_bits},
        "moe": moe_dict(analysis.moe) if analysis.moe is not None else None,
    }


def overhead_dict(analysis: Analysis) -> dict[str, Any]:
    o = analysis.overhead
    return {
        "file_bytes": o.file_bytes,
        "parts": {name: part.bytes for name, part in o.parts.items()},
        "exact": o.exact,
        "categories": {
            name: {"bytes": part.bytes, "tensors": part.tensors, "elements": part.elements}
            for name, part in o.parts.items()
        },
        "format_overhead": dict(o.format_overhead),
        "notes": list(o.notes),
    }


def reduction_dict(analysis: Analysis, *, tensor_plans: bool = False) -> dict[str, Any]:
    targets = []
    for target in analysis.targets:
        record: dict[str, Any] = {
            "name": target.name,
            "bytes": target.bytes,
            "saving_bytes": target.saving_bytes,
            "tensor_bytes": target.tensor_bytes,
            "overhead_bytes": target.overhead_bytes,
            "assumptions": list(target.assumptions),
            "by_dtype": {name: count_dict(c) for name, c in target.by_dtype.items()},
        }
        if tensor_plans:
            record["tensors"] = [
                {"name": p.name, "source": p.source, "result": p.result, "bytes": p.bytes, "rule": p.rule}
                for p in target.plans
            ]
        targets.append(record)
    return {"base_bytes": analysis.overhead.file_bytes, "targets": targets}


def memory_dict(analysis: Analysis) -> dict[str, Any] | None:
    if analysis.inference is None or analysis.training is None:
        return None
    arch = analysis.architecture
    return {
        "architecture": architecture_dict(arch) if arch else None,
        "inference": inference_dict(analysis.inference),
        "training": training_dict(analysis.training),
    }


def memory_line_dict(line: memory.Line) -> dict[str, Any]:
    return {"name": line.name, "bytes": line.bytes, "formula": line.formula}


def kv_cache_dict(kv: memory.KVCache) -> dict[str, Any]:
    return {"bytes": kv.bytes, "per_token_bytes": kv.per_token_bytes, "batch": kv.batch,
            "context": kv.context, "bytes_per_element": kv.bytes_per_element, "formula": kv.formula,
            "cross_attention_bytes": kv.cross_attention_bytes}  # fmt: skip


def activations_dict(a: memory.ActivationEstimate) -> dict[str, Any]:
    return {
        "bytes": a.bytes,
        "per_layer_bytes": a.per_layer_bytes,
        "layers": a.layers,
        "logits_bytes": a.logits_bytes,
        "loss_gradient_bytes": a.loss_gradient_bytes,
        "held_at_loss_bytes": a.held_at_loss_bytes,
        "held_late_bytes": a.held_late_bytes,
        "formula": a.formula,
        "korthikanti_per_layer_bytes": a.korthikanti_per_layer_bytes,
        "backward_transient_bytes": a.backward_transient_bytes,
        "kernel": a.kernel.name,
        "kernel_reason": a.kernel.reason,
        "terms": [memory_line_dict(t) for t in a.terms],
        "assumptions": list(a.assumptions),
    }


def fit_dict(fit: memory.Fit) -> dict[str, Any]:
    return {"gpu": fit.gpu, "capacity_bytes": fit.capacity_bytes, "reserve_bytes": fit.reserve_bytes,
            "usable_bytes": fit.capacity_bytes - fit.reserve_bytes, "needed_bytes": fit.needed_bytes,
            "fits": fit.fits, "margin_bytes": fit.margin_bytes, "max_batch": fit.max_batch,
            "max_seq": fit.max_seq, "seq_limit": fit.seq_limit}  # fmt: skip


def inference_dict(e: memory.InferenceEstimate) -> dict[str, Any]:
    return {
        "weights_bytes": e.weights_bytes,
        "kv_cache": kv_cache_dict(e.kv_cache) if e.kv_cache else None,
        "activations_bytes": e.activations_bytes,
        "logits_bytes": e.logits_bytes,
        "total_bytes": e.total_bytes,
        "by_target": dict(e.by_target),
        "batch": e.batch,
        "seq": e.seq,
        "compute_bytes": e.compute_bytes,
        "kernel": e.kernel,
        "assumptions": list(e.assumptions),
        "fit": fit_dict(e.fit) if e.fit else None,
    }


def training_dict(e: memory.TrainingEstimate) -> dict[str, Any]:
    lora = e.lora
    return {
        "optimizer": e.optimizer,
        "precision": e.precision,
        "batch": e.batch,
        "seq": e.seq,
        "checkpointing": e.checkpointing,
        "attention": e.attention,
        "attention_requested": e.attention_requested,
        "freeze": list(e.freeze),
        "parameters": e.parameters,
        "trainable_parameters": e.trainable_parameters,
        "lines": [memory_line_dict(line) for line in e.lines],
        "total_bytes": e.total_bytes,
        "peak_formula": e.peak_formula,
        "sum_bytes": e.sum_bytes,
        "optimizer_impl": e.optimizer_impl,
        "step_temporaries_bytes": e.step_temporaries_bytes,
        "activations": activations_dict(e.activations) if e.activations else None,
        "gpus": e.gpus,
        "sharding": e.sharding,
        "device": e.device,
        "lora": None
        if lora is None
        else {
            "rank": lora.rank,
            "alpha": lora.alpha,
            "targets": list(lora.targets),
            "quantized_base": lora.quantized_base,
        },
        "assumptions": list(e.assumptions),
        "fit": fit_dict(e.fit) if e.fit else None,
    }


def architecture_dict(arch: architecture.Architecture) -> dict[str, Any]:
    return {
        "source": arch.source,
        "layers": arch.layers,
        "hidden_size": arch.hidden,
        "attention_heads": arch.heads,
        "kv_heads": arch.kv_heads,
        "head_dim": arch.head_dim,
        "ffn_size": arch.ffn,
        "gated_mlp": arch.gated_mlp,
        "vocab_size": arch.vocab,
        "context_length": arch.context,
        "norm": arch.norm,
        "dropout": arch.dropout,
        "assumptions": list(arch.assumptions),
        "kind": arch.kind,
        "encoder_layers": arch.encoder_layers,
        "modality": arch.modality,
        "model_type": arch.model_type,
        "activation": arch.activation,
        "experts": arch.experts,
        "experts_per_token": arch.experts_per_token,
        "shared_experts": arch.shared_experts,
        "expert_ffn_size": arch.expert_ffn,
        "shared_expert_ffn_size": arch.shared_expert_ffn,
        "dense_layers": arch.dense_layers,
        "attention_dropout": arch.attention_dropout,
        "image_size": arch.image_size,
        "patch_size": arch.patch_size,
        "encoder_seq": arch.encoder_seq,
        "tie_embeddings": arch.tie_embeddings,
        "guessed": arch.guessed,
        "vision": architecture_dict(arch.vision) if arch.vision is not None else None,
    }


def tie_dict(tie: parameters.Tie) -> dict[str, str]:
    return {"embedding": tie.embedding, "head": tie.head, "stored": tie.stored, "evidence": tie.evidence}


def moe_dict(m: moe.MoE) -> dict[str, Any]:
    return {
        "experts": m.experts,
        "experts_per_token": m.experts_per_token,
        "shared_experts": m.shared_experts,
        "source": m.source,
        "total_parameters": m.total,
        "active_parameters": m.active,
        "expert_parameters": m.expert_parameters,
        "shared_parameters": m.shared_parameters,
        "expert_bytes": m.expert_bytes,
        "shared_bytes": m.shared_bytes,
        "expert_tensors": m.expert_tensors,
        "assumptions": list(m.assumptions),
    }


def recoverable_dict(d: Digest, quantize: str) -> dict[str, Any]:
    """The per-model ``recoverable`` field: what stripping or quantizing this model alone saves."""
    return {
        "strip": {"bytes": d.strip_bytes, "source": d.strip_source},
        "quantize": {"target": quantize, "saving_bytes": d.quantize_saving, "source": d.quantize_source},
    }


def audit_dict(audit: Audit, s: aggregate.Summary) -> dict[str, Any]:
    """The ``audit`` section of ``audit --json``: what was run, what was walked, then the totals."""
    options, index = audit.options, audit.index
    return {
        "roots": list(audit.paths),
        "interrupted": audit.interrupted,
        "elapsed_s": round(audit.elapsed_s, 3),
        "workers": audit.workers,
        "engine": options.engine,
        "index": None if index is None else {"path": index.path, "reused": index.reused, "stored": index.stored},
        "options": {
            "timeout_s": options.timeout_s,
            "include": list(options.include),
            "exclude": list(options.exclude),
            "hidden": options.hidden,
            "follow_links": options.follow_links,
            "stats": options.stats,
            "stats_sample": options.stats_sample,
            "quantize": options.quantize,
            "all_targets": options.all_targets,
        },
        "discovery": {
            **_fields(audit.walk_stats),
            "unreadable": list(audit.walk_stats.unreadable),
            "files_done": audit.progress.files_done,
            "bytes_done": audit.progress.bytes_done,
        },
        **audit_summary_dict(s),
    }


def audit_summary_dict(s: aggregate.Summary) -> dict[str, Any]:
    """The audit's cross-model totals: the ``audit`` section of ``audit --json`` after its run facts."""
    return {
        "totals": _fields(s.totals),
        "by_format": {name: _fields(c) for name, c in s.by_format.items()},
        "by_dtype": {name: count_dict(c) for name, c in s.by_dtype.items()},
        "by_role": {name: count_dict(c) for name, c in s.by_role.items()},
        "by_role_source": s.by_role_source,
        "recoverable": {
            "strip": {
                "bytes": s.strip.bytes,
                "models": s.strip.models,
                "source": s.strip.source,
                "by_source": dict(s.strip.by_source),
            },
            "dedupe": {
                "bytes": s.dedupe.bytes,
                "tensors": s.dedupe.tensors,
                "groups": s.dedupe.groups,
                "method": s.dedupe.method,
                "metadata_only_keys": s.dedupe.metadata_only_keys,
                "largest_groups": [{**_fields(g), "shape": list(g.shape), "models": list(g.models)}
                                   for g in s.dedupe.largest_groups],
            },
            "quantize": _fields(s.quantize),
            "total_bytes": s.recoverable_bytes,
        },
        "top_offenders": [_fields(o) for o in s.top_offenders],
        "incomplete": [_fields(p) for p in s.incomplete],
        "failed": [_fields(p) for p in s.failed],
        "findings": {
            "by_severity": dict(s.findings.by_severity),
            "by_code": dict(s.findings.by_code),
            "listed": [{"path": f.path, **finding_dict(f.finding)} for f in s.findings.listed],
            "not_listed": s.findings.not_listed,
        },
        "skipped": {
            "files": dict(s.skipped.files),
            "bytes": dict(s.skipped.bytes),
            "unrecognized_checkpoint_names": list(s.skipped.unrecognized_checkpoint_names),
        },
        "notes": list(s.notes),
    }  # fmt: skip


def model_row_dict(row: aggregate.ModelRow) -> dict[str, Any]:
    """One audited model as a flat row (the CSV's columns, the terminal's model table)."""
    return _fields(row)


def _fields(record: Any) -> dict[str, Any]:
    """A flat record's fields by name, in declaration order: its dataclass fields are the JSON names."""
    return {f.name: getattr(record, f.name) for f in dataclasses.fields(record)}


def jsonable(value: Any, depth: int = 0) -> Any:
    """Plain JSON values only: non-finite floats and bytes become descriptive strings; containers
    nested deeper than ``safe_text.MAX_DEPTH`` (hostile metadata) become ``safe_text.DEPTH_MARKER``."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, (Mapping, list, tuple, set, frozenset)) and depth >= MAX_DEPTH:
        return DEPTH_MARKER
    if isinstance(value, Mapping):
        return {str(k): jsonable(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(v, depth + 1) for v in value]
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"<{len(value)} bytes>"
    if hasattr(value, "value") and isinstance(value.value, str):  # enums
        return value.value
    return repr(value)


def schema() -> dict[str, Any]:
    import json
    from importlib import resources  # lazily: it costs ~2 ms of every scan's start-up otherwise

    text = resources.files("ckptscan.schema").joinpath(SCHEMA_RESOURCE).read_text(encoding="utf-8")
    loaded: dict[str, Any] = json.loads(text)
    return loaded
