"""Real models for the tests: scikit-learn fits on its bundled data sets, written as ONNX graphs
with onnx's own helpers (no download, no converter package)."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

TESTS = Path(__file__).parent

ENGINES = ["local", pytest.param("ray", marks=pytest.mark.skipif(
    importlib.util.find_spec("ray") is None,
    reason="Ray is not installed (pip install 'modelparity[ray]')"))]


@pytest.fixture
def ray_running() -> None:
    """One local Ray for the tests that use it, started on first use and left up (an audit that
    finds Ray running uses it and leaves it running); stopped when the session ends."""
    from modelparity.execute.ray_engine import start_ray

    start_ray(None, 2)  # as an audit starts it; a no-op when Ray is up


@pytest.fixture(scope="session", autouse=True)
def _stop_ray():
    yield
    if "ray" in sys.modules:
        sys.modules["ray"].shutdown()


@pytest.fixture(params=ENGINES)
def engine(request, monkeypatch) -> str:
    """Each test of a module that uses this runs on both engines: the Ray engine has to pass
    the tests the local one passes (issue 14). The audits read $MODELPARITY_ENGINE, and so do
    the CLI processes a test starts (each starts its own local Ray)."""
    monkeypatch.setenv("MODELPARITY_ENGINE", request.param)
    if request.param == "ray":
        request.getfixturevalue("ray_running")
    return request.param

# Worker processes import the planted backends as `py:planted_backends:make`.
sys.path.insert(0, str(TESTS))
os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(TESTS), *filter(None, [os.environ.get("PYTHONPATH")])]
)


def linear_onnx(path: Path, weight: np.ndarray, bias: np.ndarray, *, mean: np.ndarray,
                scale: np.ndarray, head: str | None, output: str = "y") -> str:
    """x -> (x - mean) / scale -> x @ W + b -> head (Sigmoid, Softmax or nothing)."""
    features = weight.shape[0]
    inits = [
        numpy_helper.from_array(mean.astype(np.float32), "mean"),
        numpy_helper.from_array(scale.astype(np.float32), "scale"),
        numpy_helper.from_array(weight.astype(np.float32), "W"),
        numpy_helper.from_array(bias.astype(np.float32), "b"),
    ]
    nodes = [
        helper.make_node("Sub", ["x", "mean"], ["centred"]),
        helper.make_node("Div", ["centred", "scale"], ["scaled"]),
        helper.make_node("MatMul", ["scaled", "W"], ["logits_raw"]),
        helper.make_node("Add", ["logits_raw", "b"], ["logits" if head else output]),
    ]
    if head == "Sigmoid":
        nodes.append(helper.make_node("Sigmoid", ["logits"], [output]))
    elif head == "Softmax":
        nodes.append(helper.make_node("Softmax", ["logits"], [output], axis=-1))
    graph = helper.make_graph(
        nodes, "model",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", features])],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, ["batch", weight.shape[1]])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return str(path)


@pytest.fixture(scope="session")
def models(tmp_path_factory) -> dict[str, dict]:
    """Each entry: onnx path, features X (float32), labels y."""
    from sklearn.datasets import load_breast_cancer, load_diabetes, load_digits
    from sklearn.linear_model import LogisticRegression, Ridge

    folder = tmp_path_factory.mktemp("models")
    found: dict[str, dict] = {}

    x, y = load_breast_cancer(return_X_y=True)
    mean, scale = x.mean(axis=0), x.std(axis=0)
    clf = LogisticRegression(max_iter=2000).fit((x - mean) / scale, y)
    found["binary"] = {
        "path": linear_onnx(folder / "cancer.onnx", clf.coef_.T, clf.intercept_, mean=mean,
                            scale=scale, head="Sigmoid", output="prob"),
        "x": x.astype(np.float32), "y": y.astype(np.int64),
    }

    x, y = load_digits(return_X_y=True)
    mean, scale = x.mean(axis=0), x.std(axis=0) + 1.0
    clf = LogisticRegression(max_iter=3000).fit((x - mean) / scale, y)
    found["multiclass"] = {
        "path": linear_onnx(folder / "digits.onnx", clf.coef_.T, clf.intercept_, mean=mean,
                            scale=scale, head="Softmax", output="probs"),
        "x": x.astype(np.float32), "y": y.astype(np.int64),
    }

    x, y = load_diabetes(return_X_y=True)
    mean, scale = x.mean(axis=0), x.std(axis=0)
    reg = Ridge(alpha=1.0).fit((x - mean) / scale, y)
    found["regression"] = {
        "path": linear_onnx(folder / "diabetes.onnx", reg.coef_.reshape(-1, 1),
                            np.array([reg.intercept_]), mean=mean, scale=scale, head=None,
                            output="value"),
        "x": x.astype(np.float32), "y": y.astype(np.float32),
    }

    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, size=(600, 8)).astype(np.float32)
    weight = rng.normal(size=(8, 3))
    y = (x @ weight > 0).astype(np.int64)
    found["multilabel"] = {
        "path": linear_onnx(folder / "tags.onnx", weight, np.zeros(3), mean=np.zeros(8),
                            scale=np.ones(8), head="Sigmoid", output="tags"),
        "x": x, "y": y,
    }
    return found


@pytest.fixture(scope="session")
def data_files(models, tmp_path_factory) -> dict[str, dict[str, str]]:
    """Each model's inputs as .npz and labels as .npy."""
    folder = tmp_path_factory.mktemp("data")
    files = {}
    for name, entry in models.items():
        data = folder / f"{name}_x.npz"
        labels = folder / f"{name}_y.npy"
        np.savez(data, x=entry["x"])
        np.save(labels, entry["y"])
        files[name] = {"data": str(data), "labels": str(labels)}
    return files
