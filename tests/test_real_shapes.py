"""Models shaped like the ones people ship: a recurrent state with its batch on axis 1 and a
fixed batch of 1, run with the state carried (own-state and teacher-forced); images of
different sizes, one per call, decided per pixel; a [B, T, C] output decided per step; a custom
decision that returns text; a huge per-element output whose report stays small.

Models are built with onnx's helpers and run on the real ONNX Runtime and OpenVINO; the planted
backend (tests/planted_backends.py) changes one known thing so each test knows the answer."""

from __future__ import annotations

import json
import os
import sys
import textwrap
from pathlib import Path

import jsonschema
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from rich.console import Console

import modelparity
from modelparity.analyse.precision import error_profile
from modelparity.errors import InputError
from modelparity.report.terminal import render

PLANTED = "py:planted_backends:make"
SCHEMA = json.loads((Path(__file__).parents[1] / "src" / "modelparity" / "report"
                     / "schema.json").read_text())
BINARY_OUTPUT = modelparity.TaskConfig("binary", output="output")


def _save(graph: onnx.GraphProto, path: Path) -> str:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return str(path)


def stateful_onnx(path: Path, features: int = 8, hidden: int = 16, directions: int = 1) -> str:
    """A voice-activity-like GRU: input [1, F], state [D, 1, H] (batch on axis 1, fixed at 1;
    D = 2 stacks a bidirectional GRU's two states) -> output [1, 1] (a probability) and
    stateN [D, 1, H]."""
    rng = np.random.default_rng(0)
    d = directions
    inits = [
        numpy_helper.from_array(np.array([0], np.int64), "axis0"),
        numpy_helper.from_array((rng.normal(size=(d, 3 * hidden, features)) * 0.5)
                                .astype(np.float32), "W"),
        numpy_helper.from_array((rng.normal(size=(d, 3 * hidden, hidden)) * 0.5)
                                .astype(np.float32), "R"),
        numpy_helper.from_array(np.zeros((d, 6 * hidden), np.float32), "B"),
        numpy_helper.from_array(np.array([1, d * hidden], np.int64), "flat"),
        numpy_helper.from_array((rng.normal(size=(d * hidden, 1))).astype(np.float32), "Wo"),
    ]
    nodes = [
        helper.make_node("Unsqueeze", ["input", "axis0"], ["seq"]),
        helper.make_node("GRU", ["seq", "W", "R", "B", "", "state"], ["Y", "stateN"],
                         hidden_size=hidden,
                         direction="bidirectional" if d == 2 else "forward"),
        helper.make_node("Reshape", ["stateN", "flat"], ["h"]),
        helper.make_node("MatMul", ["h", "Wo"], ["logit"]),
        helper.make_node("Sigmoid", ["logit"], ["output"]),
    ]
    graph = helper.make_graph(
        nodes, "vad",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, features]),
         helper.make_tensor_value_info("state", TensorProto.FLOAT, [d, 1, hidden])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 1]),
         helper.make_tensor_value_info("stateN", TensorProto.FLOAT, [d, 1, hidden])],
        inits)
    return _save(graph, path)


def map_onnx(path: Path) -> str:
    """A text-detector-like map: x [1, 3, H, W] -> prob [1, 1, H, W] (a sigmoid per pixel)."""
    rng = np.random.default_rng(1)
    inits = [numpy_helper.from_array(rng.normal(size=(1, 3, 3, 3)).astype(np.float32), "K")]
    nodes = [helper.make_node("Conv", ["x", "K"], ["z"], pads=[1, 1, 1, 1]),
             helper.make_node("Sigmoid", ["z"], ["prob"])]
    graph = helper.make_graph(
        nodes, "det",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, "H", "W"])],
        [helper.make_tensor_value_info("prob", TensorProto.FLOAT, [1, 1, "H", "W"])], inits)
    return _save(graph, path)


def sequence_onnx(path: Path, steps: int, features: int, classes: int) -> str:
    """An OCR-recognizer-like head: x [B, T, F] -> probs [B, T, C], a softmax per time step."""
    rng = np.random.default_rng(2)
    inits = [numpy_helper.from_array(rng.normal(size=(features, classes)).astype(np.float32),
                                     "W")]
    nodes = [helper.make_node("MatMul", ["x", "W"], ["z"]),
             helper.make_node("Softmax", ["z"], ["probs"], axis=-1)]
    graph = helper.make_graph(
        nodes, "rec",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", steps, features])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", steps, classes])],
        inits)
    return _save(graph, path)


