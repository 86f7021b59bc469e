"""A short smoke run of tools/fuzz.py (issue 13): every family gets a few mutated cases through scan
and the renderers, deterministically; the long campaign is run by hand (docs/limits.md)."""

from __future__ import annotations

import importlib.util
import random
import sys
from pathlib import Path

from tests.conftest import TESTDATA

TOOL = Path(__file__).resolve().parent.parent / "tools" / "fuzz.py"


def _fuzz():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("ckptscan_fuzz", TOOL)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_mutations_are_deterministic() -> None:
    fuzz = _fuzz()
    seed = (TESTDATA / "gguf" / "tiny-big-endian.gguf").read_bytes()
    first = [fuzz.mutate(seed, random.Random(7), [seed]) for _ in range(3)]
    again = [fuzz.mutate(seed, random.Random(7), [seed]) for _ in range(3)]
    assert first == again and any(m != seed for m in first)


def test_every_family_has_seeds() -> None:
    fuzz = _fuzz()
    for family in fuzz.FAMILIES:
        assert fuzz.load_seeds(family), family


def test_smoke_run_finds_nothing(tmp_path: Path) -> None:
    fuzz = _fuzz()
    outcomes = fuzz.run(list(fuzz.FAMILIES), seconds=0.4, seed=1, out=tmp_path)
    assert [o.family for o in outcomes] == list(fuzz.FAMILIES)
    assert all(o.executions > 0 for o in outcomes)
    failures = {o.family: (o.kinds, o.saved) for o in outcomes if o.failures}
    assert not failures, failures


def test_recheck_runs_saved_findings_again_beside_their_seeds(tmp_path: Path) -> None:
    fuzz = _fuzz()
    seed = fuzz.load_seeds("safetensors")[2]  # the sharded index: its shards must be found again
    assert seed.path.name == "model.safetensors.index.json"
    fuzz.save(tmp_path, "safetensors", seed, seed.data, "hang", "")
    fuzz.save(tmp_path, "safetensors", seed, b'{"weight_map": {"x": "../../etc/passwd"}}', "hang", "")
    rows = fuzz.recheck(tmp_path, max_seconds=2.0)
    assert [row["was"] for row in rows] == ["kind: hang", "kind: hang"]
    assert [row["now"] for row in rows] == [None, None]  # a clean scan and a clear refusal
