"""Core ML through coremltools: `coreml:<units>?compute_precision=<p>&format=<f>`, with units
`all|cpu_only|cpu_and_gpu|cpu_and_ne`, p `fp16|fp32` and f `mlprogram|neuralnetwork`.

The target is the compute units (`ct.ComputeUnit.ALL`, the default, `CPU_ONLY`, `CPU_AND_GPU`,
`CPU_AND_NE`). The PyTorch module the ONNX file was exported from (`PreparedModel.torch_source`)
is traced with `torch.jit.trace` and converted with `ct.convert`, as a user would do it:

- `format=mlprogram` (the default: coremltools' own default target since 7.0) with
  `compute_precision=fp16` (the default, because coremltools' own default for an ML program,
  `compute_precision=None`, means `ct.precision.FLOAT16`: an FP16-typed program with casts at
  its FP32 inputs and outputs), or `compute_precision=fp32` (`ct.precision.FLOAT32`).
- `format=neuralnetwork`: untyped layers whose precision follows the compute unit at run time
  (FP32 on the CPU, FP16 on the GPU and the Neural Engine). coremltools rejects
  `compute_precision` for this format, and so does this spec.

The batch dimension (and any other symbolic dimension) is flexible, `ct.RangeDim(1, 8192)`
(an ML program needs a finite upper bound; larger batches are predicted in chunks). When a model
does not convert with flexible shapes, it is traced and converted again with a fixed batch of 1
and predicted sample by sample; `describe()["batch"]` says which.

Core ML executes only on macOS. There the model is loaded with the compute units and predicted
batch by batch. Elsewhere the model is still converted (coremltools converts on Linux, with
`skip_model_load=True`), its ML program is inspected for the dtype each op computes in, and the
precision it would run in is *predicted*: an emulation (`emulate:fp16`, or `ort:cpu` for FP32)
stands in for it (see `modelparity.backends.standin`), and the description says so.
"""

from __future__ import annotations

import contextlib
import io
import logging
import shutil
import sys
import warnings
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from modelparity.backends.base import Backend
from modelparity.backends.options import as_choice, first_line
from modelparity.backends.runtime import Option, Runtime
from modelparity.backends.standin import REPORTED, Prediction, StandIn
from modelparity.errors import BackendUnavailable, ModelError, SpecError
from modelparity.model import PreparedModel
from modelparity.model.signature import TensorInfo
from modelparity.spec import BackendSpec

#: Spec target -> `ct.ComputeUnit` member.
COMPUTE_UNITS = {
    "all": "ALL",
    "cpu_only": "CPU_ONLY",
    "cpu_and_gpu": "CPU_AND_GPU",
    "cpu_and_ne": "CPU_AND_NE",
}
#: Option -> allowed values, the first the default.
OPTIONS: dict[str, tuple[str, ...]] = {
    "compute_precision": ("fp16", "fp32"),
    "format": ("mlprogram", "neuralnetwork"),
}
#: Upper bound of the flexible dimensions (an ML program cannot have an unbounded one).
MAX_BATCH = 8192
#: Size given to symbolic dimensions in the example inputs that are traced.
EXAMPLE_SIZE = 2
#: ML program ops that only hold or convert values; casts are counted on their own.
BOOKKEEPING_OPS = frozenset({"const", "cast"})
#: MIL dtype names -> the short names used in the inspection.
FLOAT_TYPES = {"FLOAT16": "fp16", "FLOAT32": "fp32", "BFLOAT16": "bf16", "FLOAT64": "fp64"}
NEURAL_NETWORK_TYPES = ("neuralNetwork", "neuralNetworkClassifier", "neuralNetworkRegressor")


