"""Lower precisions emulated on any CPU: `emulate:<fp16|bf16|tf32|int8>`.

The FP32 model is rewritten into a temporary folder (never beside the user's file) and run on
ONNX Runtime's CPU provider with default session options; inputs and outputs stay FP32.

- `emulate:fp16`: weights and every activation stored in FP16 (CoreML's NeuralNetwork format on
  the Mac GPU, FP16 defaults on accelerators): every float tensor is rounded to FP16 between
  ops, so each op computes in FP32 on FP16 values, and |x| > 65504 becomes inf as in real FP16.
- `emulate:bf16`: the same with BF16 (OpenVINO's CPU default on CPUs with native BF16).
- `emulate:tf32`: NVIDIA TF32: only the multiplicands of MatMul, Gemm, Conv, ConvTranspose and
  Einsum are rounded to 10 mantissa bits; accumulation and everything else stay FP32.
- `emulate:int8`: ONNX Runtime dynamic quantization (`quantize_dynamic`, QInt8 weights per
  tensor; activations quantized to uint8 at run time with a scale computed over each batch, so
  a sample's output depends a little on the batch it runs in).

Not reproduced: rounding inside a kernel (FP16 accumulation, FP16 transcendentals), kernels
that fuse several ONNX ops and skip the rounding between them, subgraph bodies. The details
are in `modelparity.emulation.rewrite`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from typing import Any

import numpy as np

from modelparity.backends.base import Backend
from modelparity.backends.options import first_line
from modelparity.errors import ModelError, SpecError
from modelparity.model import PreparedModel
from modelparity.spec import BackendSpec

PRECISIONS = ("fp16", "bf16", "tf32", "int8")
REPORTED = {"fp16": "float16", "bf16": "bfloat16", "tf32": "tfloat32", "int8": "int8"}
#: Models whose weights exceed this are saved with their tensors in a separate file.
EXTERNAL_DATA_BYTES = 1_500_000_000
#: Op types in a dynamically quantized model that compute on int8/uint8 data.
QUANTIZED_OPS = frozenset({
    "MatMulInteger", "ConvInteger", "DynamicQuantizeMatMul", "MatMulIntegerToFloat", "QAttention",
    "DynamicQuantizeLSTM", "QGemm", "QLinearMatMul", "QLinearConv", "GatherBlockQuantized",
})


def check_spec(spec: BackendSpec) -> str:
    """The precision the spec names; `SpecError` for an unknown one or any option."""
    precision = spec.target.strip().lower()
    if precision not in PRECISIONS:
        raise SpecError(
            f"{spec.text}: unknown emulated precision '{spec.target}' "
            f"(expected one of: {', '.join(PRECISIONS)})"
        )
    if spec.options:
        raise SpecError(
            f"{spec.text}: unknown option(s) {', '.join(sorted(spec.options))} "
            "(emulate: backends take no options; known options: none)"
        )
    return precision


def _weight_bytes(model: Any) -> int:
    """Bytes of the model's initializers (from their shapes, so it costs no serialization)."""
    from onnx import helper

    total = 0
    for tensor in model.graph.initializer:
        try:
            itemsize = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.data_type)).itemsize
        except (KeyError, ValueError, TypeError):
            itemsize = 4
        total += int(np.prod(tensor.dims, dtype=np.int64)) * itemsize
    return total


def save_model(model: Any, path: str) -> None:
    """Save inline, or with the weights in `<name>.data` beside it when the model is large."""
    import onnx

    if _weight_bytes(model) > EXTERNAL_DATA_BYTES:
        onnx.save_model(
            model,
            path,
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location=os.path.basename(path) + ".data",
            size_threshold=1024,
        )
    else:
        onnx.save_model(model, path)


