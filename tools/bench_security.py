#!/usr/bin/env python3
"""Security benchmark: ckptscan against picklescan, modelscan and ModelAudit, side by side, in one run.

    python tools/bench_security.py                       # corpus in a temp folder, removed after
    python tools/bench_security.py --workdir /tmp/sec --keep
    python tools/bench_security.py --peers-python /work/venv-sec/bin/python

Installs nothing: the peers come from the ``security-bench`` extra (``pip install
"ckptscan[security-bench]"``), here or in the Python given with ``--peers-python`` (their CLIs are
looked up beside it). The corpus is built with the real libraries installed here (torch, numpy,
h5py, onnx, safetensors, gguf, joblib; each family is skipped when its library is missing):

* malicious: payload pickles (every call opcode family and protocol; os/posix.system,
  subprocess, builtins.eval/exec, runpy, webbrowser, socket, shutil, importlib, nested
  pickle.loads) as raw pickles under every common extension, inside torch zip (data.pkl and extra
  members), legacy, legacy tar, TorchScript and Lightning checkpoints, NumPy object arrays
  (.npy, .npz), Keras v3 configs and legacy HDF5 (dangerous modules, Lambda), HDF5 attribute
  pickles, ONNX external data that escapes the model folder, GGUF chat-template injection;
* benign: files written by the real libraries (torch.save zip and legacy, TorchScript, numpy,
  h5py, onnx, safetensors, gguf, joblib, plain pickles of builtin values).

Each tool scans the whole corpus folder once (one process tree; wall time and peak RSS of that
tree, the children it waited for included). A file counts as flagged when the tool reports it at
high severity or above (picklescan: a dangerous import; modelscan: HIGH/CRITICAL; ModelAudit:
critical; ckptscan: high/critical findings, including those kept with a read error).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import pickle
import re
import shutil
import struct
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
NAME = re.compile(r"([mb]\d{3})_[A-Za-z0-9_.-]*")


# -- payloads (built, never loaded) ------------------------------------------------------------


class _Call:
    def __init__(self, func: Callable[..., object], *args: object) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return (self.func, self.args)


def _q(text: str) -> bytes:
    return repr(text).encode()


def payloads(marker: Path) -> dict[str, bytes]:
    import builtins
    import runpy
    import shutil as shutil_module
    import socket
    import subprocess as subprocess_module
    import webbrowser

    command = f"touch {marker}"
    found = {f"reduce_p{p}": pickle.dumps(_Call(os.system, command), protocol=p) for p in range(6)}
    found["subprocess"] = pickle.dumps(_Call(subprocess_module.Popen, ["touch", str(marker)]), protocol=4)
    found["eval"] = pickle.dumps(_Call(builtins.eval, f"__import__('os').system({command!r})"), protocol=2)
    found["exec"] = pickle.dumps(_Call(builtins.exec, f"import os; os.system({command!r})"), protocol=4)
    found["runpy"] = pickle.dumps(_Call(runpy.run_path, str(marker)), protocol=3)
    found["webbrowser"] = pickle.dumps(_Call(webbrowser.open, "http://127.0.0.1:9/"), protocol=2)
    found["socket"] = pickle.dumps(_Call(socket.create_connection, ("127.0.0.1", 9)), protocol=4)
    found["shutil"] = pickle.dumps(_Call(shutil_module.rmtree, str(marker)), protocol=2)
    found["inst"] = b"(S" + _q(command) + b"\nios\nsystem\n."
    found["obj"] = b"(cos\nsystem\nS" + _q(command) + b"\no."
    found["newobj"] = b"\x80\x02cos\nsystem\nS" + _q(command) + b"\n\x85\x81."
    found["build"] = b"\x80\x02c__main__\nGadget\n)\x81}S'__setstate__'\ncos\nsystem\nsbS" + _q(command) + b"\nb."
    inner = found["reduce_p2"]
    found["nested_loads"] = b"\x80\x02cpickle\nloads\nC" + bytes([len(inner)]) + inner + b"\x85R."
    found["importlib"] = b"\x80\x02cimportlib\nimport_module\nX\x02\x00\x00\x00os\x85R."
    return found


# -- the corpus --------------------------------------------------------------------------------


@dataclass
class Corpus:
    root: Path
    labels: dict[str, tuple[str, str]] = field(default_factory=dict)  # id -> (malicious|benign, family)
    counter: dict[str, int] = field(default_factory=lambda: {"m": 0, "b": 0})

    def path(self, kind: str, family: str, suffix: str) -> Path:
        prefix = "m" if kind == "malicious" else "b"
        self.counter[prefix] += 1
        ident = f"{prefix}{self.counter[prefix]:03d}"
        self.labels[ident] = (kind, family)
        return self.root / f"{ident}_{family}{suffix}"


def _zip(path: Path, members: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        for name, blob in members.items():
            archive.writestr(name, blob)


def _tar(path: Path, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for name, blob in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))


LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


def build_malicious(corpus: Corpus, marker: Path) -> None:
    found = payloads(marker)
    for kind, payload in found.items():
        for suffix in (".pkl", ".pt", ".bin", ".ckpt", ".pth", ".joblib"):
            corpus.path("malicious", f"raw_{kind}", suffix).write_bytes(payload)
    empty = pickle.dumps({}, protocol=2)
    for kind in ("reduce_p2", "reduce_p4", "eval", "subprocess", "inst", "build", "nested_loads", "exec"):
        payload = found[kind]
        _zip(
            corpus.path("malicious", f"torchzip_{kind}", ".pt"),
            {"archive/data.pkl": payload, "archive/version": b"3\n"},
        )
    for kind in ("reduce_p2", "eval", "subprocess", "runpy"):
        _zip(corpus.path("malicious", f"zipextra_{kind}", ".pt"),
             {"archive/data.pkl": empty, "archive/extra.pkl": found[kind], "archive/version": b"3\n"})  # fmt: skip
        parts = [pickle.dumps(v, protocol=2) for v in (LEGACY_MAGIC, 1001, {})]
        corpus.path("malicious", f"legacy_{kind}", ".pt").write_bytes(b"".join([*parts, found[kind], pickle.dumps([])]))
        _tar(corpus.path("malicious", f"tar_{kind}", ".tar"),
             {"pickle": found[kind], "tensors": pickle.dumps(0, protocol=2),
              "storages": pickle.dumps(0, protocol=2) + pickle.dumps([], protocol=2)})  # fmt: skip
        script = {"archive/data.pkl": empty, "archive/constants.pkl": found[kind], "archive/code/m.py": b"x = 1\n"}
        _zip(corpus.path("malicious", f"torchscript_{kind}", ".pt"), script)
        lightning = pickle.dumps({"state_dict": {}, "pytorch-lightning_version": "2.0", "callbacks":
                                  _Call(os.system, f"touch {marker}")}, protocol=2)  # fmt: skip
        _zip(corpus.path("malicious", f"lightning_{kind}", ".ckpt"), {"archive/data.pkl": lightning})
    _numpy_malicious(corpus, marker)
    _hdf5_malicious(corpus, marker)
    _onnx_malicious(corpus)
    _gguf_malicious(corpus)


def _numpy_malicious(corpus: Corpus, marker: Path) -> None:
    try:
        import numpy as np
    except ImportError:
        return
    for i in range(3):
        array = np.array([_Call(os.system, f"touch {marker}"), i], dtype=object)
        with open(corpus.path("malicious", "npy_object", ".npy"), "wb") as f:
            np.save(f, array, allow_pickle=True)
        np.savez(corpus.path("malicious", "npz_object", ".npz"), a=array)


def _hdf5_malicious(corpus: Corpus, marker: Path) -> None:
    try:
        import h5py
        import numpy as np
    except ImportError:
        return
    lambda_config = {"class_name": "Sequential", "config": {"name": "s", "layers": [
        {"class_name": "Lambda", "config": {"name": "l", "function": {"module": "os", "config": "system",
                                                                      "class_name": "function"}}},
        {"class_name": "system", "module": "os", "config": {}}]}}  # fmt: skip
    for i in range(3):
        with h5py.File(corpus.path("malicious", "keras_h5", ".h5"), "w") as f:
            f.attrs["model_config"] = json.dumps(lambda_config)
            f.attrs["keras_version"] = "2.15.0"
            f.attrs["backend"] = "tensorflow"
            f.create_group("model_weights").attrs["layer_names"] = np.array([b"l"])
        weights = corpus.root / f"_weights{i}.h5"
        with h5py.File(weights, "w") as f:
            f.create_group("layers")
        blob = weights.read_bytes()
        weights.unlink()
        _zip(corpus.path("malicious", "keras_v3", ".keras"),
             {"config.json": json.dumps(lambda_config).encode(), "metadata.json": b'{"keras_version": "3.3.3"}',
              "model.weights.h5": blob})  # fmt: skip
    for i in range(2):
        with h5py.File(corpus.path("malicious", "hdf5_attr_pickle", ".h5"), "w") as f:
            f["x"] = np.zeros(3 + i)
            f.attrs["blob"] = np.void(pickle.dumps(_Call(os.system, f"touch {marker}")))


def _onnx_malicious(corpus: Corpus) -> None:
    try:
        from onnx import TensorProto, helper
    except ImportError:
        return
    for i, location in enumerate(("../../../etc/passwd", "/etc/passwd", "../secrets.bin")):
        tensor = TensorProto()
        tensor.name = "w"
        tensor.data_type = TensorProto.FLOAT
        tensor.dims.extend([4])
        tensor.data_location = TensorProto.EXTERNAL
        for key, value in (("location", location), ("offset", "0"), ("length", "16")):
            entry = tensor.external_data.add()
            entry.key, entry.value = key, value
        node = helper.make_node("Identity", ["w"], ["y"])
        graph = helper.make_graph([node], f"g{i}", [], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
                                  initializer=[tensor])  # fmt: skip
        model = helper.make_model(graph)
        corpus.path("malicious", "onnx_external_escape", ".onnx").write_bytes(model.SerializeToString())


def _gguf_malicious(corpus: Corpus) -> None:
    try:
        import gguf
        import numpy as np
    except ImportError:
        return
    templates = ("{{ ''.__class__.__mro__[1].__subclasses__() }}",
                 "{{ cycler.__init__.__globals__.os.popen('id').read() }}")  # fmt: skip
    for template in templates:
        path = corpus.path("malicious", "gguf_template", ".gguf")
        writer = gguf.GGUFWriter(str(path), "llama")
        writer.add_chat_template(template)
        writer.add_tensor("x", np.zeros(4, dtype=np.float32))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()


def build_benign(corpus: Corpus) -> None:
    for i, value in enumerate(([1, 2, 3], {"a": 1.5, "b": "text"}, (None, True, b"bytes"), {"nested": {"x": [1]}},
                               list(range(50)))):  # fmt: skip
        corpus.path("benign", "plain_pickle", ".pkl").write_bytes(pickle.dumps(value, protocol=i % 6))
    _torch_benign(corpus)
    _numpy_benign(corpus)
    _hdf5_benign(corpus)
    _onnx_benign(corpus)
    _safetensors_benign(corpus)
    _gguf_benign(corpus)
    _joblib_benign(corpus)


def _torch_benign(corpus: Corpus) -> None:
    try:
        import torch
    except ImportError:
        return
    torch.manual_seed(0)
    models = [torch.nn.Linear(8, 4), torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU()),
              torch.nn.LayerNorm(16), torch.nn.Embedding(10, 4)]  # fmt: skip
    for model in models:
        torch.save(model.state_dict(), corpus.path("benign", "torch_zip", ".pt"))
        torch.save(model.state_dict(), corpus.path("benign", "torch_bin", ".bin"))
        torch.save(
            model.state_dict(), corpus.path("benign", "torch_legacy", ".pt"), _use_new_zipfile_serialization=False
        )
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        torch.save({"state_dict": model.state_dict(), "optimizer_states": [optimizer.state_dict()], "epoch": 1,
                    "global_step": 10, "pytorch-lightning_version": "2.1.0"},
                   corpus.path("benign", "lightning", ".ckpt"))  # fmt: skip
    for protocol, model in zip((2, 4, 5), models, strict=False):  # pickle.dump of a state dict, no torch.save
        corpus.path("benign", "torch_plain_pickle", ".pkl").write_bytes(pickle.dumps(model.state_dict(), protocol))
    for model in models[:3]:
        torch.jit.save(torch.jit.script(model), str(corpus.path("benign", "torchscript", ".pt")))


def _numpy_benign(corpus: Corpus) -> None:
    try:
        import numpy as np
    except ImportError:
        return
    rng = np.random.default_rng(0)
    for dtype in ("float32", "float16", "int64", "uint8", "float64", "bool"):
        np.save(corpus.path("benign", "npy", ".npy"), rng.random((4, 5)).astype(dtype))
    for i in range(4):
        np.savez(corpus.path("benign", "npz", ".npz"), a=rng.random(3 + i), b=np.arange(i + 1))


def _hdf5_benign(corpus: Corpus) -> None:
    try:
        import h5py
        import numpy as np
    except ImportError:
        return
    for i in range(4):
        with h5py.File(corpus.path("benign", "hdf5", ".h5"), "w") as f:
            f["layer/kernel"] = np.ones((3, 4 + i), dtype="float32")
            f.attrs["note"] = "benign"


def _onnx_benign(corpus: Corpus) -> None:
    try:
        import numpy as np
        import onnx
        from onnx import TensorProto, helper, numpy_helper
    except ImportError:
        return
    for i in range(4):
        weight = numpy_helper.from_array(np.ones((4, 4 + i), dtype=np.float32), "w")
        node = helper.make_node("MatMul", ["x", "w"], ["y"])
        graph = helper.make_graph([node], f"g{i}", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4 + i])],
                                  initializer=[weight])  # fmt: skip
        onnx.save(helper.make_model(graph), str(corpus.path("benign", "onnx", ".onnx")))


def _safetensors_benign(corpus: Corpus) -> None:
    try:
        import numpy as np
        from safetensors.numpy import save_file
    except ImportError:
        return
    for i in range(6):
        save_file({"w": np.ones((2, 3 + i), dtype=np.float32), "b": np.zeros(3, dtype=np.int64)},
                  str(corpus.path("benign", "safetensors", ".safetensors")))  # fmt: skip


def _gguf_benign(corpus: Corpus) -> None:
    try:
        import gguf
        import numpy as np
    except ImportError:
        return
    for i in range(3):
        path = corpus.path("benign", "gguf", ".gguf")
        writer = gguf.GGUFWriter(str(path), "llama")
        writer.add_chat_template("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}")
        writer.add_tensor("x", np.zeros(4 + i, dtype=np.float32))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()


def _joblib_benign(corpus: Corpus) -> None:
    try:
        import joblib
        import numpy as np
    except ImportError:
        return
    for i in range(5):
        joblib.dump({"coef": np.arange(6 + i, dtype=np.float64), "bias": np.zeros(2)},
                    corpus.path("benign", "joblib", ".joblib"))  # fmt: skip


# -- running the tools -------------------------------------------------------------------------

# forks the measured command, keeps its stdout, and reports the tree's wall time and peak RSS
_LAUNCHER = """
import os, sys, time
out, argv = sys.argv[1], sys.argv[2:]
start = time.perf_counter()
pid = os.fork()
if pid == 0:
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.execvp(argv[0], argv)
_, status, usage = os.wait4(pid, 0)
print(time.perf_counter() - start, usage.ru_maxrss, os.waitstatus_to_exitcode(status))
"""


@dataclass
class ToolRun:
    tool: str
    wall_s: float
    peak_rss_mb: float
    flagged: set[str]  # corpus ids flagged at high or above
    errors: set[str]  # corpus ids the tool reported an error for
    output: str


def run_tool(tool: str, argv: list[str], workdir: Path, env: dict[str, str]) -> tuple[float, float, str]:
    log = workdir / f"{tool}.log"
    proc = subprocess.run(
        [sys.executable, "-S", "-c", _LAUNCHER, str(log), *argv], capture_output=True, text=True, env=env
    )
    wall, rss_kib, _code = proc.stdout.split()
    return float(wall), int(rss_kib) / 1024, log.read_text(errors="replace")


def ids_in(text: str) -> set[str]:
    return {m.group(1) for m in NAME.finditer(text)}


def run_ckptscan(corpus: Path, workdir: Path, env: dict[str, str]) -> ToolRun:
    out = workdir / "ckptscan.json"
    argv = [sys.executable, "-m", "ckptscan", "audit", str(corpus), "--json", "--workers", "2"]
    wall, rss, _ = run_tool("ckptscan", [*argv[:-2], "--workers", "2"], workdir, env)
    text = subprocess.run(argv, capture_output=True, text=True, env=env).stdout  # the report itself, unmeasured
    out.write_text(text)
    doc = json.loads(text)
    flagged, errors = set(), set()
    for model in doc["results"]:
        ident = ids_in(Path(model["path"]).name)
        if any(f["severity"] in ("high", "critical") for f in model.get("findings") or ()):
            flagged |= ident
        if model.get("error"):
            errors |= ident
    return ToolRun("ckptscan", wall, rss, flagged, errors, text)


def run_picklescan(bindir: Path, corpus: Path, workdir: Path, env: dict[str, str]) -> ToolRun:
    wall, rss, text = run_tool("picklescan", [str(bindir / "picklescan"), "-p", str(corpus)], workdir, env)
    flagged, errors = set(), set()
    for line in text.splitlines():
        if "dangerous import" in line and "FOUND" in line:
            flagged |= ids_in(line)
        elif line.startswith("ERROR"):
            errors |= ids_in(line)
    return ToolRun("picklescan", wall, rss, flagged, errors, text)


def run_modelscan(bindir: Path, corpus: Path, workdir: Path, env: dict[str, str]) -> ToolRun:
    report = workdir / "modelscan.json"
    argv = [str(bindir / "modelscan"), "-p", str(corpus), "-r", "json", "-o", str(report)]
    wall, rss, text = run_tool("modelscan", argv, workdir, env)
    doc = json.loads(report.read_text()) if report.exists() else {"issues": [], "errors": []}
    flagged = {i for issue in doc.get("issues", []) if issue.get("severity") in ("HIGH", "CRITICAL")
               for i in ids_in(json.dumps(issue.get("source", "")))}  # fmt: skip
    errors = {i for e in doc.get("errors", []) for i in ids_in(json.dumps(e.get("source", "")))}
    return ToolRun("modelscan", wall, rss, flagged, errors, text)


def run_modelaudit(bindir: Path, corpus: Path, workdir: Path, env: dict[str, str]) -> ToolRun:
    report = workdir / "modelaudit.json"
    argv = [str(bindir / "modelaudit"), "scan", str(corpus), "--format", "json", "-o", str(report)]
    wall, rss, text = run_tool("modelaudit", argv, workdir, env)
    doc = json.loads(report.read_text()) if report.exists() else {"issues": []}
    flagged, errors = set(), set()
    for issue in doc.get("issues", []):
        ident = ids_in(str(issue.get("location", "")))
        if issue.get("severity") == "critical":
            flagged |= ident
        if "error" in str(issue.get("type", "")).lower() or str(issue.get("message", "")).lower().startswith("error"):
            errors |= ident
    return ToolRun("modelaudit", wall, rss, flagged, errors, text)


def bomb(workdir: Path, env: dict[str, str]) -> str:
    """A 1 MB zip whose data.pkl inflates to 128 MiB (one BINBYTES8 of zeros): ckptscan's time and peak RSS."""
    size = 128 << 20
    path = workdir / "bomb.pt"
    with (
        zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive,
        archive.open("archive/data.pkl", "w", force_zip64=True) as out,
    ):
        out.write(b"\x80\x04}\x94\x8c\x04blob\x94\x8e" + struct.pack("<Q", size))
        chunk = bytes(1 << 20)
        for _ in range(size >> 20):
            out.write(chunk)
        out.write(b"s.")
    best = (float("inf"), 0.0)
    for _ in range(3):
        wall, rss, _ = run_tool("bomb", [sys.executable, "-m", "ckptscan", str(path), "--json"], workdir, env)
        best = min(best, (wall, rss))
    return (
        f"deflate bomb: {path.stat().st_size / 1e6:.2f} MB zip, data.pkl inflates to {size >> 20} MiB: "
        f"ckptscan --json {best[0]:.2f} s, peak RSS {best[1]:.0f} MiB (whole process)"
    )


