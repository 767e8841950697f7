"""The OpenVINO runtime: `openvino:<device>?<PROPERTY>=<value>&...`.

Properties are passed to `compile_model` as given. After compiling, the precision the plugin
actually chose is read back (`INFERENCE_PRECISION_HINT`): on CPUs with native BF16 it is bf16
unless told otherwise, and a request for f16 may come back as something else.
"""

from __future__ import annotations

import contextlib
import os
from collections import Counter
from collections.abc import Mapping
from typing import Any

import numpy as np

from modelparity.backends.base import Backend
from modelparity.backends.options import first_line
from modelparity.backends.runtime import TRUE, Option, Repro, Runtime
from modelparity.errors import BackendUnavailable, ModelError, SpecError
from modelparity.model import PreparedModel
from modelparity.model.ir import fp16_compressed, static_facts
from modelparity.spec import BackendSpec

READ_BACK = ("INFERENCE_PRECISION_HINT", "EXECUTION_MODE_HINT", "PERFORMANCE_HINT",
             "INFERENCE_NUM_THREADS", "NUM_STREAMS")
VIRTUAL_DEVICES = ("AUTO", "HETERO", "MULTI", "BATCH")
BOOKKEEPING_LAYERS = frozenset({"Input", "Output", "Const", "Reorder"})  # not computation


#: Which file the backend reads, not passed to compile_model. `ir`: an OpenVINO IR (.xml with
#: its .bin) made from the audited ONNX model, run in its place (the reference still runs the
#: ONNX file: what the IR changed shows as this backend's error). `compress_to_fp16`: the model
#: as `openvino.save_model` writes it with that setting (its default, and ovc's, is true:
#: FP32 weights stored as FP16 and decompressed at load); with `ir`, false re-saves the ONNX
#: original uncompressed, the fix for an IR saved with the default.
MODEL_OPTIONS = (
    Option("ir", "text", "an OpenVINO IR (.xml, with its .bin) made from the ONNX model, run "
           "instead of the ONNX file", group="model"),
    Option("compress_to_fp16", "bool", "run the model as openvino.save_model saves it with "
           "this setting (default true: weights stored as FP16)", group="model"),
)


#: Properties compile_model takes on the CPU and the virtual devices (AUTO, HETERO, MULTI,
#: BATCH), from their SUPPORTED_PROPERTIES in OpenVINO 2026.4 less the read-only ones, plus the
#: Core properties every device takes. Other devices (GPU, NPU, ...) take any property: OpenVINO
#: checks those itself when it compiles.
PROPERTIES = (
    *MODEL_OPTIONS,
    Option("INFERENCE_PRECISION_HINT", "choice", "the precision the plugin computes in (CPU: "
           "bf16 by default where the CPU has native BF16)", ("f32", "bf16", "f16"),
           group="property"),
    Option("EXECUTION_MODE_HINT", "choice", "ACCURACY keeps FP32 where the model is FP32",
           ("ACCURACY", "PERFORMANCE"), group="property"),
    Option("PERFORMANCE_HINT", "choice", "", ("LATENCY", "THROUGHPUT", "CUMULATIVE_THROUGHPUT"),
           group="property"),
    Option("INFERENCE_NUM_THREADS", "int", "threads (0: the plugin decides)", group="property"),
    *(Option(name, group="property") for name in (
        "NUM_STREAMS", "PERFORMANCE_HINT_NUM_REQUESTS", "ENABLE_CPU_PINNING",
        "ENABLE_CPU_RESERVATION", "ENABLE_HYPER_THREADING", "ENABLE_TENSOR_PARALLEL",
        "ENABLE_WEIGHTLESS", "SCHEDULING_CORE_TYPE", "CPU_DENORMALS_OPTIMIZATION",
        "CPU_SPARSE_WEIGHTS_DECOMPRESSION_RATE", "DYNAMIC_QUANTIZATION_GROUP_SIZE",
        "KEY_CACHE_GROUP_SIZE", "KEY_CACHE_PRECISION", "KV_CACHE_PRECISION",
        "VALUE_CACHE_GROUP_SIZE", "VALUE_CACHE_PRECISION", "LOG_LEVEL",
        "MODEL_DISTRIBUTION_POLICY", "PERF_COUNT", "TBB_PARTITIONER", "WEIGHTS_PATH",
        "DEVICE_ID", "CACHE_DIR", "CACHE_MODE", "ENABLE_MMAP", "COMPILATION_NUM_THREADS",
        "MODEL_PRIORITY", "DEVICES_UTILIZATION_THRESHOLD", "DEVICE_BIND_BUFFER",
        "ENABLE_RUNTIME_FALLBACK", "ENABLE_STARTUP_FALLBACK", "LOW_POWER_DEVICE",
        "MULTI_DEVICE_PRIORITIES", "SCHEDULE_POLICY", "AUTO_BATCH_TIMEOUT")),
)
CHECKED_DEVICES = frozenset({"cpu", *(d.lower() for d in VIRTUAL_DEVICES)})



