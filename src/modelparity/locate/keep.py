"""`keep_fp32()`: the nodes to keep in FP32 so a model run in FP16 or BF16 meets a policy.

1. `localize` on the precision's emulation ranks the nodes (`search.rank`);
2. `search.search` tries kept sets, each one an audit of `emulate:<precision>?keep=<nodes>`
   against the FP32 reference on the data, until the policy holds (`--policy flips==0`);
3. the choice is written as the runtimes take it: an FP16 ONNX model with those nodes in FP32
   (onnxconverter-common's `convert_float_to_float16(node_block_list=...)`, FP32 inputs and
   outputs), and the node names for coremltools' `op_selector`, OpenVINO's per-node
   `disable_fp16_compression` runtime info and TensorRT's per-layer precision (`settings`);
4. the written ONNX model is verified: run on ONNX Runtime here, its decisions are compared
   with the FP32 model's, with the latency of FP32, the full low precision model and the mixed
   one (each in its own audit, one after the other, same settings).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from modelparity.api import audit
from modelparity.backends import parse_spec
from modelparity.decisions import TaskConfig, find_flips, make_head
from modelparity.errors import InputError
from modelparity.folders import write_atomic
from modelparity.inputs import FirstSamples, InputSource
from modelparity.locate.expose import node_name
from modelparity.locate.run import LOCATE_BATCH, LOCATE_SAMPLES, located, opened
from modelparity.locate.search import rank, search
from modelparity.plan import DEFAULT_REFERENCE, Settings
from modelparity.policy import Policy, parse_policy, requirement_met
from modelparity.result import AuditResult, BackendResult
from modelparity.serialize import jsonable

VERIFY = "ort:cpu?intra_op_num_threads=1"  # runs each written model for its decisions and speed


@dataclass(frozen=True)
class Side:
    """One variant's fidelity (against the FP32 reference) and speed."""

    flips: int | None
    max_abs: float | None
    latency_ms: float | None = None  # median per call, ONNX Runtime CPU here (written models)
    error: str | None = None  # a written model that did not run, and why

    def to_dict(self) -> dict[str, Any]:
        return jsonable({"flips": self.flips, "max_abs": self.max_abs,
                         "latency_ms": self.latency_ms, "error": self.error})

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Side:
        return cls(data.get("flips"), data.get("max_abs"), data.get("latency_ms"),
                   data.get("error"))


@dataclass(frozen=True)
class KeepResult:
    model: str
    precision: str
    policy: str
    met: bool
    kept: tuple[tuple[int, str, str], ...]  # (position, node name, op type)
    evaluations: int  # audits of a mixed emulation the search ran
    search: str  # how the set was found, in words
    before: Side  # the whole model in the low precision (emulated)
    after: Side  # with the kept nodes in FP32 (emulated)
    written: str | None = None  # the mixed-precision ONNX file (fp16)
    verified: dict[str, Side] = field(default_factory=dict)  # fp32 / fp16 / mixed, run here
    settings: dict[str, Any] = field(default_factory=dict)  # the same choice per runtime
    nodes_total: int = 0
    checks: tuple[str, ...] = ()  # what was verified of the written model, in words

    def to_dict(self) -> dict[str, Any]:
        return {"tool": "modelparity keep-fp32", "model": self.model,
                "precision": self.precision, "policy": self.policy, "met": self.met,
                "kept": [{"index": i, "node": n, "op_type": t} for i, n, t in self.kept],
                "nodes_total": self.nodes_total, "evaluations": self.evaluations,
                "search": self.search, "before": self.before.to_dict(),
                "after": self.after.to_dict(), "written": self.written,
                "verified": {k: v.to_dict() for k, v in self.verified.items()},
                "settings": self.settings, "checks": list(self.checks)}

    def save(self, path: str) -> str:
        return write_atomic(path, json.dumps(self.to_dict(), indent=1))

    @classmethod
    def load(cls, path: str) -> KeepResult:
        with open(path) as handle:
            return cls.from_dict(json.load(handle))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> KeepResult:
        return cls(data["model"], data["precision"], data["policy"], bool(data["met"]),
                   tuple((int(k["index"]), str(k["node"]), str(k["op_type"]))
                         for k in data["kept"]),
                   int(data["evaluations"]), data["search"], Side.from_dict(data["before"]),
                   Side.from_dict(data["after"]), data.get("written"),
                   {k: Side.from_dict(v) for k, v in (data.get("verified") or {}).items()},
                   dict(data.get("settings") or {}), int(data.get("nodes_total", 0)),
                   tuple(data.get("checks") or ()))


