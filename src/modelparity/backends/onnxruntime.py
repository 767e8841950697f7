"""ONNX Runtime with any execution provider: `ort:<ep>?<option>=<value>&...`.

Session options (`graph_optimization_level`, `intra_op_num_threads`, `inter_op_num_threads`,
`execution_mode`) and session config entries (dotted keys: `session.*`, `mlas.*`,
`optimization.*`, `ep.*`) configure the session; every other option is a provider option,
passed to the execution provider exactly as given. Options are declared below (`RUNTIME`), so a
misspelt one is refused before anything runs; providers whose options are not listed take any.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from modelparity.backends.base import Backend
from modelparity.backends.options import first_line
from modelparity.backends.runtime import Option, Repro, Runtime
from modelparity.backends.standin import Prediction, StandIn
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
OPT_LEVELS = {
    "disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL", "0": "ORT_DISABLE_ALL", "1": "ORT_ENABLE_BASIC",
    "2": "ORT_ENABLE_EXTENDED", "99": "ORT_ENABLE_ALL",
}
EXECUTION_MODES = ("sequential", "parallel")

#: Options of the session (every provider); dotted keys are session config entries.
SESSION = (
    Option("graph_optimization_level", "choice", "graph optimisations (all by default)",
           tuple(OPT_LEVELS), group="session"),
    Option("intra_op_num_threads", "int", "threads inside an op (0: ORT decides)",
           group="session"),
    Option("inter_op_num_threads", "int", "threads across ops (0: ORT decides)",
           group="session"),
    Option("execution_mode", "choice", "run ops one at a time or in parallel",
           EXECUTION_MODES, group="session"),
    Option("session.*", help="a session config entry (add_session_config_entry)",
           group="config"),
    Option("mlas.*", help="a session config entry (add_session_config_entry)", group="config"),
    Option("optimization.*", help="a session config entry (add_session_config_entry)",
           group="config"),
    Option("ep.*", help="a session config entry (add_session_config_entry)", group="config"),
)


def _provider(*options: Option) -> tuple[Option, ...]:
    return tuple(Option(o.name, o.kind, o.help, o.choices, "provider", o.minimum)
                 for o in options)


def _texts(*names: str) -> tuple[Option, ...]:
    return tuple(Option(name) for name in names)


def _flags(*names: str) -> tuple[Option, ...]:
    return tuple(Option(name, "bool") for name in names)


#: Provider options, checked before anything loads. A provider listed here rejects option names
#: it does not list; the providers not listed take any option, passed to ONNX Runtime as given.
PROVIDER_OPTIONS: dict[str, tuple[Option, ...]] = {
    "cpu": (),
    "coreml": _provider(
        Option("ModelFormat", "choice", "MLProgram, or the NeuralNetwork default (FP16 on GPU "
               "and ANE)", ("MLProgram", "NeuralNetwork")),
        Option("MLComputeUnits", "choice", "where Core ML may run",
               ("ALL", "CPUOnly", "CPUAndGPU", "CPUAndNeuralEngine")),
        *_flags("RequireStaticInputShapes", "EnableOnSubgraphs", "ProfileComputePlan",
                "AllowLowPrecisionAccumulationOnGPU"),
        Option("SpecializationStrategy", "choice", "", ("Default", "FastPrediction")),
        Option("ModelCacheDirectory"),
    ),
    "cuda": _provider(
        Option("use_tf32", "bool", "TF32 in convolutions and matmuls (on by default)"),
        Option("cudnn_conv_algo_search", "choice", "",
               ("EXHAUSTIVE", "HEURISTIC", "DEFAULT")),
        *_flags("enable_cuda_graph", "prefer_nhwc", "use_ep_level_unified_stream",
                "do_copy_in_default_stream", "cudnn_conv_use_max_workspace",
                "cudnn_conv1d_pad_to_nc1d", "tunable_op_enable", "tunable_op_tuning_enable",
                "enable_skip_layer_norm_strict_mode", "has_user_compute_stream",
                "fuse_conv_bias"),
        *_texts("device_id", "gpu_mem_limit", "arena_extend_strategy",
                "tunable_op_max_tuning_duration_ms", "sdpa_kernel", "user_compute_stream",
                "gpu_external_alloc", "gpu_external_free", "gpu_external_empty_cache"),
    ),
    "tensorrt": _provider(
        *_flags("trt_fp16_enable", "trt_int8_enable", "trt_bf16_enable",
                "trt_engine_cache_enable", "trt_timing_cache_enable", "trt_dla_enable",
                "trt_dump_subgraphs", "trt_int8_use_native_calibration_table",
                "trt_engine_decryption_enable", "trt_force_sequential_engine_build",
                "trt_context_memory_sharing_enable", "trt_layer_norm_fp32_fallback",
                "trt_force_timing_cache", "trt_detailed_build_log",
                "trt_build_heuristics_enable", "trt_sparsity_enable", "trt_cuda_graph_enable",
                "trt_dump_ep_context_model", "trt_weight_stripped_engine_enable",
                "trt_engine_hw_compatible", "has_user_compute_stream"),
        *_texts("device_id", "trt_engine_cache_path", "trt_engine_cache_prefix",
                "trt_timing_cache_path", "trt_max_workspace_size",
                "trt_max_partition_iterations", "trt_min_subgraph_size",
                "trt_int8_calibration_table_name", "trt_dla_core",
                "trt_engine_decryption_lib_path", "trt_builder_optimization_level",
                "trt_auxiliary_streams", "trt_tactic_sources", "trt_extra_plugin_lib_paths",
                "trt_profile_min_shapes", "trt_profile_max_shapes", "trt_profile_opt_shapes",
                "trt_ep_context_file_path", "trt_ep_context_embed_mode",
                "trt_onnx_model_folder_path", "trt_op_types_to_exclude",
                "user_compute_stream"),
    ),
}
#: Spec targets: the short name, or the provider's full name in any case, -> the short name.
TARGETS = {
    **{short: {"trt": "tensorrt", "directml": "dml"}.get(short, short) for short in PROVIDERS},
    **{name.lower(): {"trt": "tensorrt", "directml": "dml"}.get(short, short)
       for short, name in PROVIDERS.items()},
}


def provider_name(spec: BackendSpec) -> str:
    """The provider's name for the spec's target (`cuda` -> `CUDAExecutionProvider`)."""
    return PROVIDERS[TARGETS[spec.target.lower()]]


def split_options(spec: BackendSpec) -> tuple[dict[str, str], dict[str, str]]:
    """(session options, provider options) from the spec's options, by their declaration."""
    session = {k: v for k, v in spec.options.items()
               if RUNTIME.group_of(TARGETS[spec.target.lower()], k, "provider") != "provider"}
    provider = {k: v for k, v in spec.options.items() if k not in session}
    return session, provider


