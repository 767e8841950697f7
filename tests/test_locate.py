"""`modelparity locate` (issue 13, part 1): planted faults on models built here, each at a known
node, run through the real pipeline (ONNX Runtime workers, the emulations, the `py:` plugin that
plants the fault), and the node must be named first."""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import jsonschema
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

import modelparity
from modelparity.cli import app
from modelparity.locate import LocateResult, Node
from modelparity.locate.analyse import TensorError, judge
from modelparity.result import AuditResult

HERE = os.path.dirname(__file__)
PLANTED = "py:planted_backends:make"
SCHEMA = Path(__file__).parents[1] / "src" / "modelparity" / "report" / "schema.json"


def _save(nodes, inputs, outputs, inits, path):
    graph = helper.make_graph(nodes, "located", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return str(path)


def _mlp(path, *, shift: float = 0.0, depth: int = 5) -> str:
    """x[N, 8] -> depth x (Gemm 24 + Relu) -> MatMul 3 (+ shift) -> Softmax."""
    rng = np.random.default_rng(0)
    nodes, inits, prev, width = [], [], "x", 8
    for i in range(depth):
        inits += [numpy_helper.from_array(
            (rng.normal(size=(width, 24)) / np.sqrt(width)).astype(np.float32), f"W{i}"),
            numpy_helper.from_array((rng.normal(size=24) * 0.1).astype(np.float32), f"b{i}")]
        nodes += [helper.make_node("Gemm", [prev, f"W{i}", f"b{i}"], [f"h{i}"], name=f"fc{i}"),
                  helper.make_node("Relu", [f"h{i}"], [f"r{i}"], name=f"relu{i}")]
        prev, width = f"r{i}", 24
    inits.append(numpy_helper.from_array(
        (rng.normal(size=(24, 3)) / 5).astype(np.float32), "Wout"))
    nodes.append(helper.make_node("MatMul", [prev, "Wout"], ["logits"], name="head"))
    if shift:  # large logits with small differences: a Softmax that FP16 cannot carry
        inits.append(numpy_helper.from_array(np.array(shift, np.float32), "shift"))
        nodes.append(helper.make_node("Add", ["logits", "shift"], ["shifted"], name="shift"))
    nodes.append(helper.make_node("Softmax", [nodes[-1].output[0]], ["prob"], name="softmax",
                                  axis=1))
    return _save(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
                 [helper.make_tensor_value_info("prob", TensorProto.FLOAT, ["N", 3])],
                 inits, path)


def _cnn(path) -> str:
    """x[N, 1, 12, 12] -> Conv 4 -> Relu -> Conv 4 -> Relu -> GlobalAveragePool -> Flatten ->
    Gemm 3 -> Softmax."""
    rng = np.random.default_rng(1)
    inits = [numpy_helper.from_array((rng.normal(size=(4, 1, 3, 3)) / 3).astype(np.float32),
                                     "K1"),
             numpy_helper.from_array((rng.normal(size=(4, 4, 3, 3)) / 6).astype(np.float32),
                                     "K2"),
             numpy_helper.from_array(rng.normal(size=(4, 3)).astype(np.float32), "W"),
             numpy_helper.from_array(np.zeros(3, np.float32), "b")]
    nodes = [helper.make_node("Conv", ["x", "K1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["a1"], name="act1"),
             helper.make_node("Conv", ["a1", "K2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c2"], ["a2"], name="act2"),
             helper.make_node("GlobalAveragePool", ["a2"], ["pooled"], name="pool"),
             helper.make_node("Flatten", ["pooled"], ["flat"], name="flatten"),
             helper.make_node("Gemm", ["flat", "W", "b"], ["logits"], name="fc"),
             helper.make_node("Softmax", ["logits"], ["prob"], name="softmax", axis=1)]
    return _save(nodes,
                 [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 12, 12])],
                 [helper.make_tensor_value_info("prob", TensorProto.FLOAT, ["N", 3])],
                 inits, path)


@pytest.fixture(scope="module")
def located_models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("located")
    return {"mlp": _mlp(folder / "mlp.onnx"), "cnn": _cnn(folder / "cnn.onnx"),
            "shifted": _mlp(folder / "shifted.onnx", shift=1000.0, depth=2)}


@pytest.fixture
def planted_here(monkeypatch):
    monkeypatch.chdir(HERE)  # the `py:` plugin imports planted_backends from here


@pytest.mark.parametrize(("model", "fault", "named"), [
    ("mlp", "round_at=h0", "fc0"),  # the first layer
    ("mlp", "round_at=h2", "fc2"),  # the middle
    ("mlp", "round_at=r4", "relu4"),  # the last hidden activation
    ("mlp", "perturb=W3", "fc3"),  # one weight
    ("cnn", "round_at=c2", "conv2"),
    ("cnn", "perturb=W", "fc"),
])
def test_a_planted_fault_is_named_first(located_models, planted_here, model, fault, named):
    """An FP32 backend with one node's output rounded to FP16, or one weight off by 2^-10:
    that node is the first divergent one, and leads the amplifiers."""
    result = modelparity.localize(located_models[model], f"{PLANTED}?{fault}",
                                  task="multiclass", precision="fp32", samples=32)
    assert result.first == named, [(n.node, n.gain) for n in result.nodes]
    assert result.amplifiers[0] == named
    before = [n for n in result.nodes if n.index < result.node(named).index]
    assert all(n.error <= 2 * max(n.floor, 2.0**-24) for n in before)
    assert not result.exposure_changed


def test_a_softmax_over_large_logits_is_named_under_fp16(located_models):
    """Logits near 1000 that differ by a few units: FP16 stores them to 0.5, and the Softmax
    turns that into an error ~40x FP16's rounding. The fingerprint measures FP16, and the
    Softmax is named; every other node stays within FP16 rounding of what it inherits."""
    result = modelparity.localize(located_models["shifted"], "emulate:fp16",
                                  task="multiclass", samples=48)
    assert result.precision == "fp16" and result.precision_from.startswith("fingerprint: fp16")
    assert result.first == "softmax"
    softmax = result.node("softmax")
    assert softmax.error > 16 * 2.0**-11
    assert all(n.gain < 2 for n in result.nodes if n.node != "softmax")
    assert softmax.explained == softmax.error  # the candidate is the emulation itself


def test_fp16_everywhere_is_rounding_not_a_divergence(located_models):
    """Under FP16 every node leaves the FP32 floor; judged against FP16's rounding none
    amplifies it. Judged against FP32, the first layer would be blamed: the precision the
    errors are judged against is what makes the answer useful."""
    as_fp16 = modelparity.localize(located_models["mlp"], "emulate:fp16", task="multiclass",
                                   precision="fp16", samples=32)
    assert as_fp16.first is None
    assert all(n.error > 2.0**-16 for n in as_fp16.nodes)  # all far above FP32 noise
    as_fp32 = modelparity.localize(located_models["mlp"], "emulate:fp16", task="multiclass",
                                   precision="fp32", samples=32)
    assert as_fp32.first == "fc0"


def test_tensors_that_cannot_be_compared_are_listed(tmp_path):
    """A tensor computed from weights only has no row per sample, and one reshaped with -1
    has a first axis nobody can infer: listed with the reason; the rest is still compared."""
    rng = np.random.default_rng(2)
    inits = [numpy_helper.from_array(rng.normal(size=(6, 4)).astype(np.float32), "W"),
             numpy_helper.from_array(np.array([-1, 2], np.int64), "to")]
    nodes = [helper.make_node("Transpose", ["W"], ["Wt"], name="transpose", perm=[1, 0]),
             helper.make_node("MatMul", ["x", "W"], ["y"], name="matmul"),
             helper.make_node("Reshape", ["y", "to"], ["folded"], name="fold"),
             helper.make_node("Sigmoid", ["folded"], ["s"], name="sigmoid"),
             helper.make_node("ReduceSum", ["s"], ["total"], name="sum", keepdims=0),
             helper.make_node("MatMul", ["Wt", "W"], ["gram"], name="gram")]
    path = _save(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 6])],
                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
                 inits, tmp_path / "odd.onnx")
    result = modelparity.localize(path, "emulate:bf16", task="regression", precision="bf16",
                                  samples=16)
    why = dict(result.unmatched)
    assert set(why) >= {"Wt", "folded", "s", "gram"}
    assert why["Wt"].startswith("its first axis has a fixed size")
    assert why["folded"].startswith("its first axis is not the samples'")
    assert [n.node for n in result.nodes] == ["matmul"]


