"""Resolve what the user gave as a model into one ONNX file every ONNX backend runs.

An ONNX file is used as is (external data stays beside it). A PyTorch model, given as a
`module:factory` entry point or a `torch.export` program (.pt2), is exported to ONNX in a worker
process, and its weights are saved so that `torch:` backends run exactly the weights the ONNX
file holds. The parent process never imports torch.
"""

from __future__ import annotations

import importlib.util
import os
import re
import socket
import subprocess
import sys
import traceback
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from modelparity.entrypoints import load_entry_point, looks_like_entry_point
from modelparity.errors import ModelError
from modelparity.signature import Dim, Signature, TensorInfo


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


def _first_line(text: object, limit: int = 300) -> str:
    for line in _ANSI_RE.sub("", str(text)).splitlines():
        line = line.strip()
        if line:
            return line if len(line) <= limit else line[: limit - 3] + "..."
    return ""


def _exc_text(exc: BaseException, *, cause: bool = False) -> str:
    """`Class: first line`; with cause=True, also the root cause (the exporter wraps errors)."""
    msg = _first_line(exc, 200)
    text = f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__
    root = exc
    seen = {id(exc)}
    while cause and root.__cause__ is not None and id(root.__cause__) not in seen:
        root = root.__cause__
        seen.add(id(root))
    if root is not exc:
        text += f"; caused by {_exc_text(root)}"
    return text


# --------------------------------------------------------------------------------------------
# ONNX signature


def _value_info(value: Any) -> TensorInfo:
    import onnx.helper

    type_proto = value.type
    if type_proto.WhichOneof("value") != "tensor_type":
        # sequences, maps, optionals (e.g. a ZipMap output): no numpy dtype or shape to give
        return TensorInfo(value.name, "object", ())
    tensor_type = type_proto.tensor_type
    try:
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type).name
    except (KeyError, ValueError, TypeError):
        dtype = "object"
    shape: tuple[Dim, ...] = ()
    if tensor_type.HasField("shape"):
        dims: list[Dim] = []
        for d in tensor_type.shape.dim:
            if d.HasField("dim_value"):
                dims.append(int(d.dim_value))
            elif d.HasField("dim_param") and d.dim_param:
                dims.append(str(d.dim_param))
            else:
                dims.append(None)
        shape = tuple(dims)
    return TensorInfo(value.name, dtype, shape)


def _signature_of(proto: Any) -> Signature:
    graph = proto.graph
    initializers = {t.name for t in graph.initializer} | {
        t.values.name for t in graph.sparse_initializer
    }
    inputs = tuple(_value_info(v) for v in graph.input if v.name not in initializers)
    outputs = tuple(_value_info(v) for v in graph.output)
    return Signature(inputs=inputs, outputs=outputs)


def _load_onnx(path: str) -> Any:
    import onnx

    try:
        return onnx.load(path, load_external_data=False)
    except Exception as exc:  # DecodeError, ValueError, ...
        raise ModelError(f"{path}: not a valid ONNX model ({_exc_text(exc)})") from None


def read_signature(onnx_path: str) -> Signature:
    """Inputs (initializers excluded) and outputs of an ONNX file, without loading its weights."""
    if not os.path.isfile(onnx_path):
        raise ModelError(f"{onnx_path}: no such file")
    return _signature_of(_load_onnx(onnx_path))