def feed_module(directory: Path, name: str, body: str) -> str:
    """Write a `module:function` feed into `directory` (the working directory of the audit)."""
    (directory / f"{name}.py").write_text(textwrap.dedent(body))
    sys.modules.pop(name, None)
    return f"{name}:items"


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


# a recurrent state, carried -----------------------------------------------------------------
STATE_FEED = """
import numpy as np

def items():
    rng = np.random.default_rng(7)
    for step in range(18):
        item = {"input": rng.normal(size=(1, 8)).astype(np.float32)}
        if step % 6 == 0:  # a new sequence starts from a zero state
            item["state"] = np.zeros((1, 1, 16), np.float32)
        yield item
"""


def test_carried_state_on_axis_1_own_state_drifts_where_teacher_forced_does_not(workdir):
    model = stateful_onnx(workdir / "vad.onnx")
    feed = feed_module(workdir, "vad_feed", STATE_FEED)
    # The planted backend's state goes wrong once, at call 2; the sequence restarts at call 6.
    spec = f"{PLANTED}?nudge=3.0&name=stateN&rows=2"
    result = modelparity.audit(model, [spec], feed, task=BINARY_OUTPUT,
                               batch_axes={"state": 1}, carry={"stateN": "state"},
                               fingerprint=False, warmup=0)
    assert result.ok
    assert result.inputs["samples"] == 18
    assert result.inputs["carry"] == {"stateN": "state"}
    assert result.inputs["batch_axes"] == {"state": 1, "stateN": 1}
    own, forced = result.candidates[0], result.teacher_forced[0]
    assert forced.role == "teacher-forced" and forced.spec.endswith("[teacher-forced]")
    # Own state: the wrong state is carried into calls 3, 4, 5 and changes their outputs.
    assert own.errors["output"].max_abs > 1e-3
    # Teacher-forced: every call is fed the reference's state, so the outputs stay exact...
    assert forced.errors["output"].max_abs == 0.0
    # ...while the state it produced at call 2 was still off by the planted 3.0.
    assert forced.errors["stateN"].max_abs == pytest.approx(3.0, abs=1e-4)
    assert own.errors["stateN"].max_abs >= 3.0 - 1e-4
    console = Console(record=True, width=200)
    render(result, console)
    text = console.export_text()
    assert "flips only on its own state are drift" in text
    assert forced.flips.count == 0 and own.flips.count > 0  # the drift, seeded
    row = next(line for line in text.splitlines() if spec in line and "0 / 18" in line)
    assert f"{forced.max_abs:.2e}" in row and f"{own.max_abs:.2e}" in row
    report = json.loads(json.dumps(result.to_dict()))
    jsonschema.validate(report, SCHEMA)
    saved = modelparity.AuditResult.from_dict(report)
    assert [t.spec for t in saved.teacher_forced] == [forced.spec]
    from modelparity.report.html import render_html
    from modelparity.report.markdown import render_markdown
    for page in (render_html(saved), render_markdown(saved)):
        assert "teacher-forced" in page and "0 / 18" in page


def test_a_state_that_stacks_two_tensors_is_looked_at_slice_by_slice(workdir):
    """A bidirectional GRU's state [2, 1, H] stacks the two directions' states in front of
    the batch: each slice gets its own errors, and the fingerprint counts each element once."""
    model = stateful_onnx(workdir / "bi.onnx", directions=2)
    feed = feed_module(workdir, "bi_feed", STATE_FEED.replace("(1, 1, 16)", "(2, 1, 16)"))
    result = modelparity.audit(model, ["emulate:bf16"], feed, task=BINARY_OUTPUT,
                               batch_axes={"state": 1}, carry={"stateN": "state"}, warmup=0)
    assert result.ok
    errors = result.candidates[0].errors
    whole, first, second = errors["stateN"], errors["stateN[0]"], errors["stateN[1]"]
    assert first.count == second.count == whole.count // 2 == 18 * 16
    assert max(first.max_abs, second.max_abs) == whole.max_abs > 0
    assert first.max_abs != second.max_abs  # the two directions, told apart
    assert [o["name"] for o in result.model["outputs"]] == ["output", "stateN"]  # no slices
    profile = error_profile("bf16", result.candidates[0], tensors=frozenset(
        {"output", "stateN"}))
    assert profile is not None and profile.count == errors["output"].count + whole.count
    assert result.candidates[0].fingerprint.verdict == "bf16"


