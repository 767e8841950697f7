"""The CLI as a user meets it: real commands, real files, one-line errors with exit code 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from typer.testing import CliRunner

from modelparity.cli import app

runner = CliRunner()
SCHEMA = Path(__file__).parents[1] / "src" / "modelparity" / "report" / "schema.json"


def invoke(*args: str):
    return runner.invoke(app, list(args))


def assert_one_line_error(result, *needles: str) -> None:
    assert result.exit_code == 2, result.output
    text = result.stderr.strip()
    assert text.startswith("error:"), text
    assert "Traceback" not in result.output and "Traceback" not in text
    assert len(text.splitlines()) == 1, text
    for needle in needles:
        assert needle in text, text


def test_run_prints_flips_and_confusion_and_writes_a_valid_report(models, data_files, tmp_path):
    entry = data_files["binary"]
    out = tmp_path / "out"
    command = [sys.executable, "-m", "modelparity.cli", "run", models["binary"]["path"],
               "--backend", "ort:cpu", "--backend", "py:planted_backends:make?rows=0,1&nudge=0.6",
               "--data", entry["data"], "--task", "binary", "--labels", entry["labels"],
               "--out", str(out), "--warmup", "0"]
    command += ["--html", str(out / "report.html"), "--markdown", str(out / "summary.md")]
    done = subprocess.run(command, capture_output=True, text=True, env=os.environ, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "flipped decisions" in done.stdout
    assert "confusion matrix" in done.stdout
    page = (out / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "<svg" in page and "<script" not in page
    assert "| openvino" in (out / "summary.md").read_text() or "planted" in (
        out / "summary.md").read_text()
    report = json.loads((out / "report.json").read_text())
    jsonschema.validate(report, json.loads(SCHEMA.read_text()))
    candidate = report["candidates"][0]
    assert candidate["flips"]["count"] >= 1
    assert {r["index"] for r in candidate["flips"]["listed"]} <= {0, 1}
    assert report["reference"]["metrics"]["confusion"] is not None


def test_every_command_has_help():
    for command in ([], ["run"], ["demo"], ["version"]):
        result = invoke(*command, "--help")
        assert result.exit_code == 0
        assert "Usage" in result.output


@pytest.fixture
def binary(models, data_files):
    return models["binary"]["path"], data_files["binary"]


def test_corrupt_model_file(tmp_path, binary):
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(os.urandom(300))
    result = invoke("run", str(bad), "-b", "openvino:cpu", "--data", binary[1]["data"])
    assert_one_line_error(result, "broken.onnx")


def test_not_an_onnx_file(tmp_path, binary):
    text = tmp_path / "notes.onnx"
    text.write_text("hello")
    assert_one_line_error(invoke("run", str(text), "-b", "openvino:cpu"), "notes.onnx")


def test_unknown_input_name(tmp_path, binary):
    data = tmp_path / "wrong.npz"
    np.savez(data, features=np.zeros((4, 30), np.float32))
    result = invoke("run", binary[0], "-b", "openvino:cpu", "--data", str(data))
    assert_one_line_error(result, "wrong.npz", "features")


def test_wrong_shape(tmp_path, binary):
    data = tmp_path / "narrow.npz"
    np.savez(data, x=np.zeros((4, 29), np.float32))
    assert_one_line_error(invoke("run", binary[0], "-b", "openvino:cpu", "--data", str(data)),
                          "narrow.npz")


def test_wrong_dtype(tmp_path, binary):
    data = tmp_path / "text.npz"
    np.savez(data, x=np.array([["a"] * 30] * 4))
    assert_one_line_error(invoke("run", binary[0], "-b", "openvino:cpu", "--data", str(data)),
                          "text.npz")


def test_labels_of_wrong_length(tmp_path, binary):
    labels = tmp_path / "short.npy"
    np.save(labels, np.zeros(10, np.int64))
    result = invoke("run", binary[0], "-b", "openvino:cpu", "--data", binary[1]["data"],
                    "--labels", str(labels))
    assert_one_line_error(result, "short.npy", "569")


def test_empty_data_set(tmp_path, binary):
    data = tmp_path / "empty.npz"
    np.savez(data, x=np.zeros((0, 30), np.float32))
    assert_one_line_error(invoke("run", binary[0], "-b", "openvino:cpu", "--data", str(data)),
                          "empty.npz")


def test_unknown_runtime(binary):
    assert_one_line_error(invoke("run", binary[0], "-b", "tensorflow:cpu"), "tensorflow")


def test_unknown_task(binary):
    assert_one_line_error(invoke("run", binary[0], "-b", "openvino:cpu", "--task", "ranking"),
                          "ranking")


def test_task_that_does_not_fit_the_output(binary):
    result = invoke("run", binary[0], "-b", "openvino:cpu", "--data", binary[1]["data"],
                    "--task", "topk", "--k", "3")
    assert_one_line_error(result)


def test_unknown_execution_provider_lists_the_available_ones(binary, tmp_path):
    result = invoke("run", binary[0], "-b", "ort:cuda", "--data", binary[1]["data"],
                    "--out", str(tmp_path / "o"))
    assert result.exit_code == 2
    assert "CUDAExecutionProvider is not available" in result.output
    assert "CPUExecutionProvider" in result.output


def test_unknown_openvino_property(binary):
    result = invoke("run", binary[0], "-b", "openvino:cpu?NOT_A_PROPERTY=1",
                    "--data", binary[1]["data"])
    assert result.exit_code == 2
    assert "NOT_A_PROPERTY" in result.output


def test_debug_shows_the_traceback(tmp_path, binary):
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"\x00\x01garbage")
    result = invoke("run", str(bad), "-b", "openvino:cpu", "--debug")
    assert result.exit_code == 2
    assert "Traceback" in result.stderr


def test_lint_explains_the_coreml_default_without_running_anything():
    result = invoke("lint", "--backend", "ort:coreml")
    assert result.exit_code == 1, result.output  # a finding: like a failed policy
    text = " ".join(result.output.split())
    assert "ORT-1" in text and "NeuralNetwork" in text and "FP16" in text
    assert "fix: ort:coreml?ModelFormat=MLProgram" in text
    assert '{"ModelFormat": "MLProgram"}' in text
    assert "coreml_options" in text  # the source


def test_lint_exit_codes_and_bad_specs():
    assert invoke("lint", "-b", "ort:cpu").exit_code == 0
    assert_one_line_error(invoke("lint", "-b", "ort:coreml?ModelFormat=Bogus"),
                          "ModelFormat=Bogus", "MLProgram, NeuralNetwork")
    assert_one_line_error(invoke("lint", "-b", "ort:coreml?Fast=1"), "unknown", "'Fast'",
                          "MLComputeUnits")
    assert_one_line_error(invoke("lint", "-b", "nosuch:cpu"), "unknown runtime")
    conditional = invoke("lint", "-b", "ort:cuda")
    assert "ORT-4" in conditional.output and "conditional" in conditional.output


def test_run_fix_shows_the_finding_the_fixed_variant_and_its_price(tmp_path):
    out = tmp_path / "out"
    command = [sys.executable, "-m", "modelparity.cli", "run", "modelparity.demo.models:mlp_4x3",
               "--backend", "openvino:cpu", "--task", "multilabel", "--samples", "4000",
               "--fix", "--no-fingerprint", "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "COLUMNS": "200"})
    assert done.returncode == 0, done.stderr
    report = json.loads((out / "report.json").read_text())
    if report["candidates"][0]["description"]["precision"]["reported"] != "bfloat16":
        assert "OV-1" not in done.stdout  # OpenVINO stayed FP32 on this CPU
        return
    text = " ".join(done.stdout.split())
    assert "OV-1" in text and "config.cpp" in text  # the finding and its source
    assert "each fix, run beside the original" in text
    [fix] = report["fixes"]
    assert fix["fixed"] == "openvino:cpu?INFERENCE_PRECISION_HINT=f32"
    assert fix["after"]["flips"] == 0
    assert f"before │ openvino:cpu │ OV-1 │ ok │ {fix['before']['flips']} │" in text
    assert "fixed │ openvino:cpu?INFERENCE_PRECISION_HINT=f32 │ │ ok │ 0 │" in text
    assert f"x{fix['latency_ratio']:.2f}" in text
    assert "repro for openvino:cpu: python " in text


@pytest.mark.parametrize("command", ["run", "demo"])
def test_out_that_is_a_file_is_one_line(tmp_path, binary, command):
    """`--out` naming a file gave a FileExistsError traceback (run and demo)."""
    taken = tmp_path / "taken"
    taken.write_text("not a folder")
    args = (["run", binary[0], "-b", "emulate:fp16", "--data", binary[1]["data"]]
            if command == "run" else ["demo"])
    result = invoke(*args, "--out", str(taken))
    assert_one_line_error(result, f"--out {taken}: is a file")
    assert taken.read_text() == "not a folder"


@pytest.mark.parametrize("command", ["run", "demo"])
def test_out_that_cannot_be_written_is_one_line(tmp_path, binary, command):
    """A read-only `--out` (issue 12, item 9). As root, permission bits do not stop a write,
    so the folder is one root cannot write either: sysfs's /sys/kernel."""
    import os

    folder = "/sys/kernel"
    if not os.path.isdir(folder) or _writable(folder):
        pytest.skip(f"{folder} is not here, or can be written: no read-only folder to try")
    args = (["run", binary[0], "-b", "emulate:fp16", "--data", binary[1]["data"]]
            if command == "run" else ["demo"])
    result = invoke(*args, "--out", folder)
    assert_one_line_error(result, f"--out {folder}: cannot write there (")


def _writable(folder: str) -> bool:
    import tempfile

    try:
        with tempfile.NamedTemporaryFile(dir=folder):
            return True
    except OSError:
        return False


@pytest.mark.parametrize("value", ["nan", "inf", "-1"])
def test_timeout_must_be_a_positive_finite_number(binary, value):
    result = invoke("run", binary[0], "-b", "emulate:fp16", "--data", binary[1]["data"],
                    "--timeout", value)
    assert_one_line_error(result, "--timeout: expected a positive, finite number of seconds")
