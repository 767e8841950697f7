"""Findings inside a run, `fix=True` (the fixed variant run beside the original), the repro
scripts, env.* options and the Core ML stand-in: real runtimes, real models."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from modelparity import audit
from modelparity.knowledge.matcher import AGREES, CONTRADICTS, PREDICTED
from modelparity.report.html import render_html
from modelparity.report.markdown import render_markdown

SCHEMA = Path(__file__).parents[1] / "src" / "modelparity" / "report" / "schema.json"
PINNED = "openvino:cpu?INFERENCE_PRECISION_HINT=f32"


def test_fix_runs_openvino_pinned_to_fp32_beside_its_default(models, data_files, tmp_path):
    entry = data_files["binary"]
    out = tmp_path / "out"
    result = audit(models["binary"]["path"], ["openvino:cpu"], entry["data"], task="binary",
                   labels=entry["labels"], batch_size=128, fix=True, out=str(out))
    default = result.backend("openvino:cpu")
    report = json.loads((out / "report.json").read_text())
    jsonschema.validate(report, json.loads(SCHEMA.read_text()))
    # Which precision OpenVINO chose is read back from the compiled model, never assumed.
    if default.precision != "bfloat16":  # a CPU without avx512_bf16/AMX: OpenVINO stays FP32
        assert [f.rule.id for f in default.findings] == []
        assert result.fixes == [] and default.repro is None
        return
    # This project's CPU has native BF16, so OV-1 applies and its fix runs beside it.
    [finding] = default.findings
    assert finding.rule.id == "OV-1"
    assert finding.agreement == AGREES and finding.measured == "bf16"
    assert default.fixed_by == PINNED
    fixed = result.backend(PINNED)
    assert fixed.fix_of == "openvino:cpu" and fixed.findings == []
    assert fixed.precision == "float32" and fixed.flips.count == 0
    [outcome] = result.fixes
    assert outcome.rules == ["OV-1"]
    assert outcome.before["flips"] == default.flips.count
    assert outcome.after["flips"] == 0 and outcome.after["measured"] == "fp32"
    assert outcome.latency_ratio == pytest.approx(
        fixed.latency.p50_ms / default.latency.p50_ms)
    assert report["fixes"][0]["fixed"] == PINNED
    assert report["candidates"][0]["findings"][0]["rule"] == "OV-1"

    page = render_html(result)
    assert "Silent precision defaults and their fixes" in page and "OV-1" in page
    assert f"<td>{PINNED}</td>" in page and "config.cpp" in page
    summary = render_markdown(result)
    assert "**OV-1**" in summary and f"fix: `{PINNED}`" in summary
    assert f"| fixed | {PINNED} |  | ok | 0 |" in summary

    # The repro runs with OpenVINO and NumPy alone and shows both precisions.
    repro = Path(default.repro)
    assert repro.parent == out / "repro" / "openvino_cpu"
    with np.load(repro.parent / "inputs.npz") as saved:
        assert saved["x"].shape[1:] == models["binary"]["x"].shape[1:]
    done = subprocess.run([sys.executable, str(repro)], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "read back: <Type: 'bfloat16'>" in done.stdout
    assert "read back: <Type: 'float32'>" in done.stdout
    assert f"between openvino:cpu and {PINNED}" in done.stdout
    if default.flips.count:  # the saved samples are the flipped ones: they flip again
        assert "<- differs" in done.stdout


def test_run_without_fix_still_reports_findings(models, data_files):
    entry = data_files["binary"]
    result = audit(models["binary"]["path"], ["openvino:cpu"], entry["data"], task="binary",
                   batch_size=128, fingerprint=False)
    default = result.backend("openvino:cpu")
    assert [b.spec for b in result.candidates] == ["openvino:cpu"]
    assert result.fixes == []
    expected = ["OV-1"] if default.precision == "bfloat16" else []
    assert [f.rule.id for f in default.findings] == expected
    assert all(f.measured is None for f in default.findings)  # fingerprint off: not measured


@pytest.mark.skipif(sys.platform == "darwin", reason="on macOS the CoreML EP really runs")
def test_coreml_ep_is_predicted_on_linux_and_so_is_its_fix(models, data_files, tmp_path):
    entry = data_files["binary"]
    result = audit(models["binary"]["path"], ["ort:coreml"], entry["data"], task="binary",
                   batch_size=128, fix=True, profile_samples=500, out=str(tmp_path))
    assert result.ok
    default = result.backend("ort:coreml")
    predicted = default.description["predicted"]
    assert predicted["measured"] is False and predicted["stand_in"] == "emulate:fp16"
    assert "ORT-1" in predicted["basis"]
    assert default.description["precision"] == {
        "predicted": "float16", "source": f"predicted from {predicted['basis']}"}
    [finding] = default.findings
    assert finding.rule.id == "ORT-1" and finding.agreement == PREDICTED
    assert default.max_abs > 1e-5  # the FP16 emulation really ran
    fixed = result.backend("ort:coreml?ModelFormat=MLProgram")
    assert fixed.description["predicted"]["stand_in"] == "ort:cpu"
    assert fixed.max_abs == 0.0 and fixed.flips.count == 0
    assert result.fixes[0].before["predicted"] and result.fixes[0].after["predicted"]
    # a stand-in's speed says nothing about Core ML's: no latency is shown for it
    assert default.latency is not None and default.measured_latency is None
    assert result.fixes[0].latency_ratio is None
    assert "ort:coreml: predicted, not measured: Core ML cannot execute" in render_markdown(result)
    page = render_html(result)
    assert "predicted (emulate:fp16)" in page and "predicted (ort:cpu)" in page
    assert "predicted, not measured" in page
    # the repro is for a Mac: it builds both CoreML sessions, and says the flips were predicted
    script = Path(default.repro).read_text()
    compile(script, default.repro, "exec")
    assert "predicted: emulate:fp16 stood in" in script
    assert "'provider': 'CoreMLExecutionProvider'" in script
    assert "'provider_options': {'ModelFormat': 'MLProgram'}" in script


def test_env_options_reach_the_worker_before_the_runtime(models, tmp_path):
    log = tmp_path / "activations.txt"
    spec = (f"py:planted_backends:make?activations={log}&record_env=MODELPARITY_PROBE"
            "&env.MODELPARITY_PROBE=42")
    result = audit(models["binary"]["path"], [spec], samples=20, fingerprint=False, warmup=0)
    assert result.ok, result.backend(spec).error
    assert "MODELPARITY_PROBE=42" in log.read_text().splitlines()
    assert result.backend(spec).description["env"] == {"MODELPARITY_PROBE": "42"}
    # the spec keeps its environment in its name, canonical order or as given
    assert result.backend(spec).spec.endswith("&env.MODELPARITY_PROBE=42")


def test_a_failing_env_variant_names_its_whole_spec(models):
    spec = "ort:cuda?env.NVIDIA_TF32_OVERRIDE=0"
    result = audit(models["binary"]["path"], [spec], samples=20, fingerprint=False)
    failed = result.backend(spec)
    assert failed.status == "failed"
    assert failed.error.startswith(f"{spec}: CUDAExecutionProvider is not available")


def test_an_env_rule_that_the_measurement_contradicts(tmp_path):
    """ONEDNN_DEFAULT_FPMATH_MODE=bf16 lets oneDNN downcast, but PyTorch's CPU Linear may not
    go through oneDNN at all: whatever the outputs show is what the finding reports."""
    pytest.importorskip("torch", reason="PyTorch is an optional extra")
    spec = "torch:cpu?env.ONEDNN_DEFAULT_FPMATH_MODE=bf16"
    result = audit("modelparity.demo.models:breast_cancer_classifier", [spec], samples=2000,
                   value_range=(-2.0, 2.0), fix=True, profile_samples=2000, out=str(tmp_path))
    backend = result.backend(spec)
    [finding] = backend.findings
    assert finding.rule.id == "PT-6-bf16"
    assert backend.fixed_by == "torch:cpu?env.ONEDNN_DEFAULT_FPMATH_MODE=strict"
    verdict = backend.fingerprint.verdict
    assert finding.measured == verdict
    assert finding.agreement == (CONTRADICTS if verdict == "fp32" else
                                 AGREES if verdict == "bf16" else "different")
    assert result.backend(backend.fixed_by).findings == []

    # The torch repro reads the safetensors weights with NumPy alone and runs each side in its
    # own process with its own environment.
    done = subprocess.run([sys.executable, backend.repro], capture_output=True, text=True,
                          timeout=180, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"{spec}: torch " in done.stdout
    assert "torch:cpu?env.ONEDNN_DEFAULT_FPMATH_MODE=strict: torch " in done.stdout
    assert "decisions differ between" in done.stdout
