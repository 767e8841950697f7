"""Probe the tensors a final activation hides: a Sigmoid or Softmax squashes the error of the
layers before it (a map that is mostly exact 0 and 1, a softmax computed in FP32 on top of BF16
layers), so the precision shows in its input, not in the output. The ONNX file every ONNX
backend runs gets each such input as an extra output; the fingerprint reads those.

Pure `onnx` (no runtime): the graph is edited with onnx's own helpers and saved beside the
audit's other files. A model whose weights live in external files is left as it is (its copy
would lose them), and so is one whose final activations already feed nothing hidden.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from modelparity.model.prepared import PreparedModel
from modelparity.model.signature import TensorInfo

ACTIVATIONS = frozenset({"Sigmoid", "Softmax", "LogSoftmax", "Tanh", "HardSigmoid"})
#: Runtimes that run the ONNX file itself, so they return the probes too.
PROBED_RUNTIMES = frozenset({"ort", "openvino", "emulate", "py"})


def reads_probes(spec: Any) -> bool:
    """Whether a backend gives the probed tensors: a runtime that runs the ONNX file, or a
    capture taken with them (a `capture:` backend replays what its capture holds)."""
    if spec.runtime in PROBED_RUNTIMES:
        return True
    if spec.runtime == "capture":
        from modelparity.capture.artifact import read_manifest
        from modelparity.errors import ModelParityError

        try:
            return bool(read_manifest(spec.target).model.get("probes"))
        except ModelParityError:
            return False  # its own load says what is wrong with it
    return False


def _uses_external_data(model: Any) -> bool:  # an onnx.ModelProto
    from onnx import TensorProto

    return any(t.data_location == TensorProto.EXTERNAL for t in model.graph.initializer)


def probe(prepared: PreparedModel, workdir: str) -> PreparedModel:
    """`prepared` with an ONNX file whose final activations' inputs are extra outputs (in
    `probes`), or `prepared` itself where there is nothing to probe."""
    import onnx
    from onnx import helper

    model = onnx.load(prepared.onnx_path, load_external_data=False)
    if _uses_external_data(model):
        return prepared
    graph = model.graph
    outputs = {o.name: o for o in graph.output}
    producer = {name: node for node in graph.node for name in node.output}
    probes: dict[str, str] = {}
    for name in outputs:
        node = producer.get(name)
        if node is None or node.op_type not in ACTIVATIONS or not node.input:
            continue
        hidden = node.input[0]
        if hidden and hidden not in outputs and hidden not in probes:
            probes[hidden] = name
    if not probes:
        return prepared
    infos = {i.name: i for i in prepared.signature.outputs}
    added = []
    for hidden, name in probes.items():
        elem = outputs[name].type.tensor_type.elem_type
        graph.output.append(helper.make_tensor_value_info(hidden, elem, None))
        shown = infos[name]  # these activations keep their input's shape
        added.append(TensorInfo(hidden, shown.dtype, shown.shape))
    path = os.path.join(workdir, "model.probed.onnx")
    onnx.save(model, path)
    signature = dataclasses.replace(prepared.signature,
                                    outputs=(*prepared.signature.outputs, *added))
    return dataclasses.replace(prepared, onnx_path=path, signature=signature,
                               probes=tuple(probes.items()))
