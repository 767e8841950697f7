"""The public Python API: `audit()` runs one model on several backends and compares each
candidate with the reference, output by output and decision by decision.

    result = modelparity.audit("model.onnx", ["openvino:cpu"], "x.npz", task="binary",
                               labels="y.npy")
    result.backend("openvino:cpu").flips.count

Data flows one way: inputs -> backends (worker processes) -> accumulators -> findings -> result.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import numpy as np

from modelparity import __version__
from modelparity.backends.registry import parse_spec
from modelparity.decisions import (
    Decided,
    DecisionAccumulator,
    DecisionHead,
    TaskConfig,
    compute_metrics,
    find_flips,
    make_head,
    metric_deltas,
)
from modelparity.environment import environment
from modelparity.errors import InputError, ModelParityError, SpecError
from modelparity.fixes import fix_outcomes
from modelparity.inputs import FirstSamples, InputSource, check_inputs, load_labels, open_inputs
from modelparity.knowledge import compare_with_measurement, fixed_spec, lint
from modelparity.model import PreparedModel, prepare_model
from modelparity.numerics import ErrorAccumulator
from modelparity.numerics.roundtrip import RoundTrip, RoundTripAccumulator
from modelparity.precision import PROFILE_BACKENDS, PROFILE_SAMPLES, precision_findings
from modelparity.repro import write_repros
from modelparity.result import FAILED, SKIPPED, AuditResult, BackendResult
from modelparity.runner import BackendFailed, BackendWorker
from modelparity.spec import BackendSpec, slug
from modelparity.spool import OutputSpool

DEFAULT_REFERENCE = "ort:cpu"


class Progress(Protocol):
    """Receives progress as backends run (the CLI draws a bar from it)."""

    def start(self, spec: str, total: int | None) -> None: ...
    def advance(self, spec: str, rows: int) -> None: ...
    def finish(self, spec: str, result: BackendResult) -> None: ...


class _NoProgress:
    def start(self, spec: str, total: int | None) -> None: ...
    def advance(self, spec: str, rows: int) -> None: ...
    def finish(self, spec: str, result: BackendResult) -> None: ...


def _as_spec(value: str | BackendSpec) -> BackendSpec:
    return parse_spec(value)


def _as_task(task: str | TaskConfig, signature_outputs: list[str]) -> TaskConfig:
    config = task if isinstance(task, TaskConfig) else TaskConfig(kind=task)
    if config.output is None:
        config = TaskConfig(**{**asdict(config), "output": signature_outputs[0]})
    elif config.output not in signature_outputs:
        raise InputError(f"--output {config.output}: not a model output "
                         f"(outputs: {', '.join(signature_outputs)})")
    return config


def _run_key(model: PreparedModel, source: InputSource, batch_size: int, task: TaskConfig,
             reference: BackendSpec) -> str:
    """Identifies a run's settings, so --resume never mixes results of different settings."""
    stat = os.stat(model.onnx_path)
    parts = [model.source, str(stat.st_size), str(int(stat.st_mtime)), repr(source),
             str(batch_size), repr(task), reference.text, __version__]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


class _Comparison:
    """Accumulates one candidate against the reference, batch by batch."""

    def __init__(self, head: DecisionHead, output: str, samples: int | None,
                 roundtrip: bool) -> None:
        self.head = head
        self.output = output
        self.errors: dict[str, ErrorAccumulator] = {}
        self.decisions = DecisionAccumulator(samples)
        self.roundtrip = RoundTripAccumulator() if roundtrip else None

    def update(self, reference: dict[str, np.ndarray], candidate: dict[str, np.ndarray]) -> None:
        if set(candidate) != set(reference):
            raise BackendFailed("compare", "mismatch",
                                f"outputs {sorted(candidate)} do not match the reference's "
                                f"{sorted(reference)}")
        for name, ref in reference.items():
            cand = np.asarray(candidate[name])
            if cand.shape != ref.shape:
                raise BackendFailed("compare", "mismatch",
                                    f"output '{name}' has shape {cand.shape}, the reference's "
                                    f"is {ref.shape}")
            if name not in self.errors:
                self.errors[name] = ErrorAccumulator(ref.dtype)
            self.errors[name].update(ref, cand)
            if self.roundtrip is not None and cand.dtype.kind == "f":
                self.roundtrip.update(cand)
        self.decisions.update(self.head.decide(candidate[self.output]))