def keep_fp32(
    model: str,
    precision: str,
    inputs: str | InputSource | None = None,
    *,
    policy: str | Policy = "flips==0",
    task: str | TaskConfig = "binary",
    reference: str = DEFAULT_REFERENCE,
    samples: int = 1000,
    locate_samples: int = LOCATE_SAMPLES,
    batch_size: int = Settings.batch_size,
    shapes: dict[str, tuple[int, ...]] | None = None,
    seed: int = 0,
    value_range: tuple[float, float] = (-1.0, 1.0),
    timeout: float = Settings.timeout,
    out: str | None = None,
    allow_pickle: bool = False,
    validate: Callable[[str], bool] | None = None,
) -> KeepResult:
    """Find a small set of nodes to keep in FP32 so `model` in `precision` (fp16 or bf16)
    meets `policy` (a requirement, such as flips==0 or max_abs<1e-3) on `inputs`. With
    `out`, the mixed-precision model (fp16) and keep.json are written there.

    Each set tried is judged by an audit of the precision's emulation against the FP32
    reference. With `validate` (fp16 only), it is judged by your function instead: it gets
    the path of the mixed FP16 ONNX file for that set (onnxconverter-common, FP32 inputs and
    outputs) and says whether it meets your requirement, so the search validates on the
    runtime you deploy to (a GPU, an NPU, a Mac) rather than on the emulation. The emulated
    figures are still reported beside it."""
    if precision not in ("fp16", "bf16"):
        raise InputError(f"--precision {precision}: expected fp16 or bf16")
    requirement = policy if isinstance(policy, Policy) else parse_policy(policy)
    if validate is not None and precision != "fp16":
        raise InputError("validate: runs the mixed FP16 ONNX file, so it needs "
                         "--precision fp16 (ONNX Runtime does not deploy BF16 files)")
    with opened(model, inputs, out, samples=samples, shapes=shapes, seed=seed,
                value_range=value_range, timeout=timeout,
                allow_pickle=allow_pickle) as (workdir, prepared, source):
        import onnx

        graph = onnx.load(prepared.onnx_path, load_external_data=False).graph
        names = [node_name(node, i) for i, node in enumerate(graph.node)]
        located_nodes: list[Any] = []  # the exposure's nodes, once ranked

        def ranking() -> list[int]:  # locate, only once the whole model fails
            guide, exposure = located(prepared, parse_spec(f"emulate:{precision}"),
                                      FirstSamples(source, locate_samples),
                                      os.path.join(workdir, "locate"), keep=True, task=task,
                                      reference=reference, precision=precision,
                                      batch_size=LOCATE_BATCH, timeout=timeout)
            located_nodes.extend(exposure.nodes)
            return rank(exposure.nodes, guide.nodes)

        runs: dict[frozenset[int], BackendResult] = {}
        common = {"task": task, "reference": reference, "batch_size": batch_size,
                  "timeout": timeout, "warmup": 0, "fingerprint": False}

        def emulated(kept: frozenset[int]) -> BackendResult:
            if kept not in runs:
                result = audit(prepared, [_spec(precision, kept)], source, **common)
                runs[kept] = result.candidates[0]
                if not runs[kept].ok:
                    raise InputError(f"{_spec(precision, kept)}: {runs[kept].error}")
            return runs[kept]

        tried_files: list[str] = []

        def holds(kept: frozenset[int]) -> bool:
            if validate is None:
                return requirement_met(emulated(kept), requirement)
            tried = _mixed_file(prepared.onnx_path, [names[i] for i in sorted(kept)],
                                os.path.join(workdir, "tries", f"keep-{len(tried_files)}.onnx"))
            tried_files.append(tried)
            return bool(validate(tried))

        found = search(ranking, holds)
        kept = found.kept if found.kept is not None else tuple(range(len(names)))
        chosen = tuple((i, names[i], graph.node[i].op_type) for i in sorted(kept))
        before, after = emulated(frozenset()), emulated(frozenset(kept))
        written, verified, checks = None, {}, ()
        if precision == "fp16":
            written, verified = _write_and_verify(prepared.onnx_path, [n for _, n, _ in chosen],
                                                  source, workdir, common)
            checks = _checks(written, [n for _, n, _ in chosen], verified)
        outputs = {names[i]: tuple(node.output) for i, node in enumerate(graph.node)}
        ov_names, ov_checks = _openvino_names(prepared.onnx_path, [n for _, n, _ in chosen],
                                              outputs)
        checks = (*checks, *ov_checks)
        how = _described(found, len(names), judge="your validate function on the mixed FP16 "
                         "file" if validate is not None else None, ranked=bool(located_nodes))
        result = KeepResult(
            prepared.source, precision, "validate()" if validate is not None
            else requirement.text, found.kept is not None, chosen,
            found.evaluations, how, _side(before),
            _side(after), written, verified,
            _settings([n for _, n, _ in chosen], precision, ov_names), len(names), checks)
        if out:
            result.save(os.path.join(out, "keep.json"))
        return result


