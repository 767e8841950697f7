"""Execute a plan: every backend in its own worker, its outputs streamed into a sink.

The reference's sink spools its outputs to disk and accumulates its decisions; a candidate's
sink reads the spool back row for row and accumulates errors, decisions and round-trip counts.
One function (`run_backend`) runs any backend into any sink; resume (`cache.py`) is a cache
around it. What comes out is one frozen `BackendRun` per planned backend: raw accumulations,
nothing decided yet (that is `analyse`).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from modelparity.decisions import DecisionAccumulator, DecisionHead
from modelparity.decisions.elements import ElementFlipAccumulator, compare
from modelparity.errors import InputError, ModelParityError
from modelparity.execute import cache
from modelparity.execute.outcome import FAILED, OK, SKIPPED, BackendRun
from modelparity.execute.protocol import Block
from modelparity.execute.runner import TEMP, BackendFailed, BackendWorker
from modelparity.execute.spool import OutputSpool, SpoolReader
from modelparity.inputs import InputSource
from modelparity.inputs.layout import DEFAULT_LAYOUT, Layout
from modelparity.model import PreparedModel
from modelparity.numerics import ErrorAccumulator
from modelparity.numerics.latency import Latency
from modelparity.numerics.roundtrip import RoundTripAccumulator
from modelparity.plan import Plan, Planned, Settings
from modelparity.spec import slug


class Progress(Protocol):
    """Receives progress as backends run (the CLI draws a bar from it)."""

    def start(self, spec: str, total: int | None) -> None: ...
    def advance(self, spec: str, rows: int) -> None: ...
    def finish(self, spec: str, result: Any) -> None: ...


class NoProgress:
    def start(self, spec: str, total: int | None) -> None: ...
    def advance(self, spec: str, rows: int) -> None: ...
    def finish(self, spec: str, result: Any) -> None: ...


@dataclass(frozen=True)
class Context:
    """What every backend of one audit shares."""

    model: PreparedModel
    source: InputSource
    profile_source: InputSource  # the first samples only, for the yardsticks
    head: DecisionHead
    output: str  # the output the decision is made on
    workdir: str
    key: str  # the run's identity, so --resume never mixes settings
    progress: Progress
    layout: Layout = DEFAULT_LAYOUT  # batch axes, per-item calls, carried state
    engine: str = "local"  # local: a worker process per backend; ray: a pool of Ray actors
    workers: int = 2  # actors per backend with the Ray engine


@dataclass(frozen=True)
class Execution:
    runs: dict[str, BackendRun]  # by canonical spec key
    samples: int  # how many samples the reference ran


# sinks -------------------------------------------------------------------------------------
class ReferenceSink:
    """Spools the reference's outputs and accumulates its decisions and round-trip counts."""

    def __init__(self, spool: OutputSpool, head: DecisionHead, output: str, samples: int | None,
                 roundtrip: bool) -> None:
        self.spool = spool
        self.head = head
        self.output = output
        self.decisions = DecisionAccumulator(samples)
        self.roundtrip = RoundTripAccumulator() if roundtrip else None

    def update(self, block: Block) -> None:
        outputs = {name: np.asarray(value) for name, value in block.outputs.items()}
        self.spool.write(outputs, block.inputs)
        if self.roundtrip is not None:
            for value in outputs.values():
                if value.dtype.kind == "f":
                    self.roundtrip.update(value)
        self.decisions.update(self.head.decide(outputs[self.output]))

    def finish(self) -> None:
        self.spool.finish()

    def result(self) -> dict[str, Any]:
        return {"decided": self.decisions.result(),
                "roundtrip": self.roundtrip.result() if self.roundtrip else None}


