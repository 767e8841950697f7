"""PyTorch models (module:factory, .pt2) exported to ONNX in a child process, over the same
protocol as the backend workers (`execute.protocol`): torch is never imported by the audit.
Everything but `prepare_torch` runs in the child (`python -P -m modelparity.model.export`).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
import traceback
from typing import Any

from modelparity.errors import ModelError
from modelparity.execute.protocol import Child, ChildLost, Exported, Failed, redirect_output, serve
from modelparity.model.factory import load_factory, output_names_for
from modelparity.model.onnx import load_onnx, signature_of
from modelparity.model.prepared import (
    TORCH_INSTALL_HINT,
    PreparedModel,
    TorchSource,
    exc_text,
    first_line,
)


def _batch_is_dynamic(onnx_path: str) -> bool:
    """True when dim 0 of every input that has dimensions is symbolic in the ONNX file."""
    import onnx

    sig = signature_of(onnx.load(onnx_path, load_external_data=False))
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
                f"{entry}: the module fails on its own example inputs ({exc_text(exc)})"
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
            f"{exc_text(exc)}",
            file=sys.stderr,
        )
        traceback.print_exc()
        _onnx_export(module, args, onnx_path, input_names, output_names, None)
        shapes = f"static shapes (a dynamic batch failed: {exc_text(exc)})"
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
            f"{path}: not a torch.export program saved with torch.export.save ({exc_text(exc)})"
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


def _export(kind: str, entry: str, workdir: str, onnx_path: str) -> dict[str, Any]:
    """In the child: export, return what the parent needs (or raise `ModelError`)."""
    try:
        import torch.onnx  # noqa: F401
    except ImportError as exc:
        raise ModelError(
            f"{entry}: exporting a PyTorch model needs PyTorch: {TORCH_INSTALL_HINT} "
            f"({exc_text(exc)})"
        ) from None
    if importlib.util.find_spec("onnxscript") is None:
        raise ModelError(
            f"{entry}: exporting a PyTorch model to ONNX needs onnxscript: {TORCH_INSTALL_HINT}"
        )
    if importlib.util.find_spec("safetensors") is None:
        raise ModelError(f"{entry}: saving the weights needs safetensors: pip install safetensors")
    try:
        if kind == "factory":
            return _export_factory(entry, workdir, onnx_path)
        return _export_program(entry, onnx_path)
    except ModelError:
        raise
    except Exception as exc:
        traceback.print_exc()
        raise ModelError(f"{entry}: export to ONNX failed ({exc_text(exc, cause=True)})"
                         ) from None


def _handle(conn: Any) -> None:
    """The child's side: one request (kind, entry, workdir, onnx_path), one answer."""
    kind, entry, workdir, onnx_path = conn.recv()
    # the exporter talks a lot (logging, warnings, prints, C++ messages): keep it in a log
    with contextlib.suppress(OSError):
        redirect_output(os.path.join(workdir, "export.log"))
    # A factory's module may live in the directory the user ran modelparity in: it goes last on
    # the path (`python -P` left it off), so a stray torch.py there never shadows torch.
    sys.path.append(os.getcwd())
    try:
        conn.send(Exported(_export(kind, entry, workdir, onnx_path)))
    except ModelError as exc:
        conn.send(Failed("export", "user", first_line(exc, 1000)))
    except BaseException as exc:  # anything else still comes back as one line
        traceback.print_exc()
        conn.send(Failed("export", "exception",
                         f"{entry}: export to ONNX failed ({exc_text(exc)})"))


def _log_pointer(log_path: str, keep: bool) -> str:
    """Where to read more: the log's path if it stays, else its last line (it is deleted with
    the temporary folder before anyone can open it)."""
    if keep:
        return f"log: {log_path}"
    try:
        with open(log_path, errors="replace") as handle:
            lines = [line.strip() for line in handle if line.strip()]
    except OSError:
        lines = []
    return f"its last output: {first_line(lines[-1], 200)}" if lines else "no output"


def prepare_torch(kind: str, entry: str, source: str, workdir: str, timeout: float,
                  keep_log: bool = True) -> PreparedModel:
    """Export a PyTorch model in a child process; the ONNX file, its signature and how a torch
    backend rebuilds the module. `ModelError` (one line) when the export fails."""
    if importlib.util.find_spec("torch") is None:
        raise ModelError(f"{source}: a PyTorch model needs PyTorch: {TORCH_INSTALL_HINT}")
    workdir = os.path.abspath(workdir)
    os.makedirs(workdir, exist_ok=True)
    onnx_path = os.path.join(workdir, "model.onnx")
    log_path = os.path.join(workdir, "export.log")
    child = Child("modelparity.model.export")
    try:
        child.send((kind, entry, workdir, onnx_path))
        try:
            answer = child.receive(timeout)
        except ChildLost as lost:
            where = _log_pointer(log_path, keep_log)
            if lost.timed_out:
                raise ModelError(f"{source}: export to ONNX did not finish within {timeout:g} s "
                                 f"(--timeout; {where})") from None
            raise ModelError(f"{source}: export to ONNX failed (the export process died with "
                             f"exit code {lost.code}; {where})") from None
    finally:
        child.close()
    if isinstance(answer, Failed):
        raise ModelError(answer.message)
    payload = answer.info

    signature = signature_of(load_onnx(onnx_path))
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


if __name__ == "__main__":
    serve(_handle)
