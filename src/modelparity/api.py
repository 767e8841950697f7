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
import hashlib
import os
import tempfile
from collections.abc import Sequence
from dataclasses import asdict

import numpy as np

from modelparity import __version__
from modelparity.analyse import Question, analyse
from modelparity.decisions import TaskConfig, make_head
from modelparity.environment import environment
from modelparity.errors import InputError
from modelparity.execute.run import Context, NoProgress, Progress, execute
from modelparity.inputs import FirstSamples, InputSource, check_inputs, load_labels, open_inputs
from modelparity.model import PreparedModel, prepare_model
from modelparity.plan import DEFAULT_REFERENCE, PROFILE_SAMPLES, Settings, make_plan
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
    progress: Progress | None = None,
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
    Raises ModelParityError (one line) for bad input; a backend that fails is reported in the
    result, not raised.
    """
    settings = Settings(batch_size, timeout, warmup, fingerprint, profile_samples, fix)
    plan = make_plan(backends, reference, settings)  # every spec checked before anything runs
    if resume and not out:
        raise InputError("--resume needs --out: the folder of the run to resume")
    label_values, label_name = _labels(labels)
    with contextlib.ExitStack() as stack:
        workdir = out or stack.enter_context(tempfile.TemporaryDirectory(prefix="modelparity-"))
        os.makedirs(workdir, exist_ok=True)
        prepared = model if isinstance(model, PreparedModel) else prepare_model(
            model, workdir, allow_pickle=allow_pickle)
        config = _as_task(task, prepared.signature.output_names)
        source = inputs if not (inputs is None or isinstance(inputs, str)) else open_inputs(
            inputs, prepared.signature, shapes=shapes, samples=samples, seed=seed,
            value_range=value_range)
        check_inputs(source, prepared.signature, batch_size)
        if label_values is not None and source.num_samples is not None \
                and len(label_values) != source.num_samples:
            raise InputError(f"{label_name}: expected {source.num_samples} labels (one per "
                             f"sample), got {len(label_values)}")
        head = make_head(config)
        context = Context(prepared, source, FirstSamples(source, profile_samples), head,
                          config.output or "", workdir,
                          _run_key(prepared, source, batch_size, config, plan.reference.key),
                          progress or NoProgress())
        execution = execute(plan, context, resume=resume)
        question = Question(prepared, {"source": source.describe(), "batch_size": batch_size},
                            config, head, label_values, label_name, environment(), out)
        result = analyse(plan, execution.runs, execution.samples, question)
        if out:
            write_repros(result, prepared, source, batch_size)
            result.save(os.path.join(out, "report.json"))
        return result


def _as_task(task: str | TaskConfig, signature_outputs: list[str]) -> TaskConfig:
    config = task if isinstance(task, TaskConfig) else TaskConfig(kind=task)
    if config.output is None:
        config = TaskConfig(**{**asdict(config), "output": signature_outputs[0]})
    elif config.output not in signature_outputs:
        raise InputError(f"--output {config.output}: not a model output "
                         f"(outputs: {', '.join(signature_outputs)})")
    return config


def _run_key(model: PreparedModel, source: InputSource, batch_size: int, task: TaskConfig,
             reference: str) -> str:
    """Identifies a run's settings, so --resume never mixes results of different settings."""
    stat = os.stat(model.onnx_path)
    parts = [model.source, str(stat.st_size), str(int(stat.st_mtime)), repr(source),
             str(batch_size), repr(task), reference, __version__]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def _labels(labels: str | np.ndarray | None) -> tuple[np.ndarray | None, str | None]:
    if labels is None:
        return None, None
    if isinstance(labels, str):
        return load_labels(labels), labels
    return np.asarray(labels), "labels (array)"