def _all_tensors(graph: Any):
    """Initializers and tensor attributes of a graph and its subgraphs."""
    import onnx

    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR:
                yield attr.t
            elif attr.type == onnx.AttributeProto.TENSORS:
                yield from attr.tensors
            elif attr.type == onnx.AttributeProto.GRAPH:
                yield from _all_tensors(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for sub in attr.graphs:
                    yield from _all_tensors(sub)


def _check_external_data(path: str, proto: Any) -> None:
    """Every tensor stored beside the model must have its file there (named in the error)."""
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data

    base = os.path.dirname(os.path.abspath(path))
    checked: set[str] = set()
    for tensor in _all_tensors(proto.graph):
        if not uses_external_data(tensor):
            continue
        location = ExternalDataInfo(tensor).location
        if location in checked:
            continue
        checked.add(location)
        if (
            not location
            or os.path.isabs(location)
            or ".." in location.replace("\\", "/").split("/")
        ):
            raise ModelError(
                f"{path}: tensor '{tensor.name}' has external data at '{location}', which is "
                "not a path relative to the model's folder"
            )
        if not os.path.isfile(os.path.join(base, location)):
            raise ModelError(
                f"{path}: external data file '{location}' (tensor '{tensor.name}') not found "
                f"in {base}"
            )


def _prepare_onnx(path: str) -> PreparedModel:
    import onnx

    proto = _load_onnx(path)
    if not proto.HasField("graph"):
        raise ModelError(f"{path}: not a valid ONNX model (no graph)")
    _check_external_data(path, proto)
    try:
        # by path, so that tensors stored beside the file (and models over 2 GB) are checked
        onnx.checker.check_model(path)
    except Exception as exc:
        raise ModelError(f"{path}: not a valid ONNX model ({_exc_text(exc)})") from None
    return PreparedModel(
        onnx_path=os.path.abspath(path), signature=_signature_of(proto), source=path
    )


# --------------------------------------------------------------------------------------------
# PyTorch models (module:factory, .pt2): everything below `_export_worker` runs in the child


def is_entry_point(model: str) -> bool:
    return not os.path.exists(model) and looks_like_entry_point(model)


def load_factory(entry: str) -> tuple[Any, dict[str, Any]]:
    """Import `module:factory`, call it, return (module in eval mode, example inputs as tensors).

    Raises `ModelError` naming the entry point and the expected form. Imports torch: call it in
    a worker process only (the export child, a torch backend).
    """
    import numpy as np
    import torch

    factory = load_entry_point(entry, ModelError, expected=FACTORY_FORM)
    try:
        result = factory()
    except Exception as exc:
        raise ModelError(f"{entry}: the factory raised {_exc_text(exc)}") from None

    if isinstance(result, torch.nn.Module):
        module, examples = result, getattr(result, "example_inputs", None)
    elif isinstance(result, (tuple, list)) and len(result) == 2:
        module, examples = result
    else:
        raise ModelError(f"{entry}: returned {type(result).__name__}; {FACTORY_FORM}")
    if not isinstance(module, torch.nn.Module):
        raise ModelError(
            f"{entry}: returned a {type(module).__name__} as the module; {FACTORY_FORM}"
        )
    if not isinstance(examples, dict) or not examples:
        got = "no example_inputs" if examples is None else type(examples).__name__
        raise ModelError(f"{entry}: example inputs are {got}; {FACTORY_FORM}")
    tensors: dict[str, Any] = {}
    for name, value in examples.items():
        if not isinstance(name, str):
            raise ModelError(
                f"{entry}: example input name {name!r} is not a string; {FACTORY_FORM}"
            )
        if isinstance(value, np.ndarray):
            value = torch.from_numpy(np.ascontiguousarray(value))
        elif isinstance(value, np.generic):
            value = torch.from_numpy(np.asarray(value))
        if not isinstance(value, torch.Tensor):
            raise ModelError(
                f"{entry}: example input '{name}' is a {type(value).__name__}; {FACTORY_FORM}"
            )
        tensors[name] = value
    module.eval()
    return module, tensors


def output_names_for(structure: Any) -> tuple[str, ...]:
    """'output' for a single tensor, 'output_0', 'output_1', ... for anything nested."""
    import torch
    from torch.utils import _pytree

    if isinstance(structure, torch.Tensor):
        return ("output",)
    leaves = _pytree.tree_leaves(structure)
    return tuple(f"output_{i}" for i in range(len(leaves)))


def _batch_is_dynamic(onnx_path: str) -> bool:
    """True when dim 0 of every input that has dimensions is symbolic in the ONNX file."""
    import onnx

    sig = _signature_of(onnx.load(onnx_path, load_external_data=False))
    firsts = [i.shape[0] for i in sig.inputs if i.shape]
    return bool(firsts) and all(not isinstance(d, int) for d in firsts)


def _exporter_text(onnx_path: str, shapes: str) -> str:
    import onnx
    import torch

    try:
        import onnxscript

        onnxscript_version = f", onnxscript {onnxscript.__version__}"
    except Exception:  # pragma: no cover - torch.onnx.export(dynamo=True) needs it
        onnxscript_version = ""
    proto = onnx.load(onnx_path, load_external_data=False)
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), "?")
    return (
        f"torch.onnx.export(dynamo=True) torch {torch.__version__}{onnxscript_version}, "
        f"opset {opset}, {shapes}"
    )


def _onnx_export(
    program: Any, args: tuple, onnx_path: str, input_names, output_names, dynamic_shapes
) -> None:
    import torch

    torch.onnx.export(
        program,
        args=args,
        f=onnx_path,
        dynamo=True,
        input_names=list(input_names),
        output_names=list(output_names),
        dynamic_shapes=dynamic_shapes,
        verbose=False,
    )


