"""ONNX graph rewrites that make ONNX Runtime's CPU provider compute an FP32 model *as if* in a
lower precision, with FP32 inputs and outputs.

Storage formats (`emulate_storage(model, "fp16" | "bf16", rounding="op")`): every FLOAT tensor is
rounded to the format between ops: initializers (rounded here, with NumPy), graph inputs and every
node output (rounded in the graph). Each op then computes in FP32 on rounded values and its result
is rounded again before anyone reads it, which is what a runtime that *stores* weights and
activations in FP16/BF16 between ONNX ops does (CoreML's NeuralNetwork format on the Mac GPU).
FP16's range is reproduced too: |x| > 65504 becomes inf, as a BatchNorm variance does in a real
FP16 model.

`rounding="layer"` rounds only where values enter or leave a low-precision compute layer, as
runtimes with fused kernels do (OpenVINO's BF16 inference precision: a MatMul/Conv/Gemm with its
bias and activation is one kernel that converts its inputs, accumulates in FP32 and stores its
output once); what runs before the first layer and after the last stays FP32. Exactly:
- compute layers are the default-domain MatMul, Gemm, Conv, ConvTranspose, Einsum, GRU, LSTM
  and RNN (`COMPUTE_OPS`);
- the prologue (what runs before the first layer) stays FP32: graph inputs are not rounded,
  nor the outputs of a node that is not a compute layer and reads nothing computed from one
  (normalisation Sub/Div, Cast, Reshape, ... on the raw inputs), nor the FLOAT initializers and
  `Constant` outputs read only by such nodes (a normalisation's mean and std). A node with a
  subgraph or of another domain is never prologue (its outputs are rounded as below);
- a FLOAT tensor is rounded where it enters a compute layer (any FLOAT input of a compute op)
  unless it is already on the format's grid (a rounded weight or layer output): once per
  tensor, the compute ops read the rounded copy and every other reader the FP32 original
  (OpenVINO converts a prologue's FP32 output to BF16 at the FullyConnected's input);
- rounded as in "op" mode: every other FLOAT initializer (weights, biases, epilogue constants);
- a node's FLOAT output after the prologue is NOT rounded when it is not a graph output, has at
  least one consumer, and every consumer is an epilogue node of the same fused layer (a kernel
  it would be fused into); every other FLOAT node output after the prologue is rounded (the
  last tensor of each chain, and the output of any op that is not followed by epilogues only);
- an epilogue node is an element-wise op of the default domain whose non-constant inputs are all
  node outputs of one fused layer (it then joins that layer; a node that is not an epilogue
  starts a layer of its own). "Constant" means an initializer or a `Constant` node's output.
  Epilogue ops: Add, Sub, Mul, Div with one constant operand (bias, scale), or with both
  operands from the same layer (the x * f(x) of GELU, Swish); the unary Relu, LeakyRelu,
  Sigmoid, Tanh, HardSigmoid, HardSwish, Elu, Softplus, Erf, Gelu, and PRelu / Clip whose
  slope / bounds are constants or absent; BatchNormalization (inference form, constant
  parameters) directly on a Conv or ConvTranspose output;
- a graph output produced by a Sigmoid, Softmax or LogSoftmax is NOT rounded, nor is that op's
  input when the op is its only reader and it is not a graph output, walking back through
  layout ops (Identity, Reshape, Flatten, Squeeze, Unsqueeze, Transpose) read only by the chain:
  the last layer's output, its epilogue and the final activation stay FP32, as OpenVINO keeps
  them (the last layer's own operands are rounded, as layer boundaries).
A tensor read by a subgraph (If/Loop/Scan body) counts as read by a non-epilogue. Not modelled:
runtimes that fuse fewer or more (a residual Add of two layers, an epilogue with several
readers that a runtime would not fuse), weights folded before rounding (BatchNorm into Conv),
a prologue tensor read by an epilogue or by a node of another domain (read unrounded), and
runtimes that run element-wise prologue ops in the low precision too.

- fp16 rounds with `Cast(to=FLOAT16)` then `Cast(to=FLOAT)`; ONNX Runtime's CPU Cast is
  round-to-nearest-even, bit-identical to NumPy's `astype(np.float16)` (subnormals included).
- bf16 rounds with `Cast(to=BFLOAT16)` then `Cast(to=FLOAT)` when the model's opset is >= 13
  (ORT's CPU Cast to/from BFLOAT16 exists and is round-to-nearest-even, bit-identical to
  `round_mantissa(x, 7)`), and with an arithmetic split (below) for older opsets.

TF32 (`emulate_tf32(model)`): only the multiplicands of MatMul, Gemm, Conv, ConvTranspose and
Einsum (all float operands of Einsum; A and B of MatMul/Gemm; X and W of the convolutions; not
Gemm's C or a convolution's bias) are rounded to 10 mantissa bits with the FP32 exponent range;
products are accumulated in FP32 as NVIDIA tensor cores do, and everything else stays FP32.
Weights are rounded here with NumPy; activations in the graph with a Veltkamp split: with
F = 2^(23 - bits) + 1, `c = x * F; hi = c - (c - x)` is x rounded to nearest-even on `bits`
mantissa bits in plain FP32 arithmetic (ORT's graph optimizations neither fold nor fuse it:
checked bit for bit at ORT_ENABLE_ALL, so session options stay at their defaults).

What this does NOT reproduce:
- rounding *inside* an op: FP16 accumulation in a kernel (a MatMul summing in FP16), FP16
  transcendental approximations; with rounding="op", a runtime that fuses several ONNX ops into
  one kernel and so skips the rounding between them (rounding="layer" models that).
- TF32 hardware that truncates instead of rounding to nearest-even.
- subgraphs (If/Loop/Scan bodies) and model-local function bodies are not rewritten; their
  outputs, seen from the parent graph, are rounded.
- tensors whose type ONNX shape inference cannot tell (outputs of custom-domain ops it does not
  know) are left unrounded; they are counted in `Rewrite.untyped`.
- the Veltkamp split (TF32 activations, BF16 on opsets < 13) leaves |x| >= FLT_MAX / F
  unrounded (about 5.2e33 for bf16, 4.2e34 for tf32, where x * F would overflow; a Where keeps x
  there), and rounds FP32 subnormals (|x| < 1.18e-38) on a finer grid than the format's own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

FORMATS = ("fp16", "bf16", "tf32")
#: Stored mantissa bits (without the implicit leading bit) of each emulated format.
MANTISSA_BITS = {"fp16": 10, "bf16": 7, "tf32": 10}
#: Ops whose multiplicands a TF32 unit rounds, and which of their inputs those are (None: all).
TF32_OPERANDS: dict[str, tuple[int, ...] | None] = {
    "MatMul": (0, 1),
    "Gemm": (0, 1),
    "Conv": (0, 1),
    "ConvTranspose": (0, 1),
    "Einsum": None,
}
#: Ops whose float outputs hold only values found in their float inputs (or their negation, or
#: small integers): when every float input is already on the format's grid, so is the output,
#: and rounding it again would be a no-op costing two passes over the tensor.
VALUE_PRESERVING = frozenset({
    "Identity", "Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Concat", "Split",
    "Slice", "Gather", "GatherElements", "GatherND", "Expand", "Tile", "MaxPool", "ReduceMax",
    "ReduceMin", "Max", "Min", "Relu", "Neg", "Abs", "DepthToSpace", "SpaceToDepth", "Where",
    "TopK", "Compress", "ReverseSequence", "Floor", "Ceil",
    "Round", "Sign", "Pad", "Clip",
})
#: How `emulate_storage` rounds: after every op, or once per fused layer.
ROUNDINGS = ("op", "layer")
#: Unary element-wise ops a runtime fuses into the kernel that produces their input.
EPILOGUE_UNARY = frozenset({
    "Relu", "LeakyRelu", "PRelu", "Clip", "Sigmoid", "Tanh", "HardSigmoid", "HardSwish", "Elu",
    "Softplus", "Erf", "Gelu",
})
#: Binary element-wise ops fused when the other operand is a constant or from the same layer.
EPILOGUE_BINARY = frozenset({"Add", "Sub", "Mul", "Div"})
#: Ops a BatchNormalization is folded into.
BATCHNORM_HOSTS = frozenset({"Conv", "ConvTranspose"})
#: Final ops whose graph outputs, and their input chain, stay FP32 with rounding="layer".
FINAL_FP32 = frozenset({"Sigmoid", "Softmax", "LogSoftmax"})
#: Layout ops walked through from a final FP32 op back to the layer it reads.
LAYOUT_OPS = frozenset({"Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose"})
#: Low-precision compute layers of rounding="layer": their FLOAT inputs are rounded on entry.
COMPUTE_OPS = frozenset({
    "MatMul", "Gemm", "Conv", "ConvTranspose", "Einsum", "GRU", "LSTM", "RNN",
})
_FLOAT = 1  # onnx.TensorProto.FLOAT
_LARGE_CONSTANT = 1 << 20  # bytes: Constant tensors above this are emptied in the type skeleton


# --------------------------------------------------------------------------------------------
# NumPy rounding (weights, and the reference the graph rewrite is tested against)


def round_mantissa(x: np.ndarray, bits: int) -> np.ndarray:
    """Round FP32 values to `bits` stored mantissa bits, nearest-even, FP32 exponent range.

    Bit manipulation on the FP32 encoding, so subnormals and overflow to inf behave as in a
    hardware conversion (7 bits: BF16, 10 bits: TF32). NaN and inf are returned unchanged.
    """
    x = np.asarray(x, dtype=np.float32)
    drop = 23 - bits
    if drop <= 0:
        return x.copy()
    raw = x.view(np.uint32).astype(np.uint64)
    raw = raw + ((1 << (drop - 1)) - 1) + ((raw >> drop) & 1)
    raw = (raw >> drop) << drop
    out = (raw & 0xFFFFFFFF).astype(np.uint32).view(np.float32)
    return np.where(np.isfinite(x), out, x)


def round_fp16(x: np.ndarray) -> np.ndarray:
    """FP32 -> FP16 -> FP32, nearest-even, overflow to inf (exactly ORT's Cast pair)."""
    with np.errstate(over="ignore"):
        return np.asarray(x, dtype=np.float32).astype(np.float16).astype(np.float32)


def round_to(fmt: str, x: np.ndarray) -> np.ndarray:
    """Round FP32 values as the format `fmt` ("fp16", "bf16", "tf32") stores them."""
    if fmt == "fp16":
        return round_fp16(x)
    return round_mantissa(x, MANTISSA_BITS[fmt])


# --------------------------------------------------------------------------------------------
# Tensor types


def _skeleton(model: Any) -> Any:
    """A copy of `model` without weight data (initializers become typed graph inputs), so that
    shape inference runs on models of any size without copying their weights."""
    import onnx
    from onnx import helper

    skel = onnx.ModelProto()
    skel.ir_version = model.ir_version
    skel.opset_import.extend(model.opset_import)
    skel.functions.extend(model.functions)
    graph = model.graph
    sg = skel.graph
    sg.name = graph.name
    sg.input.extend(graph.input)
    sg.output.extend(graph.output)
    sg.value_info.extend(graph.value_info)
    declared = {v.name for v in graph.input}
    for init in graph.initializer:
        if init.name not in declared:
            sg.input.append(helper.make_tensor_value_info(init.name, init.data_type, init.dims))
    for sparse in graph.sparse_initializer:
        values = sparse.values
        if values.name not in declared:
            sg.input.append(
                helper.make_tensor_value_info(values.name, values.data_type, sparse.dims)
            )
    sg.node.extend(graph.node)
    for node in sg.node:
        if node.op_type != "Constant":
            continue
        for attr in node.attribute:
            if attr.name == "value" and attr.t.ByteSize() > _LARGE_CONSTANT:
                dims, dtype = list(attr.t.dims), attr.t.data_type
                attr.t.Clear()
                attr.t.dims.extend(dims)
                attr.t.data_type = dtype
    return skel


def tensor_types(model: Any) -> dict[str, int]:
    """Element type (onnx.TensorProto enum) of every tensor of the main graph whose type ONNX
    shape inference can tell: inputs, initializers, node outputs, graph outputs."""
    from onnx import shape_inference

    types: dict[str, int] = {}

    def note(values: Any) -> None:
        for v in values:
            if v.type.WhichOneof("value") == "tensor_type" and v.type.tensor_type.elem_type:
                types[v.name] = v.type.tensor_type.elem_type

    try:
        inferred = shape_inference.infer_shapes(_skeleton(model), strict_mode=False)
        note(inferred.graph.value_info)
        note(inferred.graph.output)
    except Exception:  # unknown opsets, broken shapes: keep what the file declares
        pass
    note(model.graph.value_info)
    note(model.graph.output)
    note(model.graph.input)
    for init in model.graph.initializer:
        types[init.name] = init.data_type
    return types


# --------------------------------------------------------------------------------------------
# Graph building blocks


@dataclass
class Rewrite:
    """What a rewrite did: the numbers `describe()` reports."""

    fmt: str
    rounded_tensors: int = 0  # tensors rounded: initializers, graph inputs, node outputs/operands
    nodes: int = 0  # original nodes whose outputs (fp16/bf16) or operands (tf32) are rounded
    added_nodes: int = 0  # nodes the rewrite inserted
    untyped: int = 0  # node outputs of unknown type, left unrounded
    method: str = ""  # how the graph rounds ("Cast", "Veltkamp split")
    rounding: str = "op"  # fp16/bf16: "op" (after every op) or "layer" (per fused layer)
    fused: int = 0  # rounding="layer": float node outputs left FP32 inside a fused layer
    kept_fp32: int = 0  # rounding="layer": final Sigmoid/Softmax outputs and inputs left FP32
    prologue: int = 0  # rounding="layer": float node outputs left FP32 before the first layer


def default_opset(model: Any) -> int:
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    return 1


def _all_names(model: Any) -> set[str]:
    graph = model.graph
    names = {v.name for v in graph.input} | {v.name for v in graph.output}
    names |= {v.name for v in graph.value_info} | {t.name for t in graph.initializer}
    for node in graph.node:
        names.update(node.input)
        names.update(node.output)
        names.add(node.name)
    return names


def _unique_prefix(model: Any) -> str:
    names = _all_names(model)
    prefix = "mp_emul"
    while any(n.startswith(prefix) for n in names):
        prefix += "_"
    return prefix + "/"


class _Rounder:
    """Emits the nodes that round one FP32 tensor in the graph."""

    def __init__(self, model: Any, fmt: str, prefix: str, *, use_cast: bool) -> None:
        from onnx import TensorProto, helper, numpy_helper

        self.helper = helper
        self.fmt = fmt
        self.prefix = prefix
        self.counter = 0
        self.use_cast = use_cast
        self.to = {"fp16": TensorProto.FLOAT16, "bf16": TensorProto.BFLOAT16}.get(fmt)
        self.method = "Cast" if use_cast else "Veltkamp split"
        if not use_cast:
            drop = 23 - MANTISSA_BITS[fmt]
            split = np.float32(2**drop + 1)
            limit = np.float32(np.finfo(np.float32).max / np.float64(split))
            self.split = prefix + "veltkamp_split"
            self.limit = prefix + "veltkamp_limit"
            model.graph.initializer.extend([
                numpy_helper.from_array(np.array(split, np.float32), self.split),
                numpy_helper.from_array(np.array(limit, np.float32), self.limit),
            ])

    def fresh(self, what: str) -> str:
        self.counter += 1
        return f"{self.prefix}{what}{self.counter}"

    def nodes(self, src: str, dst: str) -> list[Any]:
        make = self.helper.make_node
        tag = self.fresh("round")
        if self.use_cast:
            from onnx import TensorProto

            return [
                make("Cast", [src], [tag + "/narrow"], to=self.to, name=tag + "/narrow"),
                make("Cast", [tag + "/narrow"], [dst], to=TensorProto.FLOAT, name=tag + "/widen"),
            ]
        c, d, hi, a, ok = (tag + s for s in ("/c", "/d", "/hi", "/abs", "/ok"))
        return [
            make("Mul", [src, self.split], [c], name=c),
            make("Sub", [c, src], [d], name=d),
            make("Sub", [c, d], [hi], name=hi),
            make("Abs", [src], [a], name=a),
            make("Less", [a, self.limit], [ok], name=ok),
            make("Where", [ok, hi, src], [dst], name=tag + "/out"),
        ]


def _round_initializer(init: Any, fmt: str) -> Any:
    from onnx import numpy_helper

    return numpy_helper.from_array(round_to(fmt, numpy_helper.to_array(init)), init.name)


def _drop_unused_initializers(model: Any, names: set[str]) -> None:
    """Remove the initializers in `names` that nothing reads any more."""
    graph = model.graph
    used = {v.name for v in graph.output} | {v.name for v in graph.input}
    for node in graph.node:
        used.update(node.input)
        used.update(_subgraph_reads(node))
    keep = [t for t in graph.initializer if t.name not in names or t.name in used]
    if len(keep) != len(graph.initializer):
        kept = list(keep)
        graph.ClearField("initializer")
        graph.initializer.extend(kept)


# --------------------------------------------------------------------------------------------
# The rewrites


def emulate_storage(model: Any, fmt: str, rounding: str = "op",
                    keep: frozenset[int] = frozenset()) -> Rewrite:
    """Rewrite `model` (in place) so that FLOAT tensors are stored in `fmt` (fp16, bf16):
    every one with rounding="op", only at fused-layer boundaries with rounding="layer".
    `keep`: the positions of nodes kept in FP32 (a mixed-precision model, as `keep-fp32`
    writes one with onnxconverter-common): they read what their producers stored; their
    outputs stay FP32 for kept readers and graph outputs and are rounded where a
    low-precision node reads them (the cast at the border); weights and graph inputs only
    they read stay FP32."""
    if fmt not in ("fp16", "bf16"):
        raise ValueError(f"emulate_storage: format must be fp16 or bf16, not {fmt!r}")
    if rounding not in ROUNDINGS:
        raise ValueError(f"emulate_storage: rounding must be op or layer, not {rounding!r}")
    graph = model.graph
    types = tensor_types(model)
    fused: set[str] = set()
    kept: set[str] = set()
    prologue: set[str] = set()  # left FP32 unless read by a compute layer
    if rounding == "layer":
        prologue = layer_prologue(model, types)
        fused, kept = layer_plan(model, types, prologue)
    prefix = _unique_prefix(model)
    use_cast = fmt == "fp16" or default_opset(model) >= 13
    rounder = _Rounder(model, fmt, prefix, use_cast=use_cast)
    report = Rewrite(fmt, method=rounder.method, rounding=rounding)
    rounded: set[str] = set()  # tensors already on the format's grid

    input_names = {v.name for v in graph.input}
    kept_nodes = [node for index, node in enumerate(graph.node) if index in keep]
    kept_names = {id(node) for node in kept_nodes}
    only_kept = {name for node in kept_nodes for name in node.input} - {
        name for node in graph.node if id(node) not in kept_names for name in node.input
    } - {o.name for o in graph.output}
    for i, init in enumerate(graph.initializer):
        if init.name in prologue or init.name in only_kept:
            continue
        if init.data_type == _FLOAT and not init.name.startswith(prefix):
            graph.initializer[i].CopyFrom(_round_initializer(init, fmt))
            report.rounded_tensors += 1
            if init.name not in input_names:  # an overridable default may be fed unrounded
                rounded.add(init.name)

    new_nodes: list[Any] = []
    renamed: dict[str, str] = {}
    initializer_names = {t.name for t in graph.initializer}
    for value in graph.input:
        if types.get(value.name) != _FLOAT or value.name in prologue or value.name in only_kept:
            continue  # (a graph output that is this very input stays as fed)
        dst = rounder.fresh("input")
        new_nodes.extend(rounder.nodes(value.name, dst))
        renamed[value.name] = dst
        rounded.add(dst)
        if value.name not in initializer_names:
            report.rounded_tensors += 1

    entering: dict[str, str] = {}  # rounding="layer": tensor -> its copy rounded for layers
    lowered: dict[str, str] = {}  # a kept node's output -> the copy low-precision nodes read
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in renamed:
                node.input[i] = renamed[name]
            elif name in lowered and id(node) not in kept_names:
                node.input[i] = lowered[name]  # FP32 into an FP16 node: cast at the border
        touched = False
        if rounding == "layer" and _is_compute(node):
            for i, name in enumerate(node.input):
                if not name or types.get(name) != _FLOAT or name in rounded:
                    continue
                if name not in entering:
                    entering[name] = rounder.fresh("enter")
                    new_nodes.extend(rounder.nodes(name, entering[name]))
                    report.rounded_tensors += 1
                node.input[i] = entering[name]
                touched = True
        new_nodes.append(node)
        float_outputs = [k for k, out in enumerate(node.output) if out and types.get(out) == _FLOAT]
        report.untyped += sum(1 for out in node.output if out and out not in types)
        report.fused += sum(1 for k in float_outputs if node.output[k] in fused)
        report.kept_fp32 += sum(1 for k in float_outputs if node.output[k] in kept)
        report.prologue += sum(
            1 for k in float_outputs if node.output[k] in prologue - kept
        )
        float_outputs = [k for k in float_outputs if node.output[k] not in fused | kept | prologue]
        if id(node) in kept_names:
            report.kept_fp32 += len(float_outputs)
            for k in float_outputs:  # FP32 for kept readers and graph outputs only
                lowered[node.output[k]] = rounder.fresh("lowered")
                new_nodes.extend(rounder.nodes(node.output[k], lowered[node.output[k]]))
                report.rounded_tensors += 1
            continue
        if not float_outputs:
            report.nodes += touched
            continue
        if _preserves_grid(node, types, rounded):
            rounded.update(node.output[k] for k in float_outputs)
            report.nodes += touched
            continue
        report.nodes += 1
        for k in float_outputs:
            out = node.output[k]
            raw = rounder.fresh("raw")
            node.output[k] = raw
            new_nodes.extend(rounder.nodes(raw, out))
            rounded.add(out)
            report.rounded_tensors += 1

    report.added_nodes = len(new_nodes) - len(graph.node)
    graph.ClearField("node")
    graph.node.extend(new_nodes)
    return report


def _subgraph_reads(node: Any) -> set[str]:
    """Names the node's subgraphs (If/Loop/Scan bodies, at any depth) read."""
    from onnx import AttributeProto

    names: set[str] = set()

    def collect(g: Any) -> None:
        for inner in g.node:
            names.update(n for n in inner.input if n)
            names.update(_subgraph_reads(inner))

    for attr in node.attribute:
        if attr.type == AttributeProto.GRAPH:
            collect(attr.g)
        elif attr.type == AttributeProto.GRAPHS:
            for sub in attr.graphs:
                collect(sub)
    return names


def _is_compute(node: Any) -> bool:
    return node.domain in ("", "ai.onnx") and node.op_type in COMPUTE_OPS


def layer_prologue(model: Any, types: dict[str, int] | None = None) -> set[str]:
    """The FLOAT tensors that rounding="layer" leaves FP32 because they come before the first
    compute layer on every path (they are rounded only where a compute layer reads them):
    graph inputs, outputs of nodes that are not compute layers and read nothing computed from
    one, and the initializers / `Constant` outputs read only by such nodes."""
    from onnx import AttributeProto

    graph = model.graph
    if types is None:
        types = tensor_types(model)
    after: set[str] = set()  # tensors computed from a compute layer's output (or opaque nodes)
    early: set[int] = set()  # indices of prologue nodes
    readers: dict[str, list[int]] = {}
    for i, node in enumerate(graph.node):
        reads = {n for n in node.input if n} | _subgraph_reads(node)
        for name in reads:
            readers.setdefault(name, []).append(i)
        opaque = node.domain not in ("", "ai.onnx") or any(
            a.type in (AttributeProto.GRAPH, AttributeProto.GRAPHS) for a in node.attribute
        )
        if opaque or _is_compute(node) or reads & after:
            after.update(n for n in node.output if n)
        else:
            early.add(i)
    graph_outputs = {v.name for v in graph.output}
    prologue = {v.name for v in graph.input if types.get(v.name) == _FLOAT}
    constants = {t.name for t in graph.initializer}
    for i in early:
        node = graph.node[i]
        for out in node.output:
            if not out or types.get(out) != _FLOAT:
                continue
            if node.op_type == "Constant":
                constants.add(out)
            else:
                prologue.add(out)
    for name in constants - prologue:  # weights stay rounded unless only the prologue reads them
        users = readers.get(name, [])
        if types.get(name) != _FLOAT or name in graph_outputs or not users:
            continue
        if all(j in early for j in users):
            prologue.add(name)
    return prologue


def layer_plan(
    model: Any, types: dict[str, int] | None = None, prologue: set[str] | None = None
) -> tuple[set[str], set[str]]:
    """The FLOAT node outputs after the prologue (`layer_prologue`) that rounding="layer" leaves
    unrounded: (inside a fused layer, final Sigmoid/Softmax/LogSoftmax outputs and their FP32
    input chain). See the module docstring for the rules."""
    graph = model.graph
    if types is None:
        types = tensor_types(model)
    if prologue is None:
        prologue = layer_prologue(model, types)
    nodes = list(graph.node)
    constants = {t.name for t in graph.initializer}
    constants.update(n.output[0] for n in nodes if n.op_type == "Constant" and n.output)
    producer: dict[str, int] = {}
    readers: dict[str, list[int]] = {}
    layer: dict[int, int] = {}  # node index -> index of the node that heads its fused layer
    for i, node in enumerate(nodes):
        reads = {n for n in node.input if n} | _subgraph_reads(node)
        for name in reads:
            readers.setdefault(name, []).append(i)
        head = _epilogue_of(node, nodes, producer, layer, constants, types)
        layer[i] = i if head is None else head
        for out in node.output:
            if out:
                producer[out] = i
    graph_outputs = {v.name for v in graph.output}

    fused: set[str] = set()
    for i, node in enumerate(nodes):
        for out in node.output:
            if not out or types.get(out) != _FLOAT or out in graph_outputs:
                continue
            users = readers.get(out, [])
            if users and all(j != layer[j] and layer[j] == layer[i] for j in users):
                fused.add(out)

    kept: set[str] = set()
    for value in graph.output:
        i = producer.get(value.name)
        if i is None or nodes[i].domain not in ("", "ai.onnx"):
            continue
        if nodes[i].op_type not in FINAL_FP32 or types.get(value.name) != _FLOAT:
            continue
        kept.add(value.name)
        j = i
        while nodes[j].input and nodes[j].input[0]:  # walk back to the layer it reads
            source = nodes[j].input[0]
            if source in graph_outputs or source not in producer or readers.get(source) != [j]:
                break
            if types.get(source) != _FLOAT:
                break
            kept.add(source)
            fused.discard(source)
            j = producer[source]
            if nodes[j].domain not in ("", "ai.onnx") or nodes[j].op_type not in LAYOUT_OPS:
                break
    return fused - kept - prologue, kept


def _epilogue_of(
    node: Any,
    nodes: list[Any],
    producer: dict[str, int],
    layer: dict[int, int],
    constants: set[str],
    types: dict[str, int],
) -> int | None:
    """The fused layer (its head's index) that `node` joins as an epilogue, or None."""
    if node.domain not in ("", "ai.onnx") or len([o for o in node.output if o]) != 1:
        return None
    op = node.op_type
    chain = [n for n in node.input if n and n not in constants]
    if not chain or any(n not in producer or types.get(n) != _FLOAT for n in chain):
        return None
    heads = {layer[producer[n]] for n in chain}
    if len(heads) != 1:
        return None
    if op in EPILOGUE_UNARY:
        ok = chain == [node.input[0]]  # PRelu's slope, Clip's bounds: constants or absent
    elif op in EPILOGUE_BINARY:
        ok = len(node.input) == 2
    elif op == "BatchNormalization":
        ok = (
            chain == [node.input[0]]
            and nodes[producer[chain[0]]].op_type in BATCHNORM_HOSTS
            and not any(a.name == "training_mode" and a.i for a in node.attribute)
        )
    else:
        ok = False
    return heads.pop() if ok else None


def _preserves_grid(node: Any, types: dict[str, int], rounded: set[str]) -> bool:
    """True when the node's float outputs are on the grid because its float inputs are."""
    if node.domain not in ("", "ai.onnx") or node.op_type not in VALUE_PRESERVING:
        return False
    if node.op_type in ("Pad", "Clip") and any(
        a.name in ("value", "min", "max") for a in node.attribute
    ):
        return False  # constants given as attributes (old opsets) may be off the grid
    for name in node.input:
        if not name:
            continue
        if name not in types:
            return False
        if types[name] == _FLOAT and name not in rounded:
            return False
    return True


def emulate_tf32(model: Any) -> Rewrite:
    """Rewrite `model` (in place) so that MatMul-like ops see TF32-rounded multiplicands."""
    graph = model.graph
    types = tensor_types(model)
    prefix = _unique_prefix(model)
    rounder = _Rounder(model, "tf32", prefix, use_cast=False)
    report = Rewrite("tf32", method=rounder.method)
    initializers = {t.name: t for t in graph.initializer}
    fed = {v.name for v in graph.input}
    done: dict[str, str] = {}  # tensor -> its rounded copy
    replaced: set[str] = set()

    new_nodes: list[Any] = []
    for node in graph.node:
        positions = TF32_OPERANDS.get(node.op_type, ())
        if node.domain not in ("", "ai.onnx"):
            positions = ()
        if positions is None:
            positions = tuple(range(len(node.input)))
        touched = False
        for pos in positions:
            if pos >= len(node.input):
                continue
            name = node.input[pos]
            if not name or types.get(name) != _FLOAT:
                continue
            touched = True
            if name not in done:
                if name in initializers and name not in fed:
                    dst = rounder.fresh("weight")
                    tensor = _round_initializer(initializers[name], "tf32")
                    tensor.name = dst
                    graph.initializer.append(tensor)
                    replaced.add(name)
                else:
                    dst = rounder.fresh("operand")
                    new_nodes.extend(rounder.nodes(name, dst))
                done[name] = dst
                report.rounded_tensors += 1
            node.input[pos] = done[name]
        report.nodes += touched
        new_nodes.append(node)

    report.added_nodes = len(new_nodes) - len(graph.node)
    graph.ClearField("node")
    graph.node.extend(new_nodes)
    _drop_unused_initializers(model, replaced)
    return report


def emulate(model: Any, fmt: str, rounding: str = "op", keep: frozenset[int] = frozenset()
            ) -> Rewrite:
    """Rewrite `model` in place for `fmt` ("fp16", "bf16" or "tf32"); `rounding` ("op" or
    "layer") and `keep` (node positions kept in FP32) apply to fp16 and bf16 (tf32 rounds
    only MatMul-like operands: "op" only)."""
    if fmt == "tf32":
        if rounding != "op" or keep:
            raise ValueError("emulate: tf32 takes no rounding mode and keeps no nodes")
        return emulate_tf32(model)
    return emulate_storage(model, fmt, rounding, keep)