class CompareSink:
    """Compares a candidate with the spooled reference, row for row, and accumulates errors per
    output, decisions and round-trip counts. With `partial` (a yardstick run on the first
    samples only) it may stop before the reference's last row."""

    def __init__(self, reader: SpoolReader, head: DecisionHead, output: str,
                 samples: int | None, roundtrip: bool, partial: bool = False,
                 layout: Layout = DEFAULT_LAYOUT, where: str = "the inputs",
                 fed: str = "this backend", optional: frozenset[str] = frozenset()) -> None:
        self.reader = reader
        self.where, self.fed = where, fed  # the source and the backend, named if they differ
        self.optional = optional  # outputs it may leave out (fused intermediates, locate)
        self.seen = 0  # samples compared so far
        self.layout = layout  # a stacked state's slices get errors of their own
        self.head = head
        self.output = output
        self.partial = partial
        self.errors: dict[str, ErrorAccumulator] = {}
        self.decisions = DecisionAccumulator(samples)
        self.element_flips = ElementFlipAccumulator()
        self.roundtrip = RoundTripAccumulator() if roundtrip else None

    def update(self, block: Block) -> None:
        try:
            reference = self.reader.read(sum(block.rows))
        except ValueError as exc:
            raise BackendFailed("compare", "mismatch", f"its outputs do not have the "
                                f"reference's shapes in block {block.index} ({exc})") from None
        if reference is None:
            raise BackendFailed("compare", "mismatch", "returned more samples than the "
                                "reference")
        self._check_inputs(block)
        if set(block.outputs) != set(reference) and not (
                set(block.outputs) <= set(reference)
                and set(reference) - set(block.outputs) <= self.optional):
            raise BackendFailed("compare", "mismatch",
                                f"outputs {sorted(block.outputs)} do not match the reference's "
                                f"{sorted(reference)}")
        for name, ref in reference.items():
            if name not in block.outputs:
                continue  # an optional output this backend did not return
            cand = np.asarray(block.outputs[name])
            if cand.shape != ref.shape:
                raise BackendFailed("compare", "mismatch",
                                    f"output '{name}' has shape {cand.shape}, the reference's "
                                    f"is {ref.shape}")
            for part, index in ((name, ...), *self.layout.slices(name, ref.shape)):
                if part not in self.errors:
                    self.errors[part] = ErrorAccumulator(ref.dtype)
                self.errors[part].update(ref[index], cand[index])
            if self.roundtrip is not None and cand.dtype.kind == "f":
                self.roundtrip.update(cand)
        self._decide(reference[self.output], np.asarray(block.outputs[self.output]))

    def _check_inputs(self, block: Block) -> None:
        """Every worker reads the inputs itself: a feed that gives each call other data (an
        unseeded or per-process random generator), or a file rewritten while the audit reads
        it, would compare backends on different inputs and count bogus flips. Refused."""
        theirs, rows = self.reader.last_inputs, sum(block.rows)
        self.seen += rows
        if theirs is None or block.inputs is None or len(block.inputs) != rows:
            return
        differ = np.flatnonzero(np.asarray(block.inputs, dtype=np.uint64) != theirs)
        if differ.size:
            raise InputError(
                f"{self.where}: fed {self.fed} other inputs than the reference (first at "
                f"sample {self.seen - rows + int(differ[0])}); every backend reads the inputs "
                f"itself, so they must be the same on every read: seed a feed's random "
                f"generator, or keep the files unchanged while the audit runs")

    def _decide(self, reference: np.ndarray, candidate: np.ndarray) -> None:
        """Per-sample decisions; where the output is decided per element, its flips are
        counted here, with the reference's elements at hand, and only per-sample counts kept."""
        mine = self.head.elements(candidate)
        if mine is None:
            self.decisions.update(self.head.decide(candidate))
            return
        theirs = self.head.elements(reference)
        assert theirs is not None
        self.decisions.update(self.head.summarise(mine, candidate))
        self.element_flips.update(compare(theirs, mine, self.head.element_flipped(theirs, mine),
                                          self.head.element_priority(theirs, mine)))

    def finish(self) -> None:
        if not self.partial and self.reader.remaining:
            raise BackendFailed("compare", "mismatch", "returned fewer samples than the "
                                "reference")

    def result(self) -> dict[str, Any]:
        element_flips = self.element_flips.result()
        return {"errors": {name: acc.result() for name, acc in self.errors.items()},
                "decided": self.decisions.result(),
                "element_flips": element_flips if len(element_flips) else None,
                "roundtrip": self.roundtrip.result() if self.roundtrip else None}


# running -----------------------------------------------------------------------------------
def _failed(planned: Planned, failure: BackendFailed, description: dict[str, Any]
            ) -> BackendRun:
    info: dict[str, Any] = {"stage": failure.stage, "kind": failure.kind}
    if failure.detail:
        info["traceback"] = failure.detail
    return BackendRun(planned.text, planned.role, FAILED, failure.message, info, description)


def run_backend(planned: Planned, worker: BackendWorker, sink: ReferenceSink | CompareSink,
                progress: Progress, expected: int | None) -> BackendRun:
    """Stream one backend's outputs into `sink`; its `BackendRun`, failed or not."""
    progress.start(planned.text, expected)
    try:
        for block in worker.blocks():
            sink.update(block)
            progress.advance(planned.text, sum(block.rows))
        sink.finish()
    except BackendFailed as failure:
        run = _failed(planned, failure, worker.description)
        progress.finish(planned.text, run)
        return run
    finally:
        worker.close()
    captured = (worker.description.get("capture") or {}).get("latency")
    latency = Latency.from_dict(captured) if captured else worker.latency()  # a capture's own
    run = BackendRun(planned.text, planned.role, OK, description=worker.description,
                     latency=latency, **sink.result())
    progress.finish(planned.text, run)
    return run


