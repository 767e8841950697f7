"""emulate:<fp16|bf16|tf32|int8> (and ?rounding=layer, ?mode=static) on real ONNX Runtime, with
models built here."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from modelparity.backends import create_backend, parse_spec
from modelparity.backends import emulate as emulate_backend
from modelparity.backends.emulate import create
from modelparity.emulation import emulate, layer_plan
from modelparity.emulation.rewrite import layer_prologue
from modelparity.errors import SpecError
from modelparity.model import prepare_model

FLOAT = TensorProto.FLOAT


# --------------------------------------------------------------------------------------------
# Independent NumPy references (frexp/rint in float64, not the bit trick the library uses)


def reference_round(x: np.ndarray, bits: int) -> np.ndarray:
    """Round to `bits` stored mantissa bits, nearest-even, FP32 exponent range (subnormals
    on the format's absolute grid), overflow to inf."""
    x64 = np.asarray(x, dtype=np.float64)
    _, exp = np.frexp(x64)  # x = m * 2**exp, 0.5 <= |m| < 1
    quantum = np.ldexp(1.0, np.maximum(exp, -125) - 1 - bits)
    with np.errstate(over="ignore", invalid="ignore"):
        out = (np.rint(x64 / quantum) * quantum).astype(np.float32)
    return np.where(np.isfinite(x64), out, np.asarray(x, dtype=np.float32))


def reference_fp16(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return np.asarray(x, np.float32).astype(np.float16).astype(np.float32)


def reference(fmt: str, x: np.ndarray) -> np.ndarray:
    return reference_fp16(x) if fmt == "fp16" else reference_round(x, 7 if fmt == "bf16" else 10)


def test_reference_rounding_known_values():
    # 1 + 2^-8 is halfway between two BF16 values: ties to even (1.0); 1 + 3 * 2^-8 -> 1 + 2^-6
    x = np.array([1 + 2**-8, 1 + 3 * 2**-8, -(1 + 2**-8), 3.4e38, 1 + 2**-11, 1 + 3 * 2**-11],
                 np.float32)
    assert reference_round(x[:4], 7).tolist() == [1.0, 1 + 2**-6, -1.0, np.inf]
    assert reference_round(x[4:], 10).tolist() == [1.0, 1 + 2**-9]
    assert reference_fp16(np.array([65519.0, 65520.0], np.float32)).tolist() == [65504.0, np.inf]


def sample_values(seed: int = 0, finite_only: bool = False) -> np.ndarray:
    """Random values over the whole FP32 range, both signs, with exact ties and edge cases."""
    rng = np.random.default_rng(seed)
    n = 50_000
    spread = (rng.standard_normal(n) * np.exp(rng.uniform(-87, 87, n))).astype(np.float32)
    near_one = rng.uniform(-4, 4, n).astype(np.float32)
    bits = rng.integers(0, 2**32, n, dtype=np.uint64).astype(np.uint32).view(np.float32)
    parts = [spread, near_one, bits[np.isfinite(bits)]]
    mantissa = rng.integers(0, 2**23, 20_000).astype(np.uint32)
    exponent = rng.integers(1, 254, 20_000).astype(np.uint32) << 23
    for drop in (13, 16):  # exact halfway cases for tf32 and bf16; fp16's lie between
        ties = (exponent | ((mantissa >> drop) << drop) | (1 << (drop - 1))).view(np.float32)
        parts += [ties, -ties]
    parts.append(np.array([0.0, -0.0, 1e-30, -1e-30, 65504, 65519.99, 65520, 1e5, -1e5, 6e-8,
                           3e-8, 1e-40, -1e-40, 1e30, 3.39e38, 3.4e38, -3.4e38], np.float32))
    x = np.concatenate(parts).astype(np.float32)
    if finite_only:
        x = x[np.isfinite(x)]
    return x


def same_bits(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Element-wise: identical encodings, or both NaN."""
    return (a.view(np.uint32) == b.view(np.uint32)) | (np.isnan(a) & np.isnan(b))


# --------------------------------------------------------------------------------------------
# Models


def save(model: onnx.ModelProto, path: Path) -> str:
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return str(path)


def make_model(nodes, inputs, outputs, inits=(), opset: int = 17) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "model", inputs, outputs, list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def vector(name: str) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, FLOAT, ["n"])


def scale_model(opset: int = 17) -> onnx.ModelProto:
    """y = x * 1: rounds the input and the product."""
    one = numpy_helper.from_array(np.array(1.0, np.float32), "one")
    return make_model([helper.make_node("Mul", ["x", "one"], ["y"])], [vector("x")],
                      [vector("y")], [one], opset)


def identity_matmul_model(k: int = 8) -> onnx.ModelProto:
    """y = x @ I: with TF32 operands, exactly x rounded to TF32."""
    eye = numpy_helper.from_array(np.eye(k, dtype=np.float32), "eye")
    spec = [helper.make_tensor_value_info(n, FLOAT, ["n", k]) for n in ("x", "y")]
    return make_model([helper.make_node("MatMul", ["x", "eye"], ["y"])], spec[:1], spec[1:],
                      [eye])


def mlp_model(seed: int, features: int = 16, hidden: int = 64) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    w1 = rng.normal(0, 1 / np.sqrt(features), (features, hidden)).astype(np.float32)
    w2 = rng.normal(0, 1 / np.sqrt(hidden), (hidden, 1)).astype(np.float32)
    inits = [numpy_helper.from_array(w1, "W1"),
             numpy_helper.from_array(rng.normal(0, 0.1, hidden).astype(np.float32), "b1"),
             numpy_helper.from_array(w2, "W2"),
             numpy_helper.from_array(np.array([0.1], np.float32), "b2")]
    nodes = [
        helper.make_node("MatMul", ["x", "W1"], ["h1"]),
        helper.make_node("Add", ["h1", "b1"], ["h2"]),
        helper.make_node("Relu", ["h2"], ["h3"]),
        helper.make_node("MatMul", ["h3", "W2"], ["z1"]),
        helper.make_node("Add", ["z1", "b2"], ["z"]),
        helper.make_node("Sigmoid", ["z"], ["prob"]),
    ]
    return make_model(nodes, [helper.make_tensor_value_info("x", FLOAT, ["n", features])],
                      [helper.make_tensor_value_info("prob", FLOAT, ["n", 1])], inits)


def conv_model(seed: int) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    inits = [
        numpy_helper.from_array(rng.normal(0, 0.3, (8, 3, 3, 3)).astype(np.float32), "K1"),
        numpy_helper.from_array(rng.normal(0, 0.1, 8).astype(np.float32), "c1"),
        numpy_helper.from_array(rng.normal(0, 0.2, (8, 8, 3, 3)).astype(np.float32), "K2"),
        numpy_helper.from_array(rng.normal(0, 0.3, (8, 4)).astype(np.float32), "G"),
        numpy_helper.from_array(rng.normal(0, 0.1, 4).astype(np.float32), "g"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "K1", "c1"], ["a1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["a1"], ["a2"]),
        helper.make_node("Conv", ["a2", "K2"], ["a3"], pads=[1, 1, 1, 1]),
        helper.make_node("GlobalAveragePool", ["a3"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("Gemm", ["f", "G", "g"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=-1),
    ]
    return make_model(nodes, [helper.make_tensor_value_info("x", FLOAT, ["n", 3, 12, 12])],
                      [helper.make_tensor_value_info("probs", FLOAT, ["n", 4])], inits)


def run_ort(path: str, feed: dict[str, np.ndarray]) -> np.ndarray:
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return session.run(None, feed)[0]


def ort_fp32(nodes, feed: dict[str, np.ndarray], consts: dict[str, np.ndarray]) -> np.ndarray:
    """The last node's output of the FP32 graph `nodes` (inputs `feed`, with a free batch axis
    as the models here; initializers `consts`), on ONNX Runtime's CPU provider at its default
    options: the FP32 arithmetic of those ops as ORT does it inside a whole model on this CPU
    (same kernels, same packed constant weights, same fusions), for references that round
    with NumPy between such pieces."""
    inputs = [helper.make_tensor_value_info(k, FLOAT, ["n", *v.shape[1:]])
              for k, v in feed.items()]
    outputs = [helper.make_tensor_value_info(nodes[-1].output[0], FLOAT, None)]
    inits = [numpy_helper.from_array(v, k) for k, v in consts.items()]
    model = make_model(nodes, inputs, outputs, inits)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feed)[0]


def run_emulated(path: str, precision: str, feed: dict[str, np.ndarray], workdir) -> np.ndarray:
    backend = create(parse_spec(f"emulate:{precision}"))
    backend.activate(prepare_model(path, str(workdir)))
    try:
        return next(iter(backend.infer(feed).values()))
    finally:
        backend.deactivate()


def median_rel(candidate: np.ndarray, ref: np.ndarray) -> float:
    return float(np.median(np.abs(candidate - ref) / np.maximum(np.abs(ref), 1e-30)))


# --------------------------------------------------------------------------------------------
# Bit-exact rounding


@pytest.mark.parametrize("fmt", ["fp16", "bf16"])
def test_storage_rounding_bit_exact(tmp_path, fmt):
    x = sample_values(1)
    path = save(scale_model(), tmp_path / "scale.onnx")
    y = run_emulated(path, fmt, {"x": x}, tmp_path)
    ref = reference(fmt, x)
    bad = ~same_bits(y, ref)
    assert not bad.any(), (x[bad][:5], y[bad][:5], ref[bad][:5])
    assert np.isinf(y[x == 1e5]).all() == (fmt == "fp16")


def test_tf32_rounding_bit_exact(tmp_path):
    x = sample_values(2, finite_only=True)
    normal = (np.abs(x) >= 2**-126) & (np.abs(x) < 4e34)  # the Veltkamp split's exact range
    x = x[normal]
    x = np.resize(x, (x.size // 8 + 1) * 8).reshape(-1, 8)
    path = save(identity_matmul_model(), tmp_path / "eye.onnx")
    y = run_emulated(path, "tf32", {"x": x}, tmp_path)
    ref = reference("tf32", x)
    bad = ~same_bits(y, ref)
    assert not bad.any(), (x[bad][:5], y[bad][:5], ref[bad][:5])
    assert (y != x).mean() > 0.5  # it did round


def test_bf16_veltkamp_on_old_opset(tmp_path):
    """Opset < 13 has no BFLOAT16 Cast: the arithmetic split must round identically."""
    x = sample_values(3, finite_only=True)
    x = x[(np.abs(x) >= 2**-126) & (np.abs(x) < 5e33)]
    path = save(scale_model(opset=11), tmp_path / "scale11.onnx")
    model = onnx.load(path)
    assert emulate(model, "bf16").method == "Veltkamp split"
    y = run_emulated(path, "bf16", {"x": x}, tmp_path)
    ref = reference("bf16", x)
    bad = ~same_bits(y, ref)
    assert not bad.any(), (x[bad][:5], y[bad][:5], ref[bad][:5])
    huge = np.array([1e34, -3e38, np.inf, np.nan], np.float32)  # left unrounded, no NaN made
    out = run_emulated(path, "bf16", {"x": huge}, tmp_path)
    assert same_bits(out, huge).all()


# --------------------------------------------------------------------------------------------
# Error scales on real models


@pytest.fixture(scope="module")
def real_models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("emulate")
    rng = np.random.default_rng(7)
    return {
        "mlp": (save(mlp_model(1), folder / "mlp.onnx"),
                {"x": rng.standard_normal((2000, 16)).astype(np.float32)}, folder),
        "conv": (save(conv_model(2), folder / "conv.onnx"),
                 {"x": rng.standard_normal((64, 3, 12, 12)).astype(np.float32)}, folder),
    }


@pytest.mark.parametrize("name", ["mlp", "conv"])
def test_error_scales(real_models, name):
    path, feed, folder = real_models[name]
    ref = run_ort(path, feed)
    err = {p: median_rel(run_emulated(path, p, feed, folder), ref)
           for p in ("fp16", "bf16", "tf32", "int8")}
    assert 1e-5 < err["fp16"] < 2e-3, err
    assert 4 < err["bf16"] / err["fp16"] < 40, err
    assert 0 < err["tf32"] < err["fp16"], err
    assert err["int8"] > 0, err


def test_fp16_matches_numpy_model_rounding_between_ops(real_models):
    """The emulated MLP equals, bit for bit, the MLP run op by op with every tensor rounded to
    FP16 by NumPy between ops, each op computing in FP32 as ONNX Runtime does."""
    path, feed, folder = real_models["mlp"]
    weights = {t.name: numpy_helper.to_array(t) for t in onnx.load(path).graph.initializer}
    r = reference_fp16
    w = {k: r(v) for k, v in weights.items()}
    # The claim is the rounding between ops; an FP32 op's own arithmetic is the runtime's, so the
    # MatMuls and the Sigmoid are ORT's FP32 kernels, each run alone on the NumPy-rounded
    # operands (element-wise Add and Relu are exact in FP32: NumPy's are ORT's). NumPy's `@`
    # is not a CPU-independent stand-in: OpenBLAS sums each dot product in an order set by the
    # kernel it picks for the CPU (its Haswell kernel on an AVX2 EPYC gives 9741 of the 128000
    # sums of x @ W1 one FP32 ulp away from ORT's in-order sum), and the FP16 rounding after
    # the op turns such an ulp, wherever a sum lies by a rounding midpoint, into a whole FP16
    # ulp (10 entries of h1, then one output 4.9e-4 off). Against this reference the former
    # checks (90 % equal, 10x closer than FP32) become equality of every output bit.
    def matmul(a, b):
        return ort_fp32([helper.make_node("MatMul", ["a", "b"], ["y"])], {"a": a}, {"b": b})

    h = r(np.maximum(r(r(matmul(r(feed["x"]), w["W1"])) + w["b1"]), np.float32(0)))
    z = r(r(matmul(h, w["W2"])) + w["b2"])
    sim = r(ort_fp32([helper.make_node("Sigmoid", ["z"], ["p"])], {"z": z}, {}))
    emulated = run_emulated(path, "fp16", feed, folder)
    fp32 = run_ort(path, feed)
    assert same_bits(emulated, sim).all(), np.abs(emulated - sim).max()
    assert (fp32 != sim).mean() > 0.9  # the rounding is what the comparison sees
    # the same MLP as one computed in NumPy (float64 Sigmoid), up to FP16 roundings that an
    # FP32 ulp of summation order flips
    numpy_sim = r(1 / (1 + np.exp(-r(r(
        np.maximum(r(r(r(feed["x"]) @ w["W1"]) + w["b1"]), 0) @ w["W2"]) + w["b2"]
    ).astype(np.float64))))
    assert (sim == numpy_sim).mean() > 0.99


def rounding_pairs(model: onnx.ModelProto) -> list[tuple[str, str]]:
    """(FP32 source, rounded copy) of each rounding a rewrite put in the graph: a Cast pair
    FLOAT -> FLOAT16/BFLOAT16 -> FLOAT, or a Veltkamp split (its final Where(ok, c - d, x))."""
    producer = {out: node for node in model.graph.node for out in node.output}

    def made_by(name: str) -> tuple[str, int | None]:
        node = producer.get(name)
        if node is None:
            return "", None
        return node.op_type, {a.name: a.i for a in node.attribute}.get("to")

    narrow = {("Cast", TensorProto.FLOAT16), ("Cast", TensorProto.BFLOAT16)}
    pairs = []
    for node in model.graph.node:
        op, to = made_by(node.output[0])
        if (op, to) == ("Cast", FLOAT) and made_by(node.input[0]) in narrow:
            pairs.append((producer[node.input[0]].input[0], node.output[0]))
        elif op == "Where" and made_by(node.input[1])[0] == "Sub":
            pairs.append((node.input[2], node.output[0]))
    return pairs


@pytest.mark.parametrize("fmt, rounding", [("fp16", "op"), ("bf16", "op"), ("tf32", "op"),
                                           ("bf16", "layer")])
@pytest.mark.parametrize("name", ["mlp", "conv"])
def test_graph_optimizations_keep_the_rounding(real_models, name, fmt, rounding):
    """ORT's default optimizations neither fold nor fuse away the rounding: with all of them
    but the NCHWc layout transformer, the rewritten model gives the same outputs, bit for bit,
    as with every optimization disabled; with all of them (the default session), every
    rounding still gives exactly the rounded value of the tensor it reads.

    The layout transformer (ORT_ENABLE_ALL) is checked tensor by tensor, not at the output: it
    swaps the convolutions for NCHWc kernels (block size 8 with AVX2, 16 with AVX-512) whose
    FP32 sums differ from the plain kernels' in their last bit, and a rounding after them
    turns such a bit, where a value lies by a rounding midpoint, into a whole ulp of the
    format (tf32, an AVX2 EPYC: 3 of the 512 pooled features round the other way; one moves a
    probability by 1.5e-4 relative). Which outputs that reaches, if any, depends on the CPU's
    kernels, so only the roundings themselves can be compared bit for bit there.
    """
    path, feed, _ = real_models[name]
    model = onnx.load(path)
    report = emulate(model, fmt, rounding)
    levels = ort.GraphOptimizationLevel

    def run(m: onnx.ModelProto, level, disabled=()) -> list[np.ndarray]:
        options = ort.SessionOptions()
        options.graph_optimization_level = level
        session = ort.InferenceSession(m.SerializeToString(), options,
                                       providers=["CPUExecutionProvider"],
                                       disabled_optimizers=list(disabled))
        return session.run(None, feed)

    plain = run(model, levels.ORT_DISABLE_ALL)[0]
    fused = run(model, levels.ORT_ENABLE_ALL, ["NchwcTransformer"])[0]
    assert same_bits(plain, fused).all()

    pairs = rounding_pairs(model)
    assert len(pairs) * (2 if report.method == "Cast" else 6) == report.added_nodes  # all found
    exposed = onnx.ModelProto()
    exposed.CopyFrom(model)
    names = sorted({n for pair in pairs for n in pair} - set(feed))
    exposed.graph.output.extend(helper.make_empty_tensor_value_info(n) for n in names)
    full = run(model, levels.ORT_ENABLE_ALL)[0]
    outs = run(exposed, levels.ORT_ENABLE_ALL)
    assert same_bits(outs[0], full).all()  # reading the tensors out changed no kernel
    values = {**feed, **dict(zip(names, outs[1:], strict=True))}
    for source, rounded in pairs:
        expected = reference(fmt, values[source])
        assert same_bits(values[rounded], expected).all(), (source, rounded)
        assert (values[rounded] != values[source]).any(), (source, rounded)  # it did round


def test_tf32_leaves_models_without_matmul_untouched(tmp_path):
    rng = np.random.default_rng(4)
    nodes = [helper.make_node("Mul", ["x", "s"], ["a"]), helper.make_node("Exp", ["a"], ["b"]),
             helper.make_node("Softmax", ["b"], ["y"], axis=-1)]
    s = numpy_helper.from_array(np.float32([0.37]), "s")
    spec = [helper.make_tensor_value_info(n, FLOAT, ["n", 5]) for n in ("x", "y")]
    path = save(make_model(nodes, spec[:1], spec[1:], [s]), tmp_path / "nomatmul.onnx")
    feed = {"x": rng.standard_normal((500, 5)).astype(np.float32)}
    assert same_bits(run_emulated(path, "tf32", feed, tmp_path), run_ort(path, feed)).all()


def test_tf32_rounds_only_matmul_operands(real_models):
    path, _, _ = real_models["conv"]
    model = onnx.load(path)
    report = emulate(model, "tf32")
    assert report.nodes == 3  # two Conv, one Gemm
    assert report.rounded_tensors == 6  # x, K1, a2, K2, f, G (not the biases c1, g)
    ops = [n.op_type for n in model.graph.node]
    assert "Cast" not in ops and ops.count("Where") == 3  # activations x, a2, f
    weights = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    assert {"K1", "K2", "G"}.isdisjoint(weights)  # replaced by their rounded copies
    assert np.array_equal(weights["c1"], numpy_helper.to_array(
        next(t for t in onnx.load(path).graph.initializer if t.name == "c1")))


# --------------------------------------------------------------------------------------------
# rounding=layer: once per fused layer, final Sigmoid/Softmax in FP32


def run_spec(path: str, text: str, feeds, workdir) -> list[dict[str, np.ndarray]]:
    """Outputs of backend `text` for each feed in turn (one activation), and its describe()."""
    backend = create(parse_spec(text))
    backend.activate(prepare_model(path, str(workdir)))
    try:
        outs = [backend.infer(feed) for feed in feeds]
        return [*outs, backend.describe()]
    finally:
        backend.deactivate()


def on_grid(fmt: str, y: np.ndarray) -> np.ndarray:
    return same_bits(reference(fmt, y), y)


def test_layer_rounds_fewer_tensors_than_op(real_models):
    path, _, _ = real_models["mlp"]
    op = emulate(onnx.load(path), "bf16", "op")
    layer = emulate(onnx.load(path), "bf16", "layer")
    assert op.rounded_tensors == 10 and op.fused == 0  # 4 weights, x, h1 h2 z1 z z-prob
    # 4 weights, x, h3 (Relu, the hidden layer's last tensor); h1 h2 z1 fused; z, prob FP32
    assert layer.rounded_tensors == 6 and layer.rounding == "layer"
    assert layer.fused == 3 and layer.kept_fp32 == 2
    assert layer_plan(onnx.load(path)) == ({"h1", "h2", "z1"}, {"z", "prob"})
    conv = layer_plan(onnx.load(real_models["conv"][0]))
    # Conv+bias+Relu fused; the 2nd Conv feeds a pool (not fused); Gemm -> Softmax stays FP32
    assert conv == ({"a1"}, {"logits", "probs"})


@pytest.mark.parametrize("fmt", ["fp16", "bf16"])
def test_layer_final_sigmoid_is_fp32(real_models, fmt):
    path, feed, folder = real_models["mlp"]
    op = run_emulated(path, fmt, feed, folder)
    layer = run_emulated(path, f"{fmt}?rounding=layer", feed, folder)
    assert on_grid(fmt, op).all()  # op mode rounds the Sigmoid's output
    assert on_grid(fmt, layer).mean() < 0.2  # layer mode: FP32 Sigmoid, unrounded output
    assert (op != layer).mean() > 0.5
    ref = run_ort(path, feed)
    assert 0 < median_rel(layer, ref) < median_rel(op, ref)  # fewer roundings, less error


def numpy_layer_mlp(fmt: str, weights: dict[str, np.ndarray], x: np.ndarray):
    """The 2-layer MLP rounded once per layer: rounded weights and input, hidden layer
    (MatMul + bias + Relu) rounded once, output layer and Sigmoid in FP32, unrounded."""
    def r(v):
        return reference(fmt, v)
    w = {k: r(v) for k, v in weights.items()}
    h = r(np.maximum(r(x) @ w["W1"] + w["b1"], np.float32(0)))
    z = h @ w["W2"] + w["b2"]
    return h, (1 / (1 + np.exp(-z.astype(np.float64)))).astype(np.float32)


@pytest.mark.parametrize("fmt", ["fp16", "bf16"])
def test_layer_matches_numpy_rounding_once_per_layer(real_models, tmp_path, fmt):
    path, feed, _ = real_models["mlp"]
    model = onnx.load(path)
    model.graph.output.append(helper.make_tensor_value_info("h3", FLOAT, ["n", 64]))
    path = save(model, tmp_path / "mlp_hidden.onnx")  # h3 is a layer boundary either way
    weights = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    h_sim, prob_sim = numpy_layer_mlp(fmt, weights, feed["x"])
    out, info = run_spec(path, f"emulate:{fmt}?rounding=layer", [feed], tmp_path)
    assert info["rounding"] == "layer" and info["fused_tensors"] == 3
    assert info["precision"]["source"].startswith(
        f"emulation: float tensors rounded to {fmt.upper()} once per fused layer")
    # the hidden layer is bit-exact (1 ulp at most, where ORT's FP32 sums differ from NumPy's)
    assert (out["h3"] == h_sim).mean() > 0.999
    assert np.abs(out["h3"] - h_sim).max() <= np.abs(h_sim).max() * 2.0**-7
    # the FP32 output layer and Sigmoid: FP32 noise, far below the format's own error
    prob = out["prob"]
    assert np.abs(prob - prob_sim).max() < 4 * np.spacing(np.float32(1))
    assert np.abs(run_ort(path, feed) - prob_sim).max() > 100 * np.abs(prob - prob_sim).max()


def test_layer_plan_epilogues():
    """Conv+BN+Relu, an Erf GELU and a Softmax behind a Reshape; a residual Add and a tensor
    read by a non-epilogue are layer boundaries."""
    rng = np.random.default_rng(0)

    def init(name, *shape):
        return numpy_helper.from_array(rng.normal(0, 0.3, shape).astype(np.float32), name)

    bn = [numpy_helper.from_array(v, n) for n, v in (
        ("s", np.ones(4, np.float32)), ("o", np.zeros(4, np.float32)),
        ("m", np.zeros(4, np.float32)), ("v", np.ones(4, np.float32)))]
    consts = [numpy_helper.from_array(np.float32(v), n)
              for n, v in (("r2", np.sqrt(2)), ("one", 1.0), ("half", 0.5))]
    nodes = [
        helper.make_node("Conv", ["x", "K"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c", "s", "o", "m", "v"], ["bn"]),
        helper.make_node("Relu", ["bn"], ["a"]),  # boundary: read by Conv and the residual Add
        helper.make_node("Conv", ["a", "K2"], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["c2", "a"], ["res"]),  # two layers: not an epilogue
        helper.make_node("Flatten", ["res"], ["f"]),
        helper.make_node("MatMul", ["f", "W"], ["g"]),  # GELU(x) = x * (erf(x / r2) + 1) / 2
        helper.make_node("Div", ["g", "r2"], ["g1"]),
        helper.make_node("Erf", ["g1"], ["g2"]),
        helper.make_node("Add", ["g2", "one"], ["g3"]),
        helper.make_node("Mul", ["g", "g3"], ["g4"]),
        helper.make_node("Mul", ["g4", "half"], ["gelu"]),
        helper.make_node("MatMul", ["gelu", "W2"], ["l"]),
        helper.make_node("Reshape", ["l", "shape"], ["l2"]),
        helper.make_node("Softmax", ["l2"], ["y"], axis=-1),
    ]
    inits = [init("K", 4, 2, 3, 3), init("K2", 4, 4, 3, 3), init("W", 4 * 3 * 3, 8),
             init("W2", 8, 5), numpy_helper.from_array(np.array([-1, 5], np.int64), "shape"),
             *bn, *consts]
    model = make_model(nodes, [helper.make_tensor_value_info("x", FLOAT, ["n", 2, 3, 3])],
                       [helper.make_tensor_value_info("y", FLOAT, ["n", 5])], inits)
    onnx.checker.check_model(model)
    fused, kept = layer_plan(model)
    assert fused == {"c", "bn", "g", "g1", "g2", "g3", "g4"}
    assert kept == {"y", "l2", "l"}
    feed = {"x": rng.standard_normal((50, 2, 3, 3)).astype(np.float32)}
    fp32 = ort.InferenceSession(model.SerializeToString(),
                                providers=["CPUExecutionProvider"]).run(None, feed)[0]
    report = emulate(model, "bf16", "layer")
    assert (report.fused, report.kept_fp32) == (7, 3)
    layer = ort.InferenceSession(model.SerializeToString(),
                                 providers=["CPUExecutionProvider"]).run(None, feed)[0]
    assert 0 < np.abs(layer - fp32).max() < 0.05


# --------------------------------------------------------------------------------------------
# int8?mode=static: QDQ static quantization calibrated on the first batch


def test_int8_static(real_models):
    path, feed, folder = real_models["mlp"]
    x = feed["x"]
    first = {"x": x[:1000]}
    later = {"x": x[1000:]}
    backend = create(parse_spec("emulate:int8?mode=static"))
    backend.activate(prepare_model(path, str(folder)))
    try:
        before = backend.describe()
        assert before["mode"] == "static" and before["calibration_samples"] is None
        static_first = backend.infer(first)["prob"]
        static = backend.infer(later)["prob"]
        one = backend.infer({"x": x[1000:1001]})["prob"]
        info = backend.describe()
    finally:
        backend.deactivate()
    assert info["calibration_samples"] == 1000 and info["batch_dependent"] is False
    assert "quantize_static" in info["method"] and info["rounded_tensors"] == 4
    assert np.array_equal(one, static[:1])  # fixed scales: a sample's output ignores its batch
    dynamic = run_emulated(path, "int8", later, folder)
    ref = run_ort(path, later)
    err_static, err_dynamic = median_rel(static, ref), median_rel(dynamic, ref)
    err_bf16 = median_rel(run_emulated(path, "bf16", later, folder), ref)
    assert (static != dynamic).mean() > 0.5
    assert err_static > 2 * err_bf16 and 1e-3 < err_static < 0.05, (err_static, err_bf16)
    assert 1e-3 < err_dynamic < 0.05
    assert static_first.shape == (1000, 1)


def test_int8_static_calibrates_on_a_single_sample(real_models):
    path, feed, folder = real_models["mlp"]
    one, rest, info = run_spec(path, "emulate:int8?mode=static",
                               [{"x": feed["x"][:1]}, {"x": feed["x"][1:200]}], folder)
    assert info["calibration_samples"] == 1
    assert np.isfinite(one["prob"]).all() and np.isfinite(rest["prob"]).all()
    assert 0 < np.abs(rest["prob"] - run_ort(path, {"x": feed["x"][1:200]})).max() < 0.5


# --------------------------------------------------------------------------------------------
# FP16 range


def test_fp16_range_overflow(tmp_path):
    """1e5 is beyond FP16's 65504: inf under fp16, a finite value under bf16."""
    k = numpy_helper.from_array(np.array(1000.0, np.float32), "k")
    path = save(make_model([helper.make_node("Mul", ["x", "k"], ["y"])], [vector("x")],
                           [vector("y")], [k]), tmp_path / "big.onnx")
    feed = {"x": np.array([100.0, -100.0, 1.0], np.float32)}
    fp16 = run_emulated(path, "fp16", feed, tmp_path)
    bf16 = run_emulated(path, "bf16", feed, tmp_path)
    assert fp16[0] == np.inf and fp16[1] == -np.inf and fp16[2] == 1000.0
    assert np.isfinite(bf16).all() and abs(bf16[0] - 1e5) / 1e5 < 2**-8


def test_fp16_weight_overflow_like_batchnorm_variance(tmp_path):
    """A stored variance above 65504 becomes inf in FP16 and the normalized output collapses."""
    var = numpy_helper.from_array(np.array([1e5], np.float32), "var")
    nodes = [helper.make_node("Sqrt", ["var"], ["sd"]), helper.make_node("Div", ["x", "sd"], ["y"])]
    path = save(make_model(nodes, [vector("x")], [vector("y")], [var]), tmp_path / "bn.onnx")
    feed = {"x": np.array([316.0, -50.0], np.float32)}
    assert np.abs(run_ort(path, feed)[0] - 1.0) < 1e-3
    assert (run_emulated(path, "fp16", feed, tmp_path) == 0).all()
    assert np.abs(run_emulated(path, "bf16", feed, tmp_path)[0] - 1.0) < 1e-2


# --------------------------------------------------------------------------------------------
# The backend through the protocol


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}


def test_backend_protocol_bf16(tmp_path):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    path = save(mlp_model(3), model_dir / "mlp.onnx")
    before = digest(model_dir)
    prepared = prepare_model(path, str(tmp_path / "work"))
    backend = create_backend(parse_spec("emulate:bf16"))
    assert isinstance(backend, emulate_backend.EmulateBackend)
    backend.activate(prepared)
    tempdir = backend.tempdir
    assert tempdir is not None and os.path.isdir(tempdir)
    feed = {"x": np.random.default_rng(0).standard_normal((300, 16)).astype(np.float32)}
    out = backend.infer(feed)
    assert list(out) == ["prob"] and out["prob"].dtype == np.float32
    assert out["prob"].shape == (300, 1)
    ref = run_ort(path, feed)
    assert 0 < np.abs(out["prob"] - ref).max() < 0.05
    info = backend.describe()
    assert info["runtime"] == "emulation" and info["emulates"] == "bf16"
    assert info["precision"]["reported"] == "bfloat16"
    assert info["precision"]["source"].startswith("emulation: ")
    assert info["onnxruntime"] == ort.__version__
    assert info["rounded_tensors"] == 4 + 1 + 5  # weights, input, outputs (Relu's is exact)
    assert info["nodes"] == 5
    backend.deactivate()
    assert not os.path.exists(tempdir)
    assert digest(model_dir) == before  # nothing written beside the user's model


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_external_data_model(tmp_path, precision, monkeypatch):
    """A model with weights in a separate file loads; a large rewrite is saved the same way."""
    model = mlp_model(5)
    path = tmp_path / "ext.onnx"
    onnx.save_model(model, path, save_as_external_data=True, all_tensors_to_one_file=True,
                    location="ext.onnx.data", size_threshold=0)
    inline = save(mlp_model(5), tmp_path / "inline.onnx")
    feed = {"x": np.random.default_rng(1).standard_normal((100, 16)).astype(np.float32)}
    monkeypatch.setattr(emulate_backend, "EXTERNAL_DATA_BYTES", 0)
    backend = create(parse_spec(f"emulate:{precision}"))
    backend.activate(prepare_model(str(path), str(tmp_path)))
    if precision != "int8":
        assert "model.onnx.data" in os.listdir(backend.tempdir)
    out = backend.infer(feed)["prob"]
    backend.deactivate()
    expected = run_emulated(inline, precision, feed, tmp_path)
    assert np.array_equal(out, expected)


def test_int8_describe(real_models):
    path, _, folder = real_models["conv"]
    backend = create(parse_spec("emulate:int8"))
    backend.activate(prepare_model(path, str(folder)))
    info = backend.describe()
    backend.deactivate()
    assert info["precision"]["reported"] == "int8"
    assert info["nodes"] == 3  # ConvInteger x2, MatMulInteger (the Gemm)
    assert info["rounded_tensors"] == 3  # int8 weights


# --------------------------------------------------------------------------------------------
# Specs


@pytest.mark.parametrize("text, expected", [
    ("emulate:fp8", "fp16, bf16, tf32, int8"),
    ("emulate:float16", "fp16, bf16, tf32, int8"),
    ("emulate:fp16?threads=2", r"known options: rounding=<op\|layer>"),
    ("emulate:bf16?rounding=fused", "expected one of: op, layer"),
    ("emulate:bf16?rounding=", "expected one of: op, layer"),
    ("emulate:bf16?mode=static", "unknown option"),
    ("emulate:tf32?rounding=layer", "known options: none"),
    ("emulate:int8?rounding=layer", r"known options: mode=<dynamic\|static>"),
    ("emulate:int8?mode=qdq", "expected one of: dynamic, static"),
])
def test_bad_specs(text, expected):
    with pytest.raises(SpecError, match=expected):
        create(parse_spec(text))


def test_spec_without_precision_is_rejected():
    with pytest.raises(SpecError):
        parse_spec("emulate:")


def test_describe_before_activate():
    info = create(parse_spec("emulate:TF32")).describe()
    assert info["emulates"] == "tf32" and info["precision"]["reported"] == "tfloat32"
    assert info["rounded_tensors"] is None


@pytest.mark.parametrize("text, key, value", [
    ("emulate:bf16", "rounding", "op"),
    ("emulate:fp16?rounding=LAYER", "rounding", "layer"),
    ("emulate:int8", "mode", "dynamic"),
    ("emulate:int8?mode=static", "mode", "static"),
])
def test_option_defaults_in_describe(text, key, value):
    info = create(parse_spec(text)).describe()
    assert info[key] == value


def test_int8_reduce_range_quantizes_more_coarsely(real_models):
    path, feed, folder = real_models["mlp"]
    ref = run_ort(path, feed)
    eight, info = run_spec(path, "emulate:int8", [feed], folder)
    seven, info7 = run_spec(path, "emulate:int8?reduce_range=1", [feed], folder)
    assert "reduce_range=False" in info["method"] and "reduce_range=True" in info7["method"]
    assert median_rel(seven["prob"], ref) > 1.3 * median_rel(eight["prob"], ref)


def normalised_mlp(seed: int, raw: np.ndarray, hidden: int = 64) -> onnx.ModelProto:
    """x -> (x - mean) / std -> MatMul + bias -> Relu -> MatMul -> Sigmoid, with the mean and
    std of the raw data `raw` (features of magnitude ~1000: a BF16 input loses the normalised
    value to cancellation)."""
    rng = np.random.default_rng(seed)
    features = raw.shape[1]
    inits = [
        numpy_helper.from_array(raw.mean(0).astype(np.float32), "mean"),
        numpy_helper.from_array(raw.std(0).astype(np.float32), "std"),
        numpy_helper.from_array(
            rng.normal(0, 1 / np.sqrt(features), (features, hidden)).astype(np.float32), "W1"),
        numpy_helper.from_array(rng.normal(0, 0.1, hidden).astype(np.float32), "b1"),
        numpy_helper.from_array(
            rng.normal(0, 1 / np.sqrt(hidden), (hidden, 1)).astype(np.float32), "W2"),
    ]
    nodes = [
        helper.make_node("Sub", ["x", "mean"], ["xc"]),
        helper.make_node("Div", ["xc", "std"], ["xn"]),
        helper.make_node("MatMul", ["xn", "W1"], ["h1"]),
        helper.make_node("Add", ["h1", "b1"], ["h2"]),
        helper.make_node("Relu", ["h2"], ["h3"]),
        helper.make_node("MatMul", ["h3", "W2"], ["z"]),
        helper.make_node("Sigmoid", ["z"], ["prob"]),
    ]
    return make_model(nodes, [helper.make_tensor_value_info("x", FLOAT, ["n", features])],
                      [helper.make_tensor_value_info("prob", FLOAT, ["n", 1])], inits)


@pytest.mark.parametrize("fmt", ["fp16", "bf16"])
def test_layer_keeps_the_input_normalisation_fp32(tmp_path, fmt):
    """OpenVINO's BF16 runs the normalisation before the first layer in FP32 and converts at
    the FullyConnected's input: layer mode rounds the normalised input, not the raw one."""
    rng = np.random.default_rng(11)
    x = (np.abs(rng.standard_normal((2000, 30))) * 1000 + 100).astype(np.float32)
    model = normalised_mlp(3, x)
    path = save(model, tmp_path / "normalised.onnx")
    assert layer_prologue(model) == {"x", "mean", "std", "xc", "xn"}
    assert layer_plan(model) == ({"h1", "h2"}, {"z", "prob"})
    rewritten = onnx.load(path)
    report = emulate(rewritten, fmt, "layer")
    # W1 b1 W2, xn where it enters the MatMul, h3; mean and std stay FP32
    assert report.rounded_tensors == 5 and report.prologue == 2 and report.fused == 2
    consts = {t.name: numpy_helper.to_array(t) for t in rewritten.graph.initializer}
    assert np.array_equal(consts["mean"], numpy_helper.to_array(model.graph.initializer[0]))
    assert np.array_equal(consts["std"], numpy_helper.to_array(model.graph.initializer[1]))

    w = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    xn = (x - w["mean"]) / w["std"]  # FP32, unrounded
    # Rounded by NumPy where a layer reads or writes, each fused layer in FP32 with ORT's own
    # kernels (the layer's ops in one session, so that ORT fuses them as in the whole model):
    # the claim is where the rounding happens, not the FP32 sums inside a layer. A NumPy `@`
    # for the hidden layer would make the test CPU-dependent: OpenBLAS picks its summation
    # order by CPU kernel, and an FP32 ulp of it flips an FP16 rounding of h (an AVX2 EPYC:
    # the output moves by 3.6e-6, 30 FP32 ulps). With ORT's FP32 layers the former bound (4
    # FP32 ulps, for the NumPy output layer and Sigmoid) becomes equality of every bit.
    wr = {k: reference(fmt, w[k]) for k in ("W1", "b1", "W2")}
    hidden = [helper.make_node("MatMul", ["xn", "W1"], ["h1"]),
              helper.make_node("Add", ["h1", "b1"], ["h2"]),
              helper.make_node("Relu", ["h2"], ["h3"])]
    h = reference(fmt, ort_fp32(hidden, {"xn": reference(fmt, xn)},
                                {"W1": wr["W1"], "b1": wr["b1"]}))
    last = [helper.make_node("MatMul", ["h", "W2"], ["z"]),
            helper.make_node("Sigmoid", ["z"], ["prob"])]  # the last layer and Sigmoid: FP32
    sim = ort_fp32(last, {"h": h}, {"W2": wr["W2"]})
    feed = {"x": x}
    layer = run_emulated(path, f"{fmt}?rounding=layer", feed, tmp_path)
    assert same_bits(layer, sim).all(), np.abs(layer - sim).max()
    fp32 = run_ort(path, feed)
    assert np.abs(fp32 - sim).max() > 100 * 4 * np.spacing(np.float32(1)), np.abs(fp32 - sim).max()
    err = median_rel(layer, fp32)
    op = run_emulated(path, fmt, feed, tmp_path)  # rounds x itself: cancellation in x - mean
    assert median_rel(op, fp32) > 3 * err > 0
    # the former rule (graph inputs rounded) is what feeding a rounded x gives: worse
    raw_rounded = run_emulated(path, f"{fmt}?rounding=layer", {"x": reference(fmt, x)}, tmp_path)
    assert median_rel(raw_rounded, fp32) > 1.15 * err

    # a prologue tensor read by a layer and by the caller: rounded once, for the layer only
    model.graph.output.append(helper.make_tensor_value_info("xn", FLOAT, ["n", 30]))
    both = save(model, tmp_path / "normalised_xn.onnx")
    out, _ = run_spec(both, f"emulate:{fmt}?rounding=layer", [feed], tmp_path)
    assert same_bits(out["xn"], xn).all() and same_bits(out["prob"], layer).all()


def test_a_kept_node_is_fp32_inside_and_cast_at_the_border():
    """`emulate:fp16?keep=0`: the kept node reads its FP32 input (read by no FP16 node) and
    its output stays FP32 as a graph output, but an FP16 node reading it gets it rounded, as
    the cast onnxconverter-common puts at the border of a kept node does."""
    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from modelparity.emulation import emulate

    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "big"], ["y"]),
         helper.make_node("Sub", ["y", "big2"], ["z"])], "border",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4]),
         helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", 4])],
        [numpy_helper.from_array(np.array(1000.0, np.float32), "big"),
         numpy_helper.from_array(np.array(1000.0, np.float32), "big2")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    x = np.linspace(-1, 1, 32, dtype=np.float32).reshape(8, 4) / 3
    outputs = {}
    for keep in (frozenset(), frozenset({0})):
        copy = onnx.ModelProto()
        copy.CopyFrom(model)
        emulate(copy, "fp16", "op", keep)
        session = ort.InferenceSession(copy.SerializeToString(),
                                       providers=["CPUExecutionProvider"])
        outputs[keep] = session.run(None, {"x": x})
    y, z = outputs[frozenset({0})]
    np.testing.assert_array_equal(y, x + np.float32(1000))  # FP32 inside the kept node
    low = (x + np.float32(1000)).astype(np.float16).astype(np.float32) - np.float32(1000)
    np.testing.assert_array_equal(z, low.astype(np.float16).astype(np.float32))  # cast at z
    y_all = outputs[frozenset()][0]
    assert not np.array_equal(y_all, y)  # all FP16: y itself is rounded