def test_a_node_whose_error_dies_out_is_not_the_divergence():
    """Pure: a jump in a branch whose error never reaches an output (it is multiplied by
    zero, clipped away) is not named; one that reaches it is."""
    nodes = [Node("a", "MatMul", 0, 1, ("x", "W"), ("ta",), ("ta",)),
             Node("b", "Exp", 1, 2, ("ta",), ("tb",), ("tb",)),
             Node("c", "Mul", 2, 3, ("tb", "zero"), ("tc",), ("tc",)),
             Node("d", "Add", 3, 4, ("ta", "tc"), ("out",), ("out",))]
    quiet = {"ta": TensorError(1e-7), "tb": TensorError(1e-3), "tc": TensorError(0.0),
             "out": TensorError(1e-7)}
    floor = {name: TensorError(1e-7) for name in quiet}
    assert judge(nodes, ["out"], quiet, "fp32", floor=floor).first is None
    loud = {**quiet, "tc": TensorError(1e-3), "out": TensorError(1e-3)}
    found = judge(nodes, ["out"], loud, "fp32", floor=floor)
    assert found.first == "b"
    assert math.isclose(found.nodes[1].gain, 1e-3 / 1e-7)


def test_locate_json_loads_back(located_models, planted_here, tmp_path):
    out = tmp_path / "out"
    result = modelparity.localize(located_models["cnn"], f"{PLANTED}?round_at=c1",
                                  task="multiclass", precision="fp32", samples=8,
                                  out=str(out))
    loaded = LocateResult.load(str(out / "locate.json"))
    assert loaded == result
    assert loaded.first == "conv1"
    # the audit of the model as shipped, with the judgement in it: report.json, schema-valid,
    # loads back, and `modelparity report` draws the chart and the table from it
    report = json.loads((out / "report.json").read_text())
    jsonschema.validate(report, json.loads(SCHEMA.read_text()))
    assert [n["node"] for n in report["locate"]["nodes"]] == [n.node for n in result.nodes]
    audited = AuditResult.load(str(out / "report.json"))
    assert audited.locate == result
    assert audited.candidates[0].spec == result.candidate
    html = tmp_path / "report.html"
    outcome = CliRunner().invoke(app, ["report", str(out / "report.json"), "--html",
                                       str(html)], terminal_width=200)
    assert outcome.exit_code == 0, outcome.output
    assert "first divergent node: conv1 (Conv, depth" in outcome.stdout
    page = html.read_text()
    assert 'data-chart="error-growth"' in page
    assert re.search(r'r="5" fill="#d62728" data-node="conv1"', page)
    assert AuditResult.from_dict({**report, "locate": None}).locate is None


