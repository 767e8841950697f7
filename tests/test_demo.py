"""`modelparity demo` as a new user runs it: both models audited, OpenVINO's default measured."""

from __future__ import annotations

import json

from rich.console import Console

from modelparity.demo import run_demo


def test_demo_measures_what_openvino_reports(tmp_path):
    console = Console(record=True, width=130)
    assert run_demo(str(tmp_path), console) == 0
    text = console.export_text()
    assert "Decisions flipped on" in text or "No decision flipped" in text
    for name in ("mlp", "cancer"):
        report = json.loads((tmp_path / name / "report.json").read_text())
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
