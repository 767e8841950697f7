"""PyTorch eager backend: `torch:cpu|cuda|mps?matmul_precision=high&allow_tf32=0&threads=4`.

It runs the very module the ONNX file was exported from (`PreparedModel.torch_source`): a
`module:factory` rebuilt by its factory with the saved safetensors weights loaded strictly, or
the `torch.export` program (.pt2). Importing this module is cheap: torch is imported only when a
backend is created, which happens in a worker process.
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np

from modelparity.backends.base import Backend
from modelparity.backends.runtime import Option, Repro, Runtime
from modelparity.errors import BackendUnavailable, ModelError
from modelparity.model import PreparedModel, TorchSource
from modelparity.spec import BackendSpec

DEVICES = ("cpu", "cuda", "mps")
OPTIONS = (
    Option("matmul_precision", "choice", "torch.set_float32_matmul_precision",
           ("highest", "high", "medium")),
    Option("allow_tf32", "bool",
           "torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32"),
    Option("threads", "int", "torch.set_num_threads", minimum=1),
)


def _getattr_path(root: Any, path: str) -> Any:
    obj = root
    for part in path.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def load_torch_module(source: TorchSource, origin: str) -> Any:
    """The very module the ONNX file was exported from (on the CPU, not yet in eval mode): a
    `module:factory` rebuilt by its factory with the saved weights loaded strictly, or the
    module of a `torch.export` program. `origin` is what the user gave, for error messages.
    Raises `ModelError` (one line). Imports torch: call it in a worker process only."""
    import torch

    if source.kind == "factory":
        from safetensors.torch import load_file

        from modelparity.model import load_factory

        module, _ = load_factory(source.entry)
        if source.weights is None:
            raise ModelError(f"{source.entry}: no saved weights to load")
        try:
            module.load_state_dict(load_file(source.weights), strict=True)
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise ModelError(
                f"{source.entry}: the saved weights {source.weights} do not fit the module "
                f"the factory builds now ({type(exc).__name__}: {first})"
            ) from None
        return module
    if source.kind == "exported_program":
        # torch.export.load unpickles parts of the file: .pt2 files are trusted input
        # (see modelparity.model.export._export_program)
        return torch.export.load(source.entry).module()
    raise ModelError(f"{origin}: unknown torch source kind '{source.kind}'")


def repro_side(spec: BackendSpec) -> dict[str, Any]:
    return {"device": spec.target, "options": spec.options}


def check_spec(spec: BackendSpec) -> dict[str, Any]:
    """Validate the device and options without importing torch; return the parsed options."""
    RUNTIME.canonical_target(spec)
    return RUNTIME.validate(spec)


class TorchBackend(Backend):
    def __init__(self, spec: BackendSpec) -> None:
        super().__init__(spec)
        self.options = check_spec(spec)
        try:
            import torch
        except ImportError:
            raise BackendUnavailable(
                f"{spec.text}: PyTorch is not installed: pip install 'modelparity[torch]'"
            ) from None
        self._torch = torch
        self.device = spec.target
        if self.device == "cuda" and not torch.cuda.is_available():
            raise BackendUnavailable(
                f"{spec.text}: CUDA is not available here (torch {torch.__version__})"
            )
        if self.device == "mps":
            mps = getattr(torch.backends, "mps", None)
            if mps is None or not mps.is_available():
                raise BackendUnavailable(
                    f"{spec.text}: MPS is not available here (torch {torch.__version__}; "
                    "MPS needs macOS on Apple silicon)"
                )
        self.module: Any = None
        self.input_names: tuple[str, ...] = ()
        self.output_names: tuple[str, ...] = ()
        self._param_dtype: str | None = None

    # -- settings ---------------------------------------------------------------------------

    def _apply_options(self) -> None:
        torch = self._torch
        if "matmul_precision" in self.options:
            torch.set_float32_matmul_precision(self.options["matmul_precision"])
        if "allow_tf32" in self.options:
            torch.backends.cuda.matmul.allow_tf32 = self.options["allow_tf32"]
            torch.backends.cudnn.allow_tf32 = self.options["allow_tf32"]
        if "threads" in self.options:
            torch.set_num_threads(self.options["threads"])

    # -- hooks ------------------------------------------------------------------------------

    def activate_impl(self, model: PreparedModel) -> None:
        source = model.torch_source
        if source is None:
            raise BackendUnavailable(
                f"{self.spec.text} needs a PyTorch model (module:factory or .pt2); "
                f"{model.source} is an ONNX file"
            )
        self._apply_options()
        module = load_torch_module(source, model.source).to(self.device)
        if hasattr(module, "eval"):
            # an ExportedProgram's module() rejects eval()/train() in some torch versions;
            # it was exported in eval mode already
            with contextlib.suppress(NotImplementedError, RuntimeError):
                module.eval()
        self.module = module
        self.input_names = tuple(source.input_names)
        self.output_names = tuple(source.output_names)
        params = list(module.parameters()) if hasattr(module, "parameters") else []
        self._param_dtype = str(params[0].dtype).replace("torch.", "") if params else None

    def infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self._torch
        from torch.utils import _pytree

        missing = [n for n in self.input_names if n not in feed]
        if missing:
            raise KeyError(f"{self.spec.text}: inputs missing from the feed: {missing}")
        args = [
            torch.from_numpy(np.ascontiguousarray(feed[n])).to(self.device)
            for n in self.input_names
        ]
        with torch.inference_mode():
            out = self.module(*args)
        leaves = [out] if isinstance(out, torch.Tensor) else _pytree.tree_leaves(out)
        if len(leaves) != len(self.output_names):
            raise RuntimeError(
                f"{self.spec.text}: the module returned {len(leaves)} outputs, "
                f"expected {len(self.output_names)} ({', '.join(self.output_names)})"
            )
        return {
            name: (t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t))
            for name, t in zip(self.output_names, leaves, strict=True)
        }

    def describe_impl(self) -> dict[str, Any]:
        torch = self._torch
        precision: dict[str, Any] = {
            "float32_matmul_precision": torch.get_float32_matmul_precision(),
            "cuda_matmul_allow_tf32": bool(torch.backends.cuda.matmul.allow_tf32),
            "cudnn_allow_tf32": bool(torch.backends.cudnn.allow_tf32),
        }
        # torch 2.9+ fp32_precision settings ("ieee", "tf32", "none"), where they exist
        for key, path in (
            ("fp32_precision", "backends.fp32_precision"),
            ("cuda_matmul_fp32_precision", "backends.cuda.matmul.fp32_precision"),
            ("cudnn_fp32_precision", "backends.cudnn.fp32_precision"),
            ("cudnn_conv_fp32_precision", "backends.cudnn.conv.fp32_precision"),
            ("cudnn_rnn_fp32_precision", "backends.cudnn.rnn.fp32_precision"),
            ("mkldnn_matmul_fp32_precision", "backends.mkldnn.matmul.fp32_precision"),
        ):
            try:
                value = _getattr_path(torch, path)
            except Exception:  # some settings raise when read in a mixed legacy/new state
                value = None
            if isinstance(value, str):
                precision[key] = value
        info: dict[str, Any] = {
            "runtime": "torch",
            "version": torch.__version__,
            "device": self.device,
            "options": dict(self.spec.options),
            "precision": {
                "reported": self._param_dtype or "float32",
                "source": "the module's parameter dtype; TF32 switches under precision_flags",
            },
            "precision_flags": precision,
            "threads": torch.get_num_threads(),
        }
        if self.device == "cuda":
            info["device_name"] = torch.cuda.get_device_name()
            info["cuda_version"] = torch.version.cuda
            info["cudnn_version"] = torch.backends.cudnn.version()
        return info

    def deactivate_impl(self) -> None:
        self.module = None
        if self.device == "cuda":
            self._torch.cuda.empty_cache()


def create(spec: BackendSpec) -> TorchBackend:
    return TorchBackend(spec)


#: The repro script's run(side) for this runtime: it needs only numpy and the runtime, and
#: reads MODEL, INPUT_NAMES, OUTPUT_NAMES (and for torch ENTRY, WEIGHTS, WORKDIR) and
#: load_inputs() from the script around it.
REPRO_RUNNER = '''

def read_safetensors(path):
    """The weights file, read with NumPy alone (8-byte header size, JSON header, raw data)."""
    dtypes = {"F32": np.float32, "F16": np.float16, "F64": np.float64, "I64": np.int64,
              "I32": np.int32, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}
    raw = Path(path).read_bytes()
    size = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + size])
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        data = np.frombuffer(raw[8 + size + start:8 + size + end], dtype=dtypes[info["dtype"]])
        tensors[name] = data.reshape(info["shape"]).copy()
    return tensors


def run(side):
    import importlib

    import torch

    options = side["options"]
    if "matmul_precision" in options:
        torch.set_float32_matmul_precision(options["matmul_precision"])
    if "allow_tf32" in options:
        allow = options["allow_tf32"].lower() in ("1", "true", "yes", "on")
        torch.backends.cuda.matmul.allow_tf32 = allow
        torch.backends.cudnn.allow_tf32 = allow
    sys.path.insert(0, WORKDIR)
    module_name, factory = ENTRY.split(":")
    made = getattr(importlib.import_module(module_name), factory)()
    model = made[0] if isinstance(made, (tuple, list)) else made
    model.load_state_dict({k: torch.from_numpy(v) for k, v in read_safetensors(WEIGHTS).items()})
    model = model.eval().to(side["device"])
    print(f"  {side['spec']}: torch {torch.__version__}, matmul precision "
          f"{torch.get_float32_matmul_precision()}, cudnn.allow_tf32 "
          f"{torch.backends.cudnn.allow_tf32}")
    feed = load_inputs()
    with torch.inference_mode():
        out = model(*[torch.from_numpy(feed[n]).to(side["device"]) for n in INPUT_NAMES])
    outs = out if isinstance(out, (tuple, list)) else [out]
    return {name: o.detach().cpu().numpy() for name, o in zip(OUTPUT_NAMES, outs)}
'''


RUNTIME = Runtime(
    name="torch",
    title="PyTorch eager",
    usage="torch:<cpu|cuda|mps>?matmul_precision=<highest|high|medium>&allow_tf32=<0|1>",
    module=__name__,
    package="torch",
    distribution="torch",
    extra="modelparity[torch]",
    default_target="cpu",
    targets={device: device for device in DEVICES},
    target_words="device",
    options=OPTIONS,
    repro=Repro(repro_side,
                REPRO_RUNNER, needs_factory=True),
    rules=("modelparity.knowledge", "rules/torch.toml"),
)
