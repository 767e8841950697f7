"""The README cannot rot: its Python example runs, and every option it mentions exists."""

from __future__ import annotations

import re
from pathlib import Path

from typer.testing import CliRunner

from modelparity.cli import app

README = (Path(__file__).parents[1] / "README.md").read_text()


def test_python_example_runs(models, data_files, tmp_path, monkeypatch, capsys):
    block = next(b for b in re.findall(r"```python\n(.*?)```", README, re.S)
                 if "modelparity.audit(" in b)
    code = (block
            .replace('"model.onnx"', repr(models["binary"]["path"]))
            .replace('"x.npz"', repr(data_files["binary"]["data"]))
            .replace('"y.npy"', repr(data_files["binary"]["labels"])))
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] in {"bfloat16", "float32", "float16"}  # read back from OpenVINO
    assert (tmp_path / "report.json").is_file()
    assert printed[-1] == "['ORT-1']"  # lint, which runs nothing
    spec, flips = printed[-2].split()  # the capture compared later: OpenVINO's own flips
    assert spec == "openvino:cpu" and int(flips) == int(printed[1].split()[0])
    assert (tmp_path / "openvino.mpc" / "manifest.json").is_file()
    assert printed[-3].startswith("True ")  # keep-fp32 met flips==0
    assert (tmp_path / "keep" / "keep.json").is_file()
    if printed[0] == "bfloat16":  # OV-1 applies: its finding is printed, and the fix's outcome
        assert any(line.startswith("OV-1 openvino:cpu?INFERENCE_PRECISION_HINT=f32")
                   for line in printed)
        assert any(line.startswith("openvino:cpu ") and " 0 " in line for line in printed)
        assert (tmp_path / "out" / "report.json").is_file()


def test_every_option_in_the_readme_exists():
    commands = ("run", "locate", "keep-fp32", "capture", "compare", "report", "lint", "demo", "fp")
    help_text = "".join(CliRunner().invoke(app, [command, "--help"], terminal_width=200).output
                        for command in commands)
    mentioned = set(re.findall(r"`(--[a-z][a-z-]+)", README))
    assert mentioned, "the README names no options?"
    missing = sorted(option for option in mentioned if option not in help_text)
    assert not missing, f"README mentions options no command has: {missing}"


def test_pytest_example_passes_and_fails_as_described(models, data_files, tmp_path,
                                                      monkeypatch):
    import pytest

    blocks = re.findall(r"```python\n(.*?)```", README, re.S)
    example = next(b for b in blocks if "assert_parity" in b)
    code = (example.replace('"model.onnx"', repr(models["binary"]["path"]))
            .replace('"x.npz"', repr(data_files["binary"]["data"])))
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    monkeypatch.chdir(tmp_path)
    namespace["test_openvino_keeps_our_decisions"]()  # FP32-pinned OpenVINO: passes
    failing = (code.replace("openvino:cpu?INFERENCE_PRECISION_HINT=f32",
                            "py:planted_backends:make?rows=0&nudge=0.9")
               .replace("policy=(", "warmup=0, policy=("))  # planted rows count warm-up runs
    exec(compile(failing, "README.md", "exec"), namespace)
    with pytest.raises(AssertionError, match="sample 0"):
        namespace["test_openvino_keeps_our_decisions"]()