def parse_options(spec: BackendSpec) -> tuple[str, dict[str, str | None]]:
    """(compute units, {"compute_precision": ..., "format": ...}) with defaults filled in;
    compute_precision is None for `format=neuralnetwork`. `SpecError` (one line) otherwise."""
    units = spec.target.strip().lower()
    if units not in COMPUTE_UNITS:
        raise SpecError(
            f"{spec.text}: unknown compute units '{spec.target}' "
            f"(expected one of: {', '.join(COMPUTE_UNITS)})"
        )
    known = ", ".join(f"{k}=<{'|'.join(v)}>" for k, v in OPTIONS.items())
    given: dict[str, str] = {}
    for key, value in spec.options.items():
        name = key.strip().lower()
        if name not in OPTIONS:
            raise SpecError(f"{spec.text}: unknown option '{key}' (known options: {known})")
        given[name] = str(as_choice(spec, name, value, {v: v for v in OPTIONS[name]}))
    fmt = given.get("format", OPTIONS["format"][0])
    if fmt == "neuralnetwork":
        if "compute_precision" in given:
            raise SpecError(
                f"{spec.text}: compute_precision applies to format=mlprogram only (coremltools "
                "rejects it for a NeuralNetwork, whose precision follows the compute units)"
            )
        return units, {"compute_precision": None, "format": fmt}
    precision = given.get("compute_precision", OPTIONS["compute_precision"][0])
    return units, {"compute_precision": precision, "format": fmt}


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """coremltools and torch.jit.trace talk a lot: progress bars, warnings, log lines."""
    logger = logging.getLogger("coremltools")
    level = logger.level
    logger.setLevel(logging.ERROR)
    sink = io.StringIO()
    try:
        with (
            warnings.catch_warnings(),
            contextlib.redirect_stdout(sink),
            contextlib.redirect_stderr(sink),
        ):
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


# -- static inspection -------------------------------------------------------------------------


def _walk(block: Any) -> Iterator[Any]:
    for op in block.operations:
        yield op
        for inner in op.blocks:
            yield from _walk(inner)


def _dtype_name(value_type: Any, names: dict[int, str]) -> str | None:
    if value_type.WhichOneof("type") != "tensorType":
        return None
    return FLOAT_TYPES.get(names.get(value_type.tensorType.dataType, ""))


def inspect_spec(spec: Any, *, compute_units: str, compute_precision: str | None,
                 version: str | None = None) -> dict[str, Any]:
    """What a converted Core ML model (its protobuf spec, `mlmodel.get_spec()`) computes in.

    For an ML program: each op except const and cast is counted under the float dtype it
    computes in (its first float output, else its first float input; "other" when it touches
    no float tensor), the op types computing in FP16 are counted by type, and casts are
    counted separately. A NeuralNetwork's layers carry no dtype: their count is recorded and
    the precision follows the compute units at run time.
    """
    kind = spec.WhichOneof("Type")
    info: dict[str, Any] = {
        "format": None,
        "compute_precision": compute_precision,
        "compute_units": compute_units,
        "coremltools": version,
        "specification_version": int(spec.specificationVersion),
    }
    if kind == "mlProgram":
        from coremltools.proto import MIL_pb2

        names = {number: name for name, number in MIL_pb2.DataType.items()}
        ops: Counter[str] = Counter({"fp16": 0, "fp32": 0})
        fp16_types: Counter[str] = Counter()
        cast_to: Counter[str] = Counter()
        casts = 0
        for function in spec.mlProgram.functions.values():
            dtypes = {v.name: _dtype_name(v.type, names) for v in function.inputs}
            block = function.block_specializations[function.opset]
            for op in _walk(block):
                out_types = [_dtype_name(o.type, names) for o in op.outputs]
                for out, dtype in zip(op.outputs, out_types, strict=True):
                    dtypes[out.name] = dtype
                if op.type == "const":
                    continue
                if op.type == "cast":
                    casts += 1
                    cast_to[next((t for t in out_types if t), "other")] += 1
                    continue
                dtype = next((t for t in out_types if t), None)
                if dtype is None:
                    args = [a.name for arg in op.inputs.values() for a in arg.arguments if a.name]
                    dtype = next((dtypes[a] for a in args if dtypes.get(a)), None)
                ops[dtype or "other"] += 1
                if dtype == "fp16":
                    fp16_types[op.type] += 1
        computes = [k for k in ("fp16", "bf16", "fp32", "fp64") if ops.get(k)]
        info.update({
            "format": "mlprogram",
            "typed": True,
            "ops": dict(ops),
            "fp16_op_types": dict(sorted(fp16_types.items())),
            "casts": casts,
            "cast_to": dict(sorted(cast_to.items())),
            "computes_in": computes[0] if len(computes) == 1 else ("mixed" if computes else None),
        })
    elif kind in NEURAL_NETWORK_TYPES:
        layers = getattr(spec, kind).layers
        info.update({
            "format": "neuralnetwork",
            "typed": False,
            "layers": len(layers),
            "layer_types": dict(sorted(Counter(ly.WhichOneof("layer") for ly in layers).items())),
            "note": "NeuralNetwork layers are untyped: Core ML runs them in FP32 on the CPU "
                    "and in FP16 on the GPU and the Neural Engine",
        })
    else:
        info.update({"format": kind, "typed": False})
    return info


