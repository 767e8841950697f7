"""The public Python API: `audit()` runs one model on several backends and compares each
candidate with the reference, output by output and decision by decision.

    result = modelparity.audit("model.onnx", ["openvino:cpu"], "x.npz", task="binary",
                               labels="y.npy")
    result.backend("openvino:cpu").flips.count

It reads like the data flow: inputs -> plan (`plan/`) -> execute, one worker process per backend
(`execute/`) -> analyse (`analyse/`) -> an `AuditResult` that renders and loads back.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib.util
import os
import tempfile
from collections.abc import Sequence

import numpy as np

from modelparity import __version__
from modelparity.analyse import Question, analyse
from modelparity.backends.registry import get_runtime
from modelparity.decisions import TaskConfig, make_head
from modelparity.environment import environment
from modelparity.errors import InputError
from modelparity.execute.run import Context, NoProgress, Progress, execute
from modelparity.folders import output_folder
from modelparity.inputs import (
    FirstSamples,
    InputSource,
    as_class_names,
    check_inputs,
    content_digest,
    load_labels,
    open_inputs,
)
from modelparity.inputs.base import hash_file
from modelparity.inputs.layout import Layout, resolve_layout
from modelparity.model import PreparedModel, prepare_model
from modelparity.model.ir import with_original
from modelparity.model.probe import probe, reads_probes
from modelparity.model.signature import Signature
from modelparity.plan import DEFAULT_REFERENCE, PROFILE_SAMPLES, Plan, Settings, make_plan
from modelparity.repro import write_repros
from modelparity.result import AuditResult
from modelparity.spec import BackendSpec

__all__ = ["DEFAULT_REFERENCE", "Progress", "audit"]


def audit(
    model: str | PreparedModel,
    backends: Sequence[str | BackendSpec],
    inputs: str | InputSource | None = None,
    *,
    task: str | TaskConfig = "binary",
    labels: str | np.ndarray | None = None,
    class_names: str | Sequence[str] | None = None,
    reference: str | BackendSpec = DEFAULT_REFERENCE,
    batch_size: int = Settings.batch_size,
    shapes: dict[str, tuple[int, ...]] | None = None,
    samples: int = 1000,
    seed: int = 0,
    value_range: tuple[float, float] = (-1.0, 1.0),
    timeout: float = Settings.timeout,
    warmup: int = Settings.warmup,
    out: str | None = None,
    resume: bool = False,
    allow_pickle: bool = False,
    fingerprint: bool = Settings.fingerprint,
    profile_samples: int = PROFILE_SAMPLES,
    fix: bool = Settings.fix,
    batch_axes: dict[str, int] | None = None,
    per_item: bool = False,
    carry: dict[str, str] | None = None,
    progress: Progress | None = None,
    original: str | None = None,
    engine: str | None = None,
    workers: int = 2,
    ray_address: str | None = None,
) -> AuditResult:
    """Run `model` on the reference and every backend in `backends`, on the same inputs.

    `inputs` is a file (.npz, .npy, .csv, .parquet), a directory of .npy/.npz shards, a
    `module:function` entry point, an InputSource, or None for seeded synthetic inputs
    (`samples`, `shapes`, `value_range`). `task` is a kind ("binary", "multiclass", "topk",
    "multilabel", "regression", "custom") or a TaskConfig. With `out`, each backend's result is
    written there as soon as it finishes, and `resume=True` reuses finished ones.
    `allow_pickle=True` lets a .pt2 model be opened (torch.export.load unpickles parts of it).
    With `fingerprint` (the default), the model also runs as emulated FP16, BF16, TF32 and INT8
    and as FP32 noise on the first `profile_samples` samples, so each candidate's error profile
    can be matched against them: `BackendResult.fingerprint` says which precision it really used.
    Every backend is checked against the knowledge base of silent precision defaults
    (`BackendResult.findings`); with `fix`, each candidate with a finding also runs in its fixed
    variant, and `AuditResult.fixes` holds both sides: flips, errors and latency before and after.
    `class_names` (a text file with one name per line, a .json list or mapping, or a list of
    names) makes the reports show a class decision as `cat (3)` instead of `3`.
    `batch_axes` ({"state": 1}) says where a tensor keeps its batch when the signature does not
    (a symbolic batch dim is found by name; a batch fixed at 1 runs one sample per call).
    `per_item` runs each item of a module:function feed, or each shard of a directory, as one
    call, never re-batched: shapes may differ between items. `carry` ({"stateN": "state"})
    feeds each call's output into the next call's input, the way a deployment runs a recurrent
    model; an item that gives the input starts a sequence. Each candidate then also runs
    teacher-forced (fed the reference's state; `AuditResult.teacher_forced`): the gap between
    the two is drift.
    `model` may be an OpenVINO IR (.xml) with `original` the ONNX file it was made from: the
    ONNX is audited (the reference runs it) and each OpenVINO backend runs the IR, so what
    converting changed (FP16-compressed weights, finding OV-7) is that backend's error.
    `engine="ray"` runs each backend on `workers` Ray actors (a local Ray, or the cluster at
    `ray_address`), the data sharded across them; the results are the local engine's. The
    default is `$MODELPARITY_ENGINE`, else "local".
    Raises ModelParityError (one line) for bad input; a backend that fails is reported in the
    result, not raised.
    """
    settings = Settings(batch_size, timeout, warmup, fingerprint, profile_samples, fix)
    engine = engine or os.environ.get("MODELPARITY_ENGINE") or "local"
    if engine not in ("local", "ray"):
        raise InputError(f"--engine {engine}: expected local or ray")
    if workers < 1:
        raise InputError(f"--workers {workers}: expected at least 1")
    if engine == "ray" and (per_item or carry or batch_axes):
        raise InputError("--engine ray: shards the data by batch, samples first; --per-item, "
                         "--carry and --batch-axis run on the local engine")
    if isinstance(model, str):
        model, backends = with_original(model, original, backends)
    elif original is not None:
        raise InputError("--original: goes with an OpenVINO IR given as the model")
    carried = tuple((carry or {}).items())
    # every spec checked before anything runs
    plan = make_plan(backends, reference, settings, carries_state=bool(carried))
    if resume and not out:
        raise InputError("--resume needs --out: the folder of the run to resume")
    label_values, label_name = _labels(labels)
    names = as_class_names(class_names)
    with contextlib.ExitStack() as stack:
        workdir = out or stack.enter_context(tempfile.TemporaryDirectory(prefix="modelparity-"))
        output_folder(workdir)
        prepared = model if isinstance(model, PreparedModel) else prepare_model(
            model, workdir, allow_pickle=allow_pickle, timeout=settings.timeout,
            keep_log=bool(out))
        if not prepared.signature.inputs:  # nothing to feed, so nothing to compare on
            raise InputError(f"{prepared.source}: the model takes no inputs; an audit compares "
                             f"what backends compute from inputs")
        layout = resolve_layout(prepared.signature, batch_axes, carried, per_item)
        signature = layout.canonical(prepared.signature)  # every tensor's samples on axis 0
        if layout.fixed_batch is not None and not layout.per_item:
            batch_size = layout.fixed_batch  # the model takes no other batch
            plan = dataclasses.replace(plan, settings=dataclasses.replace(
                plan.settings, batch_size=batch_size))
        config = _as_task(task, prepared.signature, layout)
        source = inputs if not (inputs is None or isinstance(inputs, str)) else open_inputs(
            inputs, signature, shapes=shapes, samples=samples, seed=seed,
            value_range=value_range, layout=layout)
        check_inputs(source, signature, batch_size, layout)
        if label_values is not None and _per_element(config, signature):
            raise InputError(f"{label_name}: labels are one per sample, but output "
                             f"'{config.output}' is decided per element; audit without labels")
        if label_values is not None and source.num_samples is not None \
                and len(label_values) != source.num_samples:
            raise InputError(f"{label_name}: expected {source.num_samples} labels (one per "
                             f"sample), got {len(label_values)}")
        head = make_head(config)
        plan = plan.fitted(_unable_yardsticks(plan, prepared, layout))
        running, layout, plan = _probed(prepared, plan, layout, workdir)
        key = _run_key(prepared, source, batch_size, config, plan.reference.key, layout,
                       running.probes, _data_digest(source, batch_size, layout),
                       [p.spec for p in plan.backends])
        context = Context(running, source, FirstSamples(source, profile_samples), head,
                          config.output or "", workdir, key, progress or NoProgress(), layout,
                          engine, workers)
        if engine == "ray":
            from modelparity.execute.ray_engine import start_ray

            if layout.per_item or layout.carry or layout.moves:  # found in the model itself
                raise InputError("--engine ray: shards the data by batch, samples first; "
                                 "this model keeps a batch off axis 0 or is fed per item: "
                                 "run it on the local engine")
            if start_ray(ray_address, workers):
                stack.callback(_stop_ray)
        execution = execute(plan, context, resume=resume)
        question = Question(prepared, {"source": source.describe(), "batch_size": batch_size,
                                       **layout.describe()},
                            config, head, label_values, label_name, environment(),
                            # a repro script feeds one batch of samples: not items of other
                            # shapes, nor a carried state
                            None if layout.per_item or layout.moves else out,
                            class_names=names, probes=running.probes)
        result = analyse(plan, execution.runs, execution.samples, question)
        if out:
            write_repros(result, prepared, source, batch_size)
            result.save(os.path.join(out, "report.json"))
        return result


def _stop_ray() -> None:
    import ray

    ray.shutdown()


def _as_task(task: str | TaskConfig, signature: Signature, layout: Layout) -> TaskConfig:
    """The task with its output named, and its class axis counted with samples first."""
    config = task if isinstance(task, TaskConfig) else TaskConfig(kind=task)
    outputs = signature.output_names
    if config.output is None:
        config = dataclasses.replace(config, output=outputs[0])
    elif config.output not in outputs:
        raise InputError(f"--output {config.output}: not a model output "
                         f"(outputs: {', '.join(outputs)})")
    axis, batch = config.class_axis, layout.axis(str(config.output))
    rank = len(signature.output(str(config.output)).shape)
    if axis is not None and rank:
        if not -rank <= axis < rank or axis % rank == batch:
            raise InputError(f"--class-axis {axis}: output '{config.output}' has rank {rank} "
                             f"with its samples on axis {batch}; give another of its axes")
        axis %= rank
        config = dataclasses.replace(config, class_axis=axis + 1 if axis < batch else axis)
    return config


def _unable_yardsticks(plan: Plan, prepared: PreparedModel, layout: Layout) -> dict[str, str]:
    """The yardsticks that cannot run on this model and machine, {label: why}."""
    unable = {}
    for planned in plan.yardsticks:
        runtime = get_runtime(planned.spec.runtime)
        if runtime.package and importlib.util.find_spec(runtime.package) is None:
            unable[str(planned.label)] = f"{runtime.package} is not installed"
        elif planned.spec.runtime == "torch" and prepared.torch_source is None:
            unable[str(planned.label)] = "the model is not a PyTorch model"
        elif planned.batch_size is not None and (layout.per_item
                                                 or layout.fixed_batch is not None):
            unable[str(planned.label)] = "the model is fed one batch or item per call"
    return unable


def _probed(prepared: PreparedModel, plan: Plan, layout: Layout, workdir: str
            ) -> tuple[PreparedModel, Layout, Plan]:
    """With the fingerprint on and every backend running the ONNX file, the model every backend
    runs has its final activations' inputs as extra outputs (`model.probe`), each with its
    output's batch axis: the precision shows there, not in a saturated or softmaxed output.
    A yardstick that cannot read the probes (PyTorch runs its own module) is then left out:
    the others speak for its precision; every profile must be read at the same tensors."""
    audited = (plan.reference, *plan.candidates, *plan.teacher_forced)
    if not plan.settings.fingerprint or any(not reads_probes(p.spec) for p in audited):
        return prepared, layout, plan
    running = probe(prepared, workdir)
    if running.probes:
        plan = plan.fitted({str(y.label): "cannot read the probed tensors"
                            for y in plan.yardsticks if not reads_probes(y.spec)})
    moved = tuple((hidden, layout.axis(output)) for hidden, output in running.probes
                  if layout.axis(output))
    return (running, dataclasses.replace(layout, axes=layout.axes + moved) if moved else layout,
            plan)


def _per_element(config: TaskConfig, signature: Signature) -> bool:
    """Outputs of rank > 2 are decided per element (regression, maps, sequences)."""
    return len(signature.output(str(config.output)).shape) > 2 and config.kind != "custom"


def _file_digest(path: str) -> str:
    """The model file's content hash: a module:factory is exported again into --out on every
    run (a new mtime, the same bytes), and a model rewritten in place keeps its size."""
    return hash_file(path).hexdigest()[:16]


def _data_digest(source: InputSource, batch_size: int, layout: Layout) -> str:
    """The data's content hash. A source without a file (a module:function feed) is read
    twice: each backend's worker calls the feed itself, so a feed that gives other data on
    another call (an unseeded random generator) would compare backends on different inputs
    and report bogus flips."""
    digest = content_digest(source, batch_size, layout)
    if getattr(source, "path", None) is None and \
            content_digest(source, batch_size, layout) != digest:
        raise InputError(f"{source.describe()}: gave other inputs when called again; every "
                         f"backend calls it itself, so each would see other data: make it "
                         f"deterministic (seed its random generator) or save the data to files")
    return digest


def _run_key(model: PreparedModel, source: InputSource, batch_size: int, task: TaskConfig,
             reference: str, layout: Layout, probes: tuple[tuple[str, str], ...],
             digest: str, specs: Sequence[BackendSpec] = ()) -> str:
    """Identifies a run's settings and data, so --resume never mixes results of different
    settings or inputs (nor outputs with and without the probes, nor an IR rewritten in
    place: the content of each `ir=` file counts)."""
    irs = sorted({v for spec in specs for k, v in spec.options.items() if k.lower() == "ir"})
    parts = [model.source, _file_digest(model.onnx_path),
             *(_file_digest(path) + _file_digest(path[:-4] + ".bin") for path in irs),
             repr(source), digest,
             str(batch_size), repr(task), reference, repr(layout), repr(probes), __version__]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def _labels(labels: str | np.ndarray | None) -> tuple[np.ndarray | None, str | None]:
    if labels is None:
        return None, None
    if isinstance(labels, str):
        return load_labels(labels), labels
    return np.asarray(labels), "labels (array)"
