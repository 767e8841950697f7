"""Backends for tests, run through the real `py:module:factory` plugin in real worker processes:
ONNX Runtime CPU with one planted change (a nudged output, a segfault, a hang, an exception), so
each test knows exactly what the audit must find. Run them with warmup=0 so that batch and row
numbers are exact."""

from __future__ import annotations

import ctypes
import os
import time

import numpy as np
import onnxruntime as ort


class Planted:
    def __init__(self, options: dict[str, str]) -> None:
        self.options = options
        self.rows_seen = 0
        self.batch = 0

    def activate(self, model) -> None:
        if "activations" in self.options:  # lets a test count how often a backend really ran
            with open(self.options["activations"], "a") as handle:
                handle.write("activated\n")
                for name in filter(None, self.options.get("record_env", "").split(",")):
                    handle.write(f"{name}={os.environ.get(name)}\n")
        if "mkdtemp" in self.options:  # a model copy, as the emulations make one
            import tempfile

            tempfile.mkdtemp(prefix="modelparity-emulate-planted-")
        if self.options.get("fail") == "load":
            raise RuntimeError("planted failure while loading")
        path = model.onnx_path
        if "bf16_before" in self.options:
            path = _round_before(path, self.options["bf16_before"])
        if "round_at" in self.options or "perturb" in self.options:
            path = _fault(path, self.options.get("round_at"), self.options.get("perturb"))
        self.session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        self.names = [o.name for o in self.session.get_outputs()]

    def infer(self, feed):
        outputs = dict(zip(self.names, self.session.run(None, feed), strict=True))
        rows = len(next(iter(feed.values())))
        at = int(self.options.get("at", "-1"))
        if self.batch == at:
            self.planted(outputs)
        if "nudge" in self.options and ("when_exposed" not in self.options
                                        or len(self.names) > int(self.options["when_exposed"])):
            self.nudge(outputs, rows)  # when_exposed=N: only with more than N outputs
        for name in filter(None, self.options.get("drop", "").split(",")):
            outputs.pop(name, None)  # as a runtime that fused the node returns no output
        self.rows_seen += rows
        self.batch += 1
        return outputs

    def planted(self, outputs) -> None:
        once = self.options.get("once")  # fail only where this file is not there yet
        if once is not None:
            if os.path.exists(once):
                return
            open(once, "w").close()
        kind = self.options.get("fail")
        if kind == "crash":
            ctypes.string_at(0)  # a real segfault, as a broken execution provider would cause
        elif kind == "hang":
            time.sleep(3600)
        elif kind == "raise":
            raise ValueError("planted failure in batch")
        elif kind == "exit":
            os._exit(3)

    def nudge(self, outputs, rows) -> None:
        """Add `delta` to output `name` (default: the first) at the given global sample rows,
        optionally only in column `column` or at one `element` (comma-separated index)."""
        name = self.options.get("name", self.names[0])
        delta = float(self.options["nudge"])
        targets = [int(r) for r in self.options.get("rows", "").split(",") if r]
        column = self.options.get("column")
        element = tuple(int(i) for i in self.options.get("element", "").split(",") if i)
        array = np.array(outputs[name], copy=True)
        for row in targets:
            local = row - self.rows_seen
            if 0 <= local < rows:
                if element:  # one element of the sample (an index within it)
                    array[(local, *element)] += delta
                elif column is None:
                    array[local] += delta
                else:
                    array[local, int(column)] += delta
        outputs[name] = array

    def describe(self) -> dict:
        return {"planted": dict(self.options)}


def _round_before(path: str, op_type: str) -> str:
    """The model with the layer before every `op_type` node (a final Sigmoid) rounding its
    output to BF16: BF16 layers under an FP32 activation, OpenVINO's pattern, made here without
    modelparity's own emulation."""
    import tempfile

    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(path)
    graph = model.graph
    producer = {name: node for node in graph.node for name in node.output}
    for node in [n for n in graph.node if n.op_type == op_type]:
        tensor = node.input[0]
        layer = producer[tensor]
        raw, low = f"{tensor}__f32", f"{tensor}__bf16"
        layer.output[list(layer.output).index(tensor)] = raw
        at = list(graph.node).index(layer) + 1
        graph.node.insert(at, helper.make_node("Cast", [raw], [low], to=TensorProto.BFLOAT16))
        graph.node.insert(at + 1, helper.make_node("Cast", [low], [tensor], to=TensorProto.FLOAT))
    handle, name = tempfile.mkstemp(suffix=".onnx")
    os.close(handle)
    onnx.save(model, name)
    return name


def _fault(path: str, tensor: str | None, weight: str | None) -> str:
    """One planted fault: `tensor` (a node output) rounded to FP16 where it is written, or the
    initializer `weight` scaled by 1 + 2^-10, so a test knows the node `locate` must name."""
    import tempfile

    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(path)
    graph = model.graph
    layer = next((n for n in graph.node if tensor in n.output), None) if tensor else None
    if layer is not None:  # a model cut from the graph may not hold that node
        raw, low = f"{tensor}__f32", f"{tensor}__f16"
        layer.output[list(layer.output).index(tensor)] = raw
        at = list(graph.node).index(layer) + 1
        graph.node.insert(at, helper.make_node("Cast", [raw], [low], to=TensorProto.FLOAT16))
        graph.node.insert(at + 1, helper.make_node("Cast", [low], [tensor], to=TensorProto.FLOAT))
    init = next((t for t in graph.initializer if t.name == weight), None) if weight else None
    if init is not None:
        init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * (1 + 2**-10), weight))
    handle, name = tempfile.mkstemp(suffix=".onnx")
    os.close(handle)
    onnx.save(model, name)
    return name


def make(options: dict[str, str]) -> Planted:
    return Planted(options)
