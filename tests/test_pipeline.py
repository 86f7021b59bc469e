"""The pipeline: one typed ModelReport per model, one analysis per model, renderers that only format."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from ckptscan import pipeline
from ckptscan.analyze import roles
from ckptscan.audit import Audit, AuditOptions
from ckptscan.report.json import document, result_dict
from ckptscan.report.terminal import report
from tests.conftest import REPO, TESTDATA
from tests.helpers import run_cli

A = TESTDATA / "stats" / "dtypes.safetensors"
B = TESTDATA / "stats" / "integrity.safetensors"


@pytest.fixture
def analyses(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts analyses: every one classifies roles once (whoever calls it, by whatever name)."""
    calls: list[int] = []
    classify = roles.classify

    def counting(inventory):  # type: ignore[no-untyped-def]
        calls.append(len(inventory.tensors))
        return classify(inventory)

    monkeypatch.setattr(roles, "classify", counting)
    return calls


@pytest.mark.parametrize(
    "args",
    [
        (),
        ("--json",),
        ("--tensors", "--explain"),
        ("--json", "--tensors", "--explain"),
    ],
)
def test_one_analysis_per_model(analyses: list[int], args: tuple[str, ...]) -> None:
    run = run_cli(A, B, *args)
    assert run.code in (0, 3), run.err
    assert len(analyses) == 2


@pytest.mark.parametrize("args", [("--stats",), ("--json", "--stats"), ("--stats", "--tensors")])
def test_one_analysis_per_model_with_stats(analyses: list[int], args: tuple[str, ...]) -> None:
    pytest.importorskip("numpy")
    run = run_cli(A, B, *args, "--stats-workers", "1")
    assert run.code == 0, run.err
    assert len(analyses) == 2  # it was four before the pipeline (a one-slot memo hid the rest)


def test_memory_command_analyses_once(analyses: list[int]) -> None:
    run = run_cli("memory", A, B)
    assert run.code == 0, run.err
    assert len(analyses) == 2


def test_audit_analyses_once_per_model(analyses: list[int]) -> None:
    pytest.importorskip("numpy")
    audit = Audit([str(TESTDATA / "stats")], AuditOptions(workers=0, stats=True))
    models = sum(1 for _ in audit.events() if type(_).__name__ == "ModelDone")
    assert models == len(analyses) == 4


def test_model_report_is_typed_and_complete() -> None:
    pytest.importorskip("numpy")
    from ckptscan.stats import StatsOptions, StatsResult
    from ckptscan.stats.summary import MeasuredError

    options = pipeline.Options(stats=StatsOptions(workers=1))
    (model,) = pipeline.run([str(B)], options)
    assert model.inventory is not None and model.analysis is not None
    assert isinstance(model.stats, StatsResult)
    assert model.measured and all(isinstance(m, MeasuredError) for m in model.measured.values())
    assert model.inference is not None and model.training is not None  # memory estimates ride along
    assert set(model.roles) == {t.name for t in model.inventory.tensors}
    record = result_dict(model)
    int8 = next(t for t in record["reduction"]["targets"] if t["name"] == "int8")
    assert int8["measured"]["tensors"] == model.measured["int8"].tensors
    with pytest.raises(AttributeError):
        model.stats_problem = "x"  # type: ignore[misc]


def test_unreadable_input_gives_a_report_without_analysis(tmp_path: Path) -> None:
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\xff" * 16)
    (model,) = pipeline.run([str(bad)])
    assert model.error is not None and model.analysis is None and model.inventory is None
    assert document([model])["results"][0]["error"]["code"] == model.error.code
    assert report([model])  # a header and the error line


def test_empty_folder_is_one_error_report(tmp_path: Path) -> None:
    (model,) = pipeline.run([str(tmp_path)])
    assert model.error is not None and "no checkpoint found" in model.error.message


def test_stats_problem_keeps_the_report(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("numpy")
    import ckptscan.stats as stats_module
    from ckptscan.errors import MissingDependency

    def broken(*args: object, **kwargs: object) -> None:
        raise MissingDependency("numpy is needed", path=str(A))

    monkeypatch.setattr(stats_module, "compute", broken)
    (model,) = pipeline.run([str(A)], pipeline.Options(stats=stats_module.StatsOptions()))
    assert model.stats is None and model.analysis is not None
    assert model.stats_problem.startswith("--stats: ")
    run = run_cli(A, "--json", "--stats")
    assert run.code == 0 and "--stats:" in run.err
    assert "stats_summary" not in run.json()["results"][0]


# -- the layering, checked on the source ---------------------------------------------------------------


def _calls(path: Path, name: str) -> list[int]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and (getattr(node.func, "id", None) == name or getattr(node.func, "attr", None) == name)
    ]


