"""TorchBackend runs the saved weights / the .pt2 program, and agrees with ONNX Runtime."""

from __future__ import annotations

import os
import textwrap

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

from modelparity.backends import parse_spec  # noqa: E402
from modelparity.backends.torch import TorchBackend, create  # noqa: E402
from modelparity.errors import BackendUnavailable, ModelError, SpecError  # noqa: E402
from modelparity.model import prepare_model  # noqa: E402

FACTORY = textwrap.dedent(
    """
    import numpy as np
    import torch


    class MLP(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = torch.nn.Linear(6, 32)
            self.fc2 = torch.nn.Linear(32, 4)

        def forward(self, x):
            return self.fc2(torch.relu(self.fc1(x)))


    def make():
        # deliberately NOT seeded: only the saved weights make torch and ONNX agree
        return MLP(), {"features": np.random.rand(2, 6).astype(np.float32)}
    """
)


class Pair(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 3)

    def forward(self, a, b):
        return self.fc(a) * b, a.mean(dim=1)


@pytest.fixture(scope="module")
def mlp(tmp_path_factory):
    root = tmp_path_factory.mktemp("torch_factory")
    (root / "mp_torch_backend_factory.py").write_text(FACTORY)
    old = os.getcwd()
    os.chdir(root)
    try:
        yield prepare_model("mp_torch_backend_factory:make", str(root / "work"))
    finally:
        os.chdir(old)


@pytest.fixture(scope="module")
def pt2(tmp_path_factory):
    root = tmp_path_factory.mktemp("pt2")
    module = Pair().eval()
    batch = torch.export.Dim("batch")
    program = torch.export.export(
        module,
        (torch.rand(2, 4), torch.rand(2, 3)),
        dynamic_shapes=({0: batch}, {0: batch}),
    )
    path = root / "pair.pt2"
    torch.export.save(program, str(path))
    with pytest.raises(ModelError, match="--allow-pickle"):
        prepare_model(str(path), str(root / "work"))  # never unpickled unless asked
    return prepare_model(str(path), str(root / "work"), allow_pickle=True)


def _ort(path, feed):
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, feed), strict=True))


def test_factory_torch_matches_onnxruntime(mlp):
    backend = create(parse_spec("torch:cpu"))
    assert isinstance(backend, TorchBackend)
    with backend:
        backend.activate(mlp)
        for batch in (3, 7):
            feed = {"features": np.random.rand(batch, 6).astype(np.float32)}
            got = backend.infer(feed)
            want = _ort(mlp.onnx_path, feed)
            assert list(got) == ["output"] == list(want)
            assert got["output"].shape == (batch, 4) and got["output"].dtype == np.float32
            np.testing.assert_allclose(got["output"], want["output"], rtol=1e-5, atol=1e-5)
        info = backend.describe()
    assert info["runtime"] == "torch" and info["version"] == torch.__version__
    assert info["device"] == "cpu" and info["options"] == {}
    assert info["precision"]["reported"] == "float32"
    assert info["precision_flags"]["float32_matmul_precision"] in ("highest", "high", "medium")
    assert "cuda_matmul_allow_tf32" in info["precision_flags"]
    assert "device_name" not in info
    assert not backend.active


def test_pt2_torch_matches_onnxruntime(pt2):
    ts = pt2.torch_source
    assert ts.kind == "exported_program" and ts.weights is None
    assert ts.input_names == ("a", "b") and ts.output_names == ("output_0", "output_1")
    assert pt2.signature.input_names == ["a", "b"]
    assert isinstance(pt2.signature.inputs[0].shape[0], str)
    assert "dynamic batch" in pt2.exporter
    backend = create(parse_spec("torch:cpu?threads=1&matmul_precision=highest&allow_tf32=0"))
    backend.activate(pt2)
    try:
        for batch in (3, 7):
            feed = {
                "a": np.random.rand(batch, 4).astype(np.float32),
                "b": np.random.rand(batch, 3).astype(np.float32),
            }
            got = backend.infer(feed)
            want = _ort(pt2.onnx_path, feed)
            assert list(got) == list(want) == ["output_0", "output_1"]
            for name in got:
                np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-5)
        info = backend.describe()
        assert info["options"] == {"threads": "1", "matmul_precision": "highest", "allow_tf32": "0"}
        assert info["precision_flags"]["float32_matmul_precision"] == "highest"
        assert info["precision_flags"]["cuda_matmul_allow_tf32"] is False
    finally:
        backend.deactivate()


def test_onnx_only_model_is_unavailable(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])],
    )
    path = tmp_path / "relu.onnx"
    onnx.save_model(helper.make_model(graph), str(path))
    model = prepare_model(str(path), str(tmp_path))
    backend = create(parse_spec("torch:cpu"))
    with pytest.raises(BackendUnavailable, match="needs a PyTorch model") as info:
        backend.activate(model)
    assert str(path) in str(info.value) and not backend.active


def test_unknown_option():
    with pytest.raises(SpecError) as info:
        create(parse_spec("torch:cpu?fast=1"))
    msg = str(info.value)
    assert "'fast'" in msg
    assert all(k in msg for k in ("matmul_precision", "allow_tf32", "threads"))


@pytest.mark.parametrize(
    "text", ["torch:cpu?matmul_precision=low", "torch:cpu?allow_tf32=maybe", "torch:cpu?threads=0"]
)
def test_bad_option_values(text):
    with pytest.raises(SpecError):
        create(parse_spec(text))


def test_unknown_device():
    with pytest.raises(SpecError, match="unknown device 'tpu'"):
        create(parse_spec("torch:tpu"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_cuda_unavailable():
    with pytest.raises(BackendUnavailable) as info:
        create(parse_spec("torch:cuda"))
    msg = str(info.value)
    assert msg == f"torch:cuda: CUDA is not available here (torch {torch.__version__})"


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="MPS is present")
def test_mps_unavailable():
    with pytest.raises(BackendUnavailable, match="MPS is not available"):
        create(parse_spec("torch:mps"))
