"""The coreml: backend: real coremltools and torch. Core ML executes only on macOS, so elsewhere
the backend converts and inspects the model and an emulation stands in for it (predicted)."""

from __future__ import annotations

import os
import sys
import textwrap

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the coreml backend converts PyTorch models")
ct = pytest.importorskip("coremltools", reason="pip install 'modelparity[coreml]'")

from modelparity.backends import create_backend, parse_spec  # noqa: E402
from modelparity.backends.coreml import (  # noqa: E402
    CoreMLBackend,
    convert_module,
    create,
    inspect_spec,
    parse_options,
    predict_precision,
)
from modelparity.errors import BackendUnavailable, ModelError, SpecError  # noqa: E402
from modelparity.model import prepare_model  # noqa: E402
from modelparity.model.signature import TensorInfo  # noqa: E402
from modelparity.spec import read_spec  # noqa: E402

DEMO = "modelparity.demo.models:breast_cancer_classifier"
on_mac = sys.platform == "darwin"
not_on_mac = pytest.mark.skipif(on_mac, reason="on macOS Core ML executes: no stand-in")

UNSUPPORTED = textwrap.dedent(
    """
    import numpy as np
    import torch


    class Det(torch.nn.Module):
        def forward(self, x):
            return torch.linalg.det(x.reshape(-1, 2, 2)).unsqueeze(1)


    def make():
        return Det(), {"x": np.random.rand(2, 4).astype(np.float32)}
    """
)


class MLP(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = torch.nn.Linear(6, 16)
        self.fc2 = torch.nn.Linear(16, 3)

    def forward(self, x):
        return torch.softmax(self.fc2(torch.relu(self.fc1(x))), dim=-1)


class Pair(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(4, 3)

    def forward(self, a, b):
        return self.fc(a) * b, a.mean(dim=1)


MLP_INPUTS = [TensorInfo("features", "float32", ("batch", 6))]


def _convert(module, inputs=MLP_INPUTS, **kwargs):
    config = {"compute_units": "all", "compute_precision": "fp16", "fmt": "mlprogram",
              "skip_model_load": True, **kwargs}
    return convert_module(module.eval(), inputs, **config)


def _one_line(exc_info) -> str:
    text = str(exc_info.value)
    assert text and "\n" not in text
    return text


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return prepare_model(DEMO, str(tmp_path_factory.mktemp("coreml_demo")))


# -- spec ---------------------------------------------------------------------------------------


def test_spec_defaults_and_choices():
    assert parse_options(parse_spec("coreml")) == (
        "all", {"compute_precision": "fp16", "format": "mlprogram"})
    assert parse_options(parse_spec("coreml:CPU_AND_NE?compute_precision=FP32")) == (
        "cpu_and_ne", {"compute_precision": "fp32", "format": "mlprogram"})
    assert parse_options(parse_spec("coreml:cpu_only?format=neuralnetwork")) == (
        "cpu_only", {"compute_precision": None, "format": "neuralnetwork"})
    backend = create(parse_spec("coreml:cpu_and_gpu"))
    assert isinstance(backend, CoreMLBackend) and backend.compute_units == "cpu_and_gpu"
    info = backend.describe()  # before activation: the configuration, no inspection yet
    assert info["runtime"] == "coreml" and info["coremltools"] == ct.__version__
    assert info["compute_precision"] == "fp16" and info["format"] == "mlprogram"
    assert info["inspection"] is None and "predicted" not in info


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("coreml:gpu", "unknown compute units 'gpu' (expected one of: all, cpu_only, "
                       "cpu_and_gpu, cpu_and_ne)"),
        ("coreml:all?precision=fp16", "unknown option 'precision' (known options: "
                                      "compute_precision=<fp16|fp32>, "
                                      "format=<mlprogram|neuralnetwork>)"),
        ("coreml:all?compute_precision=int8", "compute_precision=int8 is not one of: fp16, fp32"),
        ("coreml:all?format=onnx", "format=onnx is not one of: mlprogram, neuralnetwork"),
        ("coreml:all?format=neuralnetwork&compute_precision=fp32",
         "compute_precision applies to format=mlprogram only"),
    ],
)
def test_bad_spec_is_one_line_spec_error(text, expected):
    spec = read_spec(text)  # the syntax only: parse_spec refuses these before create() does
    with pytest.raises(SpecError) as exc_info:
        create(parse_spec(text))
    message = _one_line(exc_info)
    assert message.startswith(spec.text + ":")
    assert expected in message