class EmulateBackend(Backend):
    known_options = frozenset()

    def __init__(self, spec: BackendSpec) -> None:
        super().__init__(spec)
        self.precision = check_spec(spec)
        self.session: Any = None
        self.tempdir: str | None = None
        self.rounded_tensors: int | None = None
        self.rewritten_nodes: int | None = None
        self.added_nodes: int | None = None
        self.untyped: int | None = None
        self.method = ""
        self.output_names: list[str] = []

    # ---- building the emulated model

    def _rewrite(self, model: PreparedModel, out_path: str) -> None:
        import onnx

        from modelparity.emulation import emulate

        try:
            proto = onnx.load(model.onnx_path)  # pulls in external data
        except Exception as exc:
            raise ModelError(
                f"{self.spec.text}: could not load {model.onnx_path}: {first_line(exc)}"
            ) from None
        report = emulate(proto, self.precision)
        self.rounded_tensors = report.rounded_tensors
        self.rewritten_nodes = report.nodes
        self.added_nodes = report.added_nodes
        self.untyped = report.untyped
        self.method = report.method
        save_model(proto, out_path)

    def _quantize(self, model: PreparedModel, out_path: str) -> None:
        import onnx
        from onnxruntime.quantization import QuantType, quantize_dynamic

        source = onnx.load(model.onnx_path, load_external_data=False)
        big = _weight_bytes(source) > EXTERNAL_DATA_BYTES
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)  # the quantizer logs a "run pre-processing" warning
        try:
            quantize_dynamic(
                model.onnx_path,
                out_path,
                weight_type=QuantType.QInt8,
                use_external_data_format=big,
            )
        except Exception as exc:
            raise ModelError(
                f"{self.spec.text}: ONNX Runtime's dynamic quantization failed on "
                f"{model.onnx_path}: {first_line(exc)}"
            ) from None
        finally:
            root.setLevel(level)
        quantized = onnx.load(out_path, load_external_data=False)
        self.rewritten_nodes = sum(n.op_type in QUANTIZED_OPS for n in quantized.graph.node)
        self.rounded_tensors = sum(  # the int8 weights (their zero points are int8 too)
            t.data_type == onnx.TensorProto.INT8 and not t.name.endswith("_zero_point")
            for t in quantized.graph.initializer
        )
        self.added_nodes = len(quantized.graph.node) - len(source.graph.node)
        self.method = "onnxruntime.quantization.quantize_dynamic(weight_type=QInt8)"

    # ---- protocol

    def activate_impl(self, model: PreparedModel) -> None:
        import onnxruntime as ort

        self.tempdir = tempfile.mkdtemp(prefix=f"modelparity-emulate-{self.precision}-")
        try:
            out_path = os.path.join(self.tempdir, "model.onnx")
            if self.precision == "int8":
                self._quantize(model, out_path)
            else:
                self._rewrite(model, out_path)
            options = ort.SessionOptions()
            options.log_severity_level = 3
            try:
                self.session = ort.InferenceSession(
                    out_path, sess_options=options, providers=["CPUExecutionProvider"]
                )
            except Exception as exc:
                raise ModelError(
                    f"{self.spec.text}: ONNX Runtime could not load the emulated model of "
                    f"{model.onnx_path}: {first_line(exc)}"
                ) from None
        except BaseException:
            self._remove_tempdir()
            raise
        self.output_names = [o.name for o in self.session.get_outputs()]

    def infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outputs = self.session.run(None, feed)
        return dict(zip(self.output_names, outputs, strict=True))

    def describe_impl(self) -> dict[str, Any]:
        import onnxruntime as ort

        info: dict[str, Any] = {
            "runtime": "emulation",
            "emulates": self.precision,
            "precision": {"reported": REPORTED[self.precision], "source": self._source()},
            "onnxruntime": ort.__version__,
            "execution_provider": "CPUExecutionProvider",
            "options": dict(self.spec.options),
            "rounded_tensors": self.rounded_tensors,
            "nodes": self.rewritten_nodes,
            "added_nodes": self.added_nodes,
        }
        if self.method:
            info["method"] = self.method
        if self.untyped:
            info["untyped_tensors"] = self.untyped  # left unrounded: type unknown
        if self.precision == "int8":
            info["batch_dependent"] = True
        return info

    def _source(self) -> str:
        how = f" ({self.method})" if self.method else ""
        return {
            "fp16": "emulation: every float tensor rounded to FP16 between ops"
            f"{how}, ops computed in FP32 on ONNX Runtime CPU",
            "bf16": "emulation: every float tensor rounded to BF16 between ops"
            f"{how}, ops computed in FP32 on ONNX Runtime CPU",
            "tf32": "emulation: MatMul/Gemm/Conv/ConvTranspose/Einsum operands rounded to TF32"
            f"{how}, FP32 accumulation and FP32 elsewhere on ONNX Runtime CPU",
            "int8": "emulation: ONNX Runtime dynamic quantization, int8 weights and per-batch "
            "uint8 activations, on ONNX Runtime CPU",
        }[self.precision]

    def deactivate_impl(self) -> None:
        self.session = None
        self._remove_tempdir()

    def _remove_tempdir(self) -> None:
        if self.tempdir is not None:
            with contextlib.suppress(OSError):
                shutil.rmtree(self.tempdir)
            self.tempdir = None


def create(spec: BackendSpec) -> EmulateBackend:
    return EmulateBackend(spec)