def test_carried_state_needs_the_first_item_to_start_a_sequence(workdir):
    model = stateful_onnx(workdir / "vad.onnx")
    feed = feed_module(workdir, "vad_nostart", """
        import numpy as np

        def items():
            for _ in range(3):
                yield {"input": np.zeros((1, 8), np.float32)}
        """)
    with pytest.raises(InputError, match="first item must give 'state'"):
        modelparity.audit(model, ["ort:cpu?intra_op_num_threads=1"], feed, task="binary",
                          batch_axes={"state": 1},
                          carry={"stateN": "state"}, fingerprint=False)


@pytest.mark.parametrize("axes, carry, message", [
    ({"state": 5}, None, "--batch-axis state=5: 'state' has rank 3"),
    ({"nope": 1}, None, "--batch-axis nope=1: 'nope' is not an input or output"),
    ({"state": 1}, {"stateX": "state"}, "--carry stateX=state: 'stateX' is not a model output"),
])
def test_a_layout_that_does_not_fit_is_one_line(workdir, axes, carry, message):
    model = stateful_onnx(workdir / "vad.onnx")
    with pytest.raises(InputError) as caught:
        modelparity.audit(model, ["ort:cpu?intra_op_num_threads=1"], None, task="binary",
                          batch_axes=axes, carry=carry, fingerprint=False)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_batch_fixed_at_1_runs_one_sample_per_call_without_being_told(workdir):
    model = stateful_onnx(workdir / "vad.onnx")
    result = modelparity.audit(model, ["ort:cpu?intra_op_num_threads=1"], None, task="binary",
                               batch_axes={"state": 1, "stateN": 1},
                               samples=20, fingerprint=False)
    assert result.ok
    assert result.inputs["batch_size"] == 1 and result.inputs["fixed_batch"] == 1
    assert result.candidates[0].latency.batches == 20


# images of different sizes, decided per pixel -----------------------------------------------
SIZES = [(8, 12), (16, 10), (8, 12), (6, 6)]
IMAGE_FEED = f"""
import numpy as np

def items():
    rng = np.random.default_rng(3)
    for h, w in {SIZES!r}:
        yield {{"x": rng.normal(size=(1, 3, h, w)).astype(np.float32)}}
"""


def test_images_of_different_sizes_decided_per_pixel(workdir):
    model = map_onnx(workdir / "det.onnx")
    feed = feed_module(workdir, "det_feed", IMAGE_FEED)
    delta = 0.05
    spec = f"{PLANTED}?nudge={delta}&rows=1"  # the whole map of image 1 moves up by delta
    result = modelparity.audit(model, [spec, "openvino:cpu?INFERENCE_PRECISION_HINT=f32"],
                               feed, task="binary", per_item=True, fingerprint=False, warmup=0)
    assert result.ok
    planted, openvino = result.candidates
    # What the planted change must flip: image 1's pixels in (0.5 - delta, 0.5].
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(3)
    images = [rng.normal(size=(1, 3, h, w)).astype(np.float32) for h, w in SIZES]
    maps = [session.run(None, {"x": image})[0] for image in images]
    expected = int(np.sum((maps[1] > 0.5 - delta) & (maps[1] <= 0.5)))
    assert expected > 0
    flips = planted.flips
    assert flips.total == len(SIZES) and flips.count == 1
    assert flips.elements == sum(h * w for h, w in SIZES)
    assert flips.elements_flipped == expected
    record = flips.records()[0]
    assert record["index"] == 1 and record["flipped_elements"] == expected
    channel, y, x = record["position"]
    assert (channel, y < 16, x < 10) == (0, True, True)
    assert maps[1][0, channel, y, x] == pytest.approx(record["reference_score"], abs=1e-6)
    # OpenVINO in FP32 ran the same items one by one, every size compiled as it came.
    assert openvino.ok and openvino.flips.total == len(SIZES)
    assert openvino.errors["prob"].max_abs < 1e-4
    report = json.loads(json.dumps(result.to_dict()))
    jsonschema.validate(report, SCHEMA)
    saved = modelparity.AuditResult.from_dict(report)
    assert saved.candidates[0].flips.records() == flips.records()


def test_images_of_different_sizes_for_a_batch_of_1_need_no_flag(workdir):
    model = map_onnx(workdir / "det.onnx")
    feed = feed_module(workdir, "det_feed2", IMAGE_FEED)
    # The model fixes its batch at 1, so each image is its own call whatever --batch-size says.
    result = modelparity.audit(model, ["ort:cpu?intra_op_num_threads=1"], feed, task="binary",
                               batch_size=2, fingerprint=False)
    assert result.ok and result.inputs["batch_size"] == 1
    assert result.candidates[0].flips.total == len(SIZES)
    assert result.candidates[0].flips.elements == sum(h * w for h, w in SIZES)