# -- static inspection --------------------------------------------------------------------------


def test_inspection_counts_fp16_ops_only_for_fp16():
    torch.manual_seed(0)
    module = MLP()
    half = inspect_spec(_convert(module).get_spec(), compute_units="all",
                        compute_precision="fp16", version=ct.__version__)
    assert half["format"] == "mlprogram" and half["typed"] is True
    assert half["ops"] == {"fp16": 4, "fp32": 0}  # const and cast ops are not counted
    assert half["fp16_op_types"] == {"linear": 2, "relu": 1, "softmax": 1}
    assert half["casts"] == 2 and half["cast_to"] == {"fp16": 1, "fp32": 1}
    assert half["computes_in"] == "fp16" and half["coremltools"] == ct.__version__
    assert predict_precision(half) == "fp16"

    full = inspect_spec(_convert(module, compute_precision="fp32").get_spec(),
                        compute_units="cpu_and_ne", compute_precision="fp32")
    assert full["ops"]["fp16"] == 0 and full["ops"]["fp32"] == half["ops"]["fp16"]
    assert full["fp16_op_types"] == {} and full["casts"] == 0
    assert full["computes_in"] == "fp32"
    assert predict_precision(full) == "fp32"  # the FP16-only Neural Engine never takes it


def test_inspection_of_a_neuralnetwork_follows_the_compute_units():
    spec = _convert(MLP(), fmt="neuralnetwork", compute_precision=None).get_spec()
    nn = inspect_spec(spec, compute_units="cpu_only", compute_precision=None)
    assert nn["format"] == "neuralnetwork" and nn["typed"] is False
    assert nn["layers"] == len(spec.neuralNetwork.layers) >= 3
    assert nn["layer_types"]["innerProduct"] == 2 and "ops" not in nn
    assert predict_precision(nn) == "fp32"
    assert predict_precision({**nn, "compute_units": "cpu_and_gpu"}) == "fp16"
    assert predict_precision({**nn, "compute_units": "all"}) == "fp16"


def test_exported_program_module_converts_with_both_outputs():
    batch = torch.export.Dim("batch")
    program = torch.export.export(Pair().eval(), (torch.rand(2, 4), torch.rand(2, 3)),
                                  dynamic_shapes=({0: batch}, {0: batch}))
    inputs = [TensorInfo("a", "float32", ("batch", 4)), TensorInfo("b", "float32", ("batch", 3))]
    spec = convert_module(program.module(), inputs, compute_units="all",
                          compute_precision="fp32", fmt="mlprogram",
                          skip_model_load=True).get_spec()
    assert [i.name for i in spec.description.input] == ["a", "b"]
    assert len(spec.description.output) == 2
    shape = spec.description.input[0].type.multiArrayType.shapeRange.sizeRanges
    assert (shape[0].lowerBound, shape[0].upperBound) == (1, 8192)  # flexible batch


def test_unsupported_op_is_one_line_model_error():
    class Det(torch.nn.Module):
        def forward(self, x):
            return torch.linalg.det(x.reshape(-1, 2, 2))

    with pytest.raises(ModelError) as exc_info:
        _convert(Det(), [TensorInfo("x", "float32", ("batch", 4))])
    message = _one_line(exc_info)
    assert f"coremltools {ct.__version__} could not convert" in message
    assert "linalg_det" in message


# -- the backend --------------------------------------------------------------------------------


def test_onnx_only_model_is_rejected(models, tmp_path):
    model = prepare_model(models["binary"]["path"], str(tmp_path))
    backend = create(parse_spec("coreml"))
    with pytest.raises(BackendUnavailable) as exc_info:
        backend.activate(model)
    message = _one_line(exc_info)
    assert message.startswith("coreml:all: coremltools has no ONNX converter")
    assert "ort:coreml" in message and "module:factory" in message
    assert not backend.active


def test_conversion_failure_through_the_backend(tmp_path):
    (tmp_path / "mp_coreml_unsupported.py").write_text(UNSUPPORTED)
    old = os.getcwd()
    os.chdir(tmp_path)
    try:
        model = prepare_model("mp_coreml_unsupported:make", str(tmp_path / "work"))
        with pytest.raises(ModelError) as exc_info:
            create(parse_spec("coreml:cpu_only")).activate(model)
    finally:
        os.chdir(old)
    message = _one_line(exc_info)
    assert message.startswith("coreml:cpu_only: mp_coreml_unsupported:make: coremltools")
    assert "linalg_det" in message


