"""Totals across every model of an audit: what there is, what it costs, what could go.

Fed one model at a time (its typed :class:`~ckptscan.audit.model.Facts` and :class:`~ckptscan.audit.model.Digest`), in
whatever order workers finish; :meth:`Aggregate.summary` is deterministic all the same (models
are ordered by path before anything order-dependent is decided) and can be asked for at any time,
which is how an interrupted audit still reports what it did.

Recoverable bytes, three ways, never added to one another blindly:

- ``strip``: optimizer and training state (what a deployment never loads).
- ``dedupe``: tensors stored again in another model: same name, shape, dtype and bytes, and the
  same content hash when the stats pass gave one (``method: "content-hash"``); otherwise by that
  metadata alone (``method: "metadata"``: an upper bound, since equal shapes need not mean equal
  values). The first model in path order keeps its copy; every further copy is recoverable.
  Tensors counted by ``strip`` are left out, so ``strip`` and ``dedupe`` add up.
- ``quantize``: what each model would save at the chosen target, summed (it overlaps the others).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ckptscan.analyze.summary import Count
from ckptscan.audit.model import DedupeKey, Digest, Facts
from ckptscan.inventory import Finding, Severity

INCOMPLETE_CODES = frozenset({"lfs-pointer", "incomplete-model", "truncated", "missing-file"})
MAX_LISTED_FINDINGS = 200
MAX_LISTED_GROUPS = 20
MAX_GROUP_PATHS = 5


@dataclass(slots=True)
class _Model:
    """One model as the totals keep it (its figures, not its tensors), until the summary orders them."""

    path: str
    folder: str
    format: str | None
    status: str  # "ok", "incomplete" or "failed"
    file_bytes: int
    files: int
    tensors: int
    parameters: int
    strip_bytes: int
    strip_source: str
    quantize_saving: int
    error: Mapping[str, Any] | None
    duplicate_bytes: int = 0


@dataclass(frozen=True, slots=True)
class FormatCounts:
    """Models of one format: how many, their files, bytes, tensors and parameters."""

    models: int
    files: int
    file_bytes: int
    tensors: int
    parameters: int


@dataclass(frozen=True, slots=True)
class Totals:
    """The audit's headline figures, over every model."""

    models: int
    ok: int
    incomplete: int
    failed: int
    files: int
    file_bytes: int
    tensors: int
    elements: int
    tensor_bytes: int
    parameters: int


