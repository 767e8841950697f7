"""`modelparity demo` as a new user runs it: both models audited, OpenVINO's default measured,
and the HTML reports drawn in a real browser."""

from __future__ import annotations

import json

import pytest
from rich.console import Console
from test_html import _chromium, _console_errors, _parse, needs_chromium

from modelparity.demo import run_demo

MODELS = ("mlp", "cancer")


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    folder = tmp_path_factory.mktemp("demo")
    console = Console(record=True, width=130)
    code = run_demo(str(folder), console)
    return folder, code, console.export_text()


def test_demo_measures_what_openvino_reports(demo):
    folder, code, text = demo
    assert code == 0
    assert "Decisions flipped on" in text or "No decision flipped" in text
    for name in MODELS:
        report = json.loads((folder / name / "report.json").read_text())
        backends = {c["spec"]: c for c in report["candidates"]}
        default, pinned = backends["openvino:cpu"], backends[
            "openvino:cpu?INFERENCE_PRECISION_HINT=f32"]
        reported = default["description"]["precision"]["reported"]
        # this project's CPUs report bfloat16; CPUs without native BF16 keep float32
        expected = {"bfloat16": "bf16", "float32": "fp32", "float16": "fp16"}[reported]
        assert default["fingerprint"]["verdict"] == expected, default["fingerprint"]["evidence"]
        assert pinned["fingerprint"]["verdict"] == "fp32"
        assert pinned["flips"]["count"] == 0
        assert backends["torch:cpu"]["fingerprint"]["verdict"] == "fp32"
        assert (folder / name / "report.html").is_file()


@needs_chromium
def test_demo_html_reports_render_in_chromium(demo):
    folder, _, _ = demo
    for name in MODELS:
        run = _chromium("--dump-dom", (folder / name / "report.html").as_uri())
        assert run.returncode == 0, run.stderr[-2000:]
        assert _console_errors(run.stderr) == []
        charts = _parse(run.stdout).charts
        assert len(charts) >= 5, name  # fingerprints, histograms, scatter, latency
        assert all(chart["marks"] > 0 for chart in charts), name


def test_report_rerenders_the_demos_saved_audit_to_the_same_html(demo, tmp_path):
    """`modelparity report` renders a saved report.json (and the decisions saved beside it) to
    the very page the run drew, and gates it with the run's exit code."""
    import subprocess
    import sys

    folder, code, _ = demo
    for name in MODELS:
        saved = folder / name / "report.json"
        page = tmp_path / f"{name}.html"
        done = subprocess.run([sys.executable, "-m", "modelparity.cli", "report", str(saved),
                               "--html", str(page)], capture_output=True, text=True, timeout=120)
        assert done.returncode == code, done.stderr[-2000:]
        assert page.read_text() == (folder / name / "report.html").read_text()
        assert "openvino:cpu" in done.stdout
        gated = subprocess.run([sys.executable, "-m", "modelparity.cli", "report", str(saved),
                                "--fail-on", "flips>0"], capture_output=True, text=True,
                               timeout=120)
        report = json.loads(saved.read_text())
        flipped = any(c["flips"] and c["flips"]["count"] for c in report["candidates"])
        assert gated.returncode == (1 if flipped else 0), gated.stdout[-2000:]


def test_captures_from_a_mac_replace_the_predicted_core_ml_rows(demo, tmp_path):
    """`demo --capture-dir`: a capture of `ort:coreml` stands where the predicted row was.
    Core ML does not run on Linux, so the capture is made here from the FP16 emulation and
    its manifest says ort:coreml: this checks the replacement, not Core ML."""
    from modelparity.capture import capture

    folder = demo[0]
    macos = tmp_path / "macos"
    macos.mkdir()
    taken = macos / "ort_coreml.mpc"
    capture(str(folder / "mlp" / "model.onnx"), "emulate:fp16", str(folder / "mlp_inputs.npz"),
            out=str(taken), batch_size=512)
    manifest = json.loads((taken / "manifest.json").read_text())
    manifest["spec"] = "ort:coreml"
    (taken / "manifest.json").write_text(json.dumps(manifest))
    out = tmp_path / "demo"
    assert run_demo(str(out), Console(width=200, record=True), str(macos)) == 0
    report = json.loads((out / "mlp" / "report.json").read_text())
    specs = [b["spec"] for b in report["candidates"]]
    assert f"capture:{taken}" in specs and "ort:coreml" not in specs
    replayed = next(b for b in report["candidates"] if b["spec"] == f"capture:{taken}")
    assert replayed["flips"]["count"] > 0  # FP16 outputs, as the NeuralNetwork format gives
    assert "ort:coreml?ModelFormat=MLProgram" in specs  # still predicted: no capture of it
