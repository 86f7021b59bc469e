"""ckptscan audit: discovery, grouping, exact totals, time limits, outputs and exit codes."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from ckptscan import pipeline, registry
from ckptscan.audit import Audit, AuditOptions, ModelDone
from ckptscan.audit.discover import WalkOptions, plan, walk
from ckptscan.audit.model import digest as model_digest
from ckptscan.cli.audit import parse_size
from ckptscan.report.audit import document_text
from ckptscan.report.json import result_dict, schema
from ckptscan.scan import ScanResult, model_inputs, scan
from tests import audit_formats, audit_tree
from tests.audit_tree import GENERATED
from tests.conftest import REAL_MODELS, REPO, real_manifest

jsonschema = pytest.importorskip("jsonschema")


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return audit_tree.build(tmp_path_factory.mktemp("audit") / "tree")


def run_audit(paths: list[Path], **options: Any) -> Audit:
    audit = Audit([str(p) for p in paths], AuditOptions(**options))
    for _ in audit.events():
        pass
    return audit


def by_path(audit: Audit, root: Path) -> dict[str, dict[str, Any]]:
    return {os.path.relpath(r["path"], root): r for r in audit.records}


@pytest.fixture(scope="module")
def audited(tree: Path) -> Audit:
    return run_audit([tree], workers=2, timeout_s=30)


@pytest.fixture(scope="module")
def fixture_scans(tree: Path) -> dict[str, ScanResult]:
    """Single-file scans of the copied fixtures (their readers are proven against the official
    libraries in their own tests); the audit must add them up exactly."""
    scans = {}
    for target in audit_tree.FIXTURES.values():
        for step in audit_tree.CHECKPOINTS if "{step}" in target else (None,):
            for model in model_inputs(tree / target.format(step=step)):
                scans[os.path.relpath(model, tree)] = scan(model)
    return scans


@pytest.fixture(scope="module")
def expected(fixture_scans: dict[str, ScanResult]) -> dict[str, Any]:
    inventories = [r.inventory for r in fixture_scans.values() if r.inventory is not None]
    assert len(inventories) == len(fixture_scans)
    by_format = dict(GENERATED["by_format_models"])
    for inventory in inventories:
        by_format[inventory.format] = by_format.get(inventory.format, 0) + 1
    return {
        "models": GENERATED["models"] + len(inventories),
        "ok": GENERATED["ok"] + len(inventories),
        "failed": GENERATED["failed"],
        "incomplete": GENERATED["incomplete"],
        "tensors": GENERATED["tensors"] + sum(len(i.tensors) for i in inventories),
        "tensor_bytes": GENERATED["tensor_bytes"] + sum(t.nbytes for i in inventories for t in i.tensors),
        "by_format_models": by_format,
    }


def trainer_model_bytes() -> int:
    """Bytes of the model tensors in testdata/torch/checkpoint-4, by torch itself."""
    torch = pytest.importorskip("torch")
    state = torch.load(audit_tree.TESTDATA / "torch/checkpoint-4/pytorch_model.bin", weights_only=True)
    return int(sum(v.numel() * v.element_size() for v in state.values()))


# -- discovery -----------------------------------------------------------------------------------


def test_walk_skips_hidden_vcs_and_loops(tree: Path) -> None:
    folders, stats = walk([str(tree)], WalkOptions())
    names = {os.path.relpath(f.path, tree) for folder in folders for f in folder.files}
    assert not any(n.startswith((".git", ".hidden")) for n in names)
    assert stats.vcs_skipped == 1 and stats.hidden_skipped == 1
    assert stats.links_not_followed == 1  # loop -> . is a link to a folder
    assert stats.aliases == 1  # zlinks/alias.safetensors is standalone/copy.safetensors
    assert "zlinks/alias.safetensors" not in names and "standalone/copy.safetensors" in names

    followed_folders, followed = walk([str(tree)], WalkOptions(follow_links=True))
    assert followed.link_loops == 1
    assert sum(len(f.files) for f in followed_folders) == stats.files  # the loop adds nothing

    _, with_hidden = walk([str(tree)], WalkOptions(hidden=True))
    assert with_hidden.files == stats.files + 1  # .hidden/x.safetensors; .git stays out
    assert with_hidden.vcs_skipped == 1


def test_include_and_exclude_globs(tree: Path) -> None:
    folders, _ = walk([str(tree)], WalkOptions(include=("*.gguf",)))
    names = sorted(os.path.relpath(f.path, tree) for folder in folders for f in folder.files)
    assert names == ["broken/garbage.gguf", "gguf/tiny.gguf"]
    folders, _ = walk([str(tree)], WalkOptions(exclude=("runs/exp1", "*.json")))
    names = sorted(os.path.relpath(f.path, tree) for folder in folders for f in folder.files)
    assert not any(n.startswith("runs/") or n.endswith(".json") for n in names)
    assert "hf-model/model-00001-of-00002.safetensors" in names


def test_index_files_are_read_first_and_claim_their_shards(tree: Path) -> None:
    folders, _ = walk([str(tree / "hf-model")], WalkOptions())
    the_plan = plan(folders)
    first = [u for u in the_plan.units if u.stage == "A"]
    assert [Path(u.path).name for u in first] == ["model.safetensors.index.json"]
    assert len(the_plan.waiting[first[0].group]) == 4  # shards, config, tokenizer wait for the index


def test_a_file_named_on_the_command_line_is_audited_alone(tree: Path) -> None:
    audit = run_audit([tree / "hf-model" / "model-00001-of-00002.safetensors"], workers=0)
    assert [r["format"] for r in audit.records] == ["safetensors"]


# -- the mixed tree: exact totals ------------------------------------------------------------------


def test_models_found_and_grouped(audited: Audit, tree: Path, fixture_scans: dict[str, ScanResult]) -> None:
    records = by_path(audited, tree)
    assert sorted(records) == sorted(
        [
            *fixture_scans,
            *(f"finetune/step-{n}/model.safetensors" for n in audit_tree.CHECKPOINTS),
            "hf-model/model.safetensors.index.json",
            "gguf/tiny.gguf",
            "torch/evil.pt",
            "standalone/copy.safetensors",
            "broken/malformed.safetensors",
            "broken/truncated.safetensors",
            "broken/pointer.safetensors",
        ]
    )
    sharded = records["hf-model/model.safetensors.index.json"]
    assert sharded["format"] == "safetensors-sharded"
    assert sorted(f["path"] for f in sharded["files"]) == [
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
        "model.safetensors.index.json",
    ]
    assert sharded["folder"] == str(tree / "hf-model")
    assert sorted(c["path"] for c in sharded["companions"]) == ["config.json", "tokenizer.json"]
    onnx = records["onnx/external_per_tensor/model.onnx"]
    folder = tree / "onnx/external_per_tensor"
    assert len(onnx["files"]) == len(list(folder.iterdir())) == 15  # the graph and its 14 data files
    assert records["tf/sharded/ckpt-1.index"]["format"] == "tf-checkpoint"
    assert len(records["tf/sharded/ckpt-1.index"]["files"]) == 5
    trainer = records["runs/exp1/checkpoint-100"]
    assert trainer["format"] == "hf-trainer-checkpoint"
    assert trainer["folder"] == str(tree / "runs/exp1/checkpoint-100")
    assert sorted(f["path"] for f in trainer["files"]) == [
        "optimizer.pt",
        "pytorch_model.bin",
        "rng_state.pth",
        "scheduler.pt",
        "trainer_state.json",
        "training_args.bin",
    ]
    assert [c["path"] for c in trainer["companions"]] == ["config.json"]
    finetune = records["finetune/step-100/model.safetensors"]
    assert [c["path"] for c in finetune["companions"]] == ["config.json"]
    assert finetune["tensors"] == []  # kept only with --tensors


def test_exact_totals(audited: Audit, expected: dict[str, Any]) -> None:
    summary = audited.summary()
    totals = summary["totals"]
    for key in ("models", "ok", "failed", "incomplete", "tensors", "tensor_bytes"):
        assert totals[key] == expected[key], key
    # the malformed and the truncated file count under their format (safetensors)
    assert {k: v["models"] for k, v in summary["by_format"].items()} == expected["by_format_models"]
    assert sum(c["bytes"] for c in summary["by_dtype"].values()) == expected["tensor_bytes"]
    assert summary["discovery"]["files_done"] == summary["discovery"]["files"]
    tree = Path(audited.paths[0])
    parameters = {os.path.relpath(r.path, tree): r.parameters for r in audited.aggregate.model_rows()}
    for step in audit_tree.CHECKPOINTS:
        assert parameters[f"finetune/step-{step}/model.safetensors"] == audit_tree.CKPT_ELEMENTS
    assert parameters["standalone/copy.safetensors"] == audit_tree.CKPT_ELEMENTS
    assert parameters["hf-model/model.safetensors.index.json"] == 1024 + 32 + 32
    assert parameters["gguf/tiny.gguf"] == 128 + 32


def test_recoverable_bytes(audited: Audit, tree: Path, fixture_scans: dict[str, ScanResult]) -> None:
    summary = audited.summary()
    recoverable = summary["recoverable"]
    rows = {os.path.relpath(r.path, tree): r for r in audited.aggregate.model_rows()}

    # strip: a Trainer folder's training-state files go whole, framing and all
    state_files = ("optimizer.pt", "scheduler.pt", "rng_state.pth", "training_args.bin")
    for step in audit_tree.CHECKPOINTS:
        folder = tree / f"runs/exp1/checkpoint-{step}"
        record = by_path(audited, tree)[f"runs/exp1/checkpoint-{step}"]
        assert record["recoverable"]["strip"] == {
            "bytes": sum((folder / n).stat().st_size for n in state_files),
            "source": "files",
        }
    # ...single-file checkpoints give back what the analyzer's strip target says
    for name in ("torch/lightning.ckpt", "keras/tiny.keras"):
        strip = analyzer_target(fixture_scans[name], "strip")
        assert strip > 0
        assert rows[name].strip_bytes == strip, name
    assert recoverable["strip"]["bytes"] == sum(r.strip_bytes for r in rows.values())
    assert recoverable["strip"]["by_source"]["files"] == sum(
        r.strip_bytes for p, r in rows.items() if p.startswith("runs/")
    )

    # dedupe by metadata: the finetunes' 3 tensors x 3 more copies; the Trainer folders' model
    # tensors x 3 more copies (two more checkpoints and the same model saved sharded)
    dedupe = recoverable["dedupe"]
    assert dedupe["method"] == "metadata"
    assert dedupe["bytes"] == GENERATED["dedupe_metadata_bytes"] + 3 * trainer_model_bytes()
    biggest = dedupe["largest_groups"][0]
    assert (biggest["name"], biggest["copies"], biggest["saving_bytes"]) == ("base.embed.weight", 4, 3 * 512)
    assert recoverable["total_bytes"] == recoverable["strip"]["bytes"] + dedupe["bytes"]
    # the first copy in path order keeps its tensors; every later copy is recoverable
    assert rows["finetune/step-100/model.safetensors"].duplicate_bytes == 0
    assert rows["finetune/step-200/model.safetensors"].duplicate_bytes == audit_tree.CKPT_BYTES
    assert rows["standalone/copy.safetensors"].duplicate_bytes == audit_tree.CKPT_BYTES
    assert rows["runs/exp1/checkpoint-100"].duplicate_bytes == 0
    assert rows["runs/exp1/checkpoint-300"].duplicate_bytes == trainer_model_bytes()
    assert sum(r.duplicate_bytes for r in rows.values()) == dedupe["bytes"]

    # quantize: each model's int8 target, as the analyzer computes it for a single scan (a model
    # that would grow, small tensors gaining scales, saves nothing)
    for path, row in rows.items():
        result = scan(tree / path)
        if result.inventory is not None:
            assert row.quantize_saving_bytes == max(0, analyzer_target(result, "int8")), path
    assert recoverable["quantize"]["source"] == "analyzer"
    assert recoverable["quantize"]["saving_bytes"] == sum(r.quantize_saving_bytes for r in rows.values())


def analyzer_target(result: ScanResult, name: str) -> int:
    targets = result_dict(pipeline.build(result))["reduction"]["targets"]
    saving: int = next(t["saving_bytes"] for t in targets if t["name"] == name)
    return saving


def test_digest_comes_from_the_typed_report() -> None:
    """The totals read the analyzer's answers through the ModelReport: roles (one role model, no
    fallback), parameters (a tied view once), strip and quantize targets; never the rendered record."""
    from ckptscan.analyze.analysis import analyze
    from ckptscan.pipeline import ModelReport
    from ckptscan.scan import ScanResult
    from tests._analysis_helpers import loose, tensor

    tensors = [
        tensor("w.weight", (16, 8), offset=0),
        tensor("w.bias", (8,), offset=512),
        tensor("optimizer.state.0.exp_avg", (16, 8), offset=544, attrs={"structure": "optimizer"}),
        tensor("w_tied.weight", (16, 8), offset=0),
    ]
    inventory = loose(tensors)
    analysis = analyze(inventory)
    model = ModelReport(ScanResult("m.bin", inventory.format, inventory, None), analysis)
    d = model_digest(model, "int8")
    assert (d.roles_source, d.strip_source, d.quantize_source) == ("analyzer", "analyzer", "analyzer")
    assert d.by_role == {role: (c.tensors, c.elements, c.bytes) for role, c in analysis.by_role.items()}
    assert "optimizer_state" in d.by_role
    assert d.parameters == analysis.parameters.total
    strip = next(t for t in analysis.targets if t.name == "strip")
    int8 = next(t for t in analysis.targets if t.name == "int8")
    assert d.strip_bytes == max(0, strip.saving_bytes) > 0
    assert d.quantize_saving == max(0, int8.saving_bytes)
    assert [k[0] for k in d.dedupe_keys] == ["w.weight", "w.bias"]  # the tied view once, no optimizer state
    assert model_digest(ModelReport(ScanResult("x", None, None, None)), "int8").dedupe_keys == ()


def test_problems_and_skipped_files(audited: Audit, tree: Path) -> None:
    summary = audited.summary()
    assert [(os.path.relpath(p["path"], tree), p["code"]) for p in summary["failed"]] == [
        ("broken/malformed.safetensors", "malformed")
    ]
    assert sorted((os.path.relpath(p["path"], tree), p["code"]) for p in summary["incomplete"]) == [
        ("broken/pointer.safetensors", "lfs-pointer"),
        ("broken/truncated.safetensors", "truncated"),
    ]
    assert summary["skipped"]["files"]["not-a-checkpoint"] == audit_tree.NOT_A_CHECKPOINT
    assert [
        os.path.relpath(p, tree) for p in summary["skipped"]["unrecognized_checkpoint_names"]
    ] == audit_tree.UNRECOGNIZED_CHECKPOINT_NAMES
    findings = summary["findings"]
    assert findings["by_code"]["lfs-pointer"] == 1
    assert findings["by_severity"]["critical"] == 1
    worst = findings["listed"][0]
    assert (os.path.relpath(worst["path"], tree), worst["code"]) == ("torch/evil.pt", "unsafe-global")


def test_in_process_and_parallel_agree(audited: Audit, tree: Path) -> None:
    serial = run_audit([tree], workers=0)
    one, two = serial.summary(), audited.summary()
    for key in ("totals", "by_format", "by_dtype", "by_role", "recoverable", "top_offenders", "skipped"):
        assert one[key] == two[key], key


# -- robustness ----------------------------------------------------------------------------------


@pytest.fixture
def hostile_formats() -> Any:
    previous = audit_formats.install()
    yield
    registry.FORMATS = previous


def _small_models(folder: Path, n: int) -> None:
    from safetensors.numpy import save_file

    np = pytest.importorskip("numpy")
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        save_file({f"w{i}": np.full((2, 2), i, np.float32)}, str(folder / f"m{i:03}.safetensors"))


def test_a_hanging_file_is_stopped_at_the_time_limit(tmp_path: Path, hostile_formats: None) -> None:
    _small_models(tmp_path, 40)
    (tmp_path / "m020-hang.hostile").write_bytes(audit_formats.HANG + b"\0" * 64)
    started = time.monotonic()
    audit = run_audit([tmp_path], workers=2, timeout_s=1.0)
    took = time.monotonic() - started
    assert took < 15
    summary = audit.summary()
    assert summary["totals"]["ok"] == 40  # the units queued behind the hanging one were read too
    assert [(Path(p["path"]).name, p["code"]) for p in summary["failed"]] == [("m020-hang.hostile", "timeout")]


def test_a_crashing_worker_is_replaced(tmp_path: Path, hostile_formats: None) -> None:
    _small_models(tmp_path, 30)
    for i in (3, 17):
        (tmp_path / f"m{i:03}-crash.hostile").write_bytes(audit_formats.CRASH + b"\0" * 64)
    audit = run_audit([tmp_path], workers=2, timeout_s=30)
    summary = audit.summary()
    assert summary["totals"]["ok"] == 30
    assert sorted((Path(p["path"]).name, p["code"]) for p in summary["failed"]) == [
        ("m003-crash.hostile", "worker-crashed"),
        ("m017-crash.hostile", "worker-crashed"),
    ]


# -- command line --------------------------------------------------------------------------------


def ckptscan(*args: str, preload_hostile: bool = False, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    prelude = "from tests import audit_formats; audit_formats.install(); " if preload_hostile else ""
    code = f"{prelude}from ckptscan.cli import main; raise SystemExit(main({list(args)!r}))"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=env, **kwargs)


def jsonl_validator() -> Any:
    full = schema()
    return jsonschema.Draft202012Validator(full).evolve(schema=full["$defs"]["jsonl_record"])


def test_jsonl_streams_valid_records(tree: Path, expected: dict[str, Any]) -> None:
    proc = ckptscan("audit", str(tree), "--jsonl", "--workers", "2")
    assert proc.returncode == 1  # a malformed file and two incomplete models
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    validator = jsonl_validator()
    for line in lines:
        validator.validate(line)
    assert [line["record"] for line in lines] == ["model"] * expected["models"] + ["summary"]
    assert lines[-1]["audit"]["totals"]["tensor_bytes"] == expected["tensor_bytes"]
    assert "malformed.safetensors" in proc.stderr


def test_json_document_validates(tree: Path, expected: dict[str, Any]) -> None:
    proc = ckptscan("audit", str(tree), "--json", "--tensors")
    doc = json.loads(proc.stdout)
    jsonschema.Draft202012Validator(schema()).validate(doc)
    assert [r["path"] for r in doc["results"]] == sorted(r["path"] for r in doc["results"])
    assert sum(len(r["tensors"]) for r in doc["results"]) == expected["tensors"]
    assert doc["audit"]["totals"]["models"] == expected["models"]


def test_csv_has_one_row_per_model(tree: Path, audited: Audit, expected: dict[str, Any]) -> None:
    proc = ckptscan("audit", str(tree), "--csv")
    rows = list(csv.DictReader(io.StringIO(proc.stdout)))
    assert len(rows) == expected["models"]
    assert sum(int(r["tensors"]) for r in rows) == expected["tensors"]
    dedupe = audited.summary()["recoverable"]["dedupe"]["bytes"]
    assert sum(int(r["duplicate_bytes"]) for r in rows) == dedupe
    assert {r["status"] for r in rows} == {"ok", "failed", "incomplete"}


def test_terminal_report(tree: Path) -> None:
    proc = ckptscan("audit", str(tree), "--no-color")
    assert proc.returncode == 1
    for text in ("Recoverable bytes", "Top offenders", "Incomplete and failed", "by metadata", "malformed"):
        assert text in proc.stdout, text
    assert proc.stderr == ""  # no progress bar when not on a terminal


def test_exit_codes(tree: Path, tmp_path: Path) -> None:
    clean = tmp_path / "clean"
    for step in audit_tree.CHECKPOINTS:
        (clean / f"step-{step}").mkdir(parents=True)
        os.link(tree / f"finetune/step-{step}/model.safetensors", clean / f"step-{step}/model.safetensors")
    assert ckptscan("audit", str(clean), "--json").returncode == 0
    over = ckptscan("audit", str(clean), "--json", "--fail-on-recoverable", "1KB")
    assert over.returncode == 4  # 2 x 672 bytes recoverable by dedupe
    assert ckptscan("audit", str(clean), "--json", "--fail-on-recoverable", "2KB").returncode == 0

    # an index that lists a tensor its shard lacks: a high finding on a model that reads fine
    flawed = tmp_path / "flawed"
    flawed.mkdir()
    os.link(tree / "hf-model/model-00001-of-00002.safetensors", flawed / "model-00001-of-00002.safetensors")
    index = {
        "weight_map": {"a.weight": "model-00001-of-00002.safetensors", "ghost": "model-00001-of-00002.safetensors"}
    }
    (flawed / "model.safetensors.index.json").write_text(json.dumps(index))
    assert ckptscan("audit", str(flawed), "--json").returncode == 0
    assert ckptscan("audit", str(flawed), "--json", "--fail-on", "high").returncode == 3
    assert ckptscan("audit", str(tree), "--json", "--fail-on", "high").returncode == 1  # failures come first
    assert ckptscan("audit", str(tree), "--quantize", "int3").returncode == 2


def test_ctrl_c_stops_cleanly_and_reports_what_was_done(tmp_path: Path) -> None:
    _small_models(tmp_path, 6)
    for i in range(4):
        (tmp_path / f"z{i}.hostile").write_bytes(audit_formats.HANG + b"\0" * 64)
    code = (
        "from tests import audit_formats; audit_formats.install(); from ckptscan.cli import main; "
        f"raise SystemExit(main(['audit', {str(tmp_path)!r}, '--jsonl', '--workers', '2', '--timeout', '300']))"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=REPO, env=env)  # fmt: skip
    assert proc.stdout is not None
    models = []
    while len(models) < 6:  # every real model is out; the workers now hang on the hostile files
        line = proc.stdout.readline()
        assert line, proc.stderr.read() if proc.stderr else ""
        models.append(json.loads(line))
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 130
    summary = json.loads(out.splitlines()[-1])
    jsonl_validator().validate(summary)
    assert summary["audit"]["interrupted"] is True
    assert summary["audit"]["totals"]["models"] == 6


def test_parse_size() -> None:
    assert parse_size("10GB") == 10 * 10**9
    assert parse_size("1.5 TiB") == 3 * 2**39
    assert parse_size("500m") == 500 * 10**6
    assert parse_size("123") == 123


# -- real third-party files ----------------------------------------------------------------------


def test_real_models_are_all_listed_with_the_manifest_counts() -> None:
    manifest = real_manifest()
    if manifest is None:
        pytest.skip(f"{REAL_MODELS} not present")
    audit = run_audit([REAL_MODELS], workers=2, timeout_s=60)
    records = {os.path.relpath(r["path"], REAL_MODELS): r for r in audit.records}
    checked = 0
    for entry in manifest["files"]:
        truth = entry["truth"]
        path = REAL_MODELS / entry["path"]
        readable = registry_recognizes(path)
        if truth.get("n_tensors") is None or not readable:
            continue
        record = records[entry["path"]]
        assert record["error"] is None, record["error"]
        # where the manifest splits a file into sections (ONNX constants beside initializers, Keras
        # optimizer weights), ckptscan lists every section's tensors
        sections = truth.get("sections", {"all": truth}).values()
        assert record["totals"]["tensors"] == sum(s["n_tensors"] for s in sections), entry["path"]
        assert record["totals"]["elements"] == sum(s["total_params"] for s in sections), entry["path"]
        assert record["totals"]["bytes"] == sum(s["total_tensor_bytes"] for s in sections), entry["path"]
        checked += 1
    assert checked >= 5  # the GGUF and safetensors files at least
    # the sharded model whose shards are LFS pointers: one model, incomplete; its shards are members
    sharded = "safetensors_sharded_lfs/granite-3.1-1b-a400m-instruct"
    index = records[f"{sharded}/model.safetensors.index.json"]
    assert index["error"]["code"] == "incomplete-model" and "Git LFS pointers" in index["error"]["message"]
    assert index["path"] in [p["path"] for p in audit.summary()["incomplete"]]
    truth = next(e["truth"] for e in manifest["files"] if e["path"] == f"{sharded}/model.safetensors.index.json")
    assert index["metadata"]["tensors_in_index"] == truth["n_tensors_in_weight_map"]
    assert index["metadata"]["shards"] == truth["n_shards"]
    assert not any(p.startswith(f"{sharded}/model-0000") for p in records)
    # ONNX external data is a member of its graph's model, not a model
    if registry_recognizes(REAL_MODELS / "onnx_external/tiny-random-llama-fp16/model.onnx"):
        onnx = records["onnx_external/tiny-random-llama-fp16/model.onnx"]
        assert sorted(f["path"] for f in onnx["files"]) == ["model.onnx", "model.onnx.data"]
        assert "onnx_external/tiny-random-llama-fp16/model.onnx.data" not in records
    # every recognized file is a model or a member of one; the rest are listed as skipped
    summary = audit.summary()
    assert summary["discovery"]["files_done"] == summary["discovery"]["files"]


def registry_recognizes(path: Path) -> bool:
    from ckptscan.errors import CkptscanError
    from ckptscan.source import Source

    try:
        with Source(path) as source:
            registry.detect(source)
    except CkptscanError:
        return False
    return True


def test_model_records_are_streamed_as_they_finish(tree: Path, expected: dict[str, Any]) -> None:
    audit = Audit([str(tree)], AuditOptions(workers=2))
    seen = [e for e in audit.events() if isinstance(e, ModelDone)]
    assert len(seen) == expected["models"]
    assert all("folder" in e.record and "recoverable" in e.record for e in seen)


def test_reduction_targets_per_model(tree: Path) -> None:
    folder = tree / "finetune"
    default = run_audit([folder], workers=0, quantize="Q4_K_M")
    names = {tuple(t["name"] for t in r["reduction"]["targets"]) for r in default.records}
    assert names == {("strip", "dedupe", "Q4_K_M")}
    every = run_audit([folder], workers=0, all_targets=True)
    full = result_dict(pipeline.build(scan(folder / "step-100" / "model.safetensors")))["reduction"]["targets"]
    assert {len(r["reduction"]["targets"]) for r in every.records} == {len(full)}


def test_stats_make_deduplication_exact(tree: Path) -> None:
    """With content hashes, the fine-tuned heads are no longer duplicates; the frozen base still is,
    and so is each copy of a file; tensors without a hash (TF strings) fall back to metadata."""
    pytest.importorskip("numpy")
    audit = run_audit([tree], workers=2, stats=True)
    dedupe = audit.summary()["recoverable"]["dedupe"]
    assert dedupe["method"] in ("mixed", "content-hash")
    assert dedupe["metadata_only_keys"] <= 3  # tf/sharded: two strings and a complex tensor, unhashed
    # base.embed and base.norm: 3 more copies each; head: the standalone copy of step-100 only;
    # the Trainer folders' model: 2 more copies (the sharded model holds other values)
    assert dedupe["bytes"] == 3 * (512 + 32) + 128 + 2 * trainer_model_bytes()
    records = by_path(audit, tree)
    assert "stats_summary" in records["finetune/step-100/model.safetensors"]
    jsonschema.Draft202012Validator(schema()).validate(json.loads(document_text(audit.sorted_texts(), audit.summary())))


def test_summary_is_computed_once_until_more_is_added() -> None:
    from ckptscan.audit.aggregate import Aggregate

    aggregate = Aggregate(quantize="int8")
    first = aggregate.summary()
    aggregate.model_rows()  # needs the settled duplicate bytes: reuses the summary
    assert aggregate.summary() is first
    aggregate.add_skipped("notes.txt", 10, "not-a-checkpoint", named_like_checkpoint=False)
    second = aggregate.summary()
    assert second is not first and second.skipped.files == {"not-a-checkpoint": 1}
