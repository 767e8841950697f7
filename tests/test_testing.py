"""modelparity.testing.assert_parity: a failing pytest assertion that lists the flipped samples,
and a pass that returns the audit, on real ONNX Runtime workers."""

from __future__ import annotations

import numpy as np
import pytest

from modelparity.policy import PolicyError
from modelparity.result import AuditResult
from modelparity.testing import assert_parity

AGREEING = "ort:cpu?intra_op_num_threads=1"


def test_assert_parity_fails_listing_the_flipped_samples(models, data_files):
    import onnxruntime as ort

    entry = models["binary"]
    session = ort.InferenceSession(entry["path"], providers=["CPUExecutionProvider"])
    prob = session.run(None, {"x": entry["x"]})[0][:, 0]
    row = int(np.flatnonzero(prob < 0.4)[0])
    spec = f"py:planted_backends:make?rows={row}&nudge=0.6"
    with pytest.raises(AssertionError) as caught:
        assert_parity(entry["path"], [spec, AGREEING], data_files["binary"]["data"],
                      policy=["flips>0", "max_abs>10"], task="binary", warmup=0)
    message = str(caught.value)
    lines = message.splitlines()
    assert lines[0].startswith("modelparity: 1 policy check(s) failed for ")
    assert f"  {spec}: flips>0 failed (flips = 1)" in lines
    assert f"{spec}: 1 of {len(prob)} decisions flipped, closest to the boundary first:" in lines
    flip_line = next(line for line in lines if line.startswith(f"  sample {row}: "))
    assert f"reference score {prob[row]:.7f}" in flip_line
    assert f"candidate score {prob[row] + 0.6:.7f}" in flip_line
    assert "margin" in flip_line and "0 -> 1" in flip_line
    # the fingerprint's evidence for the precision it really used (the planted one is FP32)
    evidence = next(line for line in lines if line.startswith(f"{spec}: precision reported "))
    assert "measured " in evidence and "round trip" in evidence
    assert AGREEING not in message  # it agreed: not part of the failure
    assert "max_abs>10" not in message


def test_assert_parity_passes_and_returns_the_result(models, data_files):
    result = assert_parity(models["binary"]["path"], AGREEING, data_files["binary"]["data"],
                           policy="flips>0, max_abs>1e-6", task="binary", warmup=0,
                           fingerprint=False, labels=data_files["binary"]["labels"])
    assert isinstance(result, AuditResult)
    assert result.candidates[0].flips.count == 0


def test_assert_parity_fails_when_a_backend_does_not_run(models, data_files):
    with pytest.raises(AssertionError, match="planted failure while loading"):
        assert_parity(models["binary"]["path"], ["py:planted_backends:make?fail=load"],
                      data_files["binary"]["data"], task="binary", warmup=0,
                      fingerprint=False)


def test_assert_parity_rejects_a_malformed_policy_before_running():
    with pytest.raises(PolicyError, match="flips>>0"):
        assert_parity("does-not-exist.onnx", ["ort:cpu"], policy="flips>>0")
