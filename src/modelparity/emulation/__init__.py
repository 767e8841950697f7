"""Lower-precision emulation on any CPU: ONNX graph rewrites (see `rewrite`) that make ONNX
Runtime's CPU provider compute an FP32 model as if in FP16, BF16 or TF32."""

from __future__ import annotations

from modelparity.emulation.rewrite import (
    FORMATS,
    MANTISSA_BITS,
    ROUNDINGS,
    TF32_OPERANDS,
    Rewrite,
    emulate,
    emulate_storage,
    emulate_tf32,
    layer_plan,
    round_fp16,
    round_mantissa,
    round_to,
    tensor_types,
)

__all__ = [
    "FORMATS",
    "MANTISSA_BITS",
    "ROUNDINGS",
    "TF32_OPERANDS",
    "Rewrite",
    "emulate",
    "emulate_storage",
    "emulate_tf32",
    "layer_plan",
    "round_fp16",
    "round_mantissa",
    "round_to",
    "tensor_types",
]