def test_locate_on_the_command_line(located_models, planted_here, tmp_path):
    outcome = CliRunner().invoke(app, ["locate", located_models["mlp"], "-b",
                                       f"{PLANTED}?round_at=h2", "--precision", "fp32",
                                       "--task", "multiclass", "--samples", "16",
                                       "--out", str(tmp_path / "o")], terminal_width=200)
    assert outcome.exit_code == 0, outcome.output
    assert "first divergent node: fc2 (Gemm, depth 5)" in outcome.stdout
    assert "the nodes that amplify error most" in outcome.stdout
    assert (tmp_path / "o" / "locate.json").exists()


@pytest.mark.parametrize(("args", "needle"), [
    (["-b", "torch:cpu"], "-b torch:cpu: locate compares the ONNX file's tensors"),
    (["-b", "emulate:fp16", "--precision", "fp8"], "--precision fp8: expected one of"),
    (["-b", "emulate:fp16", "--samples", "0"], "--samples 0: expected at least 1"),
])
def test_locate_refuses_bad_options_in_one_line(located_models, args, needle):
    outcome = CliRunner().invoke(app, ["locate", located_models["mlp"], *args])
    assert outcome.exit_code == 2, outcome.output
    message = outcome.stderr.strip()
    assert len(message.splitlines()) == 1 and needle in message, message