def audit(
    model: str | PreparedModel,
    backends: Sequence[str | BackendSpec],
    inputs: str | InputSource | None = None,
    *,
    task: str | TaskConfig = "binary",
    labels: str | np.ndarray | None = None,
    reference: str | BackendSpec = DEFAULT_REFERENCE,
    batch_size: int = 256,
    shapes: dict[str, tuple[int, ...]] | None = None,
    samples: int = 1000,
    seed: int = 0,
    value_range: tuple[float, float] = (-1.0, 1.0),
    timeout: float = 300.0,
    warmup: int = 3,
    out: str | None = None,
    resume: bool = False,
    allow_pickle: bool = False,
    fingerprint: bool = True,
    profile_samples: int = PROFILE_SAMPLES,
    fix: bool = False,
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
    progress = progress or _NoProgress()
    ref_spec = _as_spec(reference)
    cand_specs: list[BackendSpec] = []
    for value in backends:
        spec = _as_spec(value)
        if spec.key != ref_spec.key and spec.key not in {s.key for s in cand_specs}:
            cand_specs.append(spec)
    if not cand_specs:
        raise SpecError("--backend: name at least one backend besides the reference "
                        f"({ref_spec.text})")
    fixed_of = _add_fixed_variants(cand_specs, ref_spec) if fix else {}
    if warmup < 0:
        raise InputError(f"--warmup: expected an integer >= 0, got {warmup}")
    if timeout <= 0:
        raise InputError(f"--timeout: expected a positive number of seconds, got {timeout}")
    if profile_samples < 1:
        raise InputError(f"--profile-samples: expected a positive count, got {profile_samples}")
    if resume and not out:
        raise InputError("--resume needs --out: the folder of the run to resume")

    with contextlib.ExitStack() as stack:
        workdir = out or stack.enter_context(tempfile.TemporaryDirectory(prefix="modelparity-"))
        os.makedirs(workdir, exist_ok=True)
        prepared = model if isinstance(model, PreparedModel) else prepare_model(
            model, workdir, allow_pickle=allow_pickle)
        config = _as_task(task, prepared.signature.output_names)
        head = make_head(config)
        source = inputs if not (inputs is None or isinstance(inputs, str)) else open_inputs(
            inputs, prepared.signature, shapes=shapes, samples=samples, seed=seed,
            value_range=value_range)
        check_inputs(source, prepared.signature, batch_size)
        label_values, label_name = _labels(labels)
        if label_values is not None and source.num_samples is not None:
            _check_label_count(label_values, source.num_samples, label_name)

        key = _run_key(prepared, source, batch_size, config, ref_spec)
        run = _Run(prepared, source, batch_size, timeout, warmup, workdir, key, progress,
                   head, config, label_values, label_name, fingerprint)
        named = {spec.text for spec in [ref_spec, *cand_specs]}
        profile_specs = {label: parse_spec(text) for label, text in PROFILE_BACKENDS.items()
                         if fingerprint and text not in named}
        profile_source = FirstSamples(source, profile_samples)
        saved_reference = run.saved_reference(ref_spec) if resume else None
        saved = ({spec.text: run.saved(spec, role) for spec, role in
                  [*((s, "candidate") for s in cand_specs),
                   *((s, "profile") for s in profile_specs.values())]}
                 if saved_reference else {})
        to_run = [spec for spec in cand_specs if saved.get(spec.text) is None]
        if saved_reference is None:
            to_run.insert(0, ref_spec)
        workers = run.start(to_run)
        stack.callback(lambda: [w.close() for w in workers.values()])

        ref_result, spool = saved_reference or run.reference(ref_spec, workers[ref_spec.text])
        candidates = []
        for spec in cand_specs:
            restored = saved.get(spec.text)
            if restored is not None:
                run.findings(restored, ref_result)
                progress.finish(spec.text, restored)
                candidates.append(restored)
            else:
                candidates.append(run.candidate(spec, workers[spec.text], spool, ref_result))
        found: dict[str, BackendResult] = {}
        pending = []
        for label, spec in profile_specs.items():
            restored = saved.get(spec.text)
            if restored is None:
                pending.append((label, spec))
                continue
            run.findings(restored, ref_result)
            progress.finish(spec.text, restored)
            found[label] = restored
        # The yardsticks load a wave at a time (one per core), not all at once: each holds a
        # copy of the model, and their timings are not reported, so overlap does not matter.
        wave = max(1, os.cpu_count() or 1)
        for start in range(0, len(pending), wave):
            chunk = pending[start:start + wave]
            workers.update(run.start([spec for _, spec in chunk], profile_source))
            for label, spec in chunk:
                found[label] = run.candidate(spec, workers[spec.text], spool, ref_result,
                                             role="profile", source=profile_source)
        profiles = {label: found[label] for label in profile_specs}
        for label, text in PROFILE_BACKENDS.items():  # profiles the user also named
            for result in candidates:
                if fingerprint and result.spec == text:
                    profiles[label] = result
        at_risk = precision_findings(config, ref_result, candidates, profiles) if fingerprint \
            else []
        _attach_findings([ref_result, *candidates], fixed_of)

        result = AuditResult(
            model={
                "source": prepared.source,
                "onnx_path": prepared.onnx_path,
                "exporter": prepared.exporter,
                "inputs": [asdict(i) for i in prepared.signature.inputs],
                "outputs": [asdict(o) for o in prepared.signature.outputs],
            },
            inputs={"source": source.describe(), "samples": run.samples,
                    "batch_size": batch_size},
            task=asdict(config),
            labels=label_name,
            reference=ref_result,
            candidates=candidates,
            environment=environment(),
            profiles=profiles,
            at_risk=at_risk,
        )
        result.fixes = fix_outcomes(result)
        if out:
            write_repros(result, prepared, source, batch_size, out)
            result.save(os.path.join(out, "report.json"))
        return result


def _add_fixed_variants(cand_specs: list[BackendSpec], reference: BackendSpec) -> dict[str, str]:
    """Insert each fixable candidate's fixed variant after it; {fixed spec: original spec}."""
    fixed_of: dict[str, str] = {}
    for spec in list(cand_specs):
        fixed = fixed_spec(spec, lint(spec))
        if fixed is None or fixed.text == reference.text:
            continue
        if fixed.text not in {s.text for s in cand_specs}:
            cand_specs.insert(cand_specs.index(spec) + 1, fixed)
        fixed_of[fixed.text] = spec.text
    return fixed_of


def _attach_findings(results: list[BackendResult], fixed_of: dict[str, str]) -> None:
    """Match the knowledge base against what each backend reported, and set what the
    fingerprint says about each finding (the measurement wins)."""
    for result in results:
        result.findings = [compare_with_measurement(f, result.measured_precision, result.predicted)
                           for f in lint(result.spec, result.description)]
    by_spec = {result.spec: result for result in results}
    for fixed, original in fixed_of.items():
        if fixed in by_spec and original in by_spec:
            by_spec[fixed].fix_of = original
            by_spec[original].fixed_by = fixed


def _labels(labels: str | np.ndarray | None) -> tuple[np.ndarray | None, str | None]:
    if labels is None:
        return None, None
    if isinstance(labels, str):
        return load_labels(labels), labels
    return np.asarray(labels), "labels (array)"


def _check_label_count(labels: np.ndarray, samples: int, name: str | None) -> None:
    if len(labels) != samples:
        raise InputError(f"{name}: expected {samples} labels (one per sample), got {len(labels)}")


@dataclass
class _Run:
    """The state one audit shares between its backends."""

    model: PreparedModel
    source: InputSource
    batch_size: int
    timeout: float
    warmup: int
    workdir: str
    key: str
    progress: Progress
    head: DecisionHead
    task: TaskConfig
    labels: np.ndarray | None
    label_name: str | None
    fingerprint: bool

    def __post_init__(self) -> None:
        self.samples = self.source.num_samples or 0  # the true count once the reference ran
        workdir = self.workdir
        os.makedirs(os.path.join(workdir, "logs"), exist_ok=True)
        os.makedirs(os.path.join(workdir, "backends"), exist_ok=True)

    def _worker(self, spec: BackendSpec, source: InputSource | None = None) -> BackendWorker:
        log = os.path.join(self.workdir, "logs", slug(spec.text) + ".log")
        return BackendWorker(spec, self.model, source or self.source, self.batch_size,
                             timeout=self.timeout, warmup=self.warmup, log_path=log)

    def _saved_path(self, spec: BackendSpec) -> str:
        return os.path.join(self.workdir, "backends", slug(spec.text) + ".json")

    def _metrics(self, result: BackendResult) -> None:
        if self.labels is not None and result.decided is not None:
            _check_label_count(self.labels, len(result.decided), self.label_name)
            result.metrics = compute_metrics(self.head, self.labels, result.decided)

    # starting ----------------------------------------------------------------------------
    def start(self, specs: list[BackendSpec], source: InputSource | None = None
              ) -> dict[str, BackendWorker]:
        """Start every worker at once and wait until all have loaded their model: loading
        overlaps, and no backend's timed batches ever run beside another's loading."""
        workers = {spec.text: self._worker(spec, source) for spec in specs}
        for worker in workers.values():
            worker.start()
        for worker in workers.values():
            try:
                worker.wait_ready()
            except BackendFailed as failure:
                worker.load_failure = failure
        return workers

    # the reference -----------------------------------------------------------------------
    def saved_reference(self, spec: BackendSpec) -> tuple[BackendResult, OutputSpool] | None:
        """The reference of an earlier run with the same settings, when --resume finds one."""
        spool = OutputSpool.load(os.path.join(self.workdir, "reference"), self.key)
        result = self.saved(spec, "reference") if spool is not None else None
        if result is None or spool is None:
            return None
        self.samples = spool.total_rows
        self._metrics(result)
        self.progress.finish(spec.text, result)
        return result, spool

    def reference(self, spec: BackendSpec, worker: BackendWorker
                  ) -> tuple[BackendResult, OutputSpool]:
        spool = OutputSpool(os.path.join(self.workdir, "reference"))
        spool.begin(self.key)
        result = BackendResult(spec=spec.text, role="reference")
        decisions = DecisionAccumulator(self.source.num_samples)
        roundtrip = RoundTripAccumulator() if self.fingerprint else None
        self.progress.start(spec.text, self.source.num_samples)
        try:
            for rows, outputs in worker.outputs():
                spool.write({name: np.asarray(value) for name, value in outputs.items()})
                for value in outputs.values():
                    if roundtrip is not None and np.asarray(value).dtype.kind == "f":
                        roundtrip.update(np.asarray(value))
                decisions.update(self.head.decide(np.asarray(outputs[self.task.output])))
                self.progress.advance(spec.text, rows)
            spool.finish()
        except BackendFailed as failure:
            spool.abandon()
            _mark_failed(result, failure)
        except ModelParityError as exc:  # e.g. the task does not fit the model's output
            spool.abandon()
            raise type(exc)(str(exc)) from None
        finally:
            worker.close()
        result.description = worker.description
        if result.ok:
            result.latency = worker.latency()
            result.decided = decisions.result()
            result.roundtrip = roundtrip.result() if roundtrip else None
            self.samples = spool.total_rows
            self._metrics(result)
            _save(result, self._saved_path(spec), self.key)
        self.progress.finish(spec.text, result)
        return result, spool

    # each candidate ----------------------------------------------------------------------
    def saved(self, spec: BackendSpec, role: str = "candidate") -> BackendResult | None:
        data = _load_saved(self._saved_path(spec), self.key)
        if data is None:
            return None
        return _restore(data, role, os.path.join(self.workdir, "backends"))

    def candidate(self, spec: BackendSpec, worker: BackendWorker, spool: OutputSpool,
                  reference: BackendResult, *, role: str = "candidate",
                  source: InputSource | None = None) -> BackendResult:
        """Compare one backend with the spooled reference; with `source` (the first samples
        only, for profiles) it may stop before the reference's last batch."""
        if not reference.ok:
            result = BackendResult(spec=spec.text, role=role, status=SKIPPED,
                                   error=f"not run: the reference {reference.spec} failed")
            self.progress.finish(spec.text, result)
            return result
        result = BackendResult(spec=spec.text, role=role)
        expected = (source.num_samples if source else None) or self.samples or None
        comparison = _Comparison(self.head, self.task.output or "", expected, self.fingerprint)
        self.progress.start(spec.text, expected)
        try:
            reference_batches = spool.batches()
            for rows, outputs in worker.outputs():
                expected = next(reference_batches, None)
                if expected is None:
                    raise BackendFailed("compare", "mismatch",
                                        "returned more batches than the reference")
                if source is not None:  # the first samples only: the last batch may be cut
                    expected = {name: value[:rows] for name, value in expected.items()}
                comparison.update(expected, outputs)
                self.progress.advance(spec.text, rows)
            if source is None and next(reference_batches, None) is not None:
                raise BackendFailed("compare", "mismatch", "returned fewer batches than the "
                                    "reference")
        except BackendFailed as failure:
            _mark_failed(result, failure)
        finally:
            worker.close()
        result.description = worker.description
        if result.ok:
            result.latency = worker.latency()
            result.errors = {name: acc.result() for name, acc in comparison.errors.items()}
            result.decided = comparison.decisions.result()
            result.roundtrip = comparison.roundtrip.result() if comparison.roundtrip else None
            self.findings(result, reference)
            _save(result, self._saved_path(spec), self.key)
        self.progress.finish(spec.text, result)
        return result

    def findings(self, result: BackendResult, reference: BackendResult) -> None:
        assert reference.decided is not None and result.decided is not None
        decided = reference.decided
        if len(result.decided) < len(decided):  # a profile, run on the first samples only
            decided = decided.head(len(result.decided))
        result.flips = find_flips(self.head, decided, result.decided)
        if result.role == "profile":
            return
        self._metrics(result)
        if result.metrics is not None and reference.metrics is not None:
            result.metric_deltas = metric_deltas(reference.metrics, result.metrics)


def _mark_failed(result: BackendResult, failure: BackendFailed) -> None:
    result.status = FAILED
    result.error = failure.message
    result.failure = {"stage": failure.stage, "kind": failure.kind}
    if failure.detail:
        result.failure["traceback"] = failure.detail


# resume: finished backends are saved as JSON (summary) + NPZ (per-sample decisions) ---------
def _save(result: BackendResult, path: str, key: str) -> None:
    data = result.to_dict()
    data["run_key"] = key
    if result.roundtrip is not None:
        data["roundtrip_counts"] = result.roundtrip.to_counts()
    assert result.decided is not None
    np.savez(path[:-5] + ".npz", decision=result.decided.decision, score=result.decided.score,
             margin=result.decided.margin,
             num_classes=np.array(-1 if result.decided.num_classes is None
                                  else result.decided.num_classes))
    tmp = path + ".tmp"
    with open(tmp, "w") as handle:
        json.dump(data, handle)
    os.replace(tmp, path)


def _load_saved(path: str, key: str) -> dict[str, Any] | None:
    if not os.path.exists(path) or not os.path.exists(path[:-5] + ".npz"):
        return None
    try:
        with open(path) as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return None
    return data if data.get("run_key") == key and data.get("status") == "ok" else None


def _restore(data: dict[str, Any], role: str, folder: str) -> BackendResult:
    from modelparity.numerics import ErrorStats
    from modelparity.runner import Latency

    path = os.path.join(folder, slug(data["spec"]) + ".npz")
    with np.load(path, allow_pickle=False) as arrays:
        classes = int(arrays["num_classes"])
        decided = Decided(arrays["decision"], arrays["score"], arrays["margin"],
                          None if classes < 0 else classes)
    result = BackendResult(spec=data["spec"], role=role, description=data["description"],
                           decided=decided)
    if data.get("latency"):
        result.latency = Latency(**data["latency"])
    result.errors = {name: ErrorStats.from_dict(stats)
                     for name, stats in (data.get("errors") or {}).items()}
    if data.get("roundtrip_counts"):
        result.roundtrip = RoundTrip.from_counts(data["roundtrip_counts"])
    result.description["resumed"] = True
    return result
