"""Lower precisions emulated on any CPU: `emulate:<fp16|bf16|tf32|int8>`.

The FP32 model is rewritten into a temporary folder (never beside the user's file) and run on
ONNX Runtime's CPU provider with default session options; inputs and outputs stay FP32.

- `emulate:fp16`: weights and every activation stored in FP16 (CoreML's NeuralNetwork format on
  the Mac GPU, FP16 defaults on accelerators): every float tensor is rounded to FP16 between
  ops, so each op computes in FP32 on FP16 values, and |x| > 65504 becomes inf as in real FP16.
- `emulate:bf16`: the same with BF16 (OpenVINO's CPU default on CPUs with native BF16).
- `emulate:tf32`: NVIDIA TF32: only the multiplicands of MatMul, Gemm, Conv, ConvTranspose and
  Einsum are rounded to 10 mantissa bits; accumulation and everything else stay FP32.
- `emulate:fp16?rounding=layer`, `emulate:bf16?rounding=layer`: values are rounded where they
  enter or leave a low-precision compute layer, as runtimes with fused kernels do (OpenVINO's
  BF16): a MatMul/Conv/Gemm with its bias/scale/BatchNorm and activation epilogue reads rounded
  operands and weights and is rounded once, at its last tensor; what runs before the first layer
  (graph inputs, an input normalisation) and after the last (a final Sigmoid/Softmax/LogSoftmax
  graph output and its input chain back to the previous layer) stays FP32.
  `rounding=op` (the default) rounds after every op, graph inputs included.
- `emulate:int8`: ONNX Runtime dynamic quantization (`quantize_dynamic`, QInt8 weights per
  tensor; activations quantized to uint8 at run time with a scale computed over each batch, so
  a sample's output depends a little on the batch it runs in). `mode=dynamic` is the default.
- `emulate:int8?reduce_range=1`: the same with 7-bit weights (PyTorch's fbgemm dynamic
  quantization and other x86 INT8 paths without VNNI do this).
- `emulate:int8?mode=static`: ONNX Runtime static quantization as most INT8 deployments use it
  (`quantize_static`, QDQ format, per tensor, MinMax calibration, ORT's defaults: symmetric
  QInt8 weights, asymmetric QInt8 activations). There is no data at activation, so the model is
  quantized on the first `infer()` call, calibrated on that batch (the audit's untimed warm-up),
  and every later batch runs with those fixed scales.

Not reproduced: rounding inside a kernel (FP16 accumulation, FP16 transcendentals), subgraph
bodies, and with `rounding=op` kernels that fuse several ONNX ops and skip the rounding between
them. The details are in `modelparity.emulation.rewrite`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

import numpy as np

from modelparity.backends.base import Backend
from modelparity.backends.options import first_line
from modelparity.backends.runtime import Option, Runtime
from modelparity.errors import ModelError, SpecError
from modelparity.model import PreparedModel
from modelparity.spec import BackendSpec

PRECISIONS = ("fp16", "bf16", "tf32", "int8")
#: fp16/bf16: `keep=3,7`, the positions (in the graph's node list) of nodes kept in FP32: a
#: mixed-precision model, as `modelparity keep-fp32` searches for one.
KEEP = {"keep": "positions of nodes kept in FP32, separated by commas"}
#: The options each precision takes: option -> allowed values, the first the default.
OPTIONS: dict[str, dict[str, tuple[str, ...]]] = {
    "fp16": {"rounding": ("op", "layer")},
    "bf16": {"rounding": ("op", "layer")},
    "tf32": {},
    "int8": {"mode": ("dynamic", "static"), "reduce_range": ("0", "1")},
}
#: Samples per calibration run of `mode=static` (MinMax over chunks equals MinMax over all).
CALIBRATION_CHUNK = 64
REPORTED = {"fp16": "float16", "bf16": "bfloat16", "tf32": "tfloat32", "int8": "int8"}
#: Models whose weights exceed this are saved with their tensors in a separate file.
EXTERNAL_DATA_BYTES = 1_500_000_000
#: Op types in a dynamically quantized model that compute on int8/uint8 data.
QUANTIZED_OPS = frozenset({
    "MatMulInteger", "ConvInteger", "DynamicQuantizeMatMul", "MatMulIntegerToFloat", "QAttention",
    "DynamicQuantizeLSTM", "QGemm", "QLinearMatMul", "QLinearConv", "GatherBlockQuantized",
})


@contextlib.contextmanager
def _quiet_quantizer() -> Iterator[None]:
    """ONNX Runtime's quantizers log a "run pre-processing" warning on the root logger."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def check_spec(spec: BackendSpec) -> str:
    """The precision the spec names; `SpecError` for an unknown one, an option it does not
    take or a value that option does not have."""
    return parse_options(spec)[0]