def test_hostile_node_names_are_shown_not_obeyed(tmp_path):
    """Node and tensor names come from the model file: escapes are shown, not obeyed."""
    hostile = "\x1b[31mfc\x1b]0;pwned\x07"
    rng = np.random.default_rng(3)
    inits = [numpy_helper.from_array(rng.normal(size=(4, 2)).astype(np.float32), "W"),
             numpy_helper.from_array(np.array(500.0, np.float32), "shift")]
    nodes = [helper.make_node("MatMul", ["x", "W"], ["[bold]h"], name=hostile),
             helper.make_node("Add", ["[bold]h", "shift"], ["z"], name="add"),
             helper.make_node("Softmax", ["z"], ["p"], name="softmax", axis=1)]
    path = _save(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                 [helper.make_tensor_value_info("p", TensorProto.FLOAT, ["N", 2])],
                 inits, tmp_path / "hostile.onnx")
    outcome = CliRunner().invoke(app, ["locate", path, "-b", "emulate:fp16", "--precision",
                                       "fp16", "--task", "multiclass", "--samples", "16",
                                       "--all"], terminal_width=200)
    assert outcome.exit_code == 0, outcome.output
    assert "\x1b" not in outcome.output and "\x07" not in outcome.output
    assert "\\x1b[31mfc\\x1b]0;pwned\\x07" in outcome.stdout


def test_isolated_mode_separates_own_error_from_inherited(located_models, planted_here):
    """--isolate: the suspects run alone on the candidate, fed the reference's values of what
    they read. The planted node keeps its error alone; the nodes after it, which only inherit
    it, have none of their own."""
    result = modelparity.localize(located_models["mlp"], f"{PLANTED}?round_at=h2",
                                  task="multiclass", precision="fp32", samples=16,
                                  isolate=True)
    planted = result.node("fc2")
    assert planted.isolated == pytest.approx(planted.error, rel=1e-6) and planted.error > 1e-5
    downstream = [n for n in result.nodes
                  if n.node in result.amplifiers and n.node != "fc2"]
    assert downstream
    assert all(n.error > 1e-5 and n.isolated == 0.0 for n in downstream)
    assert result.not_isolated == ()


def test_keep_fp32_removes_the_flips_with_a_handful_of_nodes(located_models, tmp_path):
    """The Softmax-over-large-logits model flips in FP16; keep-fp32 finds the node whose
    FP16 storage does the damage (the shift producing the large logits), verifies the
    emulated mixed model meets flips==0, and writes an FP16 ONNX file with it in FP32."""
    from modelparity.locate.keep import KeepResult, keep_fp32

    out = tmp_path / "keep"
    result = keep_fp32(located_models["shifted"], "fp16", task="multiclass", samples=600,
                       out=str(out))
    assert result.met and result.before.flips > 0 and result.after.flips == 0
    kept = [name for _, name, _ in result.kept]
    assert "shift" in kept and len(kept) <= 2 < result.nodes_total
    assert result.evaluations <= 10
    assert os.path.exists(result.written)
    assert result.checks[0].endswith("(read back from the file)")
    assert "write FP16:" not in result.checks[0]
    assert result.settings["onnx"]["node_block_list"] == kept
    assert KeepResult.load(str(out / "keep.json")) == result
    # the file keeps FP32 inputs and outputs, and the kept shift's constant in FP32
    written = onnx.load(result.written)
    assert [o.type.tensor_type.elem_type for o in written.graph.output] == [TensorProto.FLOAT]
    constants = {t.name: t.data_type for t in written.graph.initializer}
    assert constants["shift"] == TensorProto.FLOAT and constants["W0"] == TensorProto.FLOAT16
    assert result.verified["mixed"].flips == 0
    # OpenVINO's setting, checked statically: its reader names the ops as keep.json does
    import importlib.util

    if importlib.util.find_spec("openvino") is not None:
        assert any(line.startswith("OpenVINO: every kept node is an op") for line in
                   result.checks), result.checks
        assert len(result.settings["openvino"]["nodes"]) == len(kept)


def _writes(path: str) -> dict[str, int]:
    """Each node's output type in a written model, read back with shape inference."""
    model = onnx.shape_inference.infer_shapes(onnx.load(path))
    types = {v.name: v.type.tensor_type.elem_type
             for v in (*model.graph.value_info, *model.graph.output)}
    return {n.name: types.get(n.output[0], 0) for n in model.graph.node}