# a [B, T, C] sequence decided per step; a custom text decision --------------------------------
def _sequence_data(workdir: Path, samples: int = 6) -> tuple[str, str, np.ndarray]:
    model = sequence_onnx(workdir / "rec.onnx", steps=5, features=4, classes=7)
    x = np.random.default_rng(4).normal(size=(samples, 5, 4)).astype(np.float32)
    np.savez(workdir / "x.npz", x=x)
    probs = ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    return model, str(workdir / "x.npz"), probs


def test_a_sequence_output_is_decided_per_time_step(workdir):
    model, data, probs = _sequence_data(workdir)
    step = 3
    other = int((np.argmax(probs[2, step]) + 1) % 7)  # push another class to the top at step 3
    spec = f"{PLANTED}?nudge=1.5&rows=2&element={step},{other}"
    result = modelparity.audit(model, [spec], data, task=modelparity.TaskConfig(
        "multiclass", class_axis=2), fingerprint=False, warmup=0)
    flips = result.candidates[0].flips
    assert (flips.count, flips.total, flips.elements, flips.elements_flipped) == (1, 6, 30, 1)
    record = flips.records()[0]
    assert record["index"] == 2 and record["position"] == [step]
    assert record["reference_decision"] == int(np.argmax(probs[2, step]))
    assert record["candidate_decision"] == other


def test_multiclass_on_a_sequence_asks_for_the_class_axis(workdir):
    model, data, _ = _sequence_data(workdir)
    with pytest.raises(InputError, match="--class-axis"):
        modelparity.audit(model, ["ort:cpu?intra_op_num_threads=1"], data, task="multiclass",
                          fingerprint=False)


def test_a_custom_decision_may_return_text(workdir):
    model, data, probs = _sequence_data(workdir)
    (workdir / "decode_text.py").write_text(textwrap.dedent("""
        import numpy as np

        def decode(probs):
            return ["".join("abcdefg"[c] for c in row) for row in np.argmax(probs, axis=-1)]
        """))
    sys.modules.pop("decode_text", None)
    other = int((np.argmax(probs[4, 0]) + 1) % 7)
    spec = f"{PLANTED}?nudge=1.5&rows=4&element=0,{other}"
    result = modelparity.audit(model, [spec], data, task=modelparity.TaskConfig(
        "custom", custom="decode_text:decode"), fingerprint=False, warmup=0)
    flips = result.candidates[0].flips
    assert flips.count == 1
    record = flips.records()[0]
    expected = "".join("abcdefg"[c] for c in np.argmax(probs[4], axis=-1))
    assert record["index"] == 4 and record["reference_decision"] == expected
    assert record["candidate_decision"] == "abcdefg"[other] + expected[1:]


# a huge per-element output: the report stays small ------------------------------------------
def test_a_huge_output_per_batch_keeps_the_terminal_and_report_small(workdir):
    model = sequence_onnx(workdir / "big.onnx", steps=126, features=8, classes=6625)
    x = np.random.default_rng(5).normal(size=(12, 126, 8)).astype(np.float32)
    np.savez(workdir / "big.npz", x=x)
    out = workdir / "out"
    spec = f"{PLANTED}?nudge=0.01&rows=0,7"  # every element of samples 0 and 7 is off
    result = modelparity.audit(model, [spec], str(workdir / "big.npz"), task="regression",
                               batch_size=6, fingerprint=False, warmup=0, out=str(out))
    flips = result.candidates[0].flips
    assert (flips.count, flips.total) == (2, 12)
    assert flips.elements_flipped == 2 * 126 * 6625
    console = Console(record=True, width=120)
    render(result, console, show_flips=10)
    lines = console.export_text().splitlines()
    assert 5 < len(lines) < 300
    assert os.path.getsize(out / "report.json") < 200_000


