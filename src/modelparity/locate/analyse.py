"""Where in the graph a candidate's error comes from: pure NumPy/Python over per-tensor errors.

Every number here is a tensor's `norm_error`, ||candidate - reference|| / ||reference||, the
error at the tensor's own scale. Along the graph it stays near the precision's unit roundoff
where ops are well conditioned (each op rounds its result once more) and jumps where an op
amplifies what it reads: a cancellation, an exponential of large values (a Softmax over large
logits), a long accumulation, or an overflow to inf. So each node is judged by its *gain*:

    gain = error(node) / max(inherited, rounding, floor)

- inherited: the largest error among the tensors it reads (graph inputs and weights count as
  rounded once: the unit roundoff of the precision);
- rounding: the precision's unit roundoff (2^-11 FP16, 2^-8 BF16, 2^-11 TF32, 2^-24 FP32): the
  error any op adds by storing its result in that precision;
- floor: the same tensor's error in an FP32 run of another implementation (the FP32 noise).

The *first divergent node* is the first, in graph order, whose gain is at least `GAIN` while
its error is above twice the floor, and whose error reaches the model's outputs (one of the
outputs it feeds is above its FP32 floor too). Then the nodes that amplify most, and a summary
by op type. Under FP16 everywhere no well-conditioned node has a large gain, so what is named
is what FP16 cannot carry, not FP16 itself.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from modelparity.locate.expose import Node
from modelparity.serialize import json_float

#: A node amplifies the error it inherits by at least this much: beyond its own rounding.
GAIN = 8.0
#: Unit roundoff (half an ulp of 1) of each precision an error is judged against.
ROUNDING = {"fp32": 2.0**-24, "tf32": 2.0**-11, "fp16": 2.0**-11, "bf16": 2.0**-8}
AMPLIFIERS_LISTED = 10


@dataclass(frozen=True)
class NodeError:
    """One node's error (at its most erroneous exposed output) and what explains it."""

    node: str
    op_type: str
    index: int
    depth: int
    tensor: str  # the output the numbers are read from
    error: float  # norm_error of the candidate against the reference
    floor: float  # the same for the FP32 yardstick (NaN where it did not run)
    explained: float  # the same for an emulation of the candidate's precision (NaN: none)
    inherited: float  # the largest error among the tensors it reads
    gain: float  # error / max(inherited, rounding, floor)
    nonfinite: int = 0  # values finite in the reference, NaN or inf here
    isolated: float = math.nan  # its error run alone on the reference's inputs (--isolate)
    # where the backend fused nodes before it (returned none of their outputs): every node of
    # the region, in graph order, this one last; empty for a node on its own
    cluster: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        return " + ".join(self.cluster) if self.cluster else self.node

    def to_dict(self) -> dict[str, Any]:
        return {"node": self.node, "op_type": self.op_type, "index": self.index,
                "depth": self.depth, "tensor": self.tensor, "error": json_float(self.error),
                "floor": json_float(self.floor), "explained": json_float(self.explained),
                "inherited": json_float(self.inherited), "gain": json_float(self.gain),
                "nonfinite": self.nonfinite, "isolated": json_float(self.isolated),
                "cluster": list(self.cluster)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NodeError:
        def number(key: str) -> float:
            value = data.get(key)
            return math.nan if value is None else float(value)

        return cls(str(data["node"]), str(data["op_type"]), int(data["index"]),
                   int(data["depth"]), str(data["tensor"]), number("error"), number("floor"),
                   number("explained"), number("inherited"), number("gain"),
                   int(data.get("nonfinite", 0)), number("isolated"),
                   tuple(data.get("cluster") or ()))


@dataclass(frozen=True)
class OpSummary:
    op_type: str
    nodes: int
    max_gain: float
    median_error: float

    def to_dict(self) -> dict[str, Any]:
        return {"op_type": self.op_type, "nodes": self.nodes,
                "max_gain": json_float(self.max_gain),
                "median_error": json_float(self.median_error)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> OpSummary:
        gain, median = data.get("max_gain"), data.get("median_error")
        return cls(str(data["op_type"]), int(data["nodes"]),
                   math.nan if gain is None else float(gain),
                   math.nan if median is None else float(median))


@dataclass(frozen=True)
class Localization:
    nodes: tuple[NodeError, ...]  # every compared node, in graph order
    first: str | None  # the first divergent node, or None
    amplifiers: tuple[str, ...]  # nodes by gain, largest first (above the floor only)
    by_op: tuple[OpSummary, ...]


@dataclass(frozen=True)
class TensorError:
    """What `localize` needs of one tensor's comparison (from `ErrorStats`)."""

    error: float
    nonfinite: int = 0

    @property
    def value(self) -> float:
        return math.inf if self.nonfinite else self.error


def _value(errors: Mapping[str, TensorError] | None, name: str) -> float:
    found = errors.get(name) if errors else None
    return found.value if found is not None else math.nan


def judge(nodes: Sequence[Node], graph_outputs: Sequence[str],
             candidate: Mapping[str, TensorError], precision: str,
             floor: Mapping[str, TensorError] | None = None,
             explained: Mapping[str, TensorError] | None = None) -> Localization:
    """Judge every node whose outputs were compared; see the module's docstring."""
    rounding = ROUNDING.get(precision, ROUNDING["fp32"])
    produced = {name: node for node in nodes for name in node.outputs}
    results: list[NodeError] = []
    by_tensor: dict[str, float] = {}
    fused: dict[str, tuple[Node, ...]] = {}  # tensor not returned -> the nodes behind it
    for node in nodes:
        # a node whose compared outputs the backend did not return was fused into what reads
        # them: the reader stands for the whole region (its `cluster`)
        behind = tuple(dict.fromkeys(n for name in node.inputs for n in fused.get(name, ())))
        region = (*behind, node)
        measured = [(name, _value(candidate, name)) for name in node.compared
                    if name in candidate]
        if not measured:
            if node.compared:
                for name in node.outputs:
                    fused[name] = region
            continue
        tensor, error = max(measured, key=lambda item: -1.0 if math.isnan(item[1]) else item[1])
        for name, value in measured:
            by_tensor[name] = value
        inside = {name for member in region for name in member.outputs}
        reads = [name for member in region for name in member.inputs if name not in inside]
        inherited = max((by_tensor.get(name, rounding if name not in produced else math.nan)
                         for name in reads), key=_order, default=rounding)
        base = _floor(_value(floor, tensor))
        scale = max(v for v in (inherited, rounding, base) if not math.isnan(v))
        gain = error / scale if not math.isnan(error) else math.nan
        kind = "+".join(m.op_type for m in region)  # a fused region: its kernel's ops
        results.append(NodeError(node.name, kind, node.index, node.depth, tensor,
                                 error, _value(floor, tensor), _value(explained, tensor),
                                 inherited, gain, candidate[tensor].nonfinite,
                                 cluster=tuple(m.name for m in behind) and
                                 tuple(m.name for m in region)))
    reaches = _reaches_outputs(nodes, graph_outputs, candidate, floor)
    first = next((r.node for r in results
                  if r.gain >= GAIN and r.error > 2 * _floor(r.floor) and reaches.get(r.node)),
                 None)
    above = [r for r in results if r.error > 2 * _floor(r.floor) and not math.isnan(r.gain)]
    amplifiers = tuple(r.node for r in sorted(above, key=lambda r: -r.gain)
                       [:AMPLIFIERS_LISTED] if r.gain > 1)
    return Localization(tuple(results), first, amplifiers, _by_op(results))


def _order(value: float) -> float:
    return -1.0 if math.isnan(value) else value


def _floor(value: float) -> float:
    """A measured floor of 0 (bit-identical runs) or none at all is FP32's own rounding."""
    return value if not math.isnan(value) and value > ROUNDING["fp32"] else ROUNDING["fp32"]


def _reaches_outputs(nodes: Sequence[Node], graph_outputs: Sequence[str],
                     candidate: Mapping[str, TensorError],
                     floor: Mapping[str, TensorError] | None) -> dict[str, bool]:
    """For each node: does one of the graph outputs it feeds carry an error above its FP32
    floor? A node whose error dies out before the outputs changes no decision."""
    reaching = {name for name in graph_outputs  # tensors a broken graph output comes from
                if _value(candidate, name) > 2 * _floor(_value(floor, name))}
    reaches: dict[str, bool] = {}
    for node in reversed(nodes):
        # its outputs, compared or not (integers, unmatched): all carry the error on
        reaches[node.name] = any(name in reaching for name in node.outputs)
        if reaches[node.name]:
            reaching.update(node.inputs)
    return reaches


def _by_op(results: Sequence[NodeError]) -> tuple[OpSummary, ...]:
    import numpy as np

    groups: dict[str, list[NodeError]] = {}
    for result in results:
        groups.setdefault(result.op_type, []).append(result)
    summary = []
    for op_type, members in groups.items():
        gains = [m.gain for m in members if not math.isnan(m.gain)]
        errors = [m.error for m in members if math.isfinite(m.error)]
        summary.append(OpSummary(op_type, len(members), max(gains) if gains else math.nan,
                                 float(np.median(errors)) if errors else math.nan))
    return tuple(sorted(summary, key=lambda s: -_order(s.max_gain)))
