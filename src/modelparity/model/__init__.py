"""Resolve what the user gave as a model into one ONNX file every ONNX backend runs.

An ONNX file is used as is (external data stays beside it: `onnx.py`). A PyTorch model, given
as a `module:factory` entry point or a `torch.export` program (.pt2), is exported to ONNX in a
child process (`export.py`), and its weights are saved so that `torch:` backends run exactly the
weights the ONNX file holds. The audit's own process never imports torch.
"""

from __future__ import annotations

import os

from modelparity.errors import ModelError
from modelparity.model.factory import is_entry_point, load_factory
from modelparity.model.onnx import prepare_onnx, read_signature
from modelparity.model.prepared import ACCEPTED_FORMS, PreparedModel, TorchSource
from modelparity.model.signature import Dim, Signature, TensorInfo


def prepare_model(
    model: str, workdir: str, *, timeout: float = 600, allow_pickle: bool = False,
    keep_log: bool = True,
) -> PreparedModel:
    """Resolve `model` (ONNX file, .pt2 program or module:factory) into a `PreparedModel`.

    Exports of PyTorch models go to `workdir` (model.onnx, weights.safetensors, export.log),
    bounded by `timeout` seconds; `keep_log=False` (a temporary workdir) puts the log's last
    line in a failure's message instead of its soon-deleted path.
    A .pt2 file is only opened with `allow_pickle=True`: torch.export.load unpickles parts of
    it, and unpickling runs whatever code the file carries.
    """
    from modelparity.model.export import prepare_torch  # run as the export child's main too
    from modelparity.model.ir import is_ir, refuse_ir

    model = str(model)
    if is_ir(model):
        refuse_ir(model)
    if model.lower().endswith(".pt2"):
        if not os.path.isfile(model):
            raise ModelError(f"{model}: no such file")
        if not allow_pickle:
            raise ModelError(
                f"{model}: loading a torch.export program unpickles parts of the file, which can "
                "run code; pass --allow-pickle (allow_pickle=True) only for a file you trust"
            )
        return prepare_torch("exported_program", os.path.abspath(model), model, workdir, timeout,
                             keep_log)
    if model.lower().endswith(".onnx"):
        if not os.path.isfile(model):
            if os.path.isdir(model):
                raise ModelError(f"{model}: is a folder, expected an ONNX file")
            raise ModelError(f"{model}: no such file")
        return prepare_onnx(model)
    if os.path.isfile(model):
        return prepare_onnx(model)
    if is_entry_point(model):
        return prepare_torch("factory", model, model, workdir, timeout, keep_log)
    what = "is a folder" if os.path.isdir(model) else "is not a file or an entry point"
    raise ModelError(f"{model}: {what}; expected {ACCEPTED_FORMS}")



__all__ = ["Dim", "PreparedModel", "Signature", "TensorInfo", "TorchSource", "is_entry_point",
           "load_factory", "prepare_model", "read_signature"]
