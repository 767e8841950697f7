"""The runtime's own testimony beside the measured precision: OpenVINO's runtime-model layer
precisions and ONNX Runtime's node placement, each said to agree with the fingerprint or not.

The pure part is checked on descriptions written the way the backends write them; one real
audit on ONNX Runtime and OpenVINO checks the placement ORT records and the report lines.
This machine's CPU may lack BF16, so nothing here assumes OpenVINO computed in BF16."""

from __future__ import annotations

import glob
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from rich.console import Console

import modelparity
from modelparity.analyse.testimony import (
    agreement,
    disagrees,
    runtime_model_precision,
    runtime_says,
    told_line,
)
from modelparity.backends.onnxruntime import node_placement
from modelparity.numerics.fingerprint import Fingerprint
from modelparity.report.html import render_html
from modelparity.report.markdown import render_markdown
from modelparity.report.terminal import render
from modelparity.result import AuditResult

ORT = "ort:cpu?intra_op_num_threads=1"
OPENVINO = "openvino:cpu?INFERENCE_PRECISION_HINT=f32"


def measured(verdict: str) -> Fingerprint:
    return Fingerprint.from_dict({"verdict": verdict, "confidence": 0.9, "distances": {},
                                  "evidence": f"nearest: {verdict}"})


# ------------------------------------------------------------------------------- the pure part

def test_openvino_bf16_layers_against_an_fp32_measurement_disagree():
    told = runtime_says({"runtime": "openvino",
                      "runtime_precisions": {"Convolution bf16": 12, "FullyConnected f32": 1}})
    assert told is not None
    assert told.source == "OpenVINO runtime model"
    assert told.precision == "bf16"
    assert told.text == "runtime model: Convolution bf16 x12, FullyConnected f32 x1"
    said = agreement(told, measured("fp32"))
    assert said == "disagrees: the runtime says bf16, the outputs show fp32"
    assert disagrees(told, measured("fp32"))
    assert agreement(told, measured("bf16")) == "agrees"


def test_all_f32_layers_and_an_fp32_measurement_agree():
    told = runtime_says({"runtime_precisions": {"FullyConnected f32": 2, "Eltwise f32": 3}})
    assert told is not None and told.precision == "fp32"
    assert agreement(told, measured("fp32")) == "agrees"
    assert not disagrees(told, measured("fp32"))
    assert told_line(told, measured("fp32")) == (
        "runtime's own testimony: runtime model: Eltwise f32 x3, FullyConnected f32 x2 — agrees")


def test_an_inconclusive_measurement_is_said_so():
    told = runtime_says({"runtime_precisions": {"MatMul f16": 4}})
    assert told is not None and told.precision == "fp16"
    assert agreement(told, measured("inconclusive")) == (
        "measurement inconclusive; the runtime says fp16")
    assert not disagrees(told, measured("inconclusive"))
    assert "no known precision" in agreement(told, measured("unknown"))
    assert agreement(told, None) == "not measured; the runtime says fp16"


def test_the_lowest_compute_precision_rules_and_booleans_are_no_int8():
    assert runtime_model_precision({"Convolution u8": 3, "Eltwise bf16": 2}) == "int8"
    assert runtime_model_precision({"FullyConnected f32": 2, "Eltwise f16": 1,
                                    "Eltwise bf16": 1}) == "bf16"
    # the CPU plugin holds booleans (an attention mask) as u8: that is no quantisation
    assert runtime_model_precision({"FullyConnected f32": 2, "Select u8": 1}) == "fp32"
    assert runtime_model_precision({"Gather i32": 2, "ShapeOf i64": 1}) is None


def test_onnx_runtime_placement():
    cpu = runtime_says({"runtime": "onnxruntime", "node_placement": {"CPUExecutionProvider": 14}})
    assert cpu is not None
    assert cpu.source == "ONNX Runtime node placement"
    assert cpu.precision == "fp32" and cpu.text == "nodes: CPUExecutionProvider 14"
    assert agreement(cpu, measured("fp16")) == (
        "disagrees: the runtime says fp32, the outputs show fp16")
    split = runtime_says({"node_placement": {"CPUExecutionProvider": 14,
                                          "CUDAExecutionProvider": 30}})
    assert split is not None and split.precision is None
    assert split.text == "nodes: CUDAExecutionProvider 30, CPUExecutionProvider 14"
    assert agreement(split, measured("tf32")) == "the runtime states no precision"
    assert not disagrees(split, measured("tf32"))


def test_no_testimony_where_the_runtime_gave_none():
    assert runtime_says({}) is None
    assert runtime_says({"runtime_precisions": {}, "node_placement": {"x": "not a count"}}) is None
    # a predicted backend's stand-in testifies only for itself
    assert runtime_says({"predicted": {"stand_in": OPENVINO},
                      "stand_in_description": {"runtime_precisions": {"MatMul f16": 1}}}) is None


def test_node_placement_from_a_real_profile(tmp_path):
    """The parser on the trace ONNX Runtime itself writes: one count per node it ran."""
    path = small_onnx(tmp_path / "small.onnx")
    so = ort.SessionOptions()
    so.enable_profiling = True
    so.profile_file_prefix = str(tmp_path / "profile")
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    for _ in range(3):  # runs repeat the nodes; they count once
        session.run(None, {"x": np.ones((4, 6), np.float32)})
    with open(session.end_profiling(), encoding="utf-8") as handle:
        events = json.load(handle)
    assert node_placement(events) == {"CPUExecutionProvider": len(onnx.load(path).graph.node)}


