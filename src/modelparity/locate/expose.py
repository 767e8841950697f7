"""Expose a model's intermediate tensors as outputs, so every backend returns them and the audit
compares each one with the reference's, node by node.

Pure `onnx`: the graph is read with its own shape inference, and each floating-point node
output whose first axis is the samples' axis becomes an extra graph output. The batch axis is
found by naming the inputs' first dimension with one symbol and following it through shape
inference: a tensor that keeps the symbol first has one row per sample and can be compared row
for row. What cannot be exposed (a shape nobody can infer, a tensor computed from weights only,
a batch folded into another axis by a Reshape) is listed with the reason, never guessed.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from modelparity.backends.emulate import save_model
from modelparity.errors import ModelError
from modelparity.model.prepared import PreparedModel
from modelparity.model.signature import TensorInfo

BATCH = "modelparity_samples"  # the symbol the inputs' first axis is given
FLOATS = {1: "float32", 10: "float16", 11: "float64", 16: "bfloat16"}  # ONNX elem types


@dataclass(frozen=True)
class Node:
    """One node of the graph, in topological order, with the tensors it reads and writes."""

    name: str
    op_type: str
    index: int  # position in the graph's (topological) node list
    depth: int  # longest path from a graph input, in nodes
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    compared: tuple[str, ...]  # its floating-point outputs with one row per sample (exposed)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "op_type": self.op_type, "index": self.index,
                "depth": self.depth, "inputs": list(self.inputs), "outputs": list(self.outputs),
                "compared": list(self.compared)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Node:
        return cls(str(data["name"]), str(data["op_type"]), int(data["index"]),
                   int(data["depth"]), tuple(data["inputs"]), tuple(data["outputs"]),
                   tuple(data["compared"]))


@dataclass(frozen=True)
class Exposure:
    """The exposed model and what was, and was not, exposed."""

    model: PreparedModel  # runs the exposed ONNX file; its signature lists the new outputs
    nodes: tuple[Node, ...]
    graph_outputs: tuple[str, ...]  # the model's own outputs
    unmatched: tuple[tuple[str, str], ...] = field(default=())  # (tensor, why not exposed)


def node_name(node: Any, index: int) -> str:
    return node.name or f"{node.op_type}_{index}"


def expose(prepared: PreparedModel, workdir: str,
           fused: Sequence[Sequence[str]] = ()) -> Exposure:
    """`prepared` with every per-sample floating-point intermediate tensor as an output.
    `fused`: groups of node names a runtime runs as one kernel (OpenVINO's
    `originalLayersNames`); only each group's last node's outputs are exposed, so the runtime
    keeps its fusion, and the others are judged with it as one region."""
    import onnx
    from onnx import helper, shape_inference

    try:
        model = onnx.load(prepared.onnx_path)  # weights in external files too
    except Exception as exc:  # onnx raises plain errors for a missing or damaged data file
        raise ModelError(f"{prepared.source}: cannot read its weights ({exc})") from None
    graph = model.graph
    initializers = {t.name for t in graph.initializer}
    symbols = {BATCH}  # the samples' axis: ours, and the inputs' own name for it ("batch")
    for value in graph.input:
        if value.name in initializers or not value.type.tensor_type.HasField("shape"):
            continue
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            if dims[0].dim_param:
                symbols.add(dims[0].dim_param)  # an exporter's value_info may use it
            dims[0].dim_param = BATCH
    try:
        inferred = shape_inference.infer_shapes(model, strict_mode=False)
    except Exception as exc:  # onnx raises its own types, and RuntimeError from C++
        raise ModelError(f"{prepared.source}: ONNX shape inference failed, so the tensors to "
                         f"compare cannot be told ({exc})") from None
    types = {v.name: v.type.tensor_type for v in
             (*inferred.graph.value_info, *inferred.graph.output, *inferred.graph.input)}
    originals = tuple(o.name for o in graph.output)
    fixed = _fixed_batch(graph, initializers)
    exposed: list[TensorInfo] = []
    unmatched: list[tuple[str, str]] = []
    nodes: list[Node] = []
    depth: dict[str, int] = {}
    position = {node_name(node, index): index for index, node in enumerate(graph.node)}
    inner: dict[str, str] = {}  # a fused group's node, not its last -> the last
    for group in fused:
        members = sorted(position[name] for name in group if name in position)
        for index in members[:-1]:
            inner[node_name(graph.node[index], index)] = \
                node_name(graph.node[members[-1]], members[-1])
    for index, node in enumerate(graph.node):
        level = 1 + max((depth.get(name, 0) for name in node.input if name), default=0)
        mine = []
        for name in filter(None, node.output):
            depth[name] = level
            kind = types.get(name)
            if kind is None or not kind.HasField("elem_type"):
                unmatched.append((name, "its type cannot be inferred"))
                continue
            if kind.elem_type not in FLOATS:
                continue  # shapes, indices, masks: not a precision question
            why = None if name in originals else _per_sample(kind, fixed, symbols)
            if why:  # the model's own outputs are compared by every audit, as they are
                unmatched.append((name, why))
                continue
            mine.append(name)
            if node_name(node, index) in inner and name not in originals:
                unmatched.append((name, f"inside a fused kernel (with "
                                        f"{inner[node_name(node, index)]}): judged with it"))
                continue  # compared, but not exposed: the runtime keeps its fusion
            if name not in originals:
                shape = tuple(d.dim_param or (d.dim_value if d.HasField("dim_value") else None)
                              for d in kind.shape.dim)
                exposed.append(TensorInfo(name, FLOATS[kind.elem_type], shape))
        nodes.append(Node(node_name(node, index), node.op_type, index, level,
                          tuple(n for n in node.input if n),
                          tuple(n for n in node.output if n), tuple(mine)))
    inferred_values = {v.name: v for v in inferred.graph.value_info}
    for info in exposed:  # with the inferred shape: a node cut out of the graph needs it
        graph.output.append(inferred_values[info.name] if info.name in inferred_values else
                            helper.make_tensor_value_info(info.name, _elem(info.dtype), None))
    path = os.path.join(workdir, "model.exposed.onnx")
    save_model(model, path)  # a large model keeps its weights in a file beside it
    signature = dataclasses.replace(prepared.signature,
                                    outputs=(*prepared.signature.outputs, *exposed))
    return Exposure(dataclasses.replace(prepared, onnx_path=path, signature=signature,
                                        probes=(),
                                        optional_outputs=tuple(i.name for i in exposed)),
                    tuple(nodes), originals, tuple(unmatched))


def _elem(dtype: str) -> int:
    return {value: key for key, value in FLOATS.items()}[dtype]


def _fixed_batch(graph: Any, initializers: set[str]) -> int | None:
    """The inputs' first dimension where the model fixes it (a batch of 1), else None."""
    for value in graph.input:
        if value.name in initializers:
            continue
        dims = value.type.tensor_type.shape.dim
        if dims and dims[0].HasField("dim_value"):
            return int(dims[0].dim_value)
    return None


def _per_sample(kind: Any, fixed: int | None, symbols: set[str]) -> str | None:
    """Why a tensor of this type cannot be compared row for row, or None when it can."""
    if not kind.HasField("shape"):
        return "its shape cannot be inferred"
    dims = kind.shape.dim
    if not dims:
        return "a scalar, not one value per sample"
    first = dims[0]
    if first.dim_param in symbols:
        return None
    if fixed is not None and first.HasField("dim_value") and first.dim_value == fixed:
        return None
    if first.HasField("dim_value"):
        return "its first axis has a fixed size (computed from weights only, or reshaped)"
    if first.dim_param:
        return "its first axis is not the samples' (a Reshape or a data-dependent shape)"
    return "its first axis cannot be inferred"
