"""The runtime's own testimony of the precision it used, set beside the fingerprint's measurement.

Why: a fingerprint reads the precision from the outputs, a runtime states it from the inside
(OpenVINO's runtime model names each executed layer's precision; ONNX Runtime's profile names
the execution provider that ran each node). Either can miss: a saturating last op can hide BF16
layers' error from the outputs, and a runtime states what it chose, not what its kernels did. So
both are shown together and the report says plainly whether they agree. Pure: it reads a backend's
description (plain JSON, as stored in report.json), so a report re-rendered from its JSON says
the same.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from modelparity.numerics.fingerprint import Fingerprint

OPENVINO_PRECISIONS = {"f32": "fp32", "f16": "fp16", "bf16": "bf16", "i8": "int8", "u8": "int8"}
"""OpenVINO's runtime precision names -> the fingerprint's verdicts. Others (i32, i64, boolean,
f64, i4, u4, f8 formats) say nothing about the precision of the floating-point computation."""

INT8_LAYERS = frozenset({"Convolution", "GroupConvolution", "Deconvolution", "FullyConnected",
                         "MatMul", "Gemm"})
"""Layers whose u8/i8 runtime precision means quantised arithmetic. Elsewhere u8 is how the CPU
plugin holds booleans (an attention mask's Select or Eltwise), which is no quantisation."""

LOWEST_FIRST = ("int8", "bf16", "fp16", "fp32")
"""Precisions by how few bits of mantissa they keep: the lowest one a model uses rules its error."""

MAX_SHOWN = 6
"""Layer kinds named in the text; a big model has dozens, the most frequent tell the story."""

CPU_PROVIDER = "CPUExecutionProvider"


@dataclass(frozen=True)
class Testimony:
    """What the runtime says it did: where it says so, the precision it implies (None: it
    states none), and a short text of the facts it rests on."""

    source: str
    precision: str | None
    text: str


def _counts(value: Any) -> dict[str, int]:
    if not isinstance(value, Mapping):
        return {}
    counts = {}
    for key, count in value.items():
        if isinstance(count, int) and not isinstance(count, bool) and count > 0:
            counts[str(key)] = count
    return counts


def _listing(counts: Mapping[str, int], separator: str) -> str:
    ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    shown = [f"{name}{separator}{count}" for name, count in ordered[:MAX_SHOWN]]
    if len(ordered) > MAX_SHOWN:
        shown.append(f"{len(ordered) - MAX_SHOWN} more")
    return ", ".join(shown)


def runtime_model_precision(layers: Mapping[str, int]) -> str | None:
    """The lowest precision among the runtime model's layers ("Convolution bf16": 12), as a
    fingerprint verdict; None where no layer names a floating-point or quantised precision."""
    found = set()
    for key in layers:
        layer, _, precision = key.rpartition(" ")
        verdict = OPENVINO_PRECISIONS.get(precision.strip().lower())
        if verdict == "int8" and layer not in INT8_LAYERS:
            continue
        if verdict is not None:
            found.add(verdict)
    return next((p for p in LOWEST_FIRST if p in found), None)


def runtime_says(description: Mapping[str, Any]) -> Testimony | None:
    """The runtime's testimony in a backend's description, or None where it gave none. A
    predicted backend's stand-in testifies only for itself (its description is nested), so a
    prediction carries none."""
    layers = _counts(description.get("runtime_precisions"))
    if layers:
        return Testimony("OpenVINO runtime model", runtime_model_precision(layers),
                         "runtime model: " + _listing(layers, " x"))
    placement = _counts(description.get("node_placement"))
    if placement:
        # the CPU provider computes float models in FP32; what another provider computes in
        # depends on its options, which the knowledge base weighs, not the placement
        precision = "fp32" if set(placement) == {CPU_PROVIDER} else None
        return Testimony("ONNX Runtime node placement", precision,
                         "nodes: " + _listing(placement, " "))
    return None


def disagrees(told: Testimony, fingerprint: Fingerprint | None) -> bool:
    """True where the runtime names one precision and the outputs clearly show another."""
    return (told.precision is not None and fingerprint is not None
            and fingerprint.verdict not in ("inconclusive", "unknown")
            and fingerprint.verdict != told.precision)


def agreement(told: Testimony, fingerprint: Fingerprint | None) -> str:
    """Whether the runtime's testimony and the measured precision agree, in plain words."""
    if told.precision is None:
        return "the runtime states no precision"
    if fingerprint is None:
        return f"not measured; the runtime says {told.precision}"
    verdict = fingerprint.verdict
    if verdict == "inconclusive":
        return f"measurement inconclusive; the runtime says {told.precision}"
    if verdict == "unknown":
        return f"the outputs match no known precision; the runtime says {told.precision}"
    if verdict == told.precision:
        return "agrees"
    return f"disagrees: the runtime says {told.precision}, the outputs show {verdict}"


def told_line(told: Testimony, fingerprint: Fingerprint | None) -> str:
    """The line every report prints beside the fingerprint's evidence."""
    return f"runtime's own testimony: {told.text} — {agreement(told, fingerprint)}"
