"""Two FP32 runtimes of a deep conv net can differ by more than 1e-3 (issue 11's second failure
shape): OpenVINO pinned to f32 against ONNX Runtime on a 214-class classifier was called tf32.
Here the net is built so that its logits are small differences of large activations (ReLU
layers with a large bias, a classifier orthogonal to their mean): every FP32 implementation's
summation order shows in the output at the scale of a BF16 or TF32 rounding. The verdict must
be fp32 or "inconclusive", never a downcast; the FP32 band comes from several FP32 runs."""

from __future__ import annotations

import textwrap

import pytest

pytest.importorskip("torch")
pytest.importorskip("openvino")

import modelparity

FACTORY = textwrap.dedent(
    """
    import numpy as np
    import torch


    class DeepConv(torch.nn.Module):
        def __init__(self, depth=20, channels=16, classes=214):
            super().__init__()
            self.convs = torch.nn.ModuleList(
                torch.nn.Conv2d(3 if i == 0 else channels, channels, 3, padding=1)
                for i in range(depth))
            for conv in self.convs:
                torch.nn.init.normal_(conv.weight, 0.0, (2.0 / (9 * conv.in_channels)) ** 0.5)
                torch.nn.init.constant_(conv.bias, 100.0)  # a large common offset
            self.fc = torch.nn.Linear(channels, classes)

        def features(self, x):
            for conv in self.convs:
                x = torch.relu(conv(x))
            return x.mean(dim=(2, 3))

        def forward(self, x):
            return torch.softmax(self.fc(self.features(x)), dim=1)


    def make():
        torch.manual_seed(0)
        model = DeepConv().eval()
        with torch.no_grad():
            x = torch.from_numpy(
                np.random.default_rng(1).normal(size=(16, 3, 32, 32)).astype(np.float32))
            f = model.features(x)
            mean = f.mean(0)
            w = model.fc.weight
            w -= (w @ mean)[:, None] * mean[None, :] / (mean @ mean)  # the offset cancels
            model.fc.bias.zero_()
            w *= 3.0 / model.fc(f).std(0).mean()  # logits spread by about 3 between samples
        return model, {"x": np.random.default_rng(0).normal(size=(2, 3, 32, 32))
                       .astype(np.float32)}
    """
)

OPENVINO_F32 = "openvino:cpu?INFERENCE_PRECISION_HINT=f32"


def test_two_fp32_runtimes_that_differ_by_more_than_1e_3_are_not_called_a_downcast(
        tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "deep_conv_factory.py").write_text(FACTORY)
    result = modelparity.audit("deep_conv_factory:make", [OPENVINO_F32, "torch:cpu"], None,
                               task="multiclass", samples=256, batch_size=64, warmup=0)
    by_spec = {c.spec: c for c in result.candidates}
    openvino = by_spec[OPENVINO_F32]
    assert openvino.precision == "float32"  # pinned, and read back from the compiled model
    worst = max(c.errors["output"].max_abs for c in result.candidates)
    assert worst > 1e-3  # the failure shape: FP32 against FP32, yet far beyond one ulp
    for candidate in result.candidates:
        verdict = candidate.fingerprint.verdict
        assert verdict in ("fp32", "inconclusive"), (candidate.spec, candidate.fingerprint.evidence)
    # each is measured against the other FP32 runs, never against itself
    assert "FP32 runs" in openvino.fingerprint.evidence
    yardsticks = set(result.profiles)
    assert {"fp32", "fp32 batch", "fp32 openvino", "fp32 torch"} <= yardsticks
