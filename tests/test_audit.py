"""The audit end to end: real ONNX Runtime and OpenVINO in real worker processes, real models
fitted on scikit-learn's data, and planted backends whose exact differences the audit must find."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

from modelparity import TaskConfig, audit
from modelparity.decisions import compute_metrics, make_head

# every test here runs on the local engine and on Ray (conftest.engine)
pytestmark = pytest.mark.usefixtures("engine")

PLANT = "py:planted_backends:make"


def planted(**options: object) -> str:
    return PLANT + "?" + "&".join(f"{k}={v}" for k, v in options.items())


def test_binary_flips_and_confusion_against_openvino(models, data_files):
    entry = data_files["binary"]
    pinned_spec = "openvino:cpu?INFERENCE_PRECISION_HINT=f32"
    result = audit(models["binary"]["path"], ["openvino:cpu", pinned_spec], entry["data"],
                   task="binary", labels=entry["labels"], batch_size=128)
    assert result.ok
    reference = result.reference
    y = models["binary"]["y"]
    predicted = reference.decided.decision
    assert reference.metrics.values["accuracy"] == pytest.approx(accuracy_score(y, predicted))
    assert reference.metrics.values["f1"] == pytest.approx(f1_score(y, predicted))
    np.testing.assert_array_equal(reference.metrics.confusion, confusion_matrix(y, predicted))
    default = result.backend("openvino:cpu")
    pinned = result.backend(pinned_spec)
    # What OpenVINO chose is read back from the compiled model, never assumed from the CPU.
    assert pinned.precision == "float32"
    assert pinned.errors["prob"].max_abs < 1e-5
    assert pinned.flips.count == 0
    if default.precision == "bfloat16":  # CPUs with avx512_bf16 / AMX, like this project's
        assert default.errors["prob"].max_abs > 1e-5
    else:  # CPUs without native BF16 keep FP32
        assert default.errors["prob"].max_abs < 1e-5
    # and the measurement agrees with what OpenVINO reports, from the outputs alone
    expected = {"bfloat16": "bf16", "float32": "fp32", "float16": "fp16"}[default.precision]
    assert default.fingerprint.verdict == expected, default.fingerprint.evidence
    assert pinned.fingerprint.verdict == "fp32", pinned.fingerprint.evidence
    # Flips are exactly the samples whose decisions differ.
    flipped = np.flatnonzero(default.decided.decision != reference.decided.decision)
    assert sorted(default.flips.index.tolist()) == flipped.tolist()
    assert default.metrics.confusion.sum() == len(y)
    for backend in result.candidates:
        assert backend.latency.p50_ms <= backend.latency.p95_ms
        assert backend.latency.samples == len(y)


@pytest.mark.parametrize(
    ("kind", "config", "plant", "expected"),
    [
        # binary: nudge two samples across 0.5, and one far from it that must not flip
        ("binary", TaskConfig(kind="binary"), None, None),
        ("multiclass", TaskConfig(kind="multiclass"), None, None),
        ("multilabel", TaskConfig(kind="multilabel", threshold=(0.5, 0.4, 0.6)), None, None),
    ],
)
def test_planted_flips_are_found_exactly(kind, config, plant, expected, models, data_files,
                                         tmp_path):
    entry = models[kind]
    head = make_head(config)
    import onnxruntime as ort

    session = ort.InferenceSession(entry["path"], providers=["CPUExecutionProvider"])
    output = session.run(None, {"x": entry["x"]})[0]
    decided = head.decide(output)
    # the three samples nearest the boundary get nudged across it
    rows = np.argsort(decided.margin)[:3]
    delta = 2 * float(decided.margin[rows].max()) + 1e-3
    options = {"rows": ",".join(map(str, rows)), "nudge": delta}
    if kind == "binary":
        nudged = output.copy()
        nudged[rows] += delta
        expect = np.flatnonzero(head.decide(nudged).decision != decided.decision)
    else:
        column = int(np.argsort(output[rows[0]])[-2]) if kind == "multiclass" else 0
        options["column"] = column
        nudged = output.copy()
        nudged[rows, column] += delta
        expect = np.flatnonzero(head.flipped(decided, head.decide(nudged)))
    assert len(expect) > 0
    result = audit(entry["path"], [planted(**options)], data_files[kind]["data"], task=config,
                   labels=data_files[kind]["labels"], batch_size=64, warmup=0)
    candidate = result.candidates[0]
    assert candidate.ok, candidate.error
    assert sorted(candidate.flips.index.tolist()) == expect.tolist()
    assert candidate.flips.total == len(entry["x"])
    nudged_metrics = compute_metrics(head, entry["y"], head.decide(nudged))
    for name, value in nudged_metrics.values.items():
        assert candidate.metrics.values[name] == pytest.approx(value)
        assert candidate.metric_deltas[name] == pytest.approx(
            value - result.reference.metrics.values[name])


def test_topk_flip_only_when_the_set_changes(models, data_files):
    entry = models["multiclass"]
    # swapping ranks 1 and 2 inside the top 3 is not a flip; pushing rank 4 into the top 3 is
    import onnxruntime as ort

    session = ort.InferenceSession(entry["path"], providers=["CPUExecutionProvider"])
    output = session.run(None, {"x": entry["x"][:64]})[0]
    order = np.argsort(-output[5])
    inside = float(output[5, order[0]] - output[5, order[1]]) + 1e-3
    outside = float(output[7, np.argsort(-output[7])[2]] - output[7, np.argsort(-output[7])[3]])
    result = audit(
        entry["path"],
        [planted(rows="5", nudge=inside, column=int(order[1])),
         planted(rows="7", nudge=outside + 1e-3, column=int(np.argsort(-output[7])[3]))],
        data_files["multiclass"]["data"], task=TaskConfig(kind="topk", k=3), batch_size=64,
        warmup=0,
    )
    swap, enter = result.candidates
    assert swap.flips.count == 0
    assert enter.flips.index.tolist() == [7]


def test_regression_tolerance(models, data_files):
    entry = models["regression"]
    config = TaskConfig(kind="regression", atol=0.01, rtol=0.0)
    result = audit(entry["path"], [planted(rows="3", nudge=0.005), planted(rows="3", nudge=0.02)],
                   data_files["regression"]["data"], task=config,
                   labels=data_files["regression"]["labels"], batch_size=50, warmup=0)
    within, beyond = result.candidates
    assert within.flips.count == 0
    assert beyond.flips.index.tolist() == [3]
    assert within.errors["value"].max_abs == pytest.approx(0.005, rel=1e-3)
    assert set(result.reference.metrics.values) >= {"mae", "rmse", "r2"}


def test_custom_decision_function(models, data_files, tmp_path, monkeypatch):
    (tmp_path / "my_rule.py").write_text(
        "import numpy as np\n"
        "def decide(output):\n"
        "    return (output[:, 0] > 0.9).astype(int)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    entry = models["binary"]
    import onnxruntime as ort

    session = ort.InferenceSession(entry["path"], providers=["CPUExecutionProvider"])
    prob = session.run(None, {"x": entry["x"]})[0][:, 0]
    row = int(np.argmin(np.abs(prob - 0.9)))
    delta = (0.9 - prob[row]) * 2 or 1e-3
    result = audit(entry["path"], [planted(rows=row, nudge=delta)],
                   data_files["binary"]["data"],
                   task=TaskConfig(kind="custom", custom="my_rule:decide"), warmup=0)
    assert result.candidates[0].flips.index.tolist() == [row]


def test_failures_are_findings_not_lost_runs(models, data_files, tmp_path):
    entry = data_files["binary"]
    crash, hang, boom = planted(fail="crash", at=1), planted(fail="hang", at=0), \
        planted(fail="raise", at=2)
    result = audit(models["binary"]["path"], [crash, "openvino:cpu", hang, boom], entry["data"],
                   task="binary", batch_size=64, timeout=5, warmup=0, out=str(tmp_path / "out"))
    assert not result.ok
    crashed, good, hung, raised = result.candidates
    assert result.reference.ok, result.reference.error
    assert crashed.status == "failed" and crashed.failure["kind"] == "crash"
    assert "SIGSEGV" in crashed.error and crashed.failure["stage"] == "batch 1"
    assert hung.failure["kind"] == "timeout" and "5 s" in hung.error
    assert raised.failure["kind"] == "exception" and "planted failure" in raised.error
    assert raised.failure["stage"] == "batch 2"
    assert good.ok and good.flips is not None
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    statuses = {c["spec"]: c["status"] for c in report["candidates"]}
    assert statuses == {crash: "failed", "openvino:cpu": "ok", hang: "failed", boom: "failed"}


def test_resume_skips_finished_backends(models, data_files, tmp_path):
    entry = data_files["binary"]
    counter = tmp_path / "activations.txt"
    flaky = planted(activations=counter, rows="1", nudge=0.3)
    out = str(tmp_path / "run")
    first = audit(models["binary"]["path"], [flaky, planted(fail="load")], entry["data"],
                  out=out, warmup=0)
    assert first.candidates[0].ok and not first.candidates[1].ok
    loads = counter.read_text().count("activated")  # 1, or one per actor on --engine ray
    assert loads >= 1
    second = audit(models["binary"]["path"], [flaky, planted(fail="load")], entry["data"],
                   out=out, warmup=0, resume=True)
    assert counter.read_text().count("activated") == loads  # not run again
    assert second.candidates[0].description.get("resumed") is True
    assert second.candidates[0].flips.index.tolist() == first.candidates[0].flips.index.tolist()
    assert second.candidates[0].errors["prob"].max_abs == first.candidates[0].errors["prob"].max_abs
    assert not second.candidates[1].ok  # a failed backend is tried again


def test_reference_failure_skips_candidates(models, data_files):
    result = audit(models["binary"]["path"], ["openvino:cpu"], data_files["binary"]["data"],
                   reference=planted(fail="load"))
    assert result.reference.status == "failed"
    assert result.candidates[0].status == "skipped"


def test_every_input_source_feeds_the_same_samples(models, data_files, tmp_path, monkeypatch):
    """.npz, .npy, a folder of shards, CSV, Parquet and an entry point: same data, same result."""
    import pandas as pd

    x = models["binary"]["x"]
    np.save(tmp_path / "x.npy", x)
    shards = tmp_path / "shards"
    shards.mkdir()
    for i, start in enumerate(range(0, len(x), 200)):
        np.savez(shards / f"part{i:02d}.npz", x=x[start:start + 200])
    frame = pd.DataFrame(x, columns=[f"f{i}" for i in range(x.shape[1])])
    frame.to_csv(tmp_path / "x.csv", index=False)
    frame.to_parquet(tmp_path / "x.parquet")
    np.save(tmp_path / "feed.npy", x)
    (tmp_path / "my_feed.py").write_text(
        "import numpy as np\n"
        f"def batches():\n    x = np.load({str(tmp_path / 'feed.npy')!r})\n"
        "    for start in range(0, len(x), 100):\n        yield {'x': x[start:start + 100]}\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)  # workers import my_feed from the working directory
    sources = [data_files["binary"]["data"], str(tmp_path / "x.npy"), str(shards),
               str(tmp_path / "x.csv"), str(tmp_path / "x.parquet"), "my_feed:batches"]
    decided = []
    for source in sources:
        result = audit(models["binary"]["path"], [planted(rows="3", nudge=0.7)], source,
                       batch_size=96, warmup=0)
        assert result.ok, (source, result.candidates[0].error)
        assert result.inputs["samples"] == len(x)
        assert result.candidates[0].flips.index.tolist() == [3]
        decided.append(result.reference.decided.score)
    for scores in decided[1:]:
        np.testing.assert_array_equal(scores, decided[0])


def test_synthetic_inputs_with_a_dynamic_dimension(tmp_path):
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["x"], ["m"], axes=[1], keepdims=0),
         helper.make_node("Sigmoid", ["m"], ["y"])],
        "seq",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch"])],
    )
    import onnx

    path = tmp_path / "seq.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    from modelparity.errors import InputError

    with pytest.raises(InputError, match="--shape"):
        audit(str(path), ["openvino:cpu"], samples=50)
    result = audit(str(path), ["openvino:cpu?INFERENCE_PRECISION_HINT=f32"], samples=50,
                   shapes={"x": (1, 16)}, seed=3)
    assert result.ok and result.inputs["samples"] == 50
    assert result.candidates[0].flips.count == 0


def test_pytorch_model_runs_the_same_weights_everywhere(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    (tmp_path / "tiny_net.py").write_text(
        "import numpy as np, torch\n"
        "def make():\n"
        "    net = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(),\n"
        "                              torch.nn.Linear(8, 1), torch.nn.Sigmoid())\n"
        "    return net, {'x': np.zeros((2, 5), np.float32)}\n"
    )
    monkeypatch.chdir(tmp_path)
    result = audit("tiny_net:make", ["torch:cpu", "openvino:cpu?INFERENCE_PRECISION_HINT=f32"],
                   samples=300, out=str(tmp_path / "out"))
    assert result.ok, [b.error for b in result.backends]
    assert result.model["exporter"].startswith("torch.onnx.export")
    torch_run = result.backend("torch:cpu")
    assert torch_run.precision == "float32"
    assert torch_run.errors["output"].max_abs < 1e-5  # unseeded factory: only shared weights agree
    assert torch_run.flips.count == 0


def test_nan_outputs_are_counted_and_flip(models, data_files):
    entry = models["binary"]
    import onnxruntime as ort

    session = ort.InferenceSession(entry["path"], providers=["CPUExecutionProvider"])
    positive = int(np.flatnonzero(session.run(None, {"x": entry["x"]})[0][:, 0] > 0.5)[0])
    result = audit(entry["path"], [planted(rows=positive, nudge="nan")],
                   data_files["binary"]["data"], warmup=0)
    candidate = result.candidates[0]
    assert candidate.errors["prob"].nan_mismatch == 1
    assert candidate.errors["prob"].count == len(entry["x"]) - 1  # NaN pairs left out of stats
    assert candidate.flips.index.tolist() == [positive]


def test_fingerprint_profiles_on_the_first_samples(models, data_files):
    """Profiles run on the first samples only, cut mid-batch; each candidate is fingerprinted."""
    result = audit(models["multiclass"]["path"],
                   ["openvino:cpu", "openvino:cpu?INFERENCE_PRECISION_HINT=f32", "emulate:fp16"],
                   data_files["multiclass"]["data"], task="multiclass", batch_size=128,
                   profile_samples=300)
    # FP32 noise from three FP32 runs; no PyTorch one, for an ONNX file
    assert set(result.profiles) == {"fp32", "fp32 batch", "fp32 openvino", "fp16", "fp16 layer",
                                    "bf16", "bf16 layer", "tf32", "int8", "int8 7-bit",
                                    "int8 static"}
    for label, profile in result.profiles.items():
        assert profile.ok, (label, profile.error)
        # the candidates emulate:fp16 and the pinned OpenVINO are yardsticks: their full runs
        # serve as the profiles too
        assert len(profile.decided) == (1797 if label in ("fp16", "fp32 openvino") else 300)
    assert result.profiles["fp32 batch"].spec == "ort:cpu [batch 1]"
    pinned = result.backend("openvino:cpu?INFERENCE_PRECISION_HINT=f32")
    assert pinned.fingerprint.verdict == "fp32"
    assert result.backend("emulate:fp16").fingerprint.verdict == "fp16"
    default = result.backend("openvino:cpu")
    # what OpenVINO reports is read back, and the measurement must agree with it
    expected = {"bfloat16": "bf16", "float32": "fp32", "float16": "fp16"}[default.precision]
    assert default.fingerprint.verdict == expected, default.fingerprint.evidence
    assert {r.method for r in result.at_risk} == {"error"}  # no threshold band for argmax


def test_no_fingerprint_runs_no_profiles(models, data_files):
    result = audit(models["binary"]["path"], ["openvino:cpu"], data_files["binary"]["data"],
                   fingerprint=False)
    assert result.profiles == {} and result.candidates[0].fingerprint is None


def test_resume_never_reuses_results_for_data_that_changed(models, tmp_path):
    """The run key was the source's repr (path, names, shapes, count): x.npz rewritten with
    other values of the same shape was resumed against the old reference, and a pinned FP32
    OpenVINO showed 1775 flips. The key now holds a hash of the data's bytes."""
    from typer.testing import CliRunner

    from modelparity.cli import app

    path = models["binary"]["path"]
    x = tmp_path / "x.npz"
    shape = models["binary"]["x"].shape
    out = str(tmp_path / "out")
    np.savez(x, x=np.random.default_rng(1).normal(size=shape).astype(np.float32) * 10)
    first = audit(path, ["ort:cpu?intra_op_num_threads=1"], str(x), out=out, warmup=0,
                  fingerprint=False)
    np.savez(x, x=np.random.default_rng(2).normal(size=shape).astype(np.float32) * 10)
    second = audit(path, ["ort:cpu?intra_op_num_threads=1", "openvino:cpu?"
                          "INFERENCE_PRECISION_HINT=f32"], str(x), out=out, warmup=0,
                   fingerprint=False, resume=True)
    assert not second.reference.resumed and not second.candidates[0].resumed
    assert all(c.flips.count == 0 for c in second.candidates)
    assert first.reference.decided.score.tolist() != second.reference.decided.score.tolist()
    # unchanged data resumes, and the output says which backends came from disk
    outcome = CliRunner().invoke(app, ["run", path, "-b", "ort:cpu?intra_op_num_threads=1",
                                       "-d", str(x), "--out", out, "--resume", "--warmup", "0",
                                       "--no-fingerprint"], terminal_width=200)
    assert outcome.exit_code == 0, outcome.output
    assert ("from the earlier run in this folder (--resume), same data and settings: ort:cpu, "
            "ort:cpu?intra_op_num_threads=1") in outcome.stdout