def _export_factory(entry: str, workdir: str, onnx_path: str) -> dict[str, Any]:
    import torch
    from safetensors.torch import save_file

    module, examples = load_factory(entry)
    input_names = tuple(examples)
    args = tuple(examples.values())
    with torch.no_grad():
        try:
            structure = module(*args)
        except Exception as exc:
            raise ModelError(
                f"{entry}: the module fails on its own example inputs ({_exc_text(exc)})"
            ) from None
    output_names = output_names_for(structure)

    weights = os.path.join(workdir, "weights.safetensors")
    state = {
        k: v.detach().cpu().contiguous().clone()
        for k, v in module.state_dict().items()
        if isinstance(v, torch.Tensor)
    }
    save_file(state, weights)

    batch = torch.export.Dim("batch")
    dynamic = tuple({0: batch} if t.dim() > 0 else None for t in args)
    try:
        _onnx_export(module, args, onnx_path, input_names, output_names, dynamic)
        # the exporter may specialize the batch dimension without failing (e.g. a reshape to
        # a fixed size): report what the ONNX file really has
        shapes = (
            "dynamic batch"
            if _batch_is_dynamic(onnx_path)
            else "static shapes (the exporter fixed the batch dimension)"
        )
    except Exception as exc:
        print(
            f"modelparity: export with a dynamic batch failed, retrying with static shapes: "
            f"{_exc_text(exc)}",
            file=sys.stderr,
        )
        traceback.print_exc()
        _onnx_export(module, args, onnx_path, input_names, output_names, None)
        shapes = f"static shapes (a dynamic batch failed: {_exc_text(exc)})"
    return {
        "input_names": input_names,
        "output_names": output_names,
        "weights": weights,
        "exporter": _exporter_text(onnx_path, shapes),
    }


def _export_program(path: str, onnx_path: str) -> dict[str, Any]:
    import torch

    # torch.export.load is NOT pickle-free: its docstring warns that it "uses pickle under the
    # hood" and, in torch 2.13 (torch/export/pt2_archive/_package.py, _export/serde/serialize.py),
    # tensors and constants saved in pickle form are read with torch.load(weights_only=False) or
    # pickle.loads. A .pt2 file can therefore run code when loaded: treat it as trusted input, as
    # trusted as a module:factory entry point (which runs the user's code by design). This is one
    # reason it is only ever loaded in a worker process.
    try:
        program = torch.export.load(path)
    except Exception as exc:
        raise ModelError(
            f"{path}: not a torch.export program saved with torch.export.save ({_exc_text(exc)})"
        ) from None
    sig = program.graph_signature
    input_names = tuple(str(n) for n in sig.user_inputs)
    out_spec = program.call_spec.out_spec
    if out_spec is not None and out_spec.is_leaf() and len(sig.user_outputs) == 1:
        output_names: tuple[str, ...] = ("output",)
    else:
        output_names = tuple(f"output_{i}" for i in range(len(sig.user_outputs)))
    # the program carries its own shapes (dynamic where it was exported with torch.export.Dim)
    _onnx_export(program, (), onnx_path, input_names, output_names, None)
    dynamic = _batch_is_dynamic(onnx_path)
    shapes = "the program's own shapes" + (" (dynamic batch)" if dynamic else " (static)")
    return {
        "input_names": input_names,
        "output_names": output_names,
        "weights": None,
        "exporter": _exporter_text(onnx_path, shapes),
    }


def _export_worker(conn: Any, kind: str, entry: str, workdir: str, onnx_path: str) -> None:
    """Child process: export, then send ("ok", info) or ("error", one-line message)."""
    log_path = os.path.join(workdir, "export.log")
    try:
        # the exporter talks a lot (logging, warnings, prints, C++ messages): keep it in a log
        sys.stdout.flush()
        sys.stderr.flush()
        log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        os.close(log_fd)
    except OSError:
        pass
    try:
        try:
            import torch.onnx  # noqa: F401
        except ImportError as exc:
            raise ModelError(
                f"{entry}: exporting a PyTorch model needs PyTorch: {TORCH_INSTALL_HINT} "
                f"({_exc_text(exc)})"
            ) from None
        if importlib.util.find_spec("onnxscript") is None:
            raise ModelError(
                f"{entry}: exporting a PyTorch model to ONNX needs onnxscript: {TORCH_INSTALL_HINT}"
            )
        if importlib.util.find_spec("safetensors") is None:
            raise ModelError(
                f"{entry}: saving the weights needs safetensors: pip install safetensors"
            )
        try:
            if kind == "factory":
                info = _export_factory(entry, workdir, onnx_path)
            else:
                info = _export_program(entry, onnx_path)
        except ModelError:
            raise
        except Exception as exc:
            traceback.print_exc()
            raise ModelError(
                f"{entry}: export to ONNX failed ({_exc_text(exc, cause=True)})"
            ) from None
        conn.send(("ok", info))
    except ModelError as exc:
        conn.send(("error", _first_line(exc, 1000)))
    except BaseException as exc:  # anything else still comes back as one line
        traceback.print_exc()
        conn.send(("error", f"{entry}: export to ONNX failed ({_exc_text(exc)})"))
    finally:
        conn.close()
        sys.stdout.flush()
        sys.stderr.flush()