def cannot_execute(spec: BackendSpec) -> str | None:
    """Why this provider cannot execute on this machine at all, when that is known statically."""
    if spec.target == "coreml" and sys.platform != "darwin":
        return (f"Core ML cannot execute on {sys.platform}: the CoreML execution provider "
                "exists only in ONNX Runtime builds for macOS and iOS")
    return None


def reported_options(description: Mapping[str, Any]) -> dict[str, str]:
    """The provider options as the loaded session reports them (defaults included)."""
    reported: dict[str, str] = {}
    provider_options = description.get("provider_options") or {}
    for options in provider_options.values() if isinstance(provider_options, dict) else []:
        if isinstance(options, dict):
            reported.update({str(k): str(v) for k, v in options.items()})
    return reported


def repro_side(spec: BackendSpec) -> dict[str, Any]:
    session, provider = split_options(spec)
    return {"provider": provider_name(spec), "provider_options": provider, "session": session}


def node_placement(events: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """How many graph nodes each execution provider ran, from a session profile's trace events:
    one `<node>_kernel_time` event per node and run, its provider in `args`. Nodes are counted
    by name, so a loop body's nodes, run many times, count once each."""
    nodes: dict[str, set[str]] = {}
    for event in events:
        args = event.get("args")
        name = str(event.get("name", ""))
        if (event.get("cat") != "Node" or not name.endswith("_kernel_time")
                or not isinstance(args, Mapping) or not args.get("provider")):
            continue
        nodes.setdefault(str(args["provider"]), set()).add(name)
    return {provider: len(names) for provider, names in sorted(nodes.items())}


class _FirstRunProfile:
    """ONNX Runtime's profile of the session's first run, in a folder of its own: which provider
    ran each node is the runtime's own testimony of where the model ran. Profiling stops after
    that run (later runs, the timed ones, are not slowed), and the file goes. It never fails a
    run: whatever goes wrong, the placement is simply not known."""

    def __init__(self) -> None:
        self.folder = tempfile.mkdtemp(prefix="modelparity-ort-profile-")

    def enable(self, so: Any) -> None:
        so.enable_profiling = True
        so.profile_file_prefix = os.path.join(self.folder, "profile")

    def finish(self, session: Any) -> dict[str, int]:
        try:
            path = session.end_profiling()
            with open(path, encoding="utf-8") as handle:
                trace = json.load(handle)
            events = trace.get("traceEvents", []) if isinstance(trace, dict) else trace
            return node_placement(e for e in events if isinstance(e, Mapping))
        except Exception:  # a profile ORT could not write or we cannot read: no testimony
            return {}
        finally:
            self.close()

    def close(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


class OnnxRuntimeBackend(Backend):
    def __init__(self, spec: BackendSpec, prediction: Prediction | None = None) -> None:
        super().__init__(spec)
        RUNTIME.validate(spec)
        self.provider = provider_name(spec)
        self.session_options, self.provider_options = split_options(spec)
        self.session: Any = None
        self.profile: _FirstRunProfile | None = None
        self.node_placement: dict[str, int] = {}
        # where the provider cannot execute (Core ML off macOS), the plan predicts its precision
        # from the knowledge base, and an emulation of it stands in
        self.stand_in = StandIn(spec, prediction) if prediction is not None else None

    def _session_options(self) -> Any:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.log_severity_level = 3  # errors only: warnings would flood the terminal
        for key, value in self.session_options.items():
            if key == "graph_optimization_level":
                level = OPT_LEVELS[value.strip().lower()]
                so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
            elif key == "intra_op_num_threads":
                so.intra_op_num_threads = int(value)
            elif key == "inter_op_num_threads":
                so.inter_op_num_threads = int(value)
            elif key == "execution_mode":
                parallel = value.strip().lower() == "parallel"
                so.execution_mode = (
                    ort.ExecutionMode.ORT_PARALLEL if parallel else ort.ExecutionMode.ORT_SEQUENTIAL
                )
            else:
                so.add_session_config_entry(key, value)
        try:
            self.profile = _FirstRunProfile()
            self.profile.enable(so)
        except Exception:  # no temporary folder: run without the testimony
            self._end_profile()
        return so

    def _end_profile(self) -> None:
        if self.profile is not None:
            self.profile.close()
        self.profile = None

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
            self._end_profile()
            message = first_line(exc)
            if "provider option" in message.lower() or "unknown option" in message.lower():
                raise SpecError(f"{self.spec.text}: {message}") from None
            raise ModelError(
                f"{self.spec.text}: could not load {model.onnx_path}: {message}"
            ) from None
        used = self.session.get_providers()
        if used[0] != self.provider:
            self._end_profile()
            raise BackendUnavailable(
                f"{self.spec.text}: {self.provider} failed to initialise and ONNX Runtime fell "
                f"back to {used[0]}"
            )
        self.output_names = [o.name for o in self.session.get_outputs()]

    def infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.stand_in is not None:
            return self.stand_in.infer(feed)
        outputs = self.session.run(None, feed)
        if self.profile is not None:
            self.node_placement = self.profile.finish(self.session)
            self.profile = None
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
        if self.node_placement:
            info["node_placement"] = dict(self.node_placement)
        if self.provider == "CPUExecutionProvider":
            info["precision"] = {
                "reported": "float32",
                "source": "the CPU execution provider computes FP32 models in FP32",
            }
        return info

    def deactivate_impl(self) -> None:
        if self.stand_in is not None:
            self.stand_in.deactivate()
        self._end_profile()
        self.session = None


def create(spec: BackendSpec, prediction: Prediction | None = None) -> OnnxRuntimeBackend:
    return OnnxRuntimeBackend(spec, prediction)


#: The repro script's run(side) for this runtime: it needs only numpy and the runtime, and
#: reads MODEL, INPUT_NAMES, OUTPUT_NAMES (and for torch ENTRY, WEIGHTS, WORKDIR) and
#: load_inputs() from the script around it.
REPRO_RUNNER = '''

def run(side):
    import onnxruntime as ort

    so = ort.SessionOptions()
    levels = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC",
              "extended": "ORT_ENABLE_EXTENDED", "all": "ORT_ENABLE_ALL"}
    for key, value in side["session"].items():
        if key == "graph_optimization_level":
            so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, levels[value])
        elif key in ("intra_op_num_threads", "inter_op_num_threads"):
            setattr(so, key, int(value))
        elif "." in key:
            so.add_session_config_entry(key, value)
    providers = [(side["provider"], side["provider_options"])]
    if side["provider"] != "CPUExecutionProvider":
        providers.append("CPUExecutionProvider")
    session = ort.InferenceSession(MODEL, sess_options=so, providers=providers)
    print(f"  {side['spec']}: onnxruntime {ort.__version__}, providers {session.get_providers()}")
    feed = load_inputs()
    outputs = session.run(None, feed)
    return dict(zip([o.name for o in session.get_outputs()], outputs))
'''


RUNTIME = Runtime(
    name="ort",
    title="ONNX Runtime",
    usage="ort:<execution provider>?<provider or session option>=<value>",
    module=__name__,
    package="onnxruntime",
    distribution="onnxruntime",
    extra="modelparity",
    default_target="cpu",
    targets=TARGETS,
    target_words="ONNX Runtime execution provider",
    options=SESSION,
    target_options=PROVIDER_OPTIONS,
    open_targets=frozenset(set(TARGETS.values()) - set(PROVIDER_OPTIONS)),
    cannot_execute=cannot_execute,
    reported_options=reported_options,
    repro=Repro(repro_side,
                REPRO_RUNNER),
    rules=("modelparity.knowledge", "rules/onnxruntime.toml"),
)
