"""`localize()`: where in the model a candidate's error comes from.

Two audits on the same first samples, with the pipeline every audit uses (one worker per
backend, outputs streamed to disk and compared row by row, so memory holds one batch):
1. the model as it is, on the reference and the candidate, with the fingerprint unless the
   precision is given: the candidate's flips and the precision its errors are judged against;
2. the model with its intermediate tensors exposed (`expose`), on the reference, the candidate,
   an FP32 yardstick (the noise floor, node by node) and an emulation of the candidate's
   precision (what that precision alone explains, node by node).
Then `analyse.judge` names the first divergent node and the amplifiers, and the model's own
outputs are compared between the two audits: exposing intermediates can change what a runtime
fuses, and so what it computes; the result says so.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import tempfile
from collections.abc import Iterator
from typing import Any

from modelparity.api import audit
from modelparity.backends import parse_spec
from modelparity.decisions import TaskConfig
from modelparity.errors import InputError
from modelparity.execute.run import Progress
from modelparity.folders import output_folder
from modelparity.inputs import FirstSamples, InputSource, open_inputs
from modelparity.locate.analyse import ROUNDING, Localization, NodeError, TensorError, judge
from modelparity.locate.expose import Exposure, expose
from modelparity.locate.isolate import isolate as isolate_nodes
from modelparity.locate.result import FinalOutput, LocateResult
from modelparity.model import PreparedModel, prepare_model
from modelparity.model.probe import PROBED_RUNTIMES
from modelparity.plan import DEFAULT_REFERENCE, PROFILE_BACKENDS, Settings
from modelparity.result import AuditResult, BackendResult
from modelparity.spec import BackendSpec

PRECISIONS = tuple(ROUNDING)
ISOLATED = 5  # suspects run alone with --isolate
FLOOR = PROFILE_BACKENDS["fp32"]  # FP32 noise: ONNX Runtime, basic optimisation, 1 thread
LOCATE_SAMPLES = 64
LOCATE_BATCH = 16  # every intermediate of a batch is in flight at once: small batches


def localize(
    model: str,
    candidate: str | BackendSpec,
    inputs: str | InputSource | None = None,
    *,
    task: str | TaskConfig = "binary",
    reference: str | BackendSpec = DEFAULT_REFERENCE,
    precision: str | None = None,
    samples: int = LOCATE_SAMPLES,
    batch_size: int = LOCATE_BATCH,
    shapes: dict[str, tuple[int, ...]] | None = None,
    seed: int = 0,
    value_range: tuple[float, float] = (-1.0, 1.0),
    timeout: float = Settings.timeout,
    out: str | None = None,
    allow_pickle: bool = False,
    isolate: bool = False,
    progress: Progress | None = None,
) -> LocateResult:
    """Find the node where `candidate`'s error departs from what its precision explains.

    Runs on the first `samples` samples of `inputs` (synthetic ones without). `precision`
    (fp32, tf32, fp16, bf16) is what the candidate is meant to compute in; by default the
    fingerprint measures it, and FP32 is assumed where it finds no downcast. With `out`, the
    two audits' folders and `locate.json` are written there. With `isolate`, the first
    divergent node and the largest amplifiers also run alone on the candidate, fed the
    reference's values of what they read: their own error, apart from what they inherit.
    """
    spec = candidate if isinstance(candidate, BackendSpec) else parse_spec(candidate)
    if spec.runtime not in PROBED_RUNTIMES:
        raise InputError(f"-b {spec.text}: locate compares the ONNX file's tensors, and "
                         f"{spec.runtime} does not run the ONNX file")
    if precision is not None and precision not in PRECISIONS:
        raise InputError(f"--precision {precision}: expected one of {', '.join(PRECISIONS)}")
    if samples < 1:
        raise InputError(f"--samples {samples}: expected at least 1")
    with opened(model, inputs, out, samples=samples, shapes=shapes, seed=seed,
                value_range=value_range, timeout=timeout,
                allow_pickle=allow_pickle) as (workdir, prepared, source):
        result, _ = located(prepared, spec, source, workdir, keep=bool(out), task=task,
                            reference=reference, precision=precision, batch_size=batch_size,
                            timeout=timeout, isolate=isolate, progress=progress)
        return result


@contextlib.contextmanager
def opened(model: str, inputs: str | InputSource | None, out: str | None, *, samples: int,
           shapes: dict[str, tuple[int, ...]] | None, seed: int,
           value_range: tuple[float, float], timeout: float, allow_pickle: bool
           ) -> Iterator[tuple[str, PreparedModel, InputSource]]:
    """What `localize` and `keep_fp32` start from: the work folder (`out`, or a temporary one
    removed afterwards), the model prepared in it, and the first `samples` of `inputs`
    (synthetic ones without)."""
    with contextlib.ExitStack() as stack:
        workdir = out or stack.enter_context(tempfile.TemporaryDirectory(prefix="modelparity-"))
        output_folder(workdir)
        prepared = prepare_model(model, workdir, allow_pickle=allow_pickle, timeout=timeout,
                                 keep_log=bool(out))
        source = inputs if not (inputs is None or isinstance(inputs, str)) else open_inputs(
            inputs, prepared.signature, shapes=shapes, samples=samples, seed=seed,
            value_range=value_range)
        yield workdir, prepared, FirstSamples(source, samples)


def located(prepared: PreparedModel, spec: BackendSpec, source: InputSource, workdir: str, *,
            keep: bool, task: str | TaskConfig, reference: str | BackendSpec,
            precision: str | None, batch_size: int, timeout: float, isolate: bool = False,
            progress: Progress | None = None) -> tuple[LocateResult, Exposure]:
    """The two audits and the judgement, in `workdir` (see the module's docstring); with
    `keep`, the plain audit's files stay there, its report.json with the judgement in it
    (`AuditResult.locate`), and locate.json beside it. The exposure is returned too:
    `keep_fp32` ranks its nodes."""
    output_folder(workdir)
    samples = source.num_samples or 0
    common = {"task": task, "reference": reference, "batch_size": batch_size,
              "timeout": timeout, "warmup": 0, "profile_samples": samples or LOCATE_SAMPLES,
              "progress": progress}
    plain = audit(prepared, [spec], source, fingerprint=precision is None,
                  out=workdir if keep else None, **common)
    mine = plain.candidates[0]
    if not mine.ok:
        raise InputError(f"{spec.text}: {mine.error}")
    judged, found = (precision, "given") if precision else _measured(mine)
    exposure = expose(prepared, workdir, mine.description.get("fused_layers") or ())
    yardsticks = {"floor": FLOOR}
    if judged != "fp32":
        yardsticks["explained"] = f"emulate:{judged}"
    extra = [text for text in yardsticks.values() if parse_spec(text).key != spec.key]
    exposed_dir = os.path.join(workdir, "exposed")  # --isolate reads its spool
    exposed = audit(exposure.model, [spec, *extra], source, fingerprint=False,
                    out=exposed_dir, **common)
    theirs = exposed.candidates[0]
    if not theirs.ok:
        raise InputError(f"{spec.text}, with its intermediate tensors as outputs: "
                         f"{theirs.error}")
    errors = {role: _errors(exposed.backend(text)) if parse_spec(text).key != spec.key
              else _errors(theirs) for role, text in yardsticks.items()}
    found_nodes = judge(exposure.nodes, exposure.graph_outputs, _errors(theirs), judged,
                        floor=errors.get("floor"), explained=errors.get("explained"))
    nodes, not_isolated = found_nodes.nodes, ()
    if isolate:
        nodes, not_isolated = _isolated(exposure, found_nodes, exposed_dir, source,
                                        batch_size, workdir, spec, common)
    fused = tuple((name, "not returned by the backend (fused into the node that reads "
                         "it: the two are judged as one region)")
                  for name in exposure.model.optional_outputs if name not in theirs.errors)
    final = tuple(FinalOutput(name, _norm(theirs, name), _norm(mine, name))
                  for name in exposure.graph_outputs)
    result = LocateResult(
        prepared.source, spec.text, plain.reference.spec, judged, found,
        int(plain.inputs.get("samples") or samples),
        nodes, found_nodes.first, found_nodes.amplifiers, found_nodes.by_op,
        final, (*exposure.unmatched, *fused), mine.flips.count if mine.flips else None,
        yardsticks, not_isolated)
    if keep:  # the audit of the model as shipped, with where its error comes from
        result.save(os.path.join(workdir, "locate.json"))
        dataclasses.replace(plain, locate=result).save(os.path.join(workdir, "report.json"))
    return result, exposure


def _isolated(exposure: Exposure, found: Localization, exposed_dir: str, source: InputSource,
              batch_size: int, workdir: str, spec: BackendSpec, common: dict[str, Any]
              ) -> tuple[tuple[NodeError, ...], tuple[tuple[str, str], ...]]:
    """The suspects (the first divergent node, then the amplifiers) run alone."""
    names = list(dict.fromkeys([*([found.first] if found.first else []),
                                *found.amplifiers]))[:ISOLATED]
    by_name = {n.node: n for n in found.nodes}

    def run(path: str, data: str, task: TaskConfig) -> AuditResult:
        return audit(path, [spec], data, fingerprint=False,
                     **{**common, "task": task, "progress": None})

    own = isolate_nodes(exposure, [by_name[n] for n in names], os.path.join(
        exposed_dir, "reference"), source, batch_size, workdir, run)
    nodes = tuple(dataclasses.replace(n, isolated=own[n.node])
                  if isinstance(own.get(n.node), float) else n for n in found.nodes)
    return nodes, tuple((n, str(why)) for n, why in own.items() if isinstance(why, str))


def _measured(candidate: BackendResult) -> tuple[str, str]:
    """The precision the fingerprint measured, where it is one `judge` knows."""
    fingerprint = candidate.fingerprint
    if fingerprint is None:
        return "fp32", "assumed (no fingerprint)"
    verdict = fingerprint.verdict.split()[0]
    if verdict in PRECISIONS:
        return verdict, f"fingerprint: {fingerprint.verdict} {fingerprint.confidence:.2f}"
    return "fp32", f"assumed (fingerprint: {fingerprint.verdict})"


def _errors(backend: BackendResult) -> dict[str, TensorError]:
    return {name: TensorError(stats.norm_error, stats.nonfinite)
            for name, stats in backend.errors.items()}


def _norm(backend: BackendResult, name: str) -> float:
    stats = backend.errors.get(name)
    return stats.norm_error if stats is not None else float("nan")
