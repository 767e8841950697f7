"""`capture()`: run one backend on the data and keep what it computed, for a compare elsewhere.

The backend runs in a worker process as in an audit (the same loading, warm-up and timing);
each block of batches it returns is written as a shard as soon as it arrives, with the
digests of the inputs it was fed, checked against the inputs this process read. With `resume`
an interrupted capture continues after its last whole shard, on the samples it did not reach.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from typing import Any

import numpy as np

from modelparity.backends import parse_spec
from modelparity.backends.registry import get_runtime
from modelparity.capture.artifact import CaptureWriter, Manifest
from modelparity.environment import environment
from modelparity.errors import InputError
from modelparity.execute.runner import TEMP, BackendWorker
from modelparity.inputs import InputSource, check_inputs, open_inputs
from modelparity.inputs.base import (
    LaterSamples,
    _concat,
    conform_batch,
    hash_file,
    row_digests,
)
from modelparity.model import prepare_model
from modelparity.model.probe import PROBED_RUNTIMES, probe
from modelparity.plan import Settings
from modelparity.spec import BackendSpec

CAPTURED_BY = "capture"  # the runtime that replays a capture


def capture(
    model: str,
    backend: str | BackendSpec,
    inputs: str | InputSource | None = None,
    *,
    out: str,
    batch_size: int = Settings.batch_size,
    shapes: dict[str, tuple[int, ...]] | None = None,
    samples: int = 1000,
    seed: int = 0,
    value_range: tuple[float, float] = (-1.0, 1.0),
    timeout: float = Settings.timeout,
    warmup: int = Settings.warmup,
    keep_inputs: bool = True,
    resume: bool = False,
    allow_pickle: bool = False,
) -> Manifest:
    """Run `model` on `backend` over `inputs` (synthetic ones without) and write the capture
    folder `out`: the outputs as safetensors shards, each sample's input digest, the model's
    content hash, the backend's full description and its timings. `keep_inputs` (the
    default) keeps the inputs too, so a compare needs no data; `resume` continues an
    interrupted capture. Returns the manifest."""
    spec = backend if isinstance(backend, BackendSpec) else parse_spec(backend)
    runtime = get_runtime(spec.runtime)
    if spec.runtime == CAPTURED_BY:
        raise InputError(f"-b {spec.text}: already a capture; capture a backend that runs")
    why = runtime.cannot_execute(spec) if runtime.cannot_execute else None
    if why:
        raise InputError(f"-b {spec.text}: cannot run here ({why}); take the capture on a "
                         f"machine where it runs, then compare it anywhere")
    with contextlib.ExitStack() as stack:
        work = stack.enter_context(tempfile.TemporaryDirectory(prefix="modelparity-capture-"))
        prepared = prepare_model(model, work, allow_pickle=allow_pickle, timeout=timeout)
        source = inputs if not (inputs is None or isinstance(inputs, str)) else open_inputs(
            inputs, prepared.signature, shapes=shapes, samples=samples, seed=seed,
            value_range=value_range)
        check_inputs(source, prepared.signature, batch_size)
        signature = {side: [{"name": t.name, "dtype": t.dtype, "shape": list(t.shape)}
                            for t in getattr(prepared.signature, side)]
                     for side in ("inputs", "outputs")}
        # the final activations' inputs too, where the backend runs the ONNX file: a compare
        # reads the precision there, as a direct audit does (`model.probe`)
        running = probe(prepared, work) if spec.runtime in PROBED_RUNTIMES else prepared
        manifest = Manifest(
            {"source": prepared.source, "path": os.path.abspath(prepared.onnx_path),
             "sha256": hash_file(prepared.onnx_path).hexdigest(),
             "probed_sha256": (hash_file(running.onnx_path).hexdigest()
                               if running.probes else None),
             "probes": [list(pair) for pair in running.probes],
             **signature}, spec.text, source.describe(), batch_size,
            environment=_machine(spec), inputs_kept=keep_inputs)
        writer = CaptureWriter(out, manifest, resume=resume)
        if writer.manifest.complete:
            return writer.manifest
        rest = LaterSamples(source, writer.samples) if writer.samples else source
        logs = os.path.join(out, "logs")
        os.makedirs(logs, exist_ok=True)
        worker = BackendWorker(spec, running, rest, batch_size, timeout=timeout,
                               warmup=warmup, log_path=os.path.join(logs, "backend.log"))
        try:
            worker.start()
            _ready(worker, spec)
            fed = rest.batches(batch_size)
            for block in _blocks(worker, spec):
                batch = _concat([next(fed) for _ in block.rows], "capture")
                if block.inputs is not None and not np.array_equal(block.inputs,
                                                                   row_digests(batch)):
                    raise InputError(f"-b {spec.text} was fed other inputs than this process "
                                     f"read (a data source that is not deterministic)")
                fed_model = conform_batch(batch, prepared.signature, source.describe())
                # the digests of what the model was fed (cast to its dtypes): a replay sees it
                writer.add(dict(block.outputs), row_digests(fed_model),
                           fed_model if keep_inputs else None)
        finally:
            worker.close()
            shutil.rmtree(os.path.join(out, TEMP), ignore_errors=True)
        latency = worker.latency()
        return writer.finish(_described(worker.description),
                             latency.to_dict() if latency is not None else None)


def _machine(spec: BackendSpec) -> dict[str, Any]:
    """This machine, as the knowledge base reads it where the capture is compared: the CPU
    and its flags, the OS and its version, the NVIDIA GPU, the variables the rules read."""
    import platform
    import sys

    from modelparity.environment import nvidia_gpu
    from modelparity.knowledge.rules import load_rules

    gpu = nvidia_gpu()
    read = {c["env"] for rule in load_rules() for c in rule.when if "env" in c}
    return {**environment(), "system": sys.platform,
            "os_version": (platform.mac_ver()[0] or None) if sys.platform == "darwin" else None,
            "gpu": list(gpu) if gpu else None,
            "env": {k: os.environ[k] for k in read if k in os.environ}}


def _ready(worker: BackendWorker, spec: BackendSpec) -> None:
    from modelparity.execute.runner import BackendFailed

    try:
        worker.wait_ready()
    except BackendFailed as failure:
        raise InputError(f"-b {spec.text}: {failure.message}") from None


def _blocks(worker: BackendWorker, spec: BackendSpec) -> Any:
    """The worker's blocks; a backend that fails is one line, what it wrote so far kept."""
    from modelparity.execute.runner import BackendFailed

    try:
        yield from worker.blocks()
    except BackendFailed as failure:
        raise InputError(f"-b {spec.text}: {failure.message} (the shards written so far are "
                         f"kept: --resume continues after them)") from None


def _described(description: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in description.items() if k != "traceback"}