def _start(planned: Iterable[Planned], context: Context, source: InputSource,
           settings: Settings) -> dict[str, BackendWorker]:
    """Start every worker at once and wait until all have loaded their model: loading
    overlaps, and no backend's timed batches ever run beside another's loading."""
    workers = {}
    for item in planned:
        log = os.path.join(context.workdir, "logs", slug(item.text) + ".log")
        teacher = (os.path.join(context.workdir, "reference"), context.key) \
            if item.teacher_forced else None
        if context.engine == "ray":
            from modelparity.execute.ray_engine import RayWorker

            workers[item.key] = RayWorker(item.spec, context.model, source,
                                          item.batch_size or settings.batch_size,
                                          timeout=settings.timeout, warmup=settings.warmup,
                                          workers=context.workers, prediction=item.prediction)
            continue
        workers[item.key] = BackendWorker(item.spec, context.model, source,
                                          item.batch_size or settings.batch_size,
                                          timeout=settings.timeout, warmup=settings.warmup,
                                          log_path=log, prediction=item.prediction,
                                          layout=context.layout, teacher=teacher)
    for worker in workers.values():
        worker.start()
    for worker in workers.values():
        try:
            worker.wait_ready()
        except BackendFailed as failure:
            worker.load_failure = failure
    return workers


def execute(plan: Plan, context: Context, *, resume: bool = False) -> Execution:
    """Run every backend of the plan; with `resume`, reuse those an earlier run in the same
    folder finished with the same settings."""
    os.makedirs(os.path.join(context.workdir, "logs"), exist_ok=True)
    folder = os.path.join(context.workdir, "backends")
    os.makedirs(folder, exist_ok=True)
    fingerprint = plan.settings.fingerprint
    runs: dict[str, BackendRun] = {}
    ref = plan.reference
    found = cache.saved_reference(context.workdir, ref, context.key) if resume else None
    saved = ({p.key: cache.load(folder, p, context.key)
              for p in (*plan.candidates, *plan.teacher_forced, *plan.yardsticks)}
             if found else {})
    to_start = [p for p in plan.candidates if saved.get(p.key) is None]
    workers: dict[str, BackendWorker] = {}
    try:  # started inside: an interrupt while workers load still removes OUT/tmp
        workers = _start([ref, *to_start] if found is None else to_start, context,
                         context.source, plan.settings)
        if found is None:
            spool = OutputSpool(os.path.join(context.workdir, "reference"))
            spool.begin(context.key)
            sink = ReferenceSink(spool, context.head, context.output,
                                 context.source.num_samples, fingerprint)
            try:
                reference = run_backend(ref, workers[ref.key], sink, context.progress,
                                        context.source.num_samples)
            except ModelParityError as exc:  # e.g. the task does not fit the model's output
                spool.abandon()
                raise type(exc)(str(exc)) from None
            if reference.ok:
                cache.save(reference, folder, context.key)
            else:
                spool.abandon()
        else:
            reference, spool = found
            context.progress.finish(ref.text, reference)
        runs[ref.key] = reference
        samples = spool.total_rows if reference.ok else (context.source.num_samples or 0)

        def compare(item: Planned, worker: BackendWorker, partial: bool) -> BackendRun:
            if not reference.ok:
                worker.close()
                run = BackendRun(item.text, item.role, SKIPPED,
                                 f"not run: the reference {ref.text} failed")
                context.progress.finish(item.text, run)
                return run
            expected = context.profile_source.num_samples if partial else samples
            reader = spool.reader()
            try:
                sink = CompareSink(reader, context.head, context.output, expected,
                                   fingerprint, partial=partial, layout=context.layout,
                                   where=context.source.describe(), fed=item.text,
                                   optional=frozenset(context.model.optional_outputs))
                run = run_backend(item, worker, sink, context.progress, expected or None)
            finally:
                reader.close()
            if run.ok:
                cache.save(run, folder, context.key)
            return run

        def restored(item: Planned) -> bool:
            """Take a backend from an earlier run (--resume) where one was saved."""
            run = saved.get(item.key)
            if run is not None:
                context.progress.finish(item.text, run)
                runs[item.key] = run
            return run is not None

        for item in plan.candidates:
            if not restored(item):
                runs[item.key] = compare(item, workers[item.key], partial=False)
        # Teacher-forced runs read the reference's finished spool: started only now.
        forced = [item for item in plan.teacher_forced if not restored(item)]
        workers.update(_start(forced, context, context.source, plan.settings))
        for item in forced:
            runs[item.key] = compare(item, workers[item.key], partial=False)
        pending = [item for item in plan.yardsticks if not restored(item)]
        # The yardsticks load a wave at a time (one per core), not all at once: each holds a
        # copy of the model, and their timings are not reported, so overlap does not matter.
        wave = max(1, os.cpu_count() or 1)
        for start in range(0, len(pending), wave):
            chunk = pending[start:start + wave]
            workers.update(_start(chunk, context, context.profile_source, plan.settings))
            for item in chunk:
                runs[item.key] = compare(item, workers[item.key], partial=True)
    finally:
        for worker in workers.values():
            worker.close()
        shutil.rmtree(os.path.join(context.workdir, TEMP), ignore_errors=True)
    return Execution(runs, samples)