def predict_precision(inspection: dict[str, Any]) -> str:
    """The precision the inspected model is predicted to compute in: "fp16" or "fp32".

    An ML program with FP16 ops computes in FP16 (the CPU may promote some ops to FP32, so this
    is the pessimistic call); an FP32 program stays FP32 (the Neural Engine, FP16 only, never
    takes it). A NeuralNetwork runs in FP16 unless the compute units are cpu_only.
    """
    if inspection.get("format") == "mlprogram":
        return "fp16" if inspection["ops"].get("fp16", 0) else "fp32"
    if inspection.get("format") == "neuralnetwork":
        return "fp32" if inspection["compute_units"] == "cpu_only" else "fp16"
    return "fp32"


# -- conversion ---------------------------------------------------------------------------------


def _example(torch: Any, info: TensorInfo, batch: int | None) -> Any:
    """An example tensor for tracing: symbolic dimensions get EXAMPLE_SIZE (`batch` for the
    first one when given); floats are random, everything else zero (valid indices)."""
    shape = [
        d if isinstance(d, int) else (batch if (i == 0 and batch) else EXAMPLE_SIZE)
        for i, d in enumerate(info.shape)
    ]
    if np.issubdtype(info.np_dtype, np.floating):
        return torch.from_numpy(np.random.default_rng(0).random(shape).astype(info.np_dtype))
    return torch.from_numpy(np.zeros(shape, dtype=info.np_dtype))


def coreml_dtype(info: TensorInfo) -> type:
    """The dtype a Core ML input takes for a model input (Core ML has no int64 or float64)."""
    if np.issubdtype(info.np_dtype, np.floating):
        return np.float32
    return np.int32


def convert_module(module: Any, inputs: Sequence[TensorInfo], *, compute_units: str,
                   compute_precision: str | None, fmt: str, skip_model_load: bool,
                   fixed_batch: int | None = None) -> Any:
    """Trace `module` and convert it with `ct.convert` (quietly). Flexible symbolic dimensions
    (1..MAX_BATCH) unless `fixed_batch` is given, which fixes the first dimension to it.
    Raises `ModelError` (one line) when tracing or conversion fails."""
    import coremltools as ct
    import torch

    examples = tuple(_example(torch, info, fixed_batch) for info in inputs)
    try:
        with quiet(), torch.no_grad():
            traced = torch.jit.trace(module, examples, check_trace=False, strict=False)
    except Exception as exc:
        raise ModelError(
            f"torch.jit.trace failed ({type(exc).__name__}: {first_line(exc)})"
        ) from None

    tensor_types = []
    for info in inputs:
        shape = []
        for i, d in enumerate(info.shape):
            if isinstance(d, int):
                shape.append(d)
            elif i == 0 and fixed_batch:
                shape.append(fixed_batch)
            else:
                shape.append(ct.RangeDim(lower_bound=1, upper_bound=MAX_BATCH,
                                         default=EXAMPLE_SIZE))
        tensor_types.append(ct.TensorType(name=info.name, shape=tuple(shape),
                                          dtype=coreml_dtype(info)))
    kwargs: dict[str, Any] = {
        "inputs": tensor_types,
        "convert_to": fmt,
        "compute_units": getattr(ct.ComputeUnit, COMPUTE_UNITS[compute_units]),
        "skip_model_load": skip_model_load,
    }
    if fmt == "mlprogram":
        kwargs["compute_precision"] = (
            ct.precision.FLOAT16 if compute_precision == "fp16" else ct.precision.FLOAT32
        )
    try:
        with quiet():
            return ct.convert(traced, **kwargs)
    except Exception as exc:
        raise ModelError(
            f"coremltools {ct.__version__} could not convert the traced module "
            f"({type(exc).__name__}: {first_line(exc)})"
        ) from None