def _spec(precision: str, kept: frozenset[int]) -> str:
    return f"emulate:{precision}" + (f"?keep={','.join(map(str, sorted(kept)))}" if kept
                                     else "")


def _side(backend: BackendResult) -> Side:
    return Side(backend.flips.count if backend.flips else None, backend.max_abs)


def _described(found: Any, total: int, *, judge: str | None = None,
               ranked: bool = True) -> str:
    judged = f"; each set judged by {judge}" if judge else ""
    if found.kept is None:
        return (f"the policy never held, even with all {total} nodes kept in FP32 "
                f"({found.evaluations} evaluations{judged}): what is left is the inputs' "
                f"rounding")
    if not ranked:
        return (f"the whole model in the low precision already meets the policy: no node "
                f"kept, 1 evaluation, locate not needed{judged}")
    return (f"ranked by locate's gain (each amplifier with the producers of what it reads), "
            f"grown 1, 2, 4, ... nodes until the policy held, bisected to the shortest "
            f"prefix, then pruned: {len(found.kept)} of {total} nodes kept, "
            f"{found.evaluations} evaluations{judged}")


def _write_and_verify(path: str, keep: list[str], source: InputSource, workdir: str,
                      common: dict[str, Any]) -> tuple[str | None, dict[str, Side]]:
    """The FP16 ONNX models (mixed and full), and what each does on ONNX Runtime here."""
    _converter()  # missing: one line, before anything is written
    written: dict[str, str] = {}
    sides: dict[str, Side] = {}
    for name, block in (("mixed", keep), ("fp16", [])):
        try:
            written[name] = _mixed_file(path, block, os.path.join(workdir, f"model.{name}.onnx"))
        except InputError as exc:
            sides[name] = Side(None, None, None, str(exc))
    runs: dict[str, AuditResult] = {}
    for name, model_path in (("fp32", path), *written.items()):
        runs[name] = audit(model_path, [VERIFY], source, **{**common, "warmup": 2})
    reference = runs["fp32"].reference
    head = make_head(TaskConfig(**runs["fp32"].task))  # asdict of the audit's: output named
    for name, result in runs.items():
        ran = result.candidates[0]
        flips = find_flips(head, reference.decided, result.reference.decided).count \
            if reference.decided is not None and result.reference.decided is not None \
            else None
        failed = result.reference.error if not result.reference.ok else None
        sides[name] = Side(flips, None, ran.latency.p50_ms if ran.latency else None, failed)
    return written.get("mixed"), sides


