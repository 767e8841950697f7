"""What the user gave as a model, resolved: one ONNX file every ONNX backend runs, its
signature, and for a PyTorch model how a torch backend rebuilds the very module it came from."""

from __future__ import annotations

import re
from dataclasses import dataclass

from modelparity.model.signature import Signature


@dataclass(frozen=True)
class TorchSource:
    """How a torch backend rebuilds the very module the ONNX file was exported from."""

    kind: str  # "factory" or "exported_program"
    entry: str  # "module:factory", or the path of the .pt2 file
    weights: str | None  # safetensors state dict used for the export ("factory" kind)
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]


@dataclass(frozen=True)
class PreparedModel:
    onnx_path: str
    signature: Signature
    source: str  # what the user gave: a path or module:factory
    torch_source: TorchSource | None = None
    exporter: str | None = None  # how the ONNX file was made, when we made it
    # Outputs added to see the precision before a final activation that hides it: the
    # activation's input tensor -> the output it feeds (`modelparity.model.probe`).
    probes: tuple[tuple[str, str], ...] = ()
    # The model's own quantization (DynamicQuantizeLinear, ConvInteger, ...): op types found.
    # Its int8 steps turn any difference before them, FP32 reordering included, into a whole
    # step, so the error profile cannot tell one float precision from another.
    quantized: tuple[str, ...] = ()
    # Outputs a backend may leave out (`locate` exposes intermediates, and a runtime that fuses
    # a node into the next does not return its output): compared where returned.
    optional_outputs: tuple[str, ...] = ()


ACCEPTED_FORMS = (
    "an ONNX file (model.onnx), a torch.export program saved with torch.export.save (model.pt2), "
    "or a PyTorch entry point module:factory (importable from the current directory)"
)
FACTORY_FORM = (
    "the factory must take no arguments and return (torch.nn.Module, {input name: example "
    "array or tensor}) or a torch.nn.Module with an `example_inputs` dict of that form"
)
TORCH_INSTALL_HINT = "pip install 'modelparity[torch]'"


_ANSI_RE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def first_line(text: object, limit: int = 300) -> str:
    for line in _ANSI_RE.sub("", str(text)).splitlines():
        line = line.strip()
        if line:
            return line if len(line) <= limit else line[: limit - 3] + "..."
    return ""


def exc_text(exc: BaseException, *, cause: bool = False) -> str:
    """`Class: first line`; with cause=True, also the root cause (the exporter wraps errors)."""
    msg = first_line(exc, 200)
    text = f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__
    root = exc
    seen = {id(exc)}
    while cause and root.__cause__ is not None and id(root.__cause__) not in seen:
        root = root.__cause__
        seen.add(id(root))
    if root is not exc:
        text += f"; caused by {exc_text(root)}"
    return text