# a scalar input beside batched ones (a sample rate, a gain) ---------------------------------
def test_a_scalar_input_is_fed_as_it_is_to_every_call(workdir):
    inits = [numpy_helper.from_array(np.ones((4, 1), np.float32), "W")]
    nodes = [helper.make_node("MatMul", ["x", "W"], ["s"]),
             helper.make_node("Mul", ["s", "gain"], ["z"]),
             helper.make_node("Sigmoid", ["z"], ["y"])]
    graph = helper.make_graph(
        nodes, "gain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4]),
         helper.make_tensor_value_info("gain", TensorProto.FLOAT, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 1])], inits)
    model = _save(graph, workdir / "gain.onnx")
    feed = feed_module(workdir, "gain_feed", """
        import numpy as np

        def items():
            rng = np.random.default_rng(0)
            for _ in range(5):
                yield {"x": rng.normal(size=(3, 4)).astype(np.float32), "gain": np.float32(2)}
        """)
    for per_item, batch_size in ((True, 256), (False, 4)):
        result = modelparity.audit(model, ["ort:cpu?intra_op_num_threads=1"], feed,
                                   task="binary", per_item=per_item, batch_size=batch_size,
                                   fingerprint=False)
        assert result.ok and result.candidates[0].flips.total == 15
        assert result.candidates[0].latency.batches == (5 if per_item else 4)