def parse_options(spec: BackendSpec) -> tuple[str, dict[str, str]]:
    """(precision, every option of that precision with its value, defaults filled in)."""
    precision = spec.target.strip().lower()
    if precision not in PRECISIONS:
        raise SpecError(
            f"{spec.text}: unknown emulated precision '{spec.target}' "
            f"(expected one of: {', '.join(PRECISIONS)})"
        )
    allowed = OPTIONS[precision]
    free = KEEP if precision in ("fp16", "bf16") else {}
    unknown = sorted(k for k in spec.options
                     if k.strip().lower() not in allowed and k.strip().lower() not in free)
    if unknown:
        known = ", ".join(f"{k}=<{'|'.join(v)}>" for k, v in allowed.items()) or "none"
        raise SpecError(
            f"{spec.text}: unknown option(s) {', '.join(unknown)} for emulate:{precision} "
            f"(known options: {known})"
        )
    options = {k: v[0] for k, v in allowed.items()}
    for key, value in spec.options.items():
        key = key.strip().lower()
        value = value.strip().lower()
        if key in free:
            if not re.fullmatch(r"\d+(,\d+)*", value):
                raise SpecError(f"{spec.text}: bad value '{value}' for option '{key}' "
                                f"(expected node positions separated by commas, e.g. 3,7)")
            options[key] = value
            continue
        if value not in allowed[key]:
            raise SpecError(
                f"{spec.text}: bad value '{value}' for option '{key}' "
                f"(expected one of: {', '.join(allowed[key])})"
            )
        options[key] = value
    return precision, options


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
    def __init__(self, spec: BackendSpec) -> None:
        super().__init__(spec)
        self.precision, self.options = parse_options(spec)
        self.rounding = self.options.get("rounding")
        self.mode = self.options.get("mode")
        self.session: Any = None
        self.source_path: str | None = None  # mode=static: the FP32 model, quantized lazily
        self.quantized_path: str | None = None
        self._dynamic_batch_inputs: dict[str, bool] = {}
        self.calibration_samples: int | None = None
        self.fused: int | None = None
        self.kept_fp32: int | None = None
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
        keep = frozenset(int(i) for i in self.options.get("keep", "").split(",") if i)
        report = emulate(proto, self.precision, self.rounding or "op", keep)
        if self.rounding == "layer":
            self.fused = report.fused
            self.kept_fp32 = report.kept_fp32
        self.rounded_tensors = report.rounded_tensors
        self.rewritten_nodes = report.nodes
        self.added_nodes = report.added_nodes
        self.untyped = report.untyped
        self.method = report.method
        save_model(proto, out_path)

    def _private_copy(self, path: str) -> str:
        """The model copied into this backend's own folder: ONNX Runtime's quantizers write
        side files (`<name>-inferred.onnx`) beside their input, and two quantizing backends
        sharing the user's folder would delete each other's."""
        import onnx

        assert self.tempdir is not None
        copy = os.path.join(self.tempdir, "source.onnx")
        save_model(onnx.load(path), copy)
        return copy

    def _quantize(self, model: PreparedModel, source_path: str, out_path: str) -> None:
        import onnx
        from onnxruntime.quantization import QuantType, quantize_dynamic

        source = onnx.load(source_path, load_external_data=False)
        big = _weight_bytes(source) > EXTERNAL_DATA_BYTES
        try:
            with _quiet_quantizer():
                quantize_dynamic(
                    source_path,
                    out_path,
                    weight_type=QuantType.QInt8,
                    use_external_data_format=big,
                    # 7-bit weights, as PyTorch's fbgemm and other x86 int8 paths without VNNI use
                    reduce_range=self.options.get("reduce_range") == "1",
                )
        except Exception as exc:
            raise ModelError(
                f"{self.spec.text}: ONNX Runtime's dynamic quantization failed on "
                f"{model.onnx_path}: {first_line(exc)}"
            ) from None
        quantized = onnx.load(out_path, load_external_data=False)
        self.rewritten_nodes = sum(n.op_type in QUANTIZED_OPS for n in quantized.graph.node)
        self.rounded_tensors = sum(  # the int8 weights (their zero points are int8 too)
            t.data_type == onnx.TensorProto.INT8 and not t.name.endswith("_zero_point")
            for t in quantized.graph.initializer
        )
        self.added_nodes = len(quantized.graph.node) - len(source.graph.node)
        self.method = ("onnxruntime.quantization.quantize_dynamic(weight_type=QInt8, "
                       f"reduce_range={self.options.get('reduce_range') == '1'})")

    def _quantize_static(self, feed: dict[str, np.ndarray]) -> None:
        """Quantize the FP32 model statically, calibrated on `feed` (the first batch)."""
        import onnx
        from onnxruntime.quantization import (
            CalibrationDataReader,
            CalibrationMethod,
            QuantFormat,
            QuantType,
            quantize_static,
        )

        assert self.source_path is not None and self.quantized_path is not None
        batches = _calibration_batches(feed, self._dynamic_batch_inputs)

        class Reader(CalibrationDataReader):
            def __init__(self) -> None:
                self.items = iter(batches)

            def get_next(self) -> dict[str, np.ndarray] | None:
                return next(self.items, None)

        source = onnx.load(self.source_path, load_external_data=False)
        big = _weight_bytes(source) > EXTERNAL_DATA_BYTES
        try:
            with _quiet_quantizer():
                quantize_static(
                    self.source_path,
                    self.quantized_path,
                    Reader(),
                    quant_format=QuantFormat.QDQ,
                    per_channel=False,
                    activation_type=QuantType.QInt8,
                    weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax,
                    use_external_data_format=big,
                )
        except Exception as exc:
            raise ModelError(
                f"{self.spec.text}: ONNX Runtime's static quantization failed on "
                f"{self.source_path}: {first_line(exc)}"
            ) from None
        quantized = onnx.load(self.quantized_path, load_external_data=False)
        self.rewritten_nodes = sum(n.op_type == "QuantizeLinear" for n in quantized.graph.node)
        self.rounded_tensors = sum(  # the int8 weights (their zero points are int8 too)
            t.data_type == onnx.TensorProto.INT8 and not t.name.endswith("_zero_point")
            for t in quantized.graph.initializer
        )
        self.added_nodes = len(quantized.graph.node) - len(source.graph.node)
        self.calibration_samples = _samples(feed)
        self.method = (
            "onnxruntime.quantization.quantize_static(QDQ, per_channel=False, "
            "activation_type=QInt8, weight_type=QInt8, MinMax)"
        )
        self.session = self._session(self.quantized_path, self.source_path)

    # ---- protocol

    def _session(self, path: str, source: str) -> Any:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        try:
            return ort.InferenceSession(
                path, sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:
            raise ModelError(
                f"{self.spec.text}: ONNX Runtime could not load the emulated model of "
                f"{source}: {first_line(exc)}"
            ) from None

    def activate_impl(self, model: PreparedModel) -> None:
        self.tempdir = tempfile.mkdtemp(prefix=f"modelparity-emulate-{self.precision}-")
        try:
            out_path = os.path.join(self.tempdir, "model.onnx")
            if self.mode == "static":
                # Quantized on the first infer(); the FP32 model loads now, so a broken model
                # fails here, and it tells the outputs and which inputs have a free batch axis.
                plain = self._session(model.onnx_path, model.onnx_path)
                self.output_names = [o.name for o in plain.get_outputs()]
                self._dynamic_batch_inputs = {
                    i.name: bool(i.shape) and not isinstance(i.shape[0], int)
                    for i in plain.get_inputs()
                }
                self.source_path = self._private_copy(model.onnx_path)
                self.quantized_path = out_path
                return
            if self.precision == "int8":
                self._quantize(model, self._private_copy(model.onnx_path), out_path)
            else:
                self._rewrite(model, out_path)
            self.session = self._session(out_path, model.onnx_path)
        except BaseException:
            self._remove_tempdir()
            raise
        self.output_names = [o.name for o in self.session.get_outputs()]

    def infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.session is None and self.mode == "static":
            self._quantize_static(feed)
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
            **self.options,
            "rounded_tensors": self.rounded_tensors,
            "nodes": self.rewritten_nodes,
            "added_nodes": self.added_nodes,
        }
        if self.method:
            info["method"] = self.method
        if self.untyped:
            info["untyped_tensors"] = self.untyped  # left unrounded: type unknown
        if self.rounding == "layer" and self.fused is not None:
            info["fused_tensors"] = self.fused  # left FP32 inside fused layers
            info["fp32_final_tensors"] = self.kept_fp32  # final Sigmoid/Softmax chain
        if self.precision == "int8":
            info["batch_dependent"] = self.mode == "dynamic"
        if self.mode == "static":
            info["calibration"] = "first batch"
            info["calibration_samples"] = self.calibration_samples  # None until the first infer
        return info

    def _source(self) -> str:
        how = f" ({self.method})" if self.method else ""
        if self.rounding == "layer":
            name = self.precision.upper()
            return (
                f"emulation: float tensors rounded to {name} once per fused layer "
                f"(MatMul/Conv/Gemm + element-wise epilogue), final Sigmoid/Softmax in FP32"
                f"{how}, ops computed in FP32 on ONNX Runtime CPU"
            )
        if self.mode == "static":
            return (
                "emulation: ONNX Runtime static QDQ quantization, int8 weights and int8 "
                "activations with scales calibrated on the first batch, on ONNX Runtime CPU"
            )
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