def test_keep_fp32_validates_on_your_function_and_ranks_only_when_needed(located_models,
                                                                           tmp_path):
    """With `validate`, each set tried is the mixed FP16 file, judged by the user's function
    (here: the Softmax must compute in FP32, as a device that has no accurate FP16 Softmax
    would demand). The search asks it once per evaluation, and needs locate only once the
    whole model in FP16 fails; a model that passes costs one evaluation and no locate."""
    from modelparity.locate.keep import keep_fp32

    given: list[dict[str, int]] = []

    def softmax_in_fp32(path: str) -> bool:
        given.append(_writes(path))
        return given[-1]["softmax"] == TensorProto.FLOAT

    out = tmp_path / "keep"
    result = keep_fp32(located_models["shifted"], "fp16", task="multiclass", samples=64,
                       out=str(out), validate=softmax_in_fp32)
    assert result.met and [name for _, name, _ in result.kept] == ["softmax"]
    assert result.evaluations == len(given) >= 2
    assert given[0]["fc0"] == TensorProto.FLOAT16  # the first try is the whole model in FP16
    assert all(types["fc0"] == TensorProto.FLOAT16 for types in given)
    assert (out / "locate" / "locate.json").exists()
    assert "judged by your validate function" in result.search

    calls: list[str] = []
    passes = keep_fp32(located_models["shifted"], "fp16", task="multiclass", samples=64,
                       out=str(tmp_path / "passes"),
                       validate=lambda path: calls.append(path) is None)
    assert passes.met and passes.kept == () and passes.evaluations == len(calls) == 1
    assert not (tmp_path / "passes" / "locate").exists()
    assert "locate not needed" in passes.search
    with pytest.raises(modelparity.ModelParityError, match="needs --precision fp16"):
        keep_fp32(located_models["shifted"], "bf16", task="multiclass", samples=8,
                  validate=lambda path: True)


def test_keep_fp32_says_when_no_set_meets_the_policy(located_models):
    """max_abs<0 never holds, even with every node in FP32: exit 1, and the search stops
    after trying them all (log2 of the nodes, not one try per subset)."""
    outcome = CliRunner().invoke(app, ["keep-fp32", located_models["shifted"], "--precision",
                                       "fp16", "--policy", "max_abs<0", "--task",
                                       "multiclass", "--samples", "64"], terminal_width=200)
    assert outcome.exit_code == 1, outcome.output
    assert "policy NOT met" in outcome.stdout and "the policy never held" in outcome.stdout


def test_the_search_finds_the_smallest_ranked_set_in_few_evaluations():
    from modelparity.locate.search import search

    needed = {7, 2}
    ranked = [5, 7, 1, 2, 9, 0, 3, 4, 6, 8, 10, 11, 12, 13, 14, 15]
    found = search(ranked, lambda kept: needed <= kept)
    assert set(found.kept) == needed
    assert found.evaluations <= 1 + 4 + 2 + 3  # empty, grow, bisect, prune
    never = search(ranked, lambda kept: False)
    assert never.kept is None and never.evaluations == 1 + 5  # empty, 1, 2, 4, 8, 16


def test_the_ranking_puts_an_amplifiers_producers_right_after_it():
    from modelparity.locate.analyse import NodeError
    from modelparity.locate.search import rank

    nodes = [Node("a", "MatMul", 0, 1, ("x", "W"), ("ta",), ("ta",)),
             Node("b", "Add", 1, 2, ("ta", "c"), ("tb",), ("tb",)),
             Node("c", "Softmax", 2, 3, ("tb",), ("out",), ("out",))]

    def judged(node, error, gain):
        return NodeError(node.name, node.op_type, node.index, node.depth, node.outputs[0],
                         error, 0.0, math.nan, 0.0, gain)

    order = rank(nodes, [judged(nodes[0], 1e-4, 0.5), judged(nodes[1], 1e-4, 0.9),
                         judged(nodes[2], 1e-2, 40.0)])
    assert order == [2, 1, 0]


@pytest.mark.parametrize(("spec", "needle"), [
    ("emulate:fp16?keep=a", "bad value 'a' for option 'keep'"),
    ("emulate:tf32?keep=1", "unknown option(s) keep for emulate:tf32"),
])
def test_keep_is_checked_like_every_option(located_models, spec, needle):
    outcome = CliRunner().invoke(app, ["run", located_models["mlp"], "-b", spec])
    assert outcome.exit_code == 2, outcome.output
    assert needle in outcome.stderr and len(outcome.stderr.strip().splitlines()) == 1