# what OpenVINO says, as it says it -----------------------------------------------------------
def test_openvino_reports_an_output_by_the_name_the_model_declares(workdir):
    """OpenVINO folds an Identity into the node before it, and the output then carries both
    names; `get_any_name()` may give the inner one (skl2onnx's MLP: out_activations_result)."""
    inits = [numpy_helper.from_array(np.ones((4, 2), np.float32), "W")]
    nodes = [helper.make_node("MatMul", ["x", "W"], ["out_activations_result"]),
             helper.make_node("Identity", ["out_activations_result"], ["probabilities"])]
    graph = helper.make_graph(
        nodes, "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 2])], inits)
    model = _save(graph, workdir / "mlp.onnx")
    result = modelparity.audit(model, ["openvino:cpu?INFERENCE_PRECISION_HINT=f32"], None,
                               task="multiclass", samples=16, fingerprint=False)
    assert result.ok, result.candidates[0].error
    assert list(result.candidates[0].errors) == ["probabilities"]


def test_an_openvino_conversion_failure_names_the_operation():
    from modelparity.backends.options import first_line

    error = RuntimeError(
        "Exception from src/inference/src/cpp/core.cpp:84:\n"
        "Check 'false' failed at src/frontends/common_translators/src/unconverted_ops_report"
        ".cpp:151:\nFrontEnd API failed with OpConversionFailure:\nModel wasn't fully "
        "converted.\nSummary:\n-- No conversion rule found for operations: "
        "ai.onnx.ml.TreeEnsembleClassifier\n\n")
    assert first_line(error) == ("No conversion rule found for operations: "
                                 "ai.onnx.ml.TreeEnsembleClassifier")
    assert first_line(RuntimeError("Exception from x.cpp:1:\nplain reason\nmore")) == \
        "plain reason"


# per-element decision rules, pure ------------------------------------------------------------
def test_multilabel_maps_take_one_threshold_per_class_along_the_class_axis():
    from modelparity.decisions import TaskConfig, make_head

    maps = np.array([[[[0.2, 0.4]], [[0.6, 0.8]]]])  # [1, 2 classes, 1, 2]
    head = make_head(TaskConfig("multilabel", threshold=(0.3, 0.7), class_axis=1))
    elements = head.elements(maps)
    assert elements.decision.tolist() == [[[[0, 1]], [[0, 1]]]]
    assert np.allclose(elements.margin, [[[[0.1, 0.1]], [[0.1, 0.1]]]])
    decided = head.decide(maps)
    assert len(decided) == 1 and decided.margin[0] == pytest.approx(0.1)
    with pytest.raises(InputError, match="need --class-axis"):
        make_head(TaskConfig("multilabel", threshold=(0.3, 0.7))).elements(maps)
    with pytest.raises(InputError, match="3 thresholds for the 2 classes"):
        make_head(TaskConfig("multilabel", threshold=(0.3, 0.5, 0.7),
                             class_axis=1)).elements(maps)
    with pytest.raises(InputError, match="--class-axis applies to multiclass and multilabel"):
        TaskConfig("binary", class_axis=1)


def test_resume_restores_flips_per_element_and_teacher_forced_runs(workdir):
    model = stateful_onnx(workdir / "vad.onnx")
    feed = feed_module(workdir, "vad_feed_resume", STATE_FEED)
    spec = f"{PLANTED}?nudge=3.0&name=stateN&rows=2"
    kwargs = dict(task=BINARY_OUTPUT, batch_axes={"state": 1}, carry={"stateN": "state"},
                  fingerprint=False, warmup=0, out=str(workdir / "out"))
    first = modelparity.audit(model, [spec], feed, **kwargs)
    again = modelparity.audit(model, [spec], feed, resume=True, **kwargs)
    assert all(b.resumed for b in (*again.candidates, *again.teacher_forced))
    for before, after in ((first.candidates[0], again.candidates[0]),
                          (first.teacher_forced[0], again.teacher_forced[0])):
        assert after.flips.records() == before.flips.records()
        assert after.errors["output"].max_abs == before.errors["output"].max_abs

    model = map_onnx(workdir / "det.onnx")
    feed = feed_module(workdir, "det_feed_resume", IMAGE_FEED)
    kwargs = dict(task="binary", per_item=True, fingerprint=False, warmup=0,
                  out=str(workdir / "out2"))
    first = modelparity.audit(model, [f"{PLANTED}?nudge=0.05&rows=1"], feed, **kwargs)
    again = modelparity.audit(model, [f"{PLANTED}?nudge=0.05&rows=1"], feed, resume=True,
                              **kwargs)
    assert again.candidates[0].resumed
    assert again.candidates[0].flips.totals() == first.candidates[0].flips.totals()
    assert again.candidates[0].flips.records() == first.candidates[0].flips.records()


def test_a_custom_decision_that_raises_is_one_line(workdir):
    model, data, _ = _sequence_data(workdir)
    (workdir / "decode_broken.py").write_text("def decode(probs):\n    raise KeyError('no')\n")
    sys.modules.pop("decode_broken", None)
    with pytest.raises(InputError) as caught:
        modelparity.audit(model, ["ort:cpu?intra_op_num_threads=1"], data,
                          task=modelparity.TaskConfig("custom", custom="decode_broken:decode"),
                          fingerprint=False)
    message = str(caught.value)
    assert message.startswith("custom task: decode_broken:decode raised KeyError on an output "
                              "of shape (6, 5, 7)") and "\n" not in message


# a saturated map: the precision shows where outputs are not 0 or 1 -------------------------
def test_a_map_saturated_on_most_pixels_is_not_called_fp32_when_its_layers_ran_in_bf16(workdir):
    """OpenVINO's BF16 on a text detector: max abs error 0.93 on the map, yet the verdict was
    "fp32 (confidence 0.00)", because most pixels are exactly 0 or 1 in both runs. The
    candidate here rounds the Sigmoid's input to BF16 (a real rounding, not the emulation)."""
    rng = np.random.default_rng(8)
    inits = [numpy_helper.from_array((rng.normal(size=(1, 3, 3, 3)) * 12).astype(np.float32),
                                     "K")]
    nodes = [helper.make_node("Conv", ["x", "K"], ["z"], pads=[1, 1, 1, 1]),
             helper.make_node("Sigmoid", ["z"], ["prob"])]
    graph = helper.make_graph(
        nodes, "sat",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 24, 24])],
        [helper.make_tensor_value_info("prob", TensorProto.FLOAT, ["batch", 1, 24, 24])], inits)
    model = _save(graph, workdir / "sat.onnx")
    result = modelparity.audit(model, [f"{PLANTED}?bf16_before=Sigmoid"], None, task="binary",
                               samples=64)
    candidate = result.candidates[0]
    stats = candidate.errors["prob"]
    assert stats.exact_fraction > 0.5  # most pixels are identical in both runs (0 or 1)
    assert stats.max_abs > 1e-4  # BF16 logits: far above FP32 noise on the unsaturated pixels
    assert candidate.fingerprint.verdict == "bf16", candidate.fingerprint.evidence
    assert result.model["probes"] == {"z": "prob"}  # read before the Sigmoid


def test_resume_never_mixes_runs_with_and_without_the_probes(workdir):
    """The probes add an output: a run without the fingerprint (no probes) resumed with it
    must run the reference again, not compare candidates with a spool that lacks them."""
    model = map_onnx(workdir / "det.onnx")
    feed = feed_module(workdir, "det_feed_probes", IMAGE_FEED)
    kwargs = dict(task="binary", per_item=True, warmup=0, out=str(workdir / "out"))
    modelparity.audit(model, ["ort:cpu?intra_op_num_threads=1"], feed, fingerprint=False,
                      **kwargs)
    again = modelparity.audit(model, ["ort:cpu?intra_op_num_threads=1"], feed, resume=True,
                              **kwargs)
    assert again.ok, again.candidates[0].error
    assert not again.reference.resumed
    assert again.model["probes"] == {"z": "prob"} and "z" in again.candidates[0].errors