def _converter() -> Callable[..., Any]:
    try:
        from onnxconverter_common.float16 import convert_float_to_float16
    except ImportError:
        raise InputError("writing the mixed-precision model needs onnxconverter-common: "
                         "pip install 'modelparity[mixed]'") from None
    return convert_float_to_float16


def _mixed_file(path: str, keep: list[str], target: str) -> str:
    """The model at `path` in FP16 with the `keep` nodes in FP32, FP32 inputs and outputs,
    written to `target` (onnxconverter-common, repaired). `InputError` (one line) where the
    converter cannot do the graph."""
    import onnx

    convert_float_to_float16 = _converter()
    original = onnx.load(path)
    copy = onnx.ModelProto()
    copy.CopyFrom(original)  # the converter edits the model it is given
    try:
        converted = convert_float_to_float16(copy, keep_io_types=True,
                                             node_block_list=keep or None)
    except Exception as exc:  # the converter raises plain errors on graphs it cannot do
        raise InputError(f"onnxconverter-common could not convert it: "
                         f"{type(exc).__name__}: {exc}") from None
    os.makedirs(os.path.dirname(target) or ".", exist_ok=True)
    onnx.save(_repaired(converted, original), target)
    return target


def _repaired(converted: Any, original: Any) -> Any:
    """Two things onnxconverter-common's `node_block_list` does that a mixed model must not
    (onnxconverter-common 1.16): it stores the weights only kept nodes read in FP16 and casts
    them back, and it casts a kept node's graph output to FP16 despite keep_io_types. Here
    those weights are the original FP32 values again, and every graph output the original
    has in FP32 is FP32, so the file computes what the search verified."""
    from onnx import TensorProto, helper

    graph = converted.graph
    fp32 = {t.name: t for t in original.graph.initializer if t.data_type == TensorProto.FLOAT}
    readers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)

    def casts_to_float(node: Any) -> bool:
        return node.op_type == "Cast" and any(a.name == "to" and a.i == TensorProto.FLOAT
                                              for a in node.attribute)

    for index, init in enumerate(graph.initializer):
        if init.data_type == TensorProto.FLOAT16 and init.name in fp32 and all(
                casts_to_float(n) for n in readers.get(init.name, [])):
            graph.initializer[index].CopyFrom(fp32[init.name])  # the Cast is now FP32 -> FP32
    wanted = {o.name for o in original.graph.output
              if o.type.tensor_type.elem_type == TensorProto.FLOAT}
    producer = {name: node for node in graph.node for name in node.output}
    for output in graph.output:
        if output.name not in wanted or output.type.tensor_type.elem_type != TensorProto.FLOAT16:
            continue
        node = producer.get(output.name)
        if node is not None and node.op_type == "Cast":  # undo the cast to FP16 at the end
            for attribute in node.attribute:
                if attribute.name == "to":
                    attribute.i = TensorProto.FLOAT
        elif node is not None:
            low = output.name + "_fp16"
            node.output[list(node.output).index(output.name)] = low
            graph.node.append(helper.make_node("Cast", [low], [output.name],
                                               to=TensorProto.FLOAT))
        output.type.tensor_type.elem_type = TensorProto.FLOAT
    graph.ClearField("value_info")  # the converter's types; ONNX Runtime infers them again
    return converted


