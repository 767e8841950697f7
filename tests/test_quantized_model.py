"""A model its maker quantized (onnxruntime.quantization.quantize_dynamic): modelparity finds
its quantizing ops, and no FP32 runtime of it is called a downcast."""

from __future__ import annotations

import itertools

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import modelparity

pytest.importorskip("openvino")
quantization = pytest.importorskip("onnxruntime.quantization")


def _mlp(path) -> None:
    rng = np.random.default_rng(0)
    dims = [16, 64, 64, 10]
    nodes, inits, x = [], [], "x"
    for i, (a, b) in enumerate(itertools.pairwise(dims)):
        inits.append(numpy_helper.from_array(
            (rng.normal(size=(a, b)) / np.sqrt(a)).astype(np.float32), f"W{i}"))
        nodes.append(helper.make_node("MatMul", [x, f"W{i}"], [f"h{i}"]))
        x = f"h{i}"
        if i < len(dims) - 2:
            nodes.append(helper.make_node("Relu", [x], [f"r{i}"]))
            x = f"r{i}"
    nodes.append(helper.make_node("Softmax", [x], ["p"], axis=1))
    graph = helper.make_graph(
        nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16])],
        [helper.make_tensor_value_info("p", TensorProto.FLOAT, ["batch", 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


def test_a_self_quantized_model_is_recognised_and_its_fp32_runs_are_not_downcasts(tmp_path):
    _mlp(tmp_path / "fp32.onnx")
    quantization.quantize_dynamic(str(tmp_path / "fp32.onnx"), str(tmp_path / "int8.onnx"),
                                  weight_type=quantization.QuantType.QInt8)
    pinned = "openvino:cpu?INFERENCE_PRECISION_HINT=f32"
    result = modelparity.audit(str(tmp_path / "int8.onnx"), [pinned], None, task="multiclass",
                               samples=1000, warmup=0)
    assert result.model["quantized"] == ["DynamicQuantizeLinear", "MatMulInteger"]
    candidate = result.candidates[0]
    assert candidate.precision == "float32"
    assert candidate.fingerprint.verdict in ("fp32", "inconclusive"), \
        candidate.fingerprint.evidence
    # the FP32 model itself is not quantized
    plain = modelparity.audit(str(tmp_path / "fp32.onnx"), ["emulate:bf16"], None,
                              task="multiclass", samples=200, warmup=0)
    assert "quantized" not in plain.model and plain.candidates[0].fingerprint.verdict == "bf16"
