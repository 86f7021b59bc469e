"""Fuzz every reader and the renderers from the testdata seeds (issue 13).

    python tools/fuzz.py                          # every family, 60 s each, mutation engine
    python tools/fuzz.py --family gguf --seconds 1800
    python tools/fuzz.py --engine atheris --family safetensors --seconds 600   # coverage-guided

Each case writes one mutated seed (beside copies of the seed's sibling files, so that shards and
external data are found) and runs what a user runs: ``scan`` and then the JSON document, the
terminal report (``--tensors --explain``) and the stats-free audit record. A case *fails* when

- anything raises other than ckptscan's own errors (``scan`` turning an exception into an
  ``internal-error`` result counts as a failure too),
- an output holds a raw control, bidi or surrogate character, or JSON that does not parse,
- it takes more than ``--max-seconds`` (2 s), or the process's peak RSS grows past ``--max-rss-mb``
  (200 MB over the start).

Failing inputs are saved under ``--out`` (default ``fuzz-findings/``) with a ``.txt`` saying why,
so that each can become a regression test. The mutation engine is deterministic for a ``--seed``:
bit flips, interesting integers (0, -1, 2^31, 2^63, the file size) written over 1/2/4/8 bytes,
chunk deletion, duplication and insertion, truncation, and splicing with another seed. The
summary (executions, seconds, failures per family) is printed as JSON.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import random
import re
import resource
import shutil
import signal
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TESTDATA = ROOT / "testdata"

# family -> seed files (relative to testdata); siblings of a seed are copied next to each case
FAMILIES: dict[str, tuple[str, ...]] = {
    "safetensors": ("safetensors/all_dtypes.safetensors", "safetensors/edge_cases.safetensors",
                    "safetensors/sharded-tiny/model.safetensors.index.json"),
    "gguf": ("gguf/llama-tiny-q8_0.gguf", "gguf/tiny-big-endian.gguf", "gguf/all-ggml-types.gguf"),
    "pytorch": ("torch/tied.bin", "torch/legacy.pt", "torch/training.pt", "torch/lightning.ckpt",
                "torch/legacy.tar", "torch/quantized.pt", "torch/torchscript.pt"),
    "numpy": ("numpy/f32.npy", "numpy/record.npy", "numpy/objects.npy", "numpy/compressed.npz",
              "numpy/stored.npz"),
    "onnx": ("onnx/graph.onnx", "onnx/dtypes.onnx", "onnx/external_one_file/model.onnx"),
    "hdf5": ("hdf5/layouts.h5", "keras/tiny.weights.h5", "keras/tiny_legacy.h5", "keras/tiny.keras"),
    "tf-checkpoint": ("tf_checkpoint/tf2_module/ckpt-1.index", "tf_checkpoint/tf1_saver/model.ckpt.index"),
}  # fmt: skip

INTERESTING = (0, 1, 2, 0x7F, 0x80, 0xFF, 0x7FFF, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 1 << 32,
               0x7FFFFFFFFFFFFFFF, 0xFFFFFFFFFFFFFFFF)  # fmt: skip


@dataclass
class Outcome:
    family: str
    executions: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    rechecked_slow: int = 0
    failures: int = 0
    slowest_s: float = 0.0
    kinds: dict[str, int] = field(default_factory=dict)
    saved: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "executions": self.executions,
            "seconds": round(self.seconds, 1),
            "cpu_seconds": round(self.cpu_seconds, 1),
            "slow_cases_rechecked": self.rechecked_slow,
            "failures": self.failures,
            "slowest_case_s": round(self.slowest_s, 3),
            "failure_kinds": self.kinds,
            "saved": self.saved[:20],
        }


class CaseTimeout(Exception):
    pass


# -- mutations --------------------------------------------------------------------------------------


def mutate(data: bytes, rng: random.Random, others: list[bytes]) -> bytes:
    """One to four stacked mutations of ``data``."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        out = _one(out, rng, others)
    return bytes(out)


