"""OpenVINO IR models (.xml with its .bin): audited against the ONNX model they were made from.

An IR is OpenVINO's own format, which no other runtime reads, and what converting changed
(`ovc` and `openvino.save_model` store FP32 weights as FP16 by default) is exactly what an audit
should measure. So the ONNX original is the audited model: the reference and the yardsticks run
it, and each OpenVINO backend runs the IR in its place (its `ir=` option). Pure path handling:
OpenVINO itself is only imported by its backend.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ElementTree
from collections.abc import Sequence
from math import prod

from modelparity.errors import InputError, ModelError, SpecError
from modelparity.spec import BackendSpec

IR_SUFFIX = ".xml"


def is_ir(path: str) -> bool:
    return str(path).lower().endswith(IR_SUFFIX)


def check_ir(path: str, what: str) -> str:
    """`path`, checked to be an IR with its weights beside it (as given: the workers run in
    this directory), or one line naming `what` gave it and what is wrong."""
    error = SpecError if what.startswith("-b") else ModelError
    if not is_ir(path):
        raise error(f"{what}: {path} is not an OpenVINO IR (expected model.xml, with its "
                    f"model.bin beside it)")
    if not os.path.isfile(path):
        raise error(f"{what}: {path}: no such file")
    weights = os.path.splitext(path)[0] + ".bin"
    if not os.path.isfile(weights):
        raise error(f"{what}: {path}: its weights {os.path.basename(weights)} are not beside "
                    f"it")
    return path


def refuse_ir(model: str) -> None:
    """An IR given where an ONNX model is expected: one line saying how to audit it."""
    raise ModelError(
        f"{model}: an OpenVINO IR runs only on OpenVINO, and the audit's reference runs the "
        f"model on ONNX Runtime: give the ONNX model it was made from with --original "
        f"model.onnx (or audit the ONNX with -b 'openvino:cpu?ir={model}')")


def with_original(model: str, original: str | None, backends: Sequence[str | BackendSpec]
                  ) -> tuple[str, list[str | BackendSpec]]:
    """The model to audit and the backends, for `model` given as an IR: with `original` (the
    ONNX it was made from) that is audited, and each OpenVINO backend that names no IR of its
    own runs `model` (`ir=`). An IR without its original is refused in one line that says how
    to give both (`refuse_ir`)."""
    if original is None:
        return model, list(backends)
    from modelparity.backends import parse_spec

    ir = check_ir(model, "the model")
    if is_ir(original) or not os.path.isfile(original):
        raise InputError(f"--original {original}: expected the ONNX file the IR was made from")
    specs: list[str | BackendSpec] = []
    for text in backends:
        spec = parse_spec(text)
        runs_ir = spec.runtime == "openvino" and not any(k.lower() == "ir" for k in spec.options)
        specs.append(spec.with_options(ir=ir) if runs_ir else text)
    if not any(isinstance(s, BackendSpec) for s in specs):
        raise InputError(f"{model}: no OpenVINO backend (-b openvino:cpu, ...) to run the IR "
                         f"on; the other backends run --original {original}")
    return original, specs


def fp16_compressed(path: str) -> tuple[int, int]:
    """(FP16 constants that a Convert to f32 reads, their values) in the IR at `path`: how
    `save_model(compress_to_fp16=True)` stores FP32 weights. Read from the IR's XML (the
    layers and the edges between them; expat refuses entity expansion, so a hostile file is an
    error, not a blow-up); OpenVINO is not imported."""
    try:
        net = ElementTree.parse(path).getroot()
    except (OSError, ElementTree.ParseError) as exc:
        raise ModelError(f"{path}: not a readable OpenVINO IR ({exc})") from None
    layers = {layer.get("id"): layer for layer in net.iter("layer")}
    constants = values = 0
    for edge in net.iter("edge"):
        source, target = layers.get(edge.get("from-layer")), layers.get(edge.get("to-layer"))
        if source is None or target is None or source.get("type") != "Const" or \
                target.get("type") != "Convert":
            continue
        data, into = source.find("data"), target.find("data")
        if data is None or into is None or data.get("element_type") != "f16" or \
                into.get("destination_type") != "f32":
            continue
        constants += 1
        shape = [int(d) for d in (data.get("shape") or "").replace(" ", "").split(",") if d]
        values += prod(shape)
    return constants, values


def static_facts(options: dict[str, str]) -> dict[str, str]:
    """What an OpenVINO spec's `ir=` file says before anything runs: whether it stores its
    FP32 weights as FP16 (`compress_to_fp16`), for the knowledge base (rule OV-7)."""
    for key, value in options.items():
        if key.lower() == "ir" and os.path.isfile(value):
            constants, _ = fp16_compressed(value)
            return {"compress_to_fp16": "true" if constants else "false"}
    return {}
