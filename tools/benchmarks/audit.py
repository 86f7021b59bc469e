"""ckptscan audit over 2,000 small checkpoints vs. a loop over the official libraries.

The tree: 40 run folders of 50 small checkpoints each, the formats mixed in equal shares among
those ckptscan reads and whose official library is installed: safetensors (a tiny Llama layout,
21 F16 tensors) and GGUF (the same tensors plus llama metadata and a 512-token tokenizer, like the
llama2.c "stories" models), and, when their readers are registered, PyTorch ``.pt`` state dicts and
ONNX graphs.

The reference is one Python process walking the same tree and taking the same inventory with
each format's library: ``safetensors.safe_open`` + ``get_slice`` (shape, dtype) and ``metadata()``;
``gguf.GGUFReader`` (tensor names, shapes, types, sizes; it parses the metadata too);
``torch.load(weights_only=True, mmap=True)``; ``onnx.load(load_external_data=False)``.
ckptscan runs as ``python -m ckptscan audit TREE --json`` (full per-model results and totals).

CPU use is (user + sys) / wall of the whole process tree (workers are waited for, so their time
is in the child's rusage): above 1.0 means more than one core was busy.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from bench import REPO, Context, Row, ckptscan, measure_full, python

N_FOLDERS = 40
PER_FOLDER = 50
VOCAB = 512
HIDDEN = 32
FFN = 86


def run(ctx: Context) -> list[Row]:
    tree = ctx.workdir / "tree"
    formats = available_formats()
    marker = tree / f".complete-{'-'.join(formats)}"
    if not marker.exists():
        # in a child process: importing torch here would inflate every later child's peak RSS
        # (Linux keeps ru_maxrss across fork + exec)
        code = f"from benchmarks.audit import generate; generate({str(tree)!r}, {formats!r})"
        subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO / "tools")
        marker.write_text("ok")
    n_files = N_FOLDERS * PER_FOLDER
    case = f"{n_files:,} small checkpoints ({', '.join(formats)})"
    rows = []

    reference = measure_tree(python(reference_loop(tree, formats)), ctx)
    ours = measure_tree(ckptscan("audit", str(tree), "--json"), ctx)
    rows.append(_row(case, "library loop (1 process)", reference))
    rows.append(_row(case, "ckptscan audit --json", ours, reference))

    # the weakest case for ckptscan: safetensors alone, whose Rust library reads a header in ~50 us
    only = f"{n_files // len(formats):,} of them: safetensors only"
    reference = measure_tree(python(reference_loop(tree, ("safetensors",))), ctx)
    ours = measure_tree(ckptscan("audit", str(tree), "--json", "--include", "*.safetensors"), ctx)
    rows.append(_row(only, "library loop (1 process)", reference))
    rows.append(_row(only, "ckptscan audit --json", ours, reference))
    return rows


def _row(
    case: str, tool: str, measured: tuple[float, float, float], reference: tuple[float, float, float] | None = None
) -> Row:
    wall, rss, cpu = measured
    note = f"CPU {cpu / wall:.2f} cores (user+sys {cpu:.2f} s)"
    if reference is not None:
        note += f"; {reference[0] / wall:.1f}x faster than the library loop"
    return Row(case, tool, wall, rss, note)


def measure_tree(argv: list[str], ctx: Context) -> tuple[float, float, float]:
    """Best-of-N wall seconds, peak RSS (MiB) and CPU seconds of a process and the workers it waited for."""
    m = measure_full(argv, ctx)
    return m.wall_s, m.peak_rss_mb, m.cpu_s


# -- the tree ------------------------------------------------------------------------------------


def available_formats() -> tuple[str, ...]:
    """safetensors and GGUF always; PyTorch and ONNX when ckptscan has readers for them."""
    sys.path.insert(0, str(REPO))
    from ckptscan import registry

    names = {spec.name for spec in registry.FORMATS}
    formats = ["safetensors", "gguf"]
    if names & {"pytorch", "torch"}:
        formats.append("pytorch")
    if "onnx" in names:
        formats.append("onnx")
    return tuple(formats)


def generate(tree: str | Path, formats: tuple[str, ...]) -> None:
    import numpy as np

    tree = Path(tree)
    rng = np.random.default_rng(0)
    tensors = tiny_llama(rng)
    makers: dict[str, Callable[[Path, int], Path]] = {
        "safetensors": lambda folder, i: write_safetensors(folder / f"model-{i:04}.safetensors", tensors, i),
        "gguf": lambda folder, i: write_gguf(folder / f"model-{i:04}.gguf", tensors),
        "pytorch": lambda folder, i: write_torch(folder / f"model-{i:04}.pt", tensors),
        "onnx": lambda folder, i: write_onnx(folder / f"model-{i:04}.onnx", tensors),
    }
    for run_index in range(N_FOLDERS):
        folder = tree / f"run-{run_index:02}"
        folder.mkdir(parents=True, exist_ok=True)
        for j in range(PER_FOLDER):
            i = run_index * PER_FOLDER + j
            makers[formats[i % len(formats)]](folder, i)


def tiny_llama(rng: object) -> dict[str, object]:
    import numpy as np

    assert isinstance(rng, np.random.Generator)

    def w(*shape: int) -> np.ndarray:  # type: ignore[type-arg]
        return rng.standard_normal(shape).astype(np.float16)

    t: dict[str, object] = {"model.embed_tokens.weight": w(VOCAB, HIDDEN)}
    for layer in range(2):
        p = f"model.layers.{layer}."
        for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
            t[p + f"self_attn.{name}.weight"] = w(HIDDEN, HIDDEN)
        t[p + "mlp.gate_proj.weight"] = w(FFN, HIDDEN)
        t[p + "mlp.up_proj.weight"] = w(FFN, HIDDEN)
        t[p + "mlp.down_proj.weight"] = w(HIDDEN, FFN)
        t[p + "input_layernorm.weight"] = np.ones(HIDDEN, np.float16)
        t[p + "post_attention_layernorm.weight"] = np.ones(HIDDEN, np.float16)
    t["model.norm.weight"] = np.ones(HIDDEN, np.float16)
    t["lm_head.weight"] = w(VOCAB, HIDDEN)
    return t


def write_safetensors(path: Path, tensors: dict[str, object], i: int) -> Path:
    from safetensors.numpy import save_file

    save_file(tensors, str(path), metadata={"format": "pt", "step": str(i)})  # type: ignore[arg-type]
    return path


def write_gguf(path: Path, tensors: dict[str, object]) -> Path:
    import gguf

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny")
    writer.add_context_length(256)
    writer.add_embedding_length(HIDDEN)
    writer.add_block_count(2)
    writer.add_feed_forward_length(FFN)
    writer.add_head_count(4)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_tokenizer_model("llama")
    writer.add_token_list([f"tok{i}" for i in range(VOCAB)])
    writer.add_token_scores([float(-i) for i in range(VOCAB)])
    writer.add_token_types([1] * VOCAB)
    for name, value in tensors.items():
        writer.add_tensor(name, value)  # type: ignore[arg-type]
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def write_torch(path: Path, tensors: dict[str, object]) -> Path:
    import torch

    torch.save({name: torch.from_numpy(value) for name, value in tensors.items()}, path)  # type: ignore[call-overload]
    return path


def write_onnx(path: Path, tensors: dict[str, object]) -> Path:
    import onnx
    from onnx import helper, numpy_helper

    initializers = [numpy_helper.from_array(value, name) for name, value in tensors.items()]  # type: ignore[arg-type]
    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT16, [1, HIDDEN])
    y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT16, [1, VOCAB])
    node = helper.make_node("MatMul", ["x", "lm_head.weight"], ["y"])
    graph = helper.make_graph([node], "tiny", [x], [y], initializer=initializers)
    onnx.save(helper.make_model(graph), str(path))
    return path


def reference_loop(tree: Path, formats: tuple[str, ...]) -> str:
    """One process, the official library per format, the same inventory: names, shapes, dtypes."""
    branches = {
        "safetensors": """
    if name.endswith(".safetensors"):
        from safetensors import safe_open
        with safe_open(path, "numpy") as f:
            meta = f.metadata()
            for key in f.keys():
                sl = f.get_slice(key)
                seen.append((key, sl.get_shape(), sl.get_dtype()))""",
        "gguf": """
    if name.endswith(".gguf"):
        from gguf import GGUFReader
        reader = GGUFReader(path)
        for t in reader.tensors:
            seen.append((t.name, t.shape.tolist(), t.tensor_type, t.n_bytes))""",
        "pytorch": """
    if name.endswith(".pt"):
        import torch
        state = torch.load(path, weights_only=True, mmap=True)
        for key, value in state.items():
            seen.append((key, tuple(value.shape), value.dtype, value.nbytes))""",
        "onnx": """
    if name.endswith(".onnx"):
        import onnx
        model = onnx.load(path, load_external_data=False)
        for t in model.graph.initializer:
            seen.append((t.name, list(t.dims), t.data_type))""",
    }
    body = "".join(branches[f] for f in formats)
    return f"""
import os
seen = []
for folder, _, names in sorted(os.walk({str(tree)!r})):
  for name in sorted(names):
    path = os.path.join(folder, name){body}
print(len(seen))
"""


if __name__ == "__main__":
    raise SystemExit("run through tools/bench.py: python tools/bench.py audit")