def _one(out: bytearray, rng: random.Random, others: list[bytes]) -> bytearray:
    n = len(out)
    choice = rng.randrange(9)
    if n == 0:
        return bytearray(rng.randbytes(rng.randint(1, 64)))
    at = _position(n, rng)
    if choice == 0:  # bit flip
        out[at] ^= 1 << rng.randrange(8)
    elif choice == 1:  # interesting byte
        out[at] = rng.choice((0, 0xFF, 0x7F, 0x80, 0x01))
    elif choice == 2:  # interesting integer over 1..8 bytes, either byte order
        width = rng.choice((1, 2, 4, 8))
        value = rng.choice((*INTERESTING, n, n - at, rng.getrandbits(width * 8)))
        raw = (value & ((1 << (8 * width)) - 1)).to_bytes(width, rng.choice(("little", "big")))
        out[at : at + width] = raw
    elif choice == 3:  # small arithmetic on an integer
        width = rng.choice((1, 2, 4, 8))
        if at + width <= n:
            old = int.from_bytes(out[at : at + width], "little")
            new = (old + rng.randint(-16, 16)) & ((1 << (8 * width)) - 1)
            out[at : at + width] = new.to_bytes(width, "little")
    elif choice == 4:  # delete a chunk
        del out[at : at + rng.randint(1, max(1, min(256, n // 8)))]
    elif choice == 5:  # duplicate a chunk
        length = rng.randint(1, max(1, min(512, n // 4)))
        out[at:at] = out[at : at + length] * rng.randint(1, 8)
    elif choice == 6:  # insert random or repeated bytes
        out[at:at] = rng.randbytes(rng.randint(1, 32)) if rng.random() < 0.5 else bytes([rng.randrange(256)]) * 64
    elif choice == 7:  # truncate
        del out[rng.randint(0, n - 1) :]
    elif others:  # splice another seed in
        other = rng.choice(others)
        if other:
            start = rng.randrange(len(other))
            piece = other[start : start + rng.randint(1, 1024)]
            out[at : at + len(piece)] = piece
    return out


def _position(n: int, rng: random.Random) -> int:
    # headers are where the structure is: bias positions toward the start of the file
    if rng.random() < 0.6:
        return rng.randrange(min(n, 512))
    return rng.randrange(n)


# -- one case ------------------------------------------------------------------------------------------


def check_case(path: Path) -> str | None:
    """Run scan and every renderer on ``path``; a failure kind, or None when all went well."""
    from rich.console import Console

    from ckptscan import pipeline
    from ckptscan.report.json import document
    from ckptscan.report.terminal import Options, report
    from ckptscan.safe_text import UNSAFE, json_text
    from ckptscan.scan import scan

    result = scan(path)
    if result.error is not None and result.error.code == "internal-error":
        return "internal-error: " + result.error.message.split("(", 1)[-1][:120]
    model = pipeline.build(result)  # one analysis, read by both renderers
    text = json_text(document([model], explain=True, tensor_plans=True))
    json.loads(text)
    raw = UNSAFE.pattern.replace("\x00-\x1f", "\x00-\x08\x0b-\x1f")
    if re.search(raw, text):
        return "unsafe character in JSON"
    console = Console(file=io.StringIO(), width=120, color_system=None, highlight=False, soft_wrap=False)
    for renderable in report([model], Options(tensors=True, explain=True)):
        console.print(renderable)
    shown = console.file.getvalue()  # type: ignore[attr-defined]
    if re.search(raw, shown):
        return "unsafe character in the terminal report"
    if result.error is not None and "\n" in result.error.message:
        return "multi-line error"
    return None


def _alarm(signum: int, frame: Any) -> None:
    raise CaseTimeout


def cpu_seconds() -> float:
    """CPU time of this process and its reaped children (the bounded libhdf5 workers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1 << 20) if sys.platform == "darwin" else peak / 1024


# -- the mutation engine -----------------------------------------------------------------------------


@dataclass
class Seed:
    path: Path  # in testdata
    data: bytes
    siblings: list[Path]


def load_seeds(family: str) -> list[Seed]:
    seeds = []
    for relative in FAMILIES[family]:
        path = TESTDATA / relative
        if not path.is_file():
            continue
        siblings = [p for p in path.parent.iterdir() if p.is_file() and p != path and p.stat().st_size < 64 << 20]
        seeds.append(Seed(path, path.read_bytes(), siblings))
    return seeds


def fuzz_family(
    family: str,
    seconds: float,
    rng: random.Random,
    out: Path,
    max_seconds: float,
    max_rss_mb: float,
    cpu_budget: bool = False,
) -> Outcome:
    outcome = Outcome(family)
    seeds = load_seeds(family)
    if not seeds:
        return outcome
    others = [s.data for s in seeds]
    work = Path(tempfile.mkdtemp(prefix=f"ckptscan-fuzz-{family}-"))
    folders = {}
    for index, seed in enumerate(seeds):  # one folder per seed, with its siblings
        folder = work / str(index)
        folder.mkdir()
        for sibling in seed.siblings:
            shutil.copyfile(sibling, folder / sibling.name)
        folders[index] = folder
    rss_start = rss_mb()
    previous = signal.signal(signal.SIGALRM, _alarm)
    started, cpu_started = time.monotonic(), cpu_seconds()

    def spent() -> float:
        return cpu_seconds() - cpu_started if cpu_budget else time.monotonic() - started

    try:
        while spent() < seconds:
            index = rng.randrange(len(seeds))
            seed = seeds[index]
            data = mutate(seed.data, rng, others)
            path = folders[index] / seed.path.name
            path.write_bytes(data)
            kind, detail, took = _timed_case(path, max_seconds)
            if kind == "hang" or (kind is None and took > max_seconds):
                # a shared (or paused) machine stalls now and then: a slow case counts only if it is slow again
                outcome.rechecked_slow += 1
                kind, detail, again = _timed_case(path, max_seconds)
                took = min(took, again)
            outcome.executions += 1
            outcome.slowest_s = max(outcome.slowest_s, took)
            if kind is None and took > max_seconds:
                kind = f"slow ({took:.1f} s)"
            if kind is None and rss_mb() - rss_start > max_rss_mb:
                kind = f"memory (peak RSS {rss_mb():.0f} MB)"
                rss_start = rss_mb()  # report each new high once
            if kind is not None:
                outcome.failures += 1
                key = kind.split(":")[0].split(" (")[0]
                outcome.kinds[key] = outcome.kinds.get(key, 0) + 1
                outcome.saved.append(save(out, family, seed, data, kind, detail))
    finally:
        signal.signal(signal.SIGALRM, previous)
        outcome.seconds = time.monotonic() - started
        outcome.cpu_seconds = cpu_seconds() - cpu_started
        shutil.rmtree(work, ignore_errors=True)
    return outcome


def _timed_case(path: Path, max_seconds: float) -> tuple[str | None, str, float]:
    """(failure kind or None, traceback, wall seconds) of one case, stopped at 2.5x the case budget."""
    kind, detail = None, ""
    case_started = time.monotonic()
    signal.setitimer(signal.ITIMER_REAL, max_seconds * 2.5)
    try:
        kind = check_case(path)
    except CaseTimeout:
        kind = "hang"
    except Exception as e:  # a renderer or scan escaped: the finding to keep
        kind = f"{type(e).__name__}: {str(e)[:100]}"
        detail = traceback.format_exc()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    return kind, detail, time.monotonic() - case_started


def save(out: Path, family: str, seed: Seed, data: bytes, kind: str, detail: str) -> str:
    folder = out / family
    folder.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(data).hexdigest()[:16]
    target = folder / f"{digest}-{seed.path.name}"
    target.write_bytes(data)
    target.with_suffix(target.suffix + ".txt").write_text(
        f"seed: {seed.path.relative_to(TESTDATA)}\nkind: {kind}\n\n{detail}", encoding="utf-8"
    )
    return str(target)


def recheck(out: Path, max_seconds: float) -> list[dict[str, Any]]:
    """Run every saved finding again, beside its seed's siblings: which still fail, and how."""
    rows = []
    for note in sorted(out.rglob("*.txt")):
        case = note.with_suffix("")
        seed_line = note.read_text(encoding="utf-8").splitlines()[0]
        seed = TESTDATA / seed_line.removeprefix("seed: ")
        with tempfile.TemporaryDirectory(prefix="ckptscan-recheck-") as work:
            for sibling in seed.parent.iterdir():
                if sibling.is_file() and sibling != seed:
                    shutil.copyfile(sibling, Path(work) / sibling.name)
            target = Path(work) / seed.name
            shutil.copyfile(case, target)
            kind, _, took = _timed_case(target, max_seconds)
        if kind is None and took > max_seconds:
            kind = f"slow ({took:.1f} s)"
        rows.append({"case": str(case), "was": note.read_text(encoding="utf-8").splitlines()[1], "now": kind,
                     "seconds": round(took, 3)})  # fmt: skip
    return rows


# -- the atheris engine (coverage-guided, optional) --------------------------------------------------------


def atheris_family(family: str, seconds: float, out: Path) -> None:
    """libFuzzer through atheris on one family; stops at the first failure (its input is saved by libFuzzer)."""
    import atheris  # type: ignore[import-not-found]

    seeds = load_seeds(family)
    work = Path(tempfile.mkdtemp(prefix=f"ckptscan-atheris-{family}-"))
    corpus = work / "corpus"
    corpus.mkdir()
    for index, seed in enumerate(seeds):
        (corpus / f"seed-{index}").write_bytes(seed.data)
        for sibling in seed.siblings:
            shutil.copyfile(sibling, work / sibling.name)
    target = work / seeds[0].path.name

    with atheris.instrument_imports():
        import ckptscan.formats
        import ckptscan.report.json
        import ckptscan.report.terminal
        import ckptscan.scan  # noqa: F401

    def one_input(data: bytes) -> None:
        target.write_bytes(data)
        kind = check_case(target)
        if kind is not None:
            raise AssertionError(kind)

    out.mkdir(parents=True, exist_ok=True)
    argv = [sys.argv[0], str(corpus), f"-max_total_time={int(seconds)}", f"-artifact_prefix={out}/{family}-",
            "-timeout=10", "-rss_limit_mb=2048"]  # fmt: skip
    atheris.Setup(argv, one_input)
    atheris.Fuzz()


# -- command line -----------------------------------------------------------------------------------------------


def run(
    families: list[str],
    seconds: float,
    seed: int = 0,
    out: Path | None = None,
    max_seconds: float = 2.0,
    max_rss_mb: float = 200.0,
    cpu_budget: bool = False,
) -> list[Outcome]:
    rng = random.Random(seed)
    target = out or ROOT / "fuzz-findings"
    return [fuzz_family(f, seconds, rng, target, max_seconds, max_rss_mb, cpu_budget) for f in families]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", action="append", choices=list(FAMILIES), help="repeatable; default: all")
    parser.add_argument("--seconds", type=float, default=60.0, help="time budget per family (default 60)")
    parser.add_argument("--cpu", action="store_true", help="count --seconds as CPU time (this process + workers)")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the mutation engine")
    parser.add_argument("--engine", choices=("mutate", "atheris"), default="mutate")
    parser.add_argument("--out", type=Path, default=ROOT / "fuzz-findings", help="where failing inputs go")
    parser.add_argument("--recheck", action="store_true", help="run the findings saved under --out again")
    parser.add_argument("--max-seconds", type=float, default=2.0, help="a case slower than this fails")
    parser.add_argument("--max-rss-mb", type=float, default=200.0, help="peak RSS growth that fails a case")
    args = parser.parse_args(argv)
    families = args.family or list(FAMILIES)
    if args.recheck:
        rows = recheck(args.out, args.max_seconds)
        print(json.dumps(rows, indent=2))
        return 1 if any(r["now"] for r in rows) else 0
    if args.engine == "atheris":
        if len(families) != 1:
            parser.error("--engine atheris fuzzes one --family per process")
        atheris_family(families[0], args.seconds, args.out)
        return 0
    outcomes = run(families, args.seconds, args.seed, args.out, args.max_seconds, args.max_rss_mb, args.cpu)
    print(json.dumps([o.as_dict() for o in outcomes], indent=2))
    return 1 if any(o.failures for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