def reported_options(description: Mapping[str, Any]) -> dict[str, str]:
    """The properties read back from the compiled model (defaults included), and what the
    graph shows: FP32 weights stored as FP16 (`compress_to_fp16`), quantize-dequantize pairs
    (`quantized`)."""
    reported = {str(k): str(v) for k, v in
                (description.get("compiled_properties") or {}).items()}
    weights = description.get("weights")
    if isinstance(weights, dict) and "fp16_compressed" in weights:
        reported["compress_to_fp16"] = "true" if weights["fp16_compressed"] else "false"
    if isinstance(description.get("fake_quantize"), int):  # an INT8 QDQ model (rule OV-8)
        reported["quantized"] = "true" if description["fake_quantize"] else "false"
    return reported


def repro_side(spec: BackendSpec) -> dict[str, Any]:
    return {"device": device_name(spec), "properties": spec.options}


def device_name(spec: BackendSpec) -> str:
    return spec.target.upper()


def precision_name(value: Any) -> str:
    """OpenVINO element types print as `<Type: 'bfloat16'>`; keep the plain name."""
    text = str(getattr(value, "get_type_name", lambda: value)())
    return {"bf16": "bfloat16", "f16": "float16", "f32": "float32"}.get(text, text)


class OpenVINOBackend(Backend):
    def __init__(self, spec: BackendSpec) -> None:
        super().__init__(spec)
        self.device = device_name(spec)
        self.compiled: Any = None
        self.request: Any = None
        self.core: Any = None
        self.folder: str | None = None  # an IR saved here for compress_to_fp16
        self.model_file: str | None = None
        self.weights: dict[str, Any] | None = None
        self.fake_quantize: int | None = None

    def activate_impl(self, model: PreparedModel) -> None:
        import openvino as ov

        self.core = ov.Core()
        base = self.device.split(":")[0]
        if base not in VIRTUAL_DEVICES and base not in self.core.available_devices:
            raise BackendUnavailable(
                f"{self.spec.text}: OpenVINO device {self.device} is not available here "
                f"(available: {', '.join(self.core.available_devices)})"
            )
        ov_model, saved = self._read(model)
        constants, values = fp16_compressed(saved) if saved else (0, 0)
        self.weights = {"fp16_compressed": constants > 0, "fp16_constants": constants,
                        "fp16_values": values}
        # a QDQ model's QuantizeLinear/DequantizeLinear pairs, as OpenVINO reads them
        self.fake_quantize = sum(op.get_type_name() == "FakeQuantize" for op in ov_model.get_ops())
        properties = {k: v for k, v in self.spec.options.items()
                      if RUNTIME.group_of(self.spec.target, k, "property") == "property"}
        try:
            self.compiled = self.core.compile_model(ov_model, self.device, properties)
        except Exception as exc:
            message = first_line(exc)
            if self.spec.options and any(k in str(exc) for k in self.spec.options):
                raise SpecError(
                    f"{self.spec.text}: OpenVINO rejected an option: {message}"
                ) from None
            raise ModelError(
                f"{self.spec.text}: OpenVINO could not compile the model: {message}"
            ) from None
        self.request = self.compiled.create_infer_request()
        # An output can carry several names (OpenVINO folds an Identity into the node before
        # it, e.g. skl2onnx's MLP): the one the model declares is the one to report.
        declared = set(model.signature.output_names)
        self.output_names = [next((n for n in sorted(out.get_names()) if n in declared),
                                  out.get_any_name()) for out in self.compiled.outputs]

    def _read(self, model: PreparedModel) -> tuple[Any, str | None]:
        """The model this spec runs, and the IR file it was read from (None: the ONNX file):
        the IR given with `ir`, or the ONNX as `save_model` writes it with `compress_to_fp16`
        (saved into a temporary folder)."""
        import tempfile

        import openvino as ov

        options = {k.lower(): v for k, v in self.spec.options.items()}
        path, compress = options.get("ir"), options.get("compress_to_fp16")
        self.model_file = path or model.onnx_path
        try:
            if compress is None or (path and compress.lower() in TRUE):
                return self.core.read_model(self.model_file), path  # an IR keeps what it has
            source = model.onnx_path  # save_model's output from the ONNX original
            self.folder = tempfile.mkdtemp(prefix="modelparity-ir-")  # removed at deactivate
            saved = os.path.join(self.folder, "model.xml")
            ov.save_model(self.core.read_model(source), saved,
                          compress_to_fp16=compress.lower() in TRUE)
            self.model_file = (f"{source}, as openvino.save_model(compress_to_fp16="
                               f"{compress.lower() in TRUE}) saves it")
            return self.core.read_model(saved), saved
        except Exception as exc:
            raise ModelError(f"{self.spec.text}: OpenVINO could not read {self.model_file}: "
                             f"{first_line(exc)}") from None

    def infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.request.infer(feed)
        # The request reuses its output buffers: copy before the next batch overwrites them.
        return {
            name: np.array(self.request.get_output_tensor(i).data, copy=True)
            for i, name in enumerate(self.output_names)
        }

    def describe_impl(self) -> dict[str, Any]:
        import openvino as ov

        info: dict[str, Any] = {
            "runtime": "openvino",
            "version": ov.get_version(),
            "device": self.device,
            "options": dict(self.spec.options),
        }
        if self.model_file:
            info["model_file"] = self.model_file
        if self.weights:
            info["weights"] = self.weights
        if self.fake_quantize is not None:
            info["fake_quantize"] = self.fake_quantize
        if self.core is not None:
            with contextlib.suppress(Exception):  # virtual devices have no single name
                info["device_name"] = self.core.get_property(
                    self.device.split(":")[0], "FULL_DEVICE_NAME"
                )
        if self.compiled is not None:
            properties = {}
            for key in READ_BACK:
                try:
                    properties[key] = str(self.compiled.get_property(key))
                except Exception:  # not every device reports every property
                    continue
            info["compiled_properties"] = properties
            try:
                chosen = precision_name(self.compiled.get_property("INFERENCE_PRECISION_HINT"))
                info["precision"] = {"reported": chosen, "source": "INFERENCE_PRECISION_HINT "
                                     "read back from the compiled model"}
            except Exception:
                pass
            info["runtime_precisions"] = self.runtime_precisions()
            fused = self.fused_layers()
            if fused:
                info["fused_layers"] = fused
        return info

    def fused_layers(self) -> list[list[str]]:
        """The model's layers each executed node fused (`originalLayersNames` in its rt_info,
        where it names more than one): `locate` judges those as one region and leaves their
        inner tensors unexposed, so exposing intermediates does not undo the fusion."""
        try:
            runtime_model = self.compiled.get_runtime_model()
        except Exception:
            return []
        fused = []
        for op in runtime_model.get_ordered_ops():
            info = op.get_rt_info()
            if "originalLayersNames" not in info:
                continue
            names = [n for n in info["originalLayersNames"].astype(str).split(",") if n]
            if len(names) > 1:
                fused.append(names)
        return fused

    def runtime_precisions(self) -> dict[str, int]:
        """The runtime's own testimony: how many executed compute layers ran at each precision,
        by layer type ("FullyConnected bf16": 2), from the compiled runtime model's rt_info."""
        try:
            runtime_model = self.compiled.get_runtime_model()
        except Exception:
            return {}
        counts: Counter[str] = Counter()
        for op in runtime_model.get_ordered_ops():
            info = op.get_rt_info()
            if "runtimePrecision" not in info or "layerType" not in info:
                continue
            layer = info["layerType"].astype(str)
            if layer in BOOKKEEPING_LAYERS:
                continue
            counts[f"{layer} {info['runtimePrecision'].astype(str)}"] += 1
        return dict(sorted(counts.items()))

    def deactivate_impl(self) -> None:
        self.request = None
        self.compiled = None
        if self.folder:
            import shutil

            shutil.rmtree(self.folder, ignore_errors=True)


