"""Stand-ins for runtimes that cannot execute here (Core ML needs macOS).

Such a backend is *predicted*, not measured: its configuration says which precision it will
compute in (from the knowledge base, or from inspecting the converted model), and an emulation of
that precision (`emulate:fp16`, or plain ONNX Runtime CPU for FP32) runs in its place. The
description says so under "predicted", and every report shows the row as predicted, so nobody
takes an emulation for a measurement.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from modelparity.model import PreparedModel
from modelparity.spec import BackendSpec

#: Which backend stands in for a predicted precision.
STAND_INS = {
    "fp32": "ort:cpu",
    "fp16": "emulate:fp16",
    "bf16": "emulate:bf16",
    "tf32": "emulate:tf32",
    "int8": "emulate:int8",
}
REPORTED = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16", "tf32": "tfloat32",
            "int8": "int8"}


@dataclass(frozen=True)
class Prediction:
    """What a backend that cannot execute here is expected to compute in, and why."""

    precision: str  # fp32 | fp16 | bf16 | tf32 | int8
    reason: str  # why the runtime cannot execute here
    basis: str  # where the precision comes from (the knowledge base, an inspection)
    inspection: dict[str, Any] | None = None


class StandIn:
    """Runs the emulation of the predicted precision for `spec`, and describes the
    substitution."""

    def __init__(self, spec: BackendSpec, prediction: Prediction) -> None:
        # the registry is looked up at run time: it lists this module's importers
        registry = importlib.import_module("modelparity.backends.registry")
        self.spec = spec
        self.precision = prediction.precision
        self.stand_in = STAND_INS[prediction.precision]
        self.reason = prediction.reason
        self.basis = prediction.basis
        self.inspection = prediction.inspection
        self.backend = registry.create_backend(registry.parse_spec(self.stand_in))

    def activate(self, model: PreparedModel) -> None:
        self.backend.activate(model)

    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.backend.infer(feed)

    def describe(self) -> dict[str, Any]:
        predicted: dict[str, Any] = {
            "stand_in": self.stand_in,
            "reason": self.reason,
            "precision": self.precision,
            "basis": self.basis,
            "measured": False,
        }
        if self.inspection is not None:
            predicted["inspection"] = self.inspection
        return {
            "predicted": predicted,
            "precision": {"predicted": REPORTED[self.precision],
                          "source": f"predicted from {self.basis}"},
            "stand_in_description": self.backend.describe(),
        }

    def deactivate(self) -> None:
        self.backend.deactivate()
