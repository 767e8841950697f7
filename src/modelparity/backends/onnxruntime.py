"""ONNX Runtime with any execution provider: `ort:<ep>?<option>=<value>&...`.

Session options (`graph_optimization_level`, `intra_op_num_threads`, `inter_op_num_threads`,
`execution_mode`) and session config entries (dotted keys: `session.*`, `mlas.*`,
`optimization.*`) configure the session; every other option is passed to the execution provider
as a provider option, exactly as given.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

from modelparity.backends.base import Backend
from modelparity.backends.options import as_bool, as_choice, as_int, first_line
from modelparity.backends.standin import StandIn
from modelparity.errors import BackendUnavailable, ModelError, SpecError
from modelparity.model import PreparedModel
from modelparity.spec import BackendSpec

PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "trt": "TensorrtExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "dml": "DmlExecutionProvider",
    "directml": "DmlExecutionProvider",
    "rocm": "ROCMExecutionProvider",
    "migraphx": "MIGraphXExecutionProvider",
    "qnn": "QNNExecutionProvider",
    "cann": "CANNExecutionProvider",
    "dnnl": "DnnlExecutionProvider",
    "xnnpack": "XnnpackExecutionProvider",
    "nnapi": "NnapiExecutionProvider",
    "acl": "ACLExecutionProvider",
    "armnn": "ArmNNExecutionProvider",
    "webgpu": "WebGpuExecutionProvider",
    "vitisai": "VitisAIExecutionProvider",
    "azure": "AzureExecutionProvider",
}
SESSION_OPTIONS = (
    "graph_optimization_level",
    "intra_op_num_threads",
    "inter_op_num_threads",
    "execution_mode",
)
OPT_LEVELS = {
    "disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL", "0": "ORT_DISABLE_ALL", "1": "ORT_ENABLE_BASIC",
    "2": "ORT_ENABLE_EXTENDED", "99": "ORT_ENABLE_ALL",
}


BOOL = "0|1"
#: Provider options checked before anything loads: {provider: {option: allowed values}}. Values
#: are matched case-insensitively; BOOL means 0/1; None means any text. A provider marked
#: complete here rejects option names it does not list (CoreML's set is small and fixed).
EP_OPTIONS: dict[str, dict[str, tuple[str, ...] | str | None]] = {
    "CoreMLExecutionProvider": {
        "ModelFormat": ("MLProgram", "NeuralNetwork"),
        "MLComputeUnits": ("ALL", "CPUOnly", "CPUAndGPU", "CPUAndNeuralEngine"),
        "RequireStaticInputShapes": BOOL,
        "EnableOnSubgraphs": BOOL,
        "SpecializationStrategy": ("Default", "FastPrediction"),
        "ProfileComputePlan": BOOL,
        "AllowLowPrecisionAccumulationOnGPU": BOOL,
        "ModelCacheDirectory": None,
    },
    "CUDAExecutionProvider": {
        "use_tf32": BOOL, "device_id": None, "cudnn_conv_algo_search":
            ("EXHAUSTIVE", "HEURISTIC", "DEFAULT"),
        "enable_cuda_graph": BOOL, "prefer_nhwc": BOOL, "use_ep_level_unified_stream": BOOL,
    },
    "TensorrtExecutionProvider": {
        "trt_fp16_enable": BOOL, "trt_int8_enable": BOOL, "trt_bf16_enable": BOOL,
        "trt_engine_cache_enable": BOOL, "trt_timing_cache_enable": BOOL,
        "trt_engine_cache_path": None, "device_id": None,
    },
}
COMPLETE = frozenset({"CoreMLExecutionProvider"})


def provider_name(spec: BackendSpec) -> str:
    """Map the spec target (`cuda`, or a full `CUDAExecutionProvider`) to the provider's name."""
    target = spec.target.lower()
    if target in PROVIDERS:
        return PROVIDERS[target]
    for name in PROVIDERS.values():
        if name.lower() == target:
            return name
    raise SpecError(
        f"{spec.text}: unknown ONNX Runtime execution provider '{spec.target}' "
        f"(expected one of: {', '.join(sorted(set(PROVIDERS) - {'trt', 'directml'}))})"
    )


def split_options(spec: BackendSpec) -> tuple[dict[str, str], dict[str, str]]:
    """(session options, provider options) from the spec's options."""
    session = {
        k: v for k, v in spec.options.items() if k in SESSION_OPTIONS or "." in k
    }
    provider = {k: v for k, v in spec.options.items() if k not in session}
    return session, provider