def test_html_chart_and_model_explorer_node_data(located_models, planted_here, tmp_path):
    """--html: the error along the graph as inline SVG, one point per compared node, the
    first divergent one marked; --model-explorer: Model Explorer's node data, keyed by output
    tensor, log10 of each error."""
    import json
    import xml.etree.ElementTree as ET

    page, painted = tmp_path / "locate.html", tmp_path / "errors.json"
    outcome = CliRunner().invoke(app, ["locate", located_models["mlp"], "-b",
                                       f"{PLANTED}?round_at=h2", "--precision", "fp32",
                                       "--task", "multiclass", "--samples", "16",
                                       "--html", str(page), "--model-explorer", str(painted)],
                                 terminal_width=200)
    assert outcome.exit_code == 0, outcome.output
    text = page.read_text()
    svg = ET.fromstring(text[text.index("<svg"):text.index("</svg>") + 6])
    circles = svg.findall(".//{http://www.w3.org/2000/svg}circle")
    assert len(circles) == 12  # 5 x (Gemm, Relu), the head and the Softmax
    marked = [c for c in circles if c.get("fill") == "#d62728"]
    assert [c.get("data-node") for c in marked] == ["fc2"]
    data = json.loads(painted.read_text())
    assert data["results"]["h2"]["value"] > data["results"]["h1"]["value"] + 3
    assert {g["stop"] for g in data["gradient"]} >= {0, 1}


def test_it_says_when_exposing_the_intermediates_changed_the_outputs(located_models,
                                                                     planted_here):
    """A runtime that computes otherwise once its intermediates are outputs (other fusions,
    openvino #25744), planted: the final output moves only in the exposed model. locate says
    so, with both errors."""
    result = modelparity.localize(located_models["mlp"],
                                  f"{PLANTED}?nudge=0.01&rows=1,2&when_exposed=1",
                                  task="multiclass", precision="fp32", samples=8)
    [final] = result.final
    assert final.plain == 0.0 and final.exposed > 0 and result.exposure_changed
    outcome = CliRunner().invoke(app, ["locate", located_models["mlp"], "-b",
                                       f"{PLANTED}?nudge=0.01&rows=1,2&when_exposed=1",
                                       "--precision", "fp32", "--task", "multiclass",
                                       "--samples", "8"], terminal_width=200)
    assert outcome.exit_code == 0, outcome.output
    assert "exposing the intermediate tensors changed the candidate's output 'prob'" \
        in outcome.stdout


def test_a_fault_inside_a_fused_region_names_the_region(located_models, planted_here):
    """A backend that fuses Gemm and Relu returns no Gemm output: the fault planted in the
    Gemm is found in the region (Gemm + Relu), judged on what the region reads, and run alone
    as one piece with --isolate."""
    result = modelparity.localize(located_models["mlp"],
                                  f"{PLANTED}?round_at=h2&drop=h2", task="multiclass",
                                  precision="fp32", samples=16, isolate=True)
    region = result.node(result.first)
    assert region.cluster == ("fc2", "relu2") and region.label == "fc2 + relu2"
    assert region.inherited < 1e-6 and region.gain > 100
    assert region.isolated > 1e-5
    assert dict(result.unmatched)["h2"].startswith("not returned by the backend")
    outcome = CliRunner().invoke(app, ["locate", located_models["mlp"], "-b",
                                       f"{PLANTED}?round_at=h2&drop=h2", "--precision",
                                       "fp32", "--task", "multiclass", "--samples", "8"],
                                 terminal_width=200)
    assert "first divergent region: fc2 + relu2 (Gemm+Relu, depth 6)" in outcome.stdout


def test_openvino_keeps_its_fusion_and_is_judged_by_its_fused_regions(located_models):
    """OpenVINO runs each Gemm and its Relu as one FullyConnected kernel and says so
    (`originalLayersNames`): locate exposes only each kernel's output, so the fusion stays, and
    judges the pair as one region. Exposing the Gemm outputs too would split the kernels."""
    pytest.importorskip("openvino")
    result = modelparity.localize(located_models["mlp"], "openvino:cpu?INFERENCE_PRECISION_HINT"
                                  "=f32", task="multiclass", precision="fp32", samples=16)
    regions = {n.node: n.cluster for n in result.nodes}
    assert regions["relu2"] == ("fc2", "relu2")
    assert "fc2" not in regions  # judged inside its region, not on its own
    why = dict(result.unmatched)
    assert why["h2"] == "inside a fused kernel (with relu2): judged with it"
    assert not result.exposure_changed