def table(runs: list[ToolRun], labels: dict[str, tuple[str, str]]) -> str:
    malicious = {i for i, (kind, _) in labels.items() if kind == "malicious"}
    benign = set(labels) - malicious
    lines = [
        f"| tool | malicious flagged (of {len(malicious)}) | benign flagged high+ (of {len(benign)}) | errors "
        "| time (s) | peak RSS (MiB) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        lines.append(
            f"| {r.tool} | {len(r.flagged & malicious)} | {len(r.flagged & benign)} | {len(r.errors)} "
            f"| {r.wall_s:.2f} | {r.peak_rss_mb:.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, help="build the corpus here (default: a temp folder)")
    parser.add_argument("--keep", action="store_true", help="keep the corpus and the tools' outputs")
    parser.add_argument("--peers-python", type=Path, default=Path(sys.executable),
                        help="the Python whose environment has picklescan, modelscan, modelaudit")  # fmt: skip
    args = parser.parse_args(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="ckptscan-sec-"))
    corpus_dir = workdir / "corpus"
    shutil.rmtree(corpus_dir, ignore_errors=True)
    corpus_dir.mkdir(parents=True)
    marker = workdir / "PWNED"
    corpus = Corpus(corpus_dir)
    build_malicious(corpus, marker)
    build_benign(corpus)
    env = {**os.environ, "PYTHONPATH": str(REPO), "PROMPTFOO_DISABLE_TELEMETRY": "1", "NO_ANALYTICS": "1"}
    bindir = args.peers_python.parent
    runs = [run_ckptscan(corpus_dir, workdir, env)]
    for name, runner in (("picklescan", run_picklescan), ("modelscan", run_modelscan), ("modelaudit", run_modelaudit)):
        if (bindir / name).exists():
            runs.append(runner(bindir, corpus_dir, workdir, env))
        else:
            print(f"{name}: not installed beside {args.peers_python}; skipped", file=sys.stderr)
    malicious = sum(1 for kind, _ in corpus.labels.values() if kind == "malicious")
    print(f"corpus: {malicious} malicious, {len(corpus.labels) - malicious} benign files in {corpus_dir}")
    print(table(runs, corpus.labels))
    print(bomb(workdir, env))
    ours = runs[0].flagged
    missed = sorted(i for i in {i for r in runs[1:] for i in r.flagged} - ours if corpus.labels[i][0] == "malicious")
    if missed:
        shown = ", ".join(f"{i} ({corpus.labels[i][1]})" for i in missed)
        print("malicious files a peer flags and ckptscan does not:", shown)
    false_alarms = sorted(i for i in ours if corpus.labels[i][0] == "benign")
    if false_alarms:
        print("benign files ckptscan flags high+:", ", ".join(f"{i} ({corpus.labels[i][1]})" for i in false_alarms))
    not_flagged = sorted(i for i, (kind, _) in corpus.labels.items() if kind == "malicious" and i not in ours)
    if not_flagged:
        print("malicious files ckptscan does not flag:", ", ".join(f"{i} ({corpus.labels[i][1]})" for i in not_flagged))
    if marker.exists():
        print("A PAYLOAD RAN (marker file exists)")
        return 2
    if not args.keep and args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
