"""prepare_model / read_signature: real ONNX files, real torch export in a spawned process."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from modelparity.errors import ModelError
from modelparity.model import prepare_model, read_signature

FACTORIES = textwrap.dedent(
    """
    import numpy as np
    import torch


    class MLP(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = torch.nn.Linear(6, 16)
            self.fc2 = torch.nn.Linear(16, 4)

        def forward(self, x):
            return self.fc2(torch.relu(self.fc1(x)))


    class TwoHeads(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.body = torch.nn.Linear(5, 8)
            self.head = torch.nn.Linear(8, 3)

        def forward(self, x, bias):
            h = torch.tanh(self.body(x))
            return self.head(h) + bias, h.sum(dim=1)


    def make_mlp():
        # deliberately NOT seeded: every call builds different weights
        return MLP(), {"features": np.random.rand(2, 6).astype(np.float32)}


    def make_two_heads():
        module = TwoHeads()
        module.example_inputs = {"x": torch.rand(2, 5), "bias": torch.rand(2, 3)}
        return module


    class FixedBatch(torch.nn.Module):
        def forward(self, x):
            return x.reshape(2, 3) * 2


    class Branchy(torch.nn.Module):
        def forward(self, x):
            if x.sum() > 0:  # data-dependent control flow: torch.export refuses it
                return x * 2
            return x


    def make_fixed_batch():
        return FixedBatch(), {"x": np.ones((2, 3), np.float32)}


    def make_branchy():
        return Branchy(), {"x": np.ones((2, 3), np.float32)}


    def wrong_return():
        return 42


    def wrong_examples():
        return MLP(), [np.zeros((2, 6), np.float32)]
    """
)


@pytest.fixture(scope="module")
def factory_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("factories")
    (root / "mp_test_factories.py").write_text(FACTORIES)
    old = os.getcwd()
    os.chdir(root)
    try:
        yield root
    finally:
        os.chdir(old)


@pytest.fixture(scope="module")
def mlp(factory_dir, tmp_path_factory):
    return prepare_model("mp_test_factories:make_mlp", str(tmp_path_factory.mktemp("mlp")))


def _ort(path: str, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return session.run(None, feed)


def _tiny_onnx(path, *, external: bool = False) -> None:
    weight = numpy_helper.from_array(np.arange(12, dtype=np.float32).reshape(4, 3), "W")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"])],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
        initializer=[weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    if external:
        onnx.save_model(
            model,
            str(path),
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location="tiny.weights",
            size_threshold=0,
        )
    else:
        onnx.save_model(model, str(path))


# -- ONNX files -----------------------------------------------------------------------------


def test_onnx_file(tmp_path):
    path = tmp_path / "tiny.onnx"
    _tiny_onnx(path)
    prepared = prepare_model(str(path), str(tmp_path / "work"))
    assert prepared.onnx_path == str(path.resolve())
    assert prepared.torch_source is None and prepared.exporter is None
    sig = prepared.signature
    assert [(i.name, i.dtype, i.shape) for i in sig.inputs] == [("x", "float32", ("N", 4))]
    assert [(o.name, o.dtype, o.shape) for o in sig.outputs] == [("y", "float32", ("N", 3))]


def test_initializer_inputs_are_excluded(tmp_path):
    path = tmp_path / "old_style.onnx"
    _tiny_onnx(path)
    model = onnx.load(str(path))
    # IR < 4 style: initializers also listed as graph inputs
    model.graph.input.append(helper.make_tensor_value_info("W", TensorProto.FLOAT, [4, 3]))
    onnx.save_model(model, str(path))
    assert read_signature(str(path)).input_names == ["x"]


def test_dims_fixed_symbolic_unknown(tmp_path):
    graph = helper.make_graph(
        [helper.make_node("Identity", ["ids"], ["out"])],
        "dims",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", 7, None])],
        [helper.make_tensor_value_info("out", TensorProto.INT64, None)],
    )
    path = tmp_path / "dims.onnx"
    onnx.save_model(helper.make_model(graph), str(path))
    sig = read_signature(str(path))
    assert sig.inputs[0].shape == ("batch", 7, None)
    assert sig.inputs[0].dtype == "int64"
    assert sig.outputs[0].shape == ()


def test_external_data(tmp_path):
    path = tmp_path / "ext" / "tiny.onnx"
    path.parent.mkdir()
    _tiny_onnx(path, external=True)
    assert (path.parent / "tiny.weights").is_file()
    prepared = prepare_model(str(path), str(tmp_path / "work"))
    assert prepared.signature.input_names == ["x"]
    assert prepared.signature.outputs[0].shape == ("N", 3)
    x = np.ones((2, 4), np.float32)
    np.testing.assert_allclose(
        _ort(prepared.onnx_path, {"x": x})[0], x @ np.arange(12.0).reshape(4, 3)
    )

    (path.parent / "tiny.weights").unlink()
    with pytest.raises(ModelError) as info:
        prepare_model(str(path), str(tmp_path / "work"))
    msg = str(info.value)
    assert "tiny.weights" in msg and str(path) in msg and "\n" not in msg


def test_corrupt_onnx(tmp_path):
    path = tmp_path / "broken.onnx"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(ModelError) as info:
        prepare_model(str(path), str(tmp_path / "work"))
    msg = str(info.value)
    assert str(path) in msg and "not a valid ONNX model" in msg
    assert "\n" not in msg


def test_text_file_is_not_onnx(tmp_path):
    path = tmp_path / "notes.onnx"
    path.write_text("hello, I am not a model\n" * 20)
    with pytest.raises(ModelError, match="not a valid ONNX model") as info:
        prepare_model(str(path), str(tmp_path / "work"))
    assert "\n" not in str(info.value)


def test_missing_files(tmp_path):
    with pytest.raises(ModelError, match=r"model\.onnx: no such file"):
        prepare_model("model.onnx", str(tmp_path))
    with pytest.raises(ModelError, match=r"missing\.pt2: no such file"):
        prepare_model(str(tmp_path / "missing.pt2"), str(tmp_path))
    with pytest.raises(ModelError, match="expected an ONNX file") as info:
        prepare_model(str(tmp_path / "nothing_here"), str(tmp_path))
    assert "module:factory" in str(info.value) and ".pt2" in str(info.value)


# -- PyTorch entry points -------------------------------------------------------------------


def test_factory_export(mlp, tmp_path_factory):
    ts = mlp.torch_source
    assert ts is not None and ts.kind == "factory"
    assert ts.entry == "mp_test_factories:make_mlp"
    assert ts.input_names == ("features",) and ts.output_names == ("output",)
    assert os.path.isfile(ts.weights) and ts.weights.endswith("weights.safetensors")
    assert os.path.isfile(mlp.onnx_path) and mlp.onnx_path.endswith("model.onnx")
    sig = mlp.signature
    assert sig.input_names == ["features"] and sig.output_names == ["output"]
    assert sig.inputs[0].dtype == "float32"
    assert isinstance(sig.inputs[0].shape[0], str) and sig.inputs[0].shape[1] == 6
    assert mlp.exporter.startswith("torch.onnx.export(dynamo=True) torch ")
    assert "onnxscript" in mlp.exporter and "opset" in mlp.exporter
    assert mlp.exporter.endswith("dynamic batch")
    for batch in (3, 7):
        out = _ort(mlp.onnx_path, {"features": np.random.rand(batch, 6).astype(np.float32)})
        assert out[0].shape == (batch, 4)


def test_factory_module_with_example_inputs_attribute(factory_dir, tmp_path):
    prepared = prepare_model("mp_test_factories:make_two_heads", str(tmp_path))
    ts = prepared.torch_source
    assert ts.input_names == ("x", "bias")
    assert ts.output_names == ("output_0", "output_1")
    assert prepared.signature.output_names == ["output_0", "output_1"]
    x = np.random.rand(5, 5).astype(np.float32)
    b = np.random.rand(5, 3).astype(np.float32)
    out = _ort(prepared.onnx_path, {"x": x, "bias": b})
    assert out[0].shape == (5, 3) and out[1].shape == (5,)


def test_parent_never_imports_torch(factory_dir, tmp_path):
    code = textwrap.dedent(
        f"""
        import sys
        from modelparity.model import prepare_model
        p = prepare_model("mp_test_factories:make_mlp", {str(tmp_path)!r}, timeout=300)
        assert p.signature.input_names == ["features"], p
        assert "torch" not in sys.modules, "the parent imported torch"
        print("OK")
        """
    )
    import modelparity

    src = os.path.dirname(os.path.dirname(os.path.abspath(modelparity.__file__)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=factory_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "OK"
    assert done.stderr.strip() == ""  # the exporter's chatter stays in export.log
    assert (tmp_path / "export.log").is_file()


def test_unknown_module(factory_dir, tmp_path):
    with pytest.raises(ModelError) as info:
        prepare_model("no_such_module_xyz:make", str(tmp_path))
    msg = str(info.value)
    assert msg.startswith("no_such_module_xyz:make: ") and "no_such_module_xyz" in msg
    assert "\n" not in msg


def test_unknown_factory(factory_dir, tmp_path):
    with pytest.raises(ModelError, match="has no attribute 'nope'") as info:
        prepare_model("mp_test_factories:nope", str(tmp_path))
    assert "mp_test_factories:nope" in str(info.value)


@pytest.mark.parametrize(
    ("factory", "what"), [("wrong_return", "returned int"), ("wrong_examples", "are list")]
)
def test_factory_wrong_return(factory_dir, tmp_path, factory, what):
    with pytest.raises(ModelError) as info:
        prepare_model(f"mp_test_factories:{factory}", str(tmp_path))
    msg = str(info.value)
    assert f"mp_test_factories:{factory}" in msg and what in msg
    assert "torch.nn.Module" in msg and "example_inputs" in msg
    assert "\n" not in msg


def test_static_batch_is_reported(factory_dir, tmp_path):
    prepared = prepare_model("mp_test_factories:make_fixed_batch", str(tmp_path))
    assert prepared.signature.inputs[0].shape == (2, 3)
    assert "static shapes" in prepared.exporter and "dynamic batch" not in prepared.exporter


def test_export_failure_is_one_line(factory_dir, tmp_path):
    with pytest.raises(ModelError) as info:
        prepare_model("mp_test_factories:make_branchy", str(tmp_path))
    msg = str(info.value)
    assert msg.startswith("mp_test_factories:make_branchy: export to ONNX failed (")
    assert "\n" not in msg and "\x1b" not in msg


def test_export_timeout(factory_dir, tmp_path):
    with pytest.raises(ModelError, match=r"did not finish within 0\.5 s"):
        prepare_model("mp_test_factories:make_mlp", str(tmp_path), timeout=0.5)
