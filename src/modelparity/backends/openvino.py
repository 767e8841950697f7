"""The OpenVINO runtime: `openvino:<device>?<PROPERTY>=<value>&...`.

Properties are passed to `compile_model` as given. After compiling, the precision the plugin
actually chose is read back (`INFERENCE_PRECISION_HINT`): on CPUs with native BF16 it is bf16
unless told otherwise, and a request for f16 may come back as something else.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Mapping
from typing import Any

import numpy as np

from modelparity.backends.base import Backend
from modelparity.backends.options import first_line
from modelparity.backends.runtime import Option, Repro, Runtime
from modelparity.errors import BackendUnavailable, ModelError, SpecError
from modelparity.model import PreparedModel
from modelparity.spec import BackendSpec

READ_BACK = ("INFERENCE_PRECISION_HINT", "EXECUTION_MODE_HINT", "PERFORMANCE_HINT",
             "INFERENCE_NUM_THREADS", "NUM_STREAMS")
VIRTUAL_DEVICES = ("AUTO", "HETERO", "MULTI", "BATCH")
BOOKKEEPING_LAYERS = frozenset({"Input", "Output", "Const", "Reorder"})  # not computation


#: Properties compile_model takes on the CPU and the virtual devices (AUTO, HETERO, MULTI,
#: BATCH), from their SUPPORTED_PROPERTIES in OpenVINO 2026.4 less the read-only ones, plus the
#: Core properties every device takes. Other devices (GPU, NPU, ...) take any property: OpenVINO
#: checks those itself when it compiles.
PROPERTIES = (
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
    """The properties read back from the compiled model (defaults included)."""
    return {str(k): str(v) for k, v in (description.get("compiled_properties") or {}).items()}


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

    def activate_impl(self, model: PreparedModel) -> None:
        import openvino as ov

        self.core = ov.Core()
        base = self.device.split(":")[0]
        if base not in VIRTUAL_DEVICES and base not in self.core.available_devices:
            raise BackendUnavailable(
                f"{self.spec.text}: OpenVINO device {self.device} is not available here "
                f"(available: {', '.join(self.core.available_devices)})"
            )
        try:
            ov_model = self.core.read_model(model.onnx_path)
        except Exception as exc:
            raise ModelError(f"{self.spec.text}: OpenVINO could not read {model.onnx_path}: "
                             f"{first_line(exc)}") from None
        try:
            self.compiled = self.core.compile_model(ov_model, self.device, dict(self.spec.options))
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


def create(spec: BackendSpec) -> OpenVINOBackend:
    return OpenVINOBackend(spec)


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
)
