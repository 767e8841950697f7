"""ONNX files as the audit takes them: the signature (without loading weights), the checks a
file must pass, external data included."""

from __future__ import annotations

import os
from typing import Any

from modelparity.errors import ModelError
from modelparity.model.prepared import PreparedModel, exc_text
from modelparity.model.signature import Dim, Signature, TensorInfo


def _value_info(value: Any) -> TensorInfo:
    import onnx.helper

    type_proto = value.type
    if type_proto.WhichOneof("value") != "tensor_type":
        # sequences, maps, optionals (e.g. a ZipMap output): no numpy dtype or shape to give
        return TensorInfo(value.name, "object", ())
    tensor_type = type_proto.tensor_type
    try:
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type).name
    except (KeyError, ValueError, TypeError):
        dtype = "object"
    shape: tuple[Dim, ...] = ()
    if tensor_type.HasField("shape"):
        dims: list[Dim] = []
        for d in tensor_type.shape.dim:
            if d.HasField("dim_value"):
                dims.append(int(d.dim_value))
            elif d.HasField("dim_param") and d.dim_param:
                dims.append(str(d.dim_param))
            else:
                dims.append(None)
        shape = tuple(dims)
    return TensorInfo(value.name, dtype, shape)


def signature_of(proto: Any) -> Signature:
    graph = proto.graph
    initializers = {t.name for t in graph.initializer} | {
        t.values.name for t in graph.sparse_initializer
    }
    inputs = tuple(_value_info(v) for v in graph.input if v.name not in initializers)
    outputs = tuple(_value_info(v) for v in graph.output)
    return Signature(inputs=inputs, outputs=outputs)


def load_onnx(path: str) -> Any:
    import onnx

    try:
        return onnx.load(path, load_external_data=False)
    except Exception as exc:  # DecodeError, ValueError, ...
        raise ModelError(f"{path}: not a valid ONNX model ({exc_text(exc)})") from None


def read_signature(onnx_path: str) -> Signature:
    """Inputs (initializers excluded) and outputs of an ONNX file, without loading its weights."""
    if not os.path.isfile(onnx_path):
        raise ModelError(f"{onnx_path}: no such file")
    return signature_of(load_onnx(onnx_path))


def _all_tensors(graph: Any):
    """Initializers and tensor attributes of a graph and its subgraphs."""
    import onnx

    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR:
                yield attr.t
            elif attr.type == onnx.AttributeProto.TENSORS:
                yield from attr.tensors
            elif attr.type == onnx.AttributeProto.GRAPH:
                yield from _all_tensors(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for sub in attr.graphs:
                    yield from _all_tensors(sub)


def _check_external_data(path: str, proto: Any) -> None:
    """Every tensor stored beside the model must have its file there (named in the error)."""
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data

    base = os.path.dirname(os.path.abspath(path))
    checked: set[str] = set()
    for tensor in _all_tensors(proto.graph):
        if not uses_external_data(tensor):
            continue
        location = ExternalDataInfo(tensor).location
        if location in checked:
            continue
        checked.add(location)
        if (
            not location
            or os.path.isabs(location)
            or ".." in location.replace("\\", "/").split("/")
        ):
            raise ModelError(
                f"{path}: tensor '{tensor.name}' has external data at '{location}', which is "
                "not a path relative to the model's folder"
            )
        if not os.path.isfile(os.path.join(base, location)):
            raise ModelError(
                f"{path}: external data file '{location}' (tensor '{tensor.name}') not found "
                f"in {base}"
            )


QUANTIZING_OPS = frozenset({
    "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "MatMulInteger",
    "ConvInteger", "QLinearConv", "QLinearMatMul", "QGemm", "DynamicQuantizeMatMul",
    "MatMulIntegerToFloat", "QAttention", "DynamicQuantizeLSTM", "GatherBlockQuantized",
    "MatMulNBits", "QLinearAdd", "QLinearMul", "QLinearSigmoid", "QLinearLeakyRelu",
    "QLinearAveragePool", "QLinearGlobalAveragePool", "QLinearConcat", "QLinearSoftmax",
})
"""Op types (ONNX and ONNX Runtime's com.microsoft domain) that quantize values or compute on
quantized ones: a model that has them is quantized by its maker, whatever a runtime does."""


def quantization_ops(proto: Any) -> tuple[str, ...]:
    """The quantizing op types in the model's graph, subgraphs and functions included."""
    found: set[str] = set()

    def walk(nodes: Any) -> None:
        for node in nodes:
            if node.op_type in QUANTIZING_OPS:
                found.add(node.op_type)
            for attribute in node.attribute:
                if attribute.HasField("g"):
                    walk(attribute.g.node)
                for graph in attribute.graphs:
                    walk(graph.node)

    walk(proto.graph.node)
    for function in proto.functions:
        walk(function.node)
    return tuple(sorted(found))


def prepare_onnx(path: str) -> PreparedModel:
    import onnx

    proto = load_onnx(path)
    if not proto.HasField("graph"):
        raise ModelError(f"{path}: not a valid ONNX model (no graph)")
    _check_external_data(path, proto)
    try:
        # by path, so that tensors stored beside the file (and models over 2 GB) are checked
        onnx.checker.check_model(path)
    except Exception as exc:
        raise ModelError(f"{path}: not a valid ONNX model ({exc_text(exc)})") from None
    return PreparedModel(
        onnx_path=os.path.abspath(path), signature=signature_of(proto), source=path,
        quantized=quantization_ops(proto),
    )


