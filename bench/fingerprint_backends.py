"""Backends with a known true precision for bench/fingerprint.py, built independently of
modelparity's own emulations (which serve as the yardsticks), loaded as `py:` backends.

- torch_tf32: the PyTorch model with the inputs and weights of every Linear/Conv (and the GRU's
  weights and input) rounded to TF32 (10 explicit mantissa bits) by hooks; FP32 accumulation.
  PyTorch's kernels, not ONNX Runtime's, so it is not the emulation run again. The GRU's
  hidden-state matmuls are not rounded (a hook cannot reach inside nn.GRU).
- ort_static_int8: ONNX Runtime static QDQ quantization calibrated on its own uniform [-1, 1]
  inputs (the yardstick `emulate:int8?mode=static` calibrates on the audit's first batch), or,
  with `?calib=DIR`, on the first `.npz` shards of an items folder (the real models, whose
  inputs have dynamic dimensions or come per item). Works on any ONNX model it can quantize.
- torch_dynamic_int8: PyTorch's dynamic quantization (fbgemm kernels) of Linear and GRU layers.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any

import numpy as np


def _round_tf32(tensor: Any) -> Any:
    import torch

    bits = tensor.detach().contiguous().view(torch.int32)
    # round to nearest even on the 13 dropped mantissa bits
    rounded = (bits + 0x0FFF + ((bits >> 13) & 1)) & ~0x1FFF
    return rounded.view(torch.float32)


class TorchModel:
    """The audited PyTorch model with the exported weights, changed by `prepare()`."""

    reported = "float32"
    source = ""

    def __init__(self, options: dict[str, str]) -> None:
        self.options = options

    def activate(self, model: Any) -> None:
        from safetensors.torch import load_file

        from modelparity.model import load_factory

        torch_source = model.torch_source
        module, _ = load_factory(torch_source.entry)
        module.load_state_dict(load_file(torch_source.weights), strict=True)
        self.names = torch_source.input_names
        self.outputs = torch_source.output_names
        self.module = self.prepare(module.eval())

    def prepare(self, module: Any) -> Any:
        return module

    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        with torch.inference_mode():
            out = self.module(*(torch.from_numpy(feed[n]) for n in self.names))
        return {self.outputs[0]: out.numpy()}

    def describe(self) -> dict[str, Any]:
        return {"precision": {"reported": self.reported, "source": self.source}}


class TorchDynamicInt8(TorchModel):
    reported, source = "int8", "bench: torch dynamic int8"

    def prepare(self, module: Any) -> Any:
        import torch

        return torch.ao.quantization.quantize_dynamic(
            module, {torch.nn.Linear, torch.nn.GRU}, dtype=torch.qint8)


class TorchTF32(TorchModel):
    reported, source = "tfloat32", "bench: torch with TF32 hooks"

    def prepare(self, module: Any) -> Any:
        import torch

        with torch.no_grad():
            for layer in module.modules():
                if isinstance(layer, (torch.nn.Linear, torch.nn.Conv2d, torch.nn.GRU,
                                      torch.nn.MultiheadAttention)):
                    for parameter in layer.parameters(recurse=False):
                        if parameter.dim() > 1:  # weights, not biases
                            parameter.copy_(_round_tf32(parameter))
                    layer.register_forward_pre_hook(
                        lambda _m, args: tuple(_round_tf32(a) if torch.is_tensor(a) else a
                                               for a in args))
        return module


class OrtStaticInt8:
    """ONNX Runtime static QDQ int8. Calibration data: by default 8 batches of 32 uniform
    [-1, 1] samples built from the input signature (static dimensions past the batch axis only);
    with the option `calib=DIR` (or the environment variable FINGERPRINT_INT8_CALIB), the first
    `calib_items` (default 8) `.npz` shards of DIR, one call each, as the audit feeds them: for
    real models with dynamic dimensions or inputs given per item. An input missing from a shard
    (a carried state given only in a sequence's first shard) is zeros of its static shape.

    Raises, so the audit records the backend as failed ("no truth" in the bench), when
    quantization fails or leaves no activation quantized (a model of tree ensembles, say)."""

    def __init__(self, options: dict[str, str]) -> None:
        self.options = options
        self.calib = options.get("calib") or os.environ.get("FINGERPRINT_INT8_CALIB") or None
        self.calib_items = int(options.get("calib_items", "8"))
        self.folder: str | None = None
        self.quantized: dict[str, int] = {}

    def _uniform(self, signature: Any) -> list[dict[str, np.ndarray]]:
        rng = np.random.default_rng(123)
        return [{i.name: rng.uniform(-1, 1, size=(32, *[d for d in i.shape[1:]]))
                 .astype(np.float32) for i in signature} for _ in range(8)]

    def _items(self, signature: Any) -> list[dict[str, np.ndarray]]:
        assert self.calib is not None
        files = sorted(f for f in os.listdir(self.calib) if f.endswith(".npz"))
        files = files[:self.calib_items]
        if not files:
            raise ValueError(f"ort_static_int8: no .npz shards in {self.calib}")
        feeds = []
        for name in files:
            with np.load(os.path.join(self.calib, name)) as shard:
                feed = {}
                for info in signature:
                    if info.name in shard.files:
                        feed[info.name] = np.asarray(shard[info.name], dtype=info.np_dtype)
                    elif all(isinstance(d, int) for d in info.shape):
                        feed[info.name] = np.zeros(info.shape, info.np_dtype)
                    else:
                        raise ValueError(f"ort_static_int8: {name} has no '{info.name}' and "
                                         f"its shape {info.shape_text()} is not static")
            feeds.append(feed)
        return feeds

    def activate(self, model: Any) -> None:
        import onnx
        import onnxruntime as ort
        from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

        signature = model.signature.inputs
        feeds = self._items(signature) if self.calib else self._uniform(signature)

        class Reader(CalibrationDataReader):
            def __init__(self) -> None:
                self.batches = iter(feeds)

            def get_next(self) -> dict[str, np.ndarray] | None:
                return next(self.batches, None)

        self.folder = tempfile.mkdtemp(prefix="bench-int8-")
        path = os.path.join(self.folder, "int8.onnx")
        quantize_static(model.onnx_path, path, Reader(), quant_format=QuantFormat.QDQ)
        nodes = onnx.load(path, load_external_data=False).graph.node
        dequantized = {o for n in nodes if n.op_type == "DequantizeLinear" for o in n.output}
        if not any(n.op_type == "QuantizeLinear" for n in nodes):
            raise RuntimeError("ort_static_int8: quantize_static quantized no activation "
                               "(no QuantizeLinear node): not an int8 model")
        for node in nodes:
            if node.op_type not in ("QuantizeLinear", "DequantizeLinear") and \
                    any(i in dequantized for i in node.input):
                self.quantized[node.op_type] = self.quantized.get(node.op_type, 0) + 1
        self.session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])

    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = [o.name for o in self.session.get_outputs()]
        return dict(zip(names, self.session.run(None, feed), strict=True))

    def describe(self) -> dict[str, Any]:
        model = os.path.basename(os.path.dirname(os.path.normpath(self.calib or ".")))
        data = f"{self.calib_items} items of {model}" if self.calib else "uniform [-1, 1]"
        ops = ", ".join(f"{k} {v}" for k, v in sorted(self.quantized.items()))
        return {"precision": {"reported": "int8",
                              "source": f"bench: ORT static QDQ int8, calibrated on {data}"},
                "quantized_ops": ops}

    def deactivate(self) -> None:
        self.session = None
        if self.folder:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None


def torch_tf32(options: dict[str, str]) -> TorchTF32:
    return TorchTF32(options)


def ort_static_int8(options: dict[str, str]) -> OrtStaticInt8:
    return OrtStaticInt8(options)


def torch_dynamic_int8(options: dict[str, str]) -> TorchDynamicInt8:
    return TorchDynamicInt8(options)