def check_spec(spec: BackendSpec) -> None:
    """Validate what can be validated without importing onnxruntime."""
    provider = provider_name(spec)
    session, provider_options = split_options(spec)
    known = EP_OPTIONS.get(provider, {})
    for key, value in provider_options.items():
        if key not in known:
            if provider in COMPLETE:
                raise SpecError(f"{spec.text}: unknown {provider} option '{key}' (known: "
                                f"{', '.join(known)})")
            continue
        allowed = known[key]
        if allowed == BOOL:
            as_bool(spec, key, value)
        elif isinstance(allowed, tuple) and value.lower() not in {a.lower() for a in allowed}:
            raise SpecError(f"{spec.text}: option {key}={value} is not one of: "
                            f"{', '.join(allowed)}")
    for key, value in session.items():
        if key == "graph_optimization_level":
            as_choice(spec, key, value, OPT_LEVELS)
        elif key == "execution_mode":
            as_choice(spec, key, value, {"sequential": 0, "parallel": 1})
        elif key.endswith("_threads"):
            as_int(spec, key, value)


class OnnxRuntimeBackend(Backend):
    def __init__(self, spec: BackendSpec) -> None:
        super().__init__(spec)
        check_spec(spec)
        self.provider = provider_name(spec)
        self.session_options, self.provider_options = split_options(spec)
        self.session: Any = None
        self.stand_in: StandIn | None = None
        if self.provider == "CoreMLExecutionProvider" and sys.platform != "darwin":
            from modelparity.knowledge import lint, predicted_precision

            findings = lint(spec)
            rules = ", ".join(f.rule.id for f in findings) or "no rule applies"
            self.stand_in = StandIn(
                spec, predicted_precision(findings),
                reason=f"Core ML cannot execute on {sys.platform}: the CoreML execution "
                       "provider exists only in ONNX Runtime builds for macOS and iOS",
                basis=f"the knowledge base ({rules}) for these provider options")

    def _session_options(self) -> Any:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.log_severity_level = 3  # errors only: warnings would flood the terminal
        for key, value in self.session_options.items():
            if key == "graph_optimization_level":
                level = as_choice(self.spec, key, value, OPT_LEVELS)
                so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, str(level))
            elif key == "intra_op_num_threads":
                so.intra_op_num_threads = as_int(self.spec, key, value)
            elif key == "inter_op_num_threads":
                so.inter_op_num_threads = as_int(self.spec, key, value)
            elif key == "execution_mode":
                parallel = value.strip().lower() == "parallel"
                as_choice(self.spec, key, value, {"sequential": 0, "parallel": 1})
                so.execution_mode = (
                    ort.ExecutionMode.ORT_PARALLEL if parallel else ort.ExecutionMode.ORT_SEQUENTIAL
                )
            else:
                so.add_session_config_entry(key, value)
        return so

    def activate_impl(self, model: PreparedModel) -> None:
        if self.stand_in is not None:
            self.stand_in.activate(model)
            return
        import onnxruntime as ort

        available = ort.get_available_providers()
        if self.provider not in available:
            raise BackendUnavailable(
                f"{self.spec.text}: {self.provider} is not available in onnxruntime "
                f"{ort.__version__} here (available: {', '.join(available)})"
            )
        providers: list[Any] = [(self.provider, dict(self.provider_options))]
        if self.provider != "CPUExecutionProvider":
            providers.append("CPUExecutionProvider")  # ORT's usual fallback for unsupported nodes
        try:
            self.session = ort.InferenceSession(
                model.onnx_path, sess_options=self._session_options(), providers=providers
            )
        except Exception as exc:  # ORT raises its own exception types; keep one line
            message = first_line(exc)
            if "provider option" in message.lower() or "unknown option" in message.lower():
                raise SpecError(f"{self.spec.text}: {message}") from None
            raise ModelError(
                f"{self.spec.text}: could not load {model.onnx_path}: {message}"
            ) from None
        used = self.session.get_providers()
        if used[0] != self.provider:
            raise BackendUnavailable(
                f"{self.spec.text}: {self.provider} failed to initialise and ONNX Runtime fell "
                f"back to {used[0]}"
            )
        self.output_names = [o.name for o in self.session.get_outputs()]

    def infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.stand_in is not None:
            return self.stand_in.infer(feed)
        outputs = self.session.run(None, feed)
        return dict(zip(self.output_names, outputs, strict=True))

    def describe_impl(self) -> dict[str, Any]:
        import onnxruntime as ort

        info: dict[str, Any] = {
            "runtime": "onnxruntime",
            "version": ort.__version__,
            "execution_provider": self.provider,
            "options": dict(self.spec.options),
        }
        if self.stand_in is not None:
            return {**info, **self.stand_in.describe()}
        if self.session is not None:
            info["providers"] = self.session.get_providers()
            info["provider_options"] = self.session.get_provider_options()
            level = self.session_options.get("graph_optimization_level", "all")
            info["graph_optimization_level"] = level
        if self.provider == "CPUExecutionProvider":
            info["precision"] = {
                "reported": "float32",
                "source": "the CPU execution provider computes FP32 models in FP32",
            }
        return info

    def deactivate_impl(self) -> None:
        if self.stand_in is not None:
            self.stand_in.deactivate()
        self.session = None


def create(spec: BackendSpec) -> OnnxRuntimeBackend:
    return OnnxRuntimeBackend(spec)