def _samples(feed: dict[str, np.ndarray]) -> int:
    """Samples in a batch: the common leading dimension of its inputs (1 when they differ)."""
    leading = {int(np.shape(v)[0]) for v in feed.values() if np.ndim(v) >= 1}
    return leading.pop() if len(leading) == 1 else 1


def _calibration_batches(
    feed: dict[str, np.ndarray], dynamic: dict[str, bool]
) -> list[dict[str, np.ndarray]]:
    """The batch in chunks of `CALIBRATION_CHUNK` samples when every input has a free leading
    axis of the same size (less memory for the calibrator's extra outputs), else whole."""
    n = _samples(feed)
    splittable = (
        len(feed) > 0
        and all(dynamic.get(k, False) and np.ndim(v) >= 1 for k, v in feed.items())
        and n > CALIBRATION_CHUNK
    )
    if not splittable:
        return [dict(feed)]
    return [
        {k: np.ascontiguousarray(v[i : i + CALIBRATION_CHUNK]) for k, v in feed.items()}
        for i in range(0, n, CALIBRATION_CHUNK)
    ]


def create(spec: BackendSpec) -> EmulateBackend:
    return EmulateBackend(spec)


RUNTIME = Runtime(
    name="emulate",
    title="A lower precision emulated on the CPU",
    usage="emulate:<fp16|bf16|tf32|int8>",
    module=__name__,
    package="onnxruntime",
    extra="modelparity",
    target_options={precision: (*(Option(k, "choice", choices=v) for k, v in opts.items()),
                                *(Option(k, "text", help=h) for k, h in KEEP.items()
                                  if precision in ("fp16", "bf16")))
                    for precision, opts in OPTIONS.items()},
    open_targets=None,  # check_spec names each precision's options in its own words
    check=check_spec,
)