@dataclass(frozen=True, slots=True)
class DuplicateGroup:
    """One tensor stored in several models: the first keeps it, every further copy could go."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    bytes: int
    copies: int
    saving_bytes: int
    models: tuple[str, ...]  # the first MAX_GROUP_PATHS holders, in path order


@dataclass(frozen=True, slots=True)
class Dedupe:
    """Bytes stored again in another model, and how they were matched."""

    bytes: int
    tensors: int
    groups: int
    method: str  # "content-hash", "metadata" or "mixed"
    metadata_only_keys: int
    largest_groups: tuple[DuplicateGroup, ...]


@dataclass(frozen=True, slots=True)
class Strip:
    """Optimizer and training state over every model: what a deployment never loads."""

    bytes: int
    models: int
    source: str
    by_source: Mapping[str, int]


@dataclass(frozen=True, slots=True)
class Quantize:
    """What quantizing every model to one target would save, summed (it overlaps the others)."""

    target: str
    saving_bytes: int
    models: int
    source: str


@dataclass(frozen=True, slots=True)
class Offender:
    """A model among those with the most recoverable bytes."""

    path: str
    folder: str
    format: str | None
    file_bytes: int
    recoverable_bytes: int
    strip_bytes: int
    duplicate_bytes: int
    quantize_saving_bytes: int


@dataclass(frozen=True, slots=True)
class Problem:
    """A model that was incomplete or could not be read, and why."""

    path: str
    format: str | None
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class PathFinding:
    """A finding and the model it was found in."""

    path: str
    finding: Finding


@dataclass(frozen=True, slots=True)
class Findings:
    """Findings over every model: counts, and the notable ones listed (medium and up)."""

    by_severity: Mapping[str, int]
    by_code: Mapping[str, int]
    listed: tuple[PathFinding, ...]
    not_listed: int


@dataclass(frozen=True, slots=True)
class Skipped:
    """Files the audit did not read as models, by reason."""

    files: Mapping[str, int]
    bytes: Mapping[str, int]
    unrecognized_checkpoint_names: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Summary:
    """Totals across every model of an audit (``ckptscan.report.json.audit_summary_dict`` writes them)."""

    totals: Totals
    by_format: Mapping[str, FormatCounts]
    by_dtype: Mapping[str, Count]
    by_role: Mapping[str, Count]
    by_role_source: str
    strip: Strip
    dedupe: Dedupe
    quantize: Quantize
    top_offenders: tuple[Offender, ...]
    incomplete: tuple[Problem, ...]
    failed: tuple[Problem, ...]
    findings: Findings
    skipped: Skipped
    notes: tuple[str, ...]

    @property
    def recoverable_bytes(self) -> int:
        """Strip and dedupe add up (dedupe leaves stripped tensors out); quantize overlaps them."""
        return self.strip.bytes + self.dedupe.bytes


@dataclass(frozen=True, slots=True)
class ModelRow:
    """One model as a flat row (the CSV and the terminal's model table)."""

    path: str
    folder: str
    format: str
    status: str
    error_code: str
    files: int
    file_bytes: int
    tensors: int
    parameters: int
    strip_bytes: int
    duplicate_bytes: int
    quantize_target: str
    quantize_saving_bytes: int


class Aggregate:
    def __init__(self, *, quantize: str, top: int = 10) -> None:
        self.quantize = quantize
        self.top = top
        self.models: list[_Model] = []
        self.by_format: dict[str, Counter[str]] = {}
        self.by_dtype: dict[str, Counter[str]] = {}
        self.by_role: dict[str, Counter[str]] = {}
        self.role_sources: set[str] = set()
        self.strip_sources: set[str] = set()
        self.quantize_sources: set[str] = set()
        self.dedupe: dict[DedupeKey, list[int]] = {}
        self.findings: list[PathFinding] = []
        self.skipped: Counter[str] = Counter()
        self.skipped_bytes: Counter[str] = Counter()
        self.unrecognized: list[str] = []  # named like a checkpoint, content not recognized
        self.notes: list[str] = []
        self._summary: Summary | None = None  # the last summary, until more is added

    # -- feeding -------------------------------------------------------------------------------

    def add_model(self, facts: Facts, digest: Digest, size: int) -> None:
        """One model's facts and digest; ``size`` is what its unit occupies on disk (for failed reads)."""
        self._summary = None
        index = len(self.models)
        code = facts.error_code
        status = "ok" if code is None else "incomplete" if code in INCOMPLETE_CODES else "failed"
        model = _Model(
            path=facts.path,
            folder=facts.folder,
            format=facts.format,
            status=status,
            file_bytes=facts.file_bytes if facts.file_bytes is not None else size,
            files=max(1, facts.files),
            tensors=facts.tensors or 0,
            parameters=digest.parameters,
            strip_bytes=digest.strip_bytes,
            strip_source=digest.strip_source,
            quantize_saving=digest.quantize_saving,
            error=None if code is None else {"code": code, "message": facts.error_message},
        )
        self.models.append(model)

        fmt = self.by_format.setdefault(model.format or "unrecognized", Counter())
        fmt.update(
            models=1, files=model.files, file_bytes=model.file_bytes, tensors=model.tensors, parameters=model.parameters
        )
        for name, (tensors, elements, nbytes) in facts.by_dtype.items():
            self.by_dtype.setdefault(name, Counter()).update(tensors=tensors, elements=elements, bytes=nbytes)
        if facts.tensors is not None:
            self.role_sources.add(digest.roles_source)
            self.quantize_sources.add(digest.quantize_source)
            if digest.strip_bytes:
                self.strip_sources.add(digest.strip_source)
        for role, (tensors, elements, nbytes) in digest.by_role.items():
            self.by_role.setdefault(role, Counter()).update(tensors=tensors, elements=elements, bytes=nbytes)
        for key in digest.dedupe_keys:
            holders = self.dedupe.setdefault(key, [])
            if not holders or holders[-1] != index:
                holders.append(index)
        for f in facts.findings:
            self.findings.append(PathFinding(model.path, f))

    def add_skipped(self, path: str, size: int, reason: str, *, named_like_checkpoint: bool) -> None:
        self._summary = None
        self.skipped[reason] += 1
        self.skipped_bytes[reason] += size
        if named_like_checkpoint:
            self.unrecognized.append(path)

    def note(self, message: str) -> None:
        self._summary = None
        self.notes.append(message)

    # -- the summary -----------------------------------------------------------------------------

    def summary(self) -> Summary:
        """The totals over every model added so far (computed once until more is added)."""
        if self._summary is None:
            self._summary = self._summarize()
        return self._summary

    def _summarize(self) -> Summary:
        order = sorted(range(len(self.models)), key=lambda i: self.models[i].path)
        rank = {model_index: position for position, model_index in enumerate(order)}
        dedupe = self._dedupe(rank)
        models = [self.models[i] for i in order]
        return Summary(
            totals=self._totals(models),
            by_format={k: FormatCounts(**v) for k, v in sorted(self.by_format.items())},
            by_dtype=_sorted_counts(self.by_dtype),
            by_role=_sorted_counts(self.by_role),
            by_role_source=_source(self.role_sources),
            strip=Strip(
                bytes=sum(m.strip_bytes for m in models),
                models=sum(1 for m in models if m.strip_bytes),
                source=_source(self.strip_sources),
                by_source=_by_source(models),
            ),
            dedupe=dedupe,
            quantize=Quantize(
                target=self.quantize,
                saving_bytes=sum(m.quantize_saving for m in models),
                models=sum(1 for m in models if m.quantize_saving),
                source=_source(self.quantize_sources),
            ),
            top_offenders=self._top(models),
            incomplete=tuple(_problem(m) for m in models if m.status == "incomplete"),
            failed=tuple(_problem(m) for m in models if m.status == "failed"),
            findings=self._findings(),
            skipped=Skipped(
                files=dict(sorted(self.skipped.items())),
                bytes=dict(sorted(self.skipped_bytes.items())),
                unrecognized_checkpoint_names=tuple(sorted(self.unrecognized)),
            ),
            notes=tuple(self.notes),
        )

    def _totals(self, models: list[_Model]) -> Totals:
        by_dtype = self.by_dtype.values()
        return Totals(
            models=len(models),
            ok=sum(1 for m in models if m.status == "ok"),
            incomplete=sum(1 for m in models if m.status == "incomplete"),
            failed=sum(1 for m in models if m.status == "failed"),
            files=sum(m.files for m in models),
            file_bytes=sum(m.file_bytes for m in models),
            tensors=sum(m.tensors for m in models),
            elements=sum(c["elements"] for c in by_dtype),
            tensor_bytes=sum(c["bytes"] for c in by_dtype),
            parameters=sum(m.parameters for m in models),
        )

    def _dedupe(self, rank: Mapping[int, int]) -> Dedupe:
        for m in self.models:
            m.duplicate_bytes = 0
        total = tensors = groups = 0
        hashed = unhashed = 0
        largest: list[tuple[int, DedupeKey, list[int]]] = []
        for key, holders in self.dedupe.items():
            if key[4] is None:
                unhashed += 1
            else:
                hashed += 1
            if len(holders) < 2:
                continue
            ordered = sorted(holders, key=rank.__getitem__)
            nbytes = key[3]
            for holder in ordered[1:]:
                self.models[holder].duplicate_bytes += nbytes
            saving = nbytes * (len(ordered) - 1)
            total += saving
            tensors += len(ordered) - 1
            groups += 1
            largest.append((saving, key, ordered))
        # ties broken by the whole key and the holders' paths: the groups were met in the order the
        # workers finished, and a re-run (or one served from the index) must list them the same way
        largest.sort(
            key=lambda item: (
                -item[0],
                item[1][0],
                item[1][1],
                item[1][2],
                str(item[1][4]),
                [self.models[i].path for i in item[2]],
            )
        )
        method = "content-hash" if hashed and not unhashed else "metadata" if not hashed else "mixed"
        return Dedupe(
            bytes=total,
            tensors=tensors,
            groups=groups,
            method=method,
            metadata_only_keys=unhashed if hashed else 0,
            largest_groups=tuple(
                DuplicateGroup(
                    name=key[0],
                    shape=tuple(key[1]),
                    dtype=key[2],
                    bytes=key[3],
                    copies=len(ordered),
                    saving_bytes=saving,
                    models=tuple(self.models[i].path for i in ordered[:MAX_GROUP_PATHS]),
                )
                for saving, key, ordered in largest[:MAX_LISTED_GROUPS]
            ),
        )

    def _top(self, models: list[_Model]) -> tuple[Offender, ...]:
        def recoverable(m: _Model) -> int:
            return m.strip_bytes + m.duplicate_bytes

        ranked = sorted(models, key=lambda m: (-recoverable(m), -m.file_bytes, m.path))
        return tuple(
            Offender(
                path=m.path,
                folder=m.folder,
                format=m.format,
                file_bytes=m.file_bytes,
                recoverable_bytes=recoverable(m),
                strip_bytes=m.strip_bytes,
                duplicate_bytes=m.duplicate_bytes,
                quantize_saving_bytes=m.quantize_saving,
            )
            for m in ranked[: self.top]
        )

    def _findings(self) -> Findings:
        by_severity = Counter(f.finding.severity.value for f in self.findings)
        by_code = Counter(f.finding.code for f in self.findings)
        notable = [f for f in self.findings if f.finding.severity.rank >= Severity.MEDIUM.rank]
        notable.sort(key=lambda f: (-f.finding.severity.rank, f.path, f.finding.code))
        return Findings(
            by_severity={s.value: by_severity[s.value] for s in Severity if by_severity[s.value]},
            by_code=dict(sorted(by_code.items())),
            listed=tuple(notable[:MAX_LISTED_FINDINGS]),
            not_listed=max(0, len(notable) - MAX_LISTED_FINDINGS),
        )

    def model_rows(self) -> list[ModelRow]:
        """One flat row per model, in path order (the CSV and the terminal's model table)."""
        self.summary()  # settles duplicate_bytes (the summary the report already asked for)
        return [
            ModelRow(
                path=m.path,
                folder=m.folder,
                format=m.format or "",
                status=m.status,
                error_code=(m.error or {}).get("code", ""),
                files=m.files,
                file_bytes=m.file_bytes,
                tensors=m.tensors,
                parameters=m.parameters,
                strip_bytes=m.strip_bytes,
                duplicate_bytes=m.duplicate_bytes,
                quantize_target=self.quantize,
                quantize_saving_bytes=m.quantize_saving,
            )
            for m in sorted(self.models, key=lambda m: m.path)
        ]


def _sorted_counts(groups: Mapping[str, Counter[str]]) -> dict[str, Count]:
    ordered = sorted(groups.items(), key=lambda item: (-item[1]["bytes"], item[0]))
    return {k: Count(v["tensors"], v["elements"], v["bytes"]) for k, v in ordered}


def _source(sources: set[str]) -> str:
    if not sources:
        return "none"
    return next(iter(sources)) if len(sources) == 1 else "mixed"


def _by_source(models: list[_Model]) -> dict[str, int]:
    by_source: Counter[str] = Counter()
    for m in models:
        if m.strip_bytes:
            by_source[m.strip_source] += m.strip_bytes
    return dict(sorted(by_source.items()))


def _problem(m: _Model) -> Problem:
    error = m.error or {}
    return Problem(m.path, m.format, error.get("code", ""), error.get("message", ""))
