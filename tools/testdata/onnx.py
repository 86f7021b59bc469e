"""ONNX fixtures, written by the onnx package (and torch.onnx when it works), deterministically.

- ``dtypes.onnx``: inline initializers of most ONNX data types, both as ``raw_data`` and in the typed
  fields (``float_data``, ``int32_data`` for FLOAT16/BOOL/INT4..., ``int64_data``, ``double_data``,
  ``uint64_data``, ``string_data``), a sparse initializer, and Constant nodes of every value form.
- ``graph.onnx``: a tiny transformer-ish graph: a tied embedding consumed by ``Gather`` and
  ``MatMul``, ``LayerNormalization``, ``Gemm``, ``Conv`` with bias, and ``If`` / ``Loop`` nodes
  whose subgraphs hold a Constant and an initializer (a nested ``If`` inside the ``Loop`` body).
- ``external_one_file/model.onnx`` + ``model.onnx.data``: ``graph.onnx`` with every tensor
  (Constant values too) in one external file.
- ``external_per_tensor/model.onnx`` + one file per tensor.
- ``torch_export/model.onnx``: ``torch.onnx.export`` (TorchScript exporter) of a tiny
  transformer block; skipped with a message when torch cannot export.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

OPSET = 17
PRODUCER = "ckptscan-testdata"


def generate(out: Path) -> list[Path]:
    import onnx

    written = [_save(_dtypes_model(), out / "dtypes.onnx")]
    graph_model = _graph_model()
    written.append(_save(graph_model, out / "graph.onnx"))
    for folder, one_file in (("external_one_file", True), ("external_per_tensor", False)):
        target = out / folder
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        model = onnx.ModelProto()
        model.CopyFrom(graph_model)
        onnx.save_model(
            model,
            str(target / "model.onnx"),
            save_as_external_data=True,
            all_tensors_to_one_file=one_file,
            location="model.onnx.data" if one_file else None,
            size_threshold=0,
            convert_attribute=True,
        )
        written.extend(sorted(p for p in target.iterdir()))
    exported = _torch_export(out / "torch_export")
    written.extend(exported)
    return written


def _save(model: Any, path: Path) -> Path:
    import onnx

    onnx.checker.check_model(model, full_check=True)
    path.write_bytes(model.SerializeToString(deterministic=True))
    return path


def _model(graph: Any, opsets: dict[str, int] | None = None) -> Any:
    from onnx import helper

    imports = [helper.make_opsetid(domain, version) for domain, version in (opsets or {"": OPSET}).items()]
    model = helper.make_model(graph, opset_imports=imports, producer_name=PRODUCER, producer_version="1.0")
    model.ir_version = 8
    model.doc_string = "ckptscan test fixture"
    helper.set_model_props(model, {"purpose": "tests", "license": "Apache-2.0"})
    return model


def _dtypes_model() -> Any:
    import ml_dtypes
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(4)
    fp4 = ml_dtypes.float4_e2m1fn
    raw = [
        numpy_helper.from_array(rng.standard_normal((3, 4)).astype(np.float32), "raw_f32"),
        numpy_helper.from_array(rng.standard_normal((2, 3)).astype(np.float16), "raw_f16"),
        numpy_helper.from_array(rng.standard_normal((5,)).astype(ml_dtypes.bfloat16), "raw_bf16"),
        numpy_helper.from_array(rng.standard_normal((2, 2)), "raw_f64"),
        numpy_helper.from_array(np.arange(6, dtype=np.int64).reshape(2, 3), "raw_i64"),
        numpy_helper.from_array(np.arange(4, dtype=np.int32), "raw_i32"),
        numpy_helper.from_array(np.arange(-3, 4, dtype=np.int8), "raw_i8"),
        numpy_helper.from_array(np.arange(9, dtype=np.uint8).reshape(3, 3), "raw_u8"),
        numpy_helper.from_array(np.array([True, False, True]), "raw_bool"),
        numpy_helper.from_array(np.arange(5, dtype=np.uint16), "raw_u16"),
        numpy_helper.from_array(np.arange(3, dtype=np.uint64), "raw_u64"),
        numpy_helper.from_array((rng.standard_normal(3) + 1j * rng.standard_normal(3)).astype(np.complex64), "raw_c64"),
        numpy_helper.from_array(rng.standard_normal(4).astype(ml_dtypes.float8_e4m3fn), "raw_f8e4m3"),
        numpy_helper.from_array(rng.standard_normal(4).astype(ml_dtypes.float8_e5m2), "raw_f8e5m2"),
        helper.make_tensor("raw_i4_odd", TensorProto.INT4, [5], np.array([1, -2, 3, -4, 5], ml_dtypes.int4), raw=True),
        helper.make_tensor("raw_u4", TensorProto.UINT4, [2, 3], np.arange(6, dtype=ml_dtypes.uint4), raw=True),
        helper.make_tensor("raw_f4", TensorProto.FLOAT4E2M1, [3], np.array([0.5, 1, -2], fp4), True),
        helper.make_tensor("raw_empty", TensorProto.FLOAT, [0, 4], b"", raw=True),
        helper.make_tensor("raw_scalar", TensorProto.FLOAT, [], np.array(2.5, dtype=np.float32), raw=True),
    ]  # fmt: skip
    typed = [
        helper.make_tensor("typed_f32", TensorProto.FLOAT, [2, 3], [0.5, 1.5, -2.0, 3.0, 4.25, -5.5]),
        helper.make_tensor("typed_f16", TensorProto.FLOAT16, [4], np.array([1, 2, 3, 4], dtype=np.float16)),
        helper.make_tensor("typed_bf16", TensorProto.BFLOAT16, [2], np.array([1, -1], dtype=ml_dtypes.bfloat16)),
        helper.make_tensor("typed_i64", TensorProto.INT64, [3], [-1, 0, 1 << 40]),
        helper.make_tensor("typed_i32", TensorProto.INT32, [2, 2], [-7, 7, 300, -300000]),
        helper.make_tensor("typed_i8", TensorProto.INT8, [3], [-128, 0, 127]),
        helper.make_tensor("typed_bool", TensorProto.BOOL, [4], [True, False, False, True]),
        helper.make_tensor("typed_f64", TensorProto.DOUBLE, [2], [1.0, -2.0]),
        helper.make_tensor("typed_u64", TensorProto.UINT64, [2], [1, (1 << 63) + 5]),
        helper.make_tensor("typed_u32", TensorProto.UINT32, [3], [1, 2, 4000000000]),
        helper.make_tensor("typed_c128", TensorProto.COMPLEX128, [2], [1 + 2j, 3 - 4j]),
        helper.make_tensor("typed_i4_odd", TensorProto.INT4, [3], np.array([1, -1, 7], dtype=ml_dtypes.int4)),
        helper.make_tensor("typed_u2", TensorProto.UINT2, [5], np.array([0, 1, 2, 3, 1], dtype=ml_dtypes.uint2)),
        helper.make_tensor("typed_f8e4m3", TensorProto.FLOAT8E4M3FN, [2], np.array([1, 2], dtype=np.float32)),
        helper.make_tensor("typed_string", TensorProto.STRING, [3], [b"alpha", b"", "\u00e9t\u00e9".encode()]),
    ]
    sparse = helper.make_sparse_tensor(
        numpy_helper.from_array(np.array([1.5, -2.5, 3.5], dtype=np.float32), "sparse_w"),
        numpy_helper.from_array(np.array([1, 5, 10], dtype=np.int64), "sparse_w_indices"),
        [3, 4],
    )
    constants = [
        helper.make_node(
            "Constant", [], ["const_tensor"], value=numpy_helper.from_array(np.ones((2, 2), np.float32), "c")
        ),
        helper.make_node(
            "Constant", [], ["const_typed"], value=helper.make_tensor("ct", TensorProto.INT64, [2], [3, 4])
        ),
        helper.make_node("Constant", [], ["const_float"], value_float=0.25),
        helper.make_node("Constant", [], ["const_floats"], value_floats=[1.0, 2.0, 3.0]),
        helper.make_node("Constant", [], ["const_int"], value_int=7),
        helper.make_node("Constant", [], ["const_ints"], value_ints=[1, -2, 300]),
        helper.make_node("Constant", [], ["const_string"], value_string="hello"),
        helper.make_node(
            "Constant",
            [],
            ["const_sparse"],
            sparse_value=helper.make_sparse_tensor(
                numpy_helper.from_array(np.array([9.0], dtype=np.float32), "cs"),
                numpy_helper.from_array(np.array([2], dtype=np.int64), "cs_idx"),
                [4],
            ),
        ),
    ]
    nodes = [
        *constants,
        helper.make_node("Add", ["x", "raw_f32"], ["y0"], name="add_raw"),
        helper.make_node("Mul", ["y0", "typed_f32_3x4"], ["y"], name="mul_typed"),
    ]
    graph = helper.make_graph(
        nodes,
        "dtypes",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 4])],
        initializer=[
            *raw,
            *typed,
            helper.make_tensor("typed_f32_3x4", TensorProto.FLOAT, [3, 4], [float(i) for i in range(12)]),
        ],
        sparse_initializer=[sparse],
    )
    return _model(graph)


def _graph_model() -> Any:
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(7)

    def weight(name: str, *shape: int) -> Any:
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.1).astype(np.float32), name)

    vocab, width, hidden = 16, 8, 12
    seq_shape: list[str | int] = ["batch", "seq", width]
    initializers = [
        weight("embed.weight", vocab, width),  # tied: Gather data and MatMul B of the output projection
        weight("proj.weight", width, vocab),
        weight("norm.scale", width),
        weight("norm.bias", width),
        weight("fc.weight", hidden, width),
        weight("fc.bias", hidden),
        weight("conv.weight", 4, 1, 3),
        weight("conv.bias", 4),
        numpy_helper.from_array(np.array([-1, width], dtype=np.int64), "flat_shape"),
        numpy_helper.from_array(np.array(3, dtype=np.int64), "loop_count"),
    ]
    then_branch = helper.make_graph(
        [
            helper.make_node(
                "Constant", [], ["then_c"], value=numpy_helper.from_array(np.full(width, 2, np.float32), "then_c")
            ),
            helper.make_node("Mul", ["normed", "then_c"], ["then_m"], name="then_mul"),
            helper.make_node("Add", ["then_m", "then_bias"], ["then_out"], name="then_add"),
        ],
        "then_branch",
        [],
        [helper.make_tensor_value_info("then_out", TensorProto.FLOAT, seq_shape)],
        initializer=[weight("then_bias", width)],
    )
    else_branch = helper.make_graph(
        [helper.make_node("Identity", ["normed"], ["else_out"], name="else_identity")],
        "else_branch",
        [],
        [helper.make_tensor_value_info("else_out", TensorProto.FLOAT, seq_shape)],
    )
    inner_if = helper.make_graph(
        [
            helper.make_node(
                "Constant", [], ["inner_c"], value=numpy_helper.from_array(np.array([0.5], np.float32), "inner_c")
            )
        ],
        "inner_then",
        [],
        [helper.make_tensor_value_info("inner_c", TensorProto.FLOAT, [1])],
    )
    inner_else = helper.make_graph(
        [helper.make_node("Identity", ["loop_step"], ["inner_e"], name="inner_identity")],
        "inner_else",
        [],
        [helper.make_tensor_value_info("inner_e", TensorProto.FLOAT, [1])],
    )
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"], name="body_cond"),
            helper.make_node(
                "If", ["cond_in"], ["inner"], then_branch=inner_if, else_branch=inner_else, name="body_if"
            ),
            helper.make_node("Gather", ["embed.weight", "ids"], ["looked_up"], name="body_embed"),
            helper.make_node("Add", ["carried", "inner"], ["sum"], name="body_add"),
            helper.make_node("Add", ["sum", "looked_up"], ["carried_out"], name="body_add_embed"),
        ],
        "loop_body",
        [
            helper.make_tensor_value_info("iteration", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("carried", TensorProto.FLOAT, seq_shape),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("carried_out", TensorProto.FLOAT, seq_shape),
        ],
        initializer=[weight("loop_step", 1)],
    )
    nodes = [
        helper.make_node("Gather", ["embed.weight", "ids"], ["embedded"], name="embed"),
        helper.make_node(
            "LayerNormalization", ["embedded", "norm.scale", "norm.bias"], ["normed"], axis=-1, name="norm"
        ),
        helper.make_node("If", ["flag"], ["branched"], then_branch=then_branch, else_branch=else_branch, name="branch"),
        helper.make_node("MatMul", ["branched", "proj.weight"], ["logits_a"], name="proj"),
        helper.make_node("MatMul", ["logits_a", "embed.weight"], ["tied"], name="tied_out"),
        helper.make_node("Reshape", ["tied", "flat_shape"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "fc.weight", "fc.bias"], ["fc_out"], transB=1, name="fc"),
        helper.make_node("Conv", ["signal", "conv.weight", "conv.bias"], ["conv_out"], pads=[1, 1], name="conv"),
        helper.make_node("Loop", ["loop_count", "flag", "embedded"], ["looped"], body=body, name="loop"),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny-transformer",
        [
            helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "seq"]),
            helper.make_tensor_value_info("flag", TensorProto.BOOL, []),
            helper.make_tensor_value_info("signal", TensorProto.FLOAT, ["batch", 1, 32]),
        ],
        [
            helper.make_tensor_value_info("fc_out", TensorProto.FLOAT, [None, hidden]),
            helper.make_tensor_value_info("conv_out", TensorProto.FLOAT, ["batch", 4, 32]),
            helper.make_tensor_value_info("looped", TensorProto.FLOAT, seq_shape),
        ],
        initializer=initializers,
    )
    return _model(graph)


def _torch_export(out: Path) -> list[Path]:
    try:
        import torch
    except ImportError:
        print("torch is not installed: skipping torch_export/model.onnx")
        return []

    class Block(torch.nn.Module):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.embed = torch.nn.Embedding(32, 16)
            self.norm = torch.nn.LayerNorm(16)
            self.attn = torch.nn.MultiheadAttention(16, 2, batch_first=True)
            self.mlp = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.GELU(), torch.nn.Linear(32, 16))
            self.head = torch.nn.Linear(16, 32, bias=False)
            self.head.weight = self.embed.weight  # tied, as in most language models

        def forward(self, ids: Any) -> Any:
            h = self.embed(ids)
            n = self.norm(h)
            a, _ = self.attn(n, n, n, need_weights=False)
            h = h + a
            h = h + self.mlp(self.norm(h))
            return self.head(h)

    torch.manual_seed(0)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    path = out / "model.onnx"
    try:
        torch.onnx.export(
            Block().eval(),
            (torch.zeros(1, 5, dtype=torch.long),),
            str(path),
            dynamo=False,
            input_names=["ids"],
            output_names=["logits"],
            dynamic_axes={"ids": {0: "batch", 1: "seq"}},
            opset_version=OPSET,
        )
    except Exception as e:  # the exporter's dependencies vary between torch versions
        print(f"torch.onnx.export failed ({type(e).__name__}: {e}): skipping torch_export/model.onnx")
        shutil.rmtree(out, ignore_errors=True)
        return []
    return [path]