def create(spec: BackendSpec) -> OpenVINOBackend:
    return OpenVINOBackend(spec)


def static_options(spec: BackendSpec) -> dict[str, str]:
    """What the IR an `ir=` option names says before it runs (its FP16-stored weights)."""
    return static_facts(spec.options)


def check(spec: BackendSpec) -> None:
    """An `ir=` path names an IR that is there, with its weights: one line before any start."""
    from modelparity.model.ir import check_ir

    for key, value in spec.options.items():
        if key.lower() == "ir":
            check_ir(value, f"-b {spec.text}")


class _OpenVINORuntime(Runtime):
    """OpenVINO's device names carry suffixes (GPU.1, HETERO:GPU,CPU): a device is open or
    checked by its base name."""

    def is_open(self, target: str) -> bool:
        return target.split(":")[0].split(".")[0] not in CHECKED_DEVICES


#: The repro script's run(side) for this runtime: it needs only numpy and the runtime, and
#: reads MODEL, INPUT_NAMES, OUTPUT_NAMES (and for torch ENTRY, WEIGHTS, WORKDIR) and
#: load_inputs() from the script around it.
REPRO_RUNNER = '''

def run(side):
    import openvino as ov

    core = ov.Core()
    compiled = core.compile_model(core.read_model(MODEL), side["device"], side["properties"])
    chosen = compiled.get_property("INFERENCE_PRECISION_HINT")
    print(f"  {side['spec']}: openvino {ov.get_version()}, INFERENCE_PRECISION_HINT read back: "
          f"{chosen}")
    request = compiled.create_infer_request()
    request.infer(load_inputs())
    return {out.get_any_name(): np.array(request.get_tensor(out).data)
            for out in compiled.outputs}
'''


RUNTIME = _OpenVINORuntime(
    name="openvino",
    title="OpenVINO",
    usage="openvino:<device>?<PROPERTY>=<value>",
    module=__name__,
    package="openvino",
    distribution="openvino",
    extra="modelparity[openvino]",
    default_target="cpu",
    target_words="device",
    options=PROPERTIES,
    reported_options=reported_options,
    repro=Repro(repro_side,
                REPRO_RUNNER),
    rules=("modelparity.knowledge", "rules/openvino.toml"),
    check=check,
    static_options=static_options,
)
