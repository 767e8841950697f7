"""OpenVINO IR models as input (issue 15, part 1): an IR saved with `openvino.save_model`'s
default stores the FP32 weights as FP16. It is audited against the ONNX model it was made from
(`--original`), flagged from its graph (rule OV-7) and the fix, applied, is measured."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import modelparity
from modelparity.cli import app
from modelparity.model.ir import fp16_compressed

pytestmark = pytest.mark.skipif(importlib.util.find_spec("openvino") is None,
                                reason="OpenVINO is not installed (pip install openvino)")

# Pinned to f32 so that only the weights differ: on CPUs with native BF16 OpenVINO would
# otherwise compute in BF16 (rule OV-1), a second and larger effect.
OV = "openvino:cpu?INFERENCE_PRECISION_HINT=f32"


@pytest.fixture(scope="module")
def saved(models, tmp_path_factory):
    """The breast-cancer model as ONNX, as the IR save_model writes by default and with
    compress_to_fp16=False, and inputs near its decision boundary: pairs of real samples of
    the two classes, mixed where the logistic model's logit is ~0 (its logit is linear along
    the segment), where rounding the weights to FP16 moves decisions."""
    import onnx
    import openvino as ov

    folder = tmp_path_factory.mktemp("ir")
    entry = models["binary"]
    onnx_path = entry["path"]
    ov.save_model(ov.Core().read_model(onnx_path), str(folder / "default.xml"))
    ov.save_model(ov.Core().read_model(onnx_path), str(folder / "fp32.xml"),
                  compress_to_fp16=False)
    graph = onnx.load(onnx_path).graph
    weights = {t.name: onnx.numpy_helper.to_array(t) for t in graph.initializer}

    def logit(x):
        return ((x - weights["mean"]) / weights["scale"]) @ weights["W"][:, 0] + weights["b"][0]

    x, y = entry["x"].astype(np.float64), entry["y"]
    rng = np.random.default_rng(0)
    a = x[rng.choice(np.flatnonzero(y == 0), 4000)]
    b = x[rng.choice(np.flatnonzero(y == 1), 4000)]
    la, lb = logit(a), logit(b)
    t = (la / (la - lb))[:, None] + rng.normal(0, 1e-4, (4000, 1))
    near = (a + t * (b - a)).astype(np.float32)
    data = folder / "near.npz"
    np.savez(data, x=near)
    return {"onnx": onnx_path, "default": str(folder / "default.xml"),
            "fp32": str(folder / "fp32.xml"), "data": str(data)}


def test_the_fp16_weights_are_read_from_the_graph(saved):
    """The default IR holds the model's weights (mean, scale: 30 each; W: 30 x 1) as FP16
    constants, each with a Convert to f32 (OpenVINO 2026.4 leaves the one-value bias FP32);
    the one saved with compress_to_fp16=False holds none."""
    constants, values = fp16_compressed(saved["default"])
    assert constants >= 3 and values >= 90
    assert fp16_compressed(saved["fp32"]) == (0, 0)


def test_an_ir_saved_with_the_default_is_flagged_and_its_fix_removes_the_flips(saved):
    result = modelparity.audit(saved["default"], [OV], saved["data"], original=saved["onnx"],
                               task="binary", fix=True, fingerprint=False)
    assert result.model["source"] == saved["onnx"]  # the ONNX is audited; the IR is run
    ir = result.candidates[0]
    assert ir.ok and "ir=" in ir.spec
    assert ir.description["weights"]["fp16_constants"] == fp16_compressed(saved["default"])[0]
    finding = next(f for f in ir.findings if f.rule.id == "OV-7")
    assert finding.fixed_spec is not None and "compress_to_fp16=false" in finding.fixed_spec
    assert ir.flips.count > 0  # the weights rounded once, on inputs near the boundary
    fixed = result.backend(ir.fixed_by)
    assert fixed.ok and fixed.flips.count == 0
    assert fixed.description["weights"]["fp16_constants"] == 0
    assert fixed.max_abs < 1e-5 < ir.max_abs  # FP32 noise once the weights are FP32
    outcome = result.fixes[0]
    assert outcome.rules == ["OV-7"]
    assert outcome.before["flips"] == ir.flips.count and outcome.after["flips"] == 0


def test_an_ir_saved_uncompressed_is_silent(saved):
    result = modelparity.audit(saved["fp32"], [OV], saved["data"], original=saved["onnx"],
                               task="binary", fingerprint=False)
    ir = result.candidates[0]
    assert ir.ok and "OV-7" not in [f.rule.id for f in ir.findings]
    assert ir.flips.count == 0 and ir.max_abs < 1e-5


def test_lint_flags_the_ir_without_running_it(saved):
    flagged = CliRunner().invoke(app, ["lint", "-b", f"{OV}&ir={saved['default']}"],
                                 terminal_width=200)
    assert flagged.exit_code == 1, flagged.output
    assert "OV-7" in flagged.stdout and "compress_to_fp16=False" in flagged.stdout
    clean = CliRunner().invoke(app, ["lint", "-b", f"{OV}&ir={saved['fp32']}"],
                               terminal_width=200)
    assert clean.exit_code == 0, clean.output


def test_the_ir_on_the_command_line(saved):
    outcome = CliRunner().invoke(app, [
        "run", saved["default"], "--original", saved["onnx"], "-b", OV, "--data",
        saved["data"], "--no-fingerprint"], terminal_width=220)
    assert outcome.exit_code == 0, outcome.output
    assert "OV-7" in outcome.stdout and "about weights stored as FP16" in outcome.stdout


def _billion_laughs(path):
    """An IR whose name expands to 10^11 characters: refused, never expanded."""
    lines = ['<?xml version="1.0"?>', "<!DOCTYPE net [", '<!ENTITY e0 "ha">']
    lines += [f'<!ENTITY e{i} "{("&e" + str(i - 1) + ";") * 10}">' for i in range(1, 12)]
    lines += ["]>", '<net name="&e11;" version="11"><layers/><edges/></net>']
    path.write_text("\n".join(lines))
    path.with_suffix(".bin").write_bytes(b"")
    return str(path)


@pytest.mark.parametrize("case", ["ir alone", "no such ir", "no bin", "original is an ir",
                                  "hostile xml"])
def test_bad_ir_input_is_one_line(saved, tmp_path, case):
    if case == "ir alone":
        args, needle = ["run", saved["default"], "-b", OV], "give the ONNX model it was made from"
    elif case == "no such ir":
        args, needle = (["run", saved["onnx"], "-b", f"{OV}&ir={tmp_path / 'none.xml'}"],
                        "none.xml: no such file")
    elif case == "no bin":
        lonely = tmp_path / "lonely.xml"
        lonely.write_text(Path(saved["default"]).read_text())
        args, needle = (["run", str(lonely), "--original", saved["onnx"], "-b", OV],
                        "its weights lonely.bin are not beside it")
    elif case == "original is an ir":
        args, needle = (["run", saved["default"], "--original", saved["fp32"], "-b", OV],
                        "expected the ONNX file the IR was made from")
    else:
        hostile = _billion_laughs(tmp_path / "laughs.xml")
        args, needle = ["lint", "-b", f"{OV}&ir={hostile}"], "not a readable OpenVINO IR"
    outcome = CliRunner().invoke(app, args, terminal_width=400)
    assert outcome.exit_code == 2, outcome.output
    assert needle in outcome.output
    assert len(outcome.output.strip().splitlines()) == 1
    assert "Traceback" not in outcome.output


def test_a_qdq_model_is_seen_as_quantized_from_the_graph_openvino_compiles(models, tmp_path):
    """Rule OV-8 (an INT8 QDQ model under the GPU's default f16) needs to know the model is
    quantized: the OpenVINO backend counts the FakeQuantize ops its QuantizeLinear /
    DequantizeLinear pairs become, and reports `quantized`; a float model is not."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from modelparity.backends.openvino import reported_options

    weight = numpy_helper.from_array(np.random.default_rng(0).normal(size=(8, 4))
                                     .astype(np.float32), "W")
    scale = numpy_helper.from_array(np.array(0.05, np.float32), "s")
    zero = numpy_helper.from_array(np.array(0, np.int8), "z")
    graph = helper.make_graph(
        [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"]),
         helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"]),
         helper.make_node("MatMul", ["xd", "W"], ["y"])], "qdq",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])], [weight, scale, zero])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, tmp_path / "qdq.onnx")
    quantized = modelparity.audit(str(tmp_path / "qdq.onnx"), [OV], task="regression",
                                  samples=32, fingerprint=False).candidates[0]
    plain = modelparity.audit(models["binary"]["path"], [OV], samples=32,
                              fingerprint=False).candidates[0]
    assert quantized.ok and quantized.description["fake_quantize"] >= 1
    assert reported_options(quantized.description)["quantized"] == "true"
    assert reported_options(plain.description)["quantized"] == "false"