def _sources(*parts: str) -> list[Path]:
    found: list[Path] = []
    for part in parts:
        p = REPO / "ckptscan" / part
        found += sorted(p.rglob("*.py")) if p.is_dir() else [p]
    return found


def test_only_the_pipeline_analyzes_or_computes_stats() -> None:
    for path in _sources("report", "audit", "cli", "scan.py"):
        assert not _calls(path, "analyze"), path
        assert not _calls(path, "compute"), path
        assert not _calls(path, "measured_targets"), path


def test_renderers_do_not_import_each_other_in_a_cycle() -> None:
    stats_source = (REPO / "ckptscan" / "report" / "stats.py").read_text(encoding="utf-8")
    assert "ckptscan.report.terminal" not in stats_source


# -- one policy for which files make a model ------------------------------------------------------------


def test_scan_and_audit_agree_on_which_files_are_models(tmp_path: Path) -> None:
    """A PyTorch file named ``weights.model`` is a model for `ckptscan DIR` and for `ckptscan audit`
    alike; tokenizers, configs and text beside it are neither read nor counted as failed models."""
    import shutil

    from ckptscan import registry

    shutil.copy(TESTDATA / "torch" / "legacy.pt", tmp_path / "weights.model")
    (tmp_path / "tokenizer.model").write_bytes(b"\x0a\x05hello" * 10)
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "notes.md").write_text("# notes")
    (tmp_path / "train.py").write_text("print('hi')\n")
    scanned = run_cli("--json", tmp_path).json()["results"]
    assert [Path(r["path"]).name for r in scanned] == ["weights.model"]
    audit = Audit([str(tmp_path)], AuditOptions(workers=0))
    for _ in audit.events():
        pass
    summary = audit.summary()
    assert summary["totals"]["models"] == 1 and not summary["failed"]
    assert [Path(json.loads(t)["path"]).name for t in audit.sorted_texts()] == ["weights.model"]
    assert registry.could_be_model("model.safetensors.index.json")
    assert not registry.could_be_model("tokenizer.model") and registry.could_be_model("weights.model")


def test_head_zip_names_use_the_one_zip_parser() -> None:
    source_text = (REPO / "ckptscan" / "source.py").read_text(encoding="utf-8")
    assert "import zipfile" not in source_text and "zipfile." not in source_text


# -- bad option values ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        {"optimizer": "adamax"},
        {"precision": "fp64"},
        {"attention": "linear"},
        {"optimizer_impl": "cuda"},
        {"batch": 0},
    ],
)
def test_bad_memory_options_are_usage_errors(options: dict[str, object]) -> None:
    from ckptscan.analyze.memory import TrainingOptions
    from ckptscan.errors import UsageError

    with pytest.raises(UsageError):
        TrainingOptions(**options).validated()  # type: ignore[arg-type]


def test_usage_error_past_argparse_exits_2(monkeypatch: pytest.MonkeyPatch) -> None:
    from ckptscan.analyze import memory

    monkeypatch.setattr(memory.TrainingOptions, "validated", lambda self: memory.resolve_optimizer("nope"))
    run = run_cli("memory", A)
    assert run.code == 2 and "unknown optimizer 'nope'" in run.err and "Traceback" not in run.err


def test_optimizer_table_sizes_state() -> None:
    from ckptscan.analyze.memory import OPTIMIZER_TABLE, OPTIMIZERS, optimizer_state_bytes
    from tests._analysis_helpers import tensor

    w = tensor("w", (64, 128))
    assert set(OPTIMIZERS) == set(OPTIMIZER_TABLE)
    assert optimizer_state_bytes("adamw", w, 4) == 2 * 64 * 128 * 4 + 4
    assert optimizer_state_bytes("sgd", w, 4) == 0
    assert optimizer_state_bytes("lion", w, 4) == 64 * 128 * 4
    assert optimizer_state_bytes("adafactor", w, 4) == (64 + 128) * 4 + 4
    assert optimizer_state_bytes("adam-8bit", w, 4) == 2 * 8192 + 2 * 4 * 4