@not_on_mac
@pytest.mark.parametrize(
    ("text", "stand_in", "precision"),
    [
        ("coreml", "emulate:fp16", "fp16"),
        ("coreml:cpu_and_ne?compute_precision=fp32", "ort:cpu", "fp32"),
        ("coreml:cpu_only?format=neuralnetwork", "ort:cpu", "fp32"),
        ("coreml:cpu_and_gpu?format=neuralnetwork", "emulate:fp16", "fp16"),
    ],
)
def test_runs_as_a_predicted_stand_in_off_macos(demo, text, stand_in, precision):
    backend = create_backend(parse_spec(text))
    feed = {"x": np.random.default_rng(1).normal(10.0, 5.0, (9, 30)).astype(np.float32)}
    with create_backend(parse_spec(stand_in)) as emulation:
        emulation.activate(demo)
        want = emulation.infer(feed)
    with backend:
        backend.activate(demo)
        got = backend.infer(feed)
        info = backend.describe()
    assert list(got) == ["output"] and got["output"].shape == (9, 1)
    np.testing.assert_array_equal(got["output"], want["output"])  # the stand-in's own output

    assert info["runtime"] == "coreml" and info["platform"] == sys.platform
    assert info["batch"] == "flexible 1..8192"
    predicted = info["predicted"]
    assert predicted["measured"] is False and predicted["stand_in"] == stand_in
    assert predicted["precision"] == precision
    assert predicted["reason"].startswith(f"Core ML cannot execute on {sys.platform}")
    assert predicted["basis"] == "static inspection of the model coremltools converted"
    assert info["precision"]["predicted"] == {"fp16": "float16", "fp32": "float32"}[precision]
    assert info["stand_in_description"]["precision"]["reported"] == info["precision"]["predicted"]
    inspection = info["inspection"]
    assert predicted["inspection"] == inspection
    assert inspection["compute_units"] == backend.compute_units
    if inspection["format"] == "mlprogram":
        assert (inspection["ops"]["fp16"] > 0) == (precision == "fp16")
        assert inspection["ops"]["fp32"] == (0 if precision == "fp16" else 6)
    else:
        assert inspection["layers"] > 0 and info["compute_precision"] is None
    assert backend.stand_in is None and not backend.active  # deactivated


@not_on_mac
def test_audit_end_to_end_reports_both_as_predicted():
    import modelparity

    specs = ["coreml:all", "coreml:all?compute_precision=fp32"]
    result = modelparity.audit(DEMO, specs, samples=300, fingerprint=False)
    assert result.ok, [b.error for b in result.backends]
    by_spec = {r.spec: r for r in result.candidates}
    assert sorted(by_spec) == sorted(specs)
    half, full = by_spec[specs[0]], by_spec[specs[1]]
    for one in (half, full):
        assert one.description["runtime"] == "coreml"
        assert one.description["predicted"]["measured"] is False
    assert half.description["predicted"]["stand_in"] == "emulate:fp16"
    assert half.description["inspection"]["ops"]["fp16"] > 0
    assert full.description["predicted"]["stand_in"] == "ort:cpu"
    assert full.description["inspection"]["ops"]["fp16"] == 0
    assert full.flips.count == 0 and full.max_abs == 0.0
    assert half.max_abs > 0.0

@pytest.mark.skipif(not on_mac, reason="Core ML executes only on macOS; elsewhere it is "
                                       "predicted (see the stand-in tests)")
def test_predicts_on_macos(demo):
    feed = {"x": np.random.default_rng(1).normal(10.0, 5.0, (9, 30)).astype(np.float32)}
    with create_backend(parse_spec("torch:cpu")) as reference:
        reference.activate(demo)
        want = reference.infer(feed)
    for text, tolerance in (("coreml:cpu_only?compute_precision=fp32", 1e-5),
                            ("coreml:all", 1e-2)):
        with create_backend(parse_spec(text)) as backend:
            backend.activate(demo)
            got = backend.infer(feed)
            info = backend.describe()
        assert "predicted" not in info and info["inspection"]["format"] == "mlprogram"
        assert list(got) == ["output"] and got["output"].shape == (9, 1)
        np.testing.assert_allclose(got["output"], want["output"], atol=tolerance)