def can_execute() -> bool:
    """Core ML predicts only on macOS."""
    return sys.platform == "darwin"


# -- the backend --------------------------------------------------------------------------------


def check_spec(spec: BackendSpec) -> None:
    """Validate compute units and options without importing coremltools."""
    parse_options(spec)


class CoreMLBackend(Backend):
    def __init__(self, spec: BackendSpec) -> None:
        super().__init__(spec)
        self.compute_units, self.options = parse_options(spec)
        self.format = str(self.options["format"])
        self.compute_precision = self.options["compute_precision"]
        self.mlmodel: Any = None
        self.inspection: dict[str, Any] | None = None
        self.stand_in: StandIn | None = None
        self.batch: str | None = None
        self._chunk = MAX_BATCH
        self._inputs: list[tuple[str, str, type]] = []  # (name, Core ML name, Core ML dtype)
        self._outputs: list[tuple[str, str, np.dtype]] = []  # (name, Core ML name, dtype)

    def _version(self) -> str | None:
        try:
            import coremltools as ct
        except ImportError:
            return None
        return str(ct.__version__)

    def activate_impl(self, model: PreparedModel) -> None:
        source = model.torch_source
        if source is None:
            raise BackendUnavailable(
                f"{self.spec.text}: coremltools has no ONNX converter (removed in coremltools "
                f"6) and {model.source} is an ONNX file; use ort:coreml to run an ONNX file "
                "through Core ML, or give the PyTorch entry point (module:factory or .pt2)"
            )
        with quiet():
            import coremltools  # noqa: F401  (its import logs warnings about untested versions)

        from modelparity.backends.torch import load_torch_module

        module = load_torch_module(source, model.source)
        with contextlib.suppress(NotImplementedError, RuntimeError):
            module.eval()
        try:
            inputs = [model.signature.input(name) for name in source.input_names]
        except KeyError as exc:
            raise ModelError(
                f"{model.source}: the module's input {exc} is not an input of the ONNX model"
            ) from None
        outputs = {o.name: o for o in model.signature.outputs}
        config = {"compute_units": self.compute_units,
                  "compute_precision": self.compute_precision, "fmt": self.format,
                  "skip_model_load": not can_execute()}
        try:
            mlmodel = convert_module(module, inputs, **config)
            self.batch = f"flexible 1..{MAX_BATCH}"
            self._chunk = MAX_BATCH
        except ModelError as flexible:
            try:
                mlmodel = convert_module(module, inputs, fixed_batch=1, **config)
            except ModelError:
                raise ModelError(f"{self.spec.text}: {model.source}: {flexible}") from None
            self.batch = "fixed 1 (flexible shapes did not convert)"
            self._chunk = 1
        spec = mlmodel.get_spec()
        self.inspection = inspect_spec(spec, compute_units=self.compute_units,
                                       compute_precision=self.compute_precision,
                                       version=self._version())
        self.inspection["batch"] = self.batch
        coreml_in = [i.name for i in spec.description.input]
        coreml_out = [o.name for o in spec.description.output]
        if len(coreml_out) != len(source.output_names) or len(coreml_in) != len(inputs):
            raise ModelError(
                f"{self.spec.text}: the converted model has {len(coreml_in)} inputs and "
                f"{len(coreml_out)} outputs, the ONNX model {len(inputs)} and "
                f"{len(source.output_names)}"
            )
        self._inputs = [(info.name, cname, coreml_dtype(info))
                        for info, cname in zip(inputs, coreml_in, strict=True)]
        self._outputs = [
            (name, cname, outputs[name].np_dtype if name in outputs else np.dtype(np.float32))
            for name, cname in zip(source.output_names, coreml_out, strict=True)
        ]
        if can_execute():
            self.mlmodel = mlmodel
            return
        # coremltools removes the temporary .mlpackage of an ML program only at exit
        if getattr(mlmodel, "is_temp_package", False) and getattr(mlmodel, "package_path", None):
            shutil.rmtree(mlmodel.package_path, ignore_errors=True)
        del mlmodel
        precision = predict_precision(self.inspection)
        if self.format == "mlprogram":
            why = (f"its ML program computes {self.inspection['ops'].get('fp16', 0)} ops in "
                   "FP16" if precision == "fp16" else "its ML program computes in FP32")
        else:
            why = f"a NeuralNetwork on {self.compute_units} runs in {precision.upper()}"
        self.stand_in = StandIn(self.spec, Prediction(
            precision,
            reason=(f"Core ML cannot execute on {sys.platform} (it needs macOS); coremltools "
                    f"converted the model here and {why}"),
            basis="static inspection of the model coremltools converted",
            inspection=self.inspection,
        ))
        self.stand_in.activate(model)

    def infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.stand_in is not None:
            return self.stand_in.infer(feed)
        return self._predict(feed)

    def _predict(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Core ML prediction (macOS): in chunks of at most the model's batch bound."""
        missing = [name for name, _, _ in self._inputs if name not in feed]
        if missing:
            raise KeyError(f"{self.spec.text}: inputs missing from the feed: {missing}")
        rows = len(feed[self._inputs[0][0]])
        parts: list[dict[str, np.ndarray]] = []
        for start in range(0, rows, self._chunk):
            chunk = {
                cname: np.ascontiguousarray(feed[name][start:start + self._chunk], dtype=dtype)
                for name, cname, dtype in self._inputs
            }
            result = self.mlmodel.predict(chunk)
            parts.append({name: np.asarray(result[cname], dtype=dtype)
                          for name, cname, dtype in self._outputs})
        if len(parts) == 1:
            return parts[0]
        return {name: np.concatenate([p[name] for p in parts], axis=0)
                for name, _, _ in self._outputs}

    def describe_impl(self) -> dict[str, Any]:
        info: dict[str, Any] = {
            "runtime": "coreml",
            "version": self._version(),
            "coremltools": self._version(),
            "compute_units": self.compute_units,
            "format": self.format,
            "compute_precision": self.compute_precision,
            "options": dict(self.spec.options),
            "platform": sys.platform,
            "batch": self.batch,
            "inspection": self.inspection,
        }
        if self.stand_in is not None:
            info.update(self.stand_in.describe())
        elif self.inspection is not None:
            info["precision"] = {
                "reported": REPORTED[predict_precision(self.inspection)],
                "source": "the dtypes of the converted model's ops (Core ML reports no "
                          "precision; the CPU may promote FP16 ops to FP32)",
            }
        return info

    def deactivate_impl(self) -> None:
        if self.stand_in is not None:
            self.stand_in.deactivate()
        self.stand_in = None
        self.mlmodel = None


def create(spec: BackendSpec) -> CoreMLBackend:
    return CoreMLBackend(spec)


RUNTIME = Runtime(
    name="coreml",
    title="Core ML",
    usage="coreml:<all|cpu_only|cpu_and_gpu|cpu_and_ne>?compute_precision=<fp16|fp32>"
          "&format=<mlprogram|neuralnetwork>",
    module=__name__,
    package="coremltools",
    distribution="coremltools",
    extra="modelparity[coreml]",
    default_target="all",
    targets={units: units for units in COMPUTE_UNITS},
    target_words="compute units",
    options=tuple(Option(name, "choice", choices=values) for name, values in OPTIONS.items()),
    open_targets=None,  # check_spec names the known options in its own words
    check=check_spec,
    rules=("modelparity.knowledge", "rules/coreml.toml"),
)