def _prepare_torch(kind: str, entry: str, source: str, workdir: str, timeout: float):
    if importlib.util.find_spec("torch") is None:
        raise ModelError(f"{source}: a PyTorch model needs PyTorch: {TORCH_INSTALL_HINT}")
    workdir = os.path.abspath(workdir)
    os.makedirs(workdir, exist_ok=True)
    onnx_path = os.path.join(workdir, "model.onnx")
    log_path = os.path.join(workdir, "export.log")

    # A fresh interpreter (`python -m modelparity.model FD`), not multiprocessing's spawn: no
    # `if __name__ == "__main__"` guard is needed in the caller's script, and torch stays out
    # of this process.
    parent, child = socket.socketpair()
    proc = subprocess.Popen(
        [sys.executable, "-m", "modelparity.model", str(child.fileno())],
        pass_fds=(child.fileno(),),
        stdin=subprocess.DEVNULL,
    )
    child.close()
    receiver = Connection(parent.detach())
    try:
        receiver.send((kind, entry, workdir, onnx_path))
        if not receiver.poll(timeout):
            raise ModelError(
                f"{source}: export to ONNX did not finish within {timeout:g} s (log: {log_path})"
            )
        try:
            status, payload = receiver.recv()
        except (EOFError, OSError):
            code = proc.wait(10)
            raise ModelError(
                f"{source}: export to ONNX failed (the export process died with exit code "
                f"{code}; log: {log_path})"
            ) from None
    finally:
        receiver.close()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if status != "ok":
        raise ModelError(payload)

    signature = _signature_of(_load_onnx(onnx_path))
    output_names = tuple(payload["output_names"])
    if len(signature.outputs) == len(output_names):
        # the ONNX file's names are what every backend reports: keep the torch side identical
        output_names = tuple(signature.output_names)
    torch_source = TorchSource(
        kind=kind,
        entry=entry,
        weights=payload["weights"],
        input_names=tuple(payload["input_names"]),
        output_names=output_names,
    )
    return PreparedModel(
        onnx_path=onnx_path,
        signature=signature,
        source=source,
        torch_source=torch_source,
        exporter=payload["exporter"],
    )


def prepare_model(
    model: str, workdir: str, *, timeout: float = 600, allow_pickle: bool = False
) -> PreparedModel:
    """Resolve `model` (ONNX file, .pt2 program or module:factory) into a `PreparedModel`.

    Exports of PyTorch models go to `workdir` (model.onnx, weights.safetensors, export.log).
    A .pt2 file is only opened with `allow_pickle=True`: torch.export.load unpickles parts of
    it, and unpickling runs whatever code the file carries.
    """
    model = str(model)
    if model.lower().endswith(".pt2"):
        if not os.path.isfile(model):
            raise ModelError(f"{model}: no such file")
        if not allow_pickle:
            raise ModelError(
                f"{model}: loading a torch.export program unpickles parts of the file, which can "
                "run code; pass --allow-pickle (allow_pickle=True) only for a file you trust"
            )
        return _prepare_torch("exported_program", os.path.abspath(model), model, workdir, timeout)
    if model.lower().endswith(".onnx"):
        if not os.path.isfile(model):
            if os.path.isdir(model):
                raise ModelError(f"{model}: is a folder, expected an ONNX file")
            raise ModelError(f"{model}: no such file")
        return _prepare_onnx(model)
    if os.path.isfile(model):
        return _prepare_onnx(model)
    if is_entry_point(model):
        return _prepare_torch("factory", model, model, workdir, timeout)
    what = "is a folder" if os.path.isdir(model) else "is not a file or an entry point"
    raise ModelError(f"{model}: {what}; expected {ACCEPTED_FORMS}")


def _export_main() -> None:
    """Entry point of the export process started by `_prepare_torch`."""
    conn = Connection(socket.socket(fileno=int(sys.argv[1])).detach())
    kind, entry, workdir, onnx_path = conn.recv()
    _export_worker(conn, kind, entry, workdir, onnx_path)


if __name__ == "__main__":
    _export_main()
