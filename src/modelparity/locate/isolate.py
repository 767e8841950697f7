"""Isolated mode (`locate --isolate`): a suspect node run on its own, on the candidate, fed the
reference's values of what it reads, so its own error is told apart from what it inherits.

Each node becomes a one-node ONNX model (`onnx.utils.Extractor`, with its weights); its inputs
are the reference's spooled intermediate tensors (and the data itself for graph inputs); then
the same pipeline audits it: reference and candidate, each in its own worker.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from modelparity.decisions import TaskConfig
from modelparity.execute.spool import OutputSpool
from modelparity.inputs import InputSource
from modelparity.inputs.base import calls
from modelparity.locate.analyse import NodeError
from modelparity.locate.expose import Exposure
from modelparity.result import AuditResult


def isolate(exposure: Exposure, suspects: Sequence[NodeError], reference_spool: str,
            source: InputSource, batch_size: int, workdir: str,
            run: Callable[..., AuditResult]) -> dict[str, float | str]:
    """{node: its own error (norm_error of the candidate run alone), or why it was not run}.
    `run(model_path, data_path, task)` audits a node model on the candidate."""
    import onnx
    from onnx.utils import Extractor

    model = onnx.load(exposure.model.onnx_path)
    initializers = {t.name for t in model.graph.initializer}
    graph_inputs = {i.name for i in model.graph.input} - initializers
    spool = OutputSpool.finished(reference_spool)
    if spool is None:
        return {s.node: "the reference's spooled tensors are not there" for s in suspects}
    nodes = {node.name: node for node in exposure.nodes}
    extractor = Extractor(model)
    data_inputs = _inputs(source, batch_size, graph_inputs)
    folder = os.path.join(workdir, "isolated")
    os.makedirs(folder, exist_ok=True)
    found: dict[str, float | str] = {}
    for suspect in suspects:
        node = nodes[suspect.node]
        members = [nodes[name] for name in suspect.cluster] or [node]  # a fused region whole
        inside = {name for member in members for name in member.outputs}
        reads = list(dict.fromkeys(name for member in members for name in member.inputs
                                   if name not in initializers and name not in inside))
        missing = [name for name in reads if name not in graph_inputs
                   and name not in spool.names]
        if missing or not reads:
            found[node.name] = (f"reads '{missing[0]}', which was not compared" if missing
                                else "reads nothing computed from the data")
            continue
        if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
               for member in members for a in model.graph.node[member.index].attribute):
            found[node.name] = "has a subgraph"
            continue
        try:
            alone = extractor.extract_model(reads, list(node.compared))
        except Exception as exc:  # onnx's extractor raises plain exceptions
            found[node.name] = f"cannot be extracted ({type(exc).__name__})"
            continue
        path = os.path.join(folder, f"node_{node.index}.onnx")
        onnx.save(alone, path)
        values = {name: data_inputs[name] if name in graph_inputs else None for name in reads}
        spooled = spool.columns([name for name, v in values.items() if v is None])
        values.update(spooled)
        data = os.path.join(folder, f"node_{node.index}.npz")
        np.savez(data, **{name: np.asarray(v) for name, v in values.items()})
        result = run(path, data, TaskConfig(kind="regression", output=node.compared[0]))
        candidate = result.candidates[0]
        if not candidate.ok:
            found[node.name] = f"failed alone: {candidate.error}"
            continue
        errors = [candidate.errors[name].norm_error for name in node.compared
                  if name in candidate.errors]
        found[node.name] = max((e for e in errors if not math.isnan(e)), default=math.nan)
    return found


def _inputs(source: InputSource, batch_size: int, names: set[str]) -> dict[str, Any]:
    parts: dict[str, list[np.ndarray]] = {name: [] for name in names}
    for batch in calls(source, batch_size):
        for name in names:
            if name in batch:
                parts[name].append(np.asarray(batch[name]))
    return {name: np.concatenate(arrays) for name, arrays in parts.items() if arrays}
