"""Resolve what the user gave as a model into one ONNX file every ONNX backend runs.

An ONNX file is used as is (external data stays beside it). A PyTorch model, given as a
`module:factory` entry point or a `torch.export` program (.pt2), is exported to ONNX in a worker
process, and its weights are saved so that `torch:` backends run exactly the weights the ONNX
file holds. The parent process never imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from modelparity.signature import Signature


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