# ----------------------------------------------------------------------------- one real audit

def small_onnx(path: Path) -> str:
    """x [N, 6] -> standardise -> linear -> ReLU -> linear -> Sigmoid: output [N, 1]."""
    rng = np.random.default_rng(3)
    inits = [
        numpy_helper.from_array(rng.normal(size=6).astype(np.float32), "mean"),
        numpy_helper.from_array((rng.uniform(0.5, 2.0, size=6)).astype(np.float32), "scale"),
        numpy_helper.from_array(rng.normal(size=(6, 8)).astype(np.float32), "W1"),
        numpy_helper.from_array(rng.normal(size=8).astype(np.float32), "b1"),
        numpy_helper.from_array(rng.normal(size=(8, 1)).astype(np.float32), "W2"),
    ]
    nodes = [
        helper.make_node("Sub", ["x", "mean"], ["centred"], name="centre"),
        helper.make_node("Div", ["centred", "scale"], ["scaled"], name="scale_it"),
        helper.make_node("MatMul", ["scaled", "W1"], ["h_raw"], name="linear1"),
        helper.make_node("Add", ["h_raw", "b1"], ["h_biased"], name="bias1"),
        helper.make_node("Relu", ["h_biased"], ["h"], name="relu"),
        helper.make_node("MatMul", ["h", "W2"], ["logit"], name="linear2"),
        helper.make_node("Sigmoid", ["logit"], ["output"], name="head"),
    ]
    graph = helper.make_graph(
        nodes, "small", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 6])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [None, 1])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return str(path)


def nodes_ort_runs(path: str) -> int:
    """How many nodes ONNX Runtime's CPU provider runs for the model at its default
    optimisation (fusions included), counted from its own profile of one run."""
    with tempfile.TemporaryDirectory() as folder:
        so = ort.SessionOptions()
        so.enable_profiling = True
        so.profile_file_prefix = os.path.join(folder, "count")
        so.intra_op_num_threads = 1
        session = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        session.run(None, {"x": np.ones((2, 6), np.float32)})
        with open(session.end_profiling(), encoding="utf-8") as handle:
            events = json.load(handle)
    return sum(1 for e in events if e.get("cat") == "Node"
               and e.get("name", "").endswith("_kernel_time"))


def profile_folders() -> set[str]:
    return set(glob.glob(os.path.join(tempfile.gettempdir(), "modelparity-ort-profile-*")))


@pytest.fixture(scope="module")
def audited(tmp_path_factory):
    folder = tmp_path_factory.mktemp("testimony")
    path = small_onnx(folder / "small.onnx")
    before = profile_folders()
    modelparity.audit(path, [ORT, OPENVINO], None, task="binary", samples=64,
                      out=str(folder / "out"))
    leftover = profile_folders() - before
    result = AuditResult.load(str(folder / "out" / "report.json"))  # reports render JSON
    return result, path, leftover


def test_ort_records_where_its_nodes_ran(audited):
    result, path, leftover = audited
    ran = nodes_ort_runs(path)
    assert ran > 0
    for spec in (ORT, result.reference.spec):
        assert result.backend(spec).description["node_placement"] == {
            "CPUExecutionProvider": ran}
    assert not leftover, "the profile's folder must go once the placement is read"


def test_the_reports_set_the_testimony_beside_the_measurement(audited):
    result, _, _ = audited
    ort_side = result.backend(ORT)
    assert ort_side.fingerprint is not None and ort_side.fingerprint.verdict == "fp32"
    markdown = render_markdown(result)
    ort_line = next(line for line in markdown.splitlines() if ORT in line
                    and "runtime's own testimony" in line)
    assert "nodes: CPUExecutionProvider" in ort_line and ort_line.endswith("— agrees")
    openvino = result.backend(OPENVINO)
    told = runtime_says(openvino.description)
    assert told is not None and told.source == "OpenVINO runtime model"
    line = told_line(told, openvino.fingerprint)
    assert line in markdown
    page = render_html(result)
    assert "runtime&#x27;s own testimony: nodes: CPUExecutionProvider" in page


def test_layer_names_from_the_model_are_escaped(audited):
    """Layer types come from the model file: no markup of theirs may reach a report."""
    result, _, _ = audited
    data = result.to_dict()
    for side in data["candidates"]:
        if side["spec"] == OPENVINO:
            side["description"]["runtime_precisions"] = {"<b>[red]Evil</b> bf16": 2}
    forged = AuditResult.from_dict(data)
    page = render_html(forged)
    assert "<b>[red]Evil</b>" not in page and "&lt;b&gt;[red]Evil&lt;/b&gt; bf16 x2" in page
    assert "&lt;b&gt;" in render_markdown(forged)
    console = Console(record=True, width=400, color_system=None)
    render(forged, console)
    text = console.export_text()
    if forged.backend(OPENVINO).fingerprint.verdict != "bf16":  # the testimony disputes it
        assert "runtime's own testimony: runtime model: <b>[red]Evil</b> bf16 x2" in text