def _checks(written: str | None, keep: list[str], verified: dict[str, Side]
            ) -> tuple[str, ...]:
    """What the written file shows, read back: the kept nodes write FP32, the rest FP16."""
    import onnx

    if written is None:
        failed = verified.get("mixed")
        return (f"no mixed-precision file: {failed.error if failed else 'not written'}; the "
                f"emulated figures and the per-runtime settings still hold",)
    from onnx import TensorProto, shape_inference

    model = shape_inference.infer_shapes(onnx.load(written))
    types = {v.name: v.type.tensor_type.elem_type
             for v in (*model.graph.value_info, *model.graph.output)}
    precision = {}
    for node in model.graph.node:
        kinds = {types.get(o) for o in node.output if o}
        if node.op_type != "Cast" and kinds & {TensorProto.FLOAT, TensorProto.FLOAT16}:
            precision[node.name] = "fp32" if TensorProto.FLOAT in kinds else "fp16"
    wrong = [n for n in keep if precision.get(n) != "fp32"]
    low = sum(1 for p in precision.values() if p == "fp16")
    lines = [f"{os.path.basename(written)}: " + (
        f"the kept nodes write FP32 and {low} other nodes FP16 (read back from the file)"
        if not wrong else f"nodes meant to stay FP32 write FP16: {', '.join(wrong)}")]
    mixed, full = verified.get("mixed"), verified.get("fp16")
    if mixed is not None and mixed.error:
        lines.append(f"ONNX Runtime CPU cannot run the converted file ({mixed.error}): "
                     f"onnxconverter-common's conversion of this model is not valid; the "
                     f"emulated figures and the per-runtime settings still hold")
    elif mixed is not None and full is not None:
        lines.append(f"ONNX Runtime CPU runs it: {mixed.flips} flips (the whole model in "
                     f"FP16: {full.flips}); its CPU provider computes the FP16 ops it has no "
                     f"kernel for in FP32, so this shows the file runs and decides, not what "
                     f"FP16 hardware computes (the emulated figures above do)")
    return tuple(lines)


def _openvino_names(path: str, keep: list[str], outputs: dict[str, tuple[str, ...]]
                    ) -> tuple[list[str] | None, tuple[str, ...]]:
    """Static check of the OpenVINO setting, where OpenVINO is installed: each kept node is an
    op of the model as OpenVINO reads it, so `disable_fp16_compression` can be set on it (this
    CPU may have no FP16 to show the effect). OpenVINO's reader names an op after the node, or
    after its output where the node writes a graph output; the names found are returned."""
    import importlib.util

    if not keep or importlib.util.find_spec("openvino") is None:
        return None, ()
    try:
        import openvino as ov

        names = {op.get_friendly_name() for op in ov.Core().read_model(path).get_ops()}
    except Exception as exc:  # OpenVINO's reader raises its own errors
        return None, (f"OpenVINO cannot read the model to check the setting: "
                      f"{type(exc).__name__}",)
    found = {node: next((n for n in (node, *outputs.get(node, ())) if n in names), None)
             for node in keep}
    missing = [node for node, name in found.items() if name is None]
    if missing:
        return None, (f"OpenVINO: {len(missing)} kept node(s) are not ops of the model as "
                      f"OpenVINO reads it (fused or renamed by its reader): "
                      f"{', '.join(missing)}",)
    return [str(found[node]) for node in keep], (
        "OpenVINO: every kept node is an op of the model as OpenVINO reads it (names in "
        "keep.json), so disable_fp16_compression can be set on each (checked, not run in FP16 "
        "here)",)


def _settings(keep: list[str], precision: str, openvino: list[str] | None = None
              ) -> dict[str, Any]:
    """The same choice as each runtime's own setting, for the kept nodes' names (OpenVINO's
    own op names where they were read back)."""
    return {
        "onnx": {"tool": "onnxconverter_common.float16.convert_float_to_float16",
                 "node_block_list": keep, "keep_io_types": True},
        "openvino": {"rt_info": "disable_fp16_compression", "nodes": openvino or keep,
                     "note": "set on each named node of the converted model before "
                             "compile_model; the plugin keeps those nodes in FP32"},
        "coremltools": {"compute_precision": "ct.transform.FP16ComputePrecision(op_selector="
                                             "lambda op: op.name not in KEEP)",
                        "KEEP": keep,
                        "note": "op names after conversion follow the ONNX/PyTorch node names "
                                "where the converter keeps them; check with the converted "
                                "program"},
        "tensorrt": {"layer_precision": "float32", "layers": keep,
                     "note": "layer.precision = trt.float32 and "
                             "set_output_type(0, trt.float32) on each, with "
                             "BuilderFlag.OBEY_PRECISION_CONSTRAINTS"},
        "precision": precision,
    }
