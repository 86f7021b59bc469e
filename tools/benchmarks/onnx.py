"""ONNX: inline-weights models over 1 GB, inventoried by ckptscan vs loaded by the onnx package.

Each model is a chain of MatMul nodes whose float32 initializers are all in ``raw_data`` inside the
one ``.onnx`` file (the protobuf limit is 2 GiB, so this is about as large as an inline model
gets): 18 weights of 4096 x 4096, and 4096 weights of 256 x 256 (many tensor headers spread
through the file). ckptscan walks the protobuf in place and skips every ``raw_data``;
``onnx.load(..., load_external_data=False)`` parses the whole message, weights included.
Both run as whole processes, on a warm page cache (the file was just written).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from bench import Context, Row, ckptscan, measure, python, speedup

# (file name, number of initializers, shape of each): few large weights, and many medium ones
MODELS = (
    ("inline-1.2GB.onnx", 18, (4096, 4096)),
    ("inline-many-1.1GB.onnx", 4096, (256, 256)),
)


def run(ctx: Context) -> list[Row]:
    rows = []
    for name, count, shape in MODELS:
        path = ctx.workdir / name
        if not path.is_file():
            # in a child process: the measured children are forked from this one, and Linux counts the
            # parent's resident memory at fork time into their peak RSS
            tools = str(Path(__file__).resolve().parent.parent)
            env = {**os.environ, "PYTHONPATH": tools}
            argv = [sys.executable, "-m", "benchmarks.onnx", str(path), str(count), *map(str, shape)]
            subprocess.run(argv, check=True, env=env)
        size_gb = path.stat().st_size / 1e9
        case = f"inline-weights ONNX, {count} x {shape[0]}x{shape[1]} F32 ({size_gb:.2f} GB)"
        ours_wall, ours_rss = measure(ckptscan("--json", str(path)), ctx)
        ref_wall, ref_rss = measure(
            [*python("import onnx, sys; onnx.load(sys.argv[1], load_external_data=False)"), str(path)], ctx
        )
        reference = Row(case, "onnx.load(load_external_data=False)", ref_wall, ref_rss)
        ours = Row(case, "ckptscan --json", ours_wall, ours_rss)
        rows += [reference, Row(case, ours.tool, ours.wall_s, ours.peak_rss_mb, speedup(reference, ours))]
    return rows


def _generate(path: Path, count: int, shape: tuple[int, int]) -> None:
    """Build the model with the onnx helper, one weight at a time, and serialize it once."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    initializers = []
    for i in range(count):
        weight = rng.standard_normal(shape, dtype=np.float32)
        initializers.append(numpy_helper.from_array(weight, f"layers.{i}.weight"))
        del weight
    nodes = [
        helper.make_node("MatMul", ["x" if i == 0 else f"h{i - 1}", f"layers.{i}.weight"], [f"h{i}"], name=f"mm{i}")
        for i in range(count)
    ]
    graph = helper.make_graph(
        nodes,
        "chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", shape[0]])],
        [helper.make_tensor_value_info(f"h{count - 1}", TensorProto.FLOAT, ["batch", shape[1]])],
        initializer=initializers,
    )
    model = helper.make_model(graph, producer_name="ckptscan-bench")
    print(f"writing {path} ...", file=sys.stderr, flush=True)
    onnx.save_model(model, str(path))


if __name__ == "__main__":
    _generate(Path(sys.argv[1]), int(sys.argv[2]), (int(sys.argv[3]), int(sys.argv[4])))
