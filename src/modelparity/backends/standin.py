"""Stand-ins for runtimes that cannot execute here (Core ML needs macOS).

Such a backend is *predicted*, not measured: its configuration says which precision it will
compute in (from the knowledge base, or from inspecting the converted model), and an emulation of
that precision (`emulate:fp16`, or plain ONNX Runtime CPU for FP32) runs in its place. The
description says so under "predicted", and every report shows the row as predicted, so nobody
takes an emulation for a measurement.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from modelparity.model import PreparedModel
from modelparity.spec import BackendSpec, parse_spec

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


class StandIn:
    """Runs the emulation of `precision` for `spec`, and describes the substitution."""

    def __init__(self, spec: BackendSpec, precision: str, reason: str, basis: str,
                 inspection: dict[str, Any] | None = None) -> None:
        from modelparity.backends import create_backend

        self.spec = spec
        self.precision = precision
        self.stand_in = STAND_INS[precision]
        self.reason = reason
        self.basis = basis
        self.inspection = inspection
        self.backend = create_backend(parse_spec(self.stand_in))

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