def test_a_feed_that_gives_other_data_each_call_is_refused(models, tmp_path, monkeypatch):
    """Each backend's worker calls a module:function feed itself: an unseeded one gave every
    backend other inputs, and an FP16 emulation showed 893 bogus flips. Refused, one line."""
    from typer.testing import CliRunner

    from modelparity.cli import app

    features = models["binary"]["x"].shape[1]
    (tmp_path / "mp_unseeded_feed.py").write_text(
        "import numpy as np\n"
        "def items():\n"
        f"    yield {{'x': np.random.rand(64, {features}).astype(np.float32)}}\n"
        "def seeded():\n"
        f"    yield {{'x': np.random.default_rng(0).random((64, {features}), np.float32)}}\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    outcome = CliRunner().invoke(app, ["run", models["binary"]["path"], "-b", "emulate:fp16",
                                       "-d", "mp_unseeded_feed:items", "--no-fingerprint"])
    assert outcome.exit_code == 2, outcome.output
    message = outcome.stderr.strip()
    assert len(message.splitlines()) == 1 and "Traceback" not in outcome.output
    assert "mp_unseeded_feed:items: gave other inputs when called again" in message
    seeded = audit(models["binary"]["path"], ["emulate:fp16"], "mp_unseeded_feed:seeded",
                   fingerprint=False, warmup=0)
    assert seeded.ok
