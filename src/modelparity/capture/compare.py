"""`compare()`: the whole audit, from captures, live backends and Polygraphy results alike.

Each item is a capture folder (`modelparity capture`), a backend spec that runs here, or a
Polygraphy results file (`polygraphy run --save-outputs out.json`, with the inputs it saved
with `--save-inputs`); the first is the reference. Captures become `capture:` backends, so
the audit is the one every run makes: error statistics, decisions and flips, metrics with
labels, the knowledge base judged on the captured configuration and machine, the fingerprint
where the yardsticks run from the model here, every report. Captures of other models, other
inputs or other output shapes are refused in one line before anything runs.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import re
import tempfile
from collections.abc import Sequence
from typing import Any

import numpy as np

from modelparity.capture.artifact import (
    OUT,
    Capture,
    CapturedInputs,
    CaptureWriter,
    Manifest,
    read_manifest,
)
from modelparity.errors import InputError
from modelparity.inputs.base import InputSource, conform_batch, hash_file, row_digests
from modelparity.result import AuditResult


def is_capture(item: str) -> bool:
    """A folder, or a name ending in .mpc: read as a capture (and refused in one line when
    it is not a whole one)."""
    return os.path.isdir(item) or item.lower().endswith(".mpc")


def is_polygraphy(item: str) -> bool:
    return item.lower().endswith(".json") and os.path.isfile(item)


def compare(items: Sequence[str], *, model: str | None = None,
            inputs: str | InputSource | None = None, polygraphy_inputs: str | None = None,
            **audit_options: Any) -> AuditResult:
    """Audit `items[1:]` against `items[0]` (see the module's docstring). `model` defaults
    to the model the captures name, when it is here with the same content; `inputs` to the
    inputs the reference capture (or the first capture) kept. Other keyword arguments go to
    `audit` (task, labels, out, fingerprint, ...)."""
    from modelparity.api import audit

    if len(items) < 2:
        raise InputError("compare: give a reference and at least one candidate (capture "
                         "folders, backend specs or Polygraphy results)")
    with contextlib.ExitStack() as stack:
        folders = [i for i in items if is_capture(i)]
        manifests = {path: read_manifest(path) for path in folders}
        model = _model(model, manifests)
        specs: list[str] = []
        for item in items:
            if is_capture(item):
                specs.append(f"capture:{item}")
            elif is_polygraphy(item):
                if polygraphy_inputs is None:
                    raise InputError(f"{item}: Polygraphy's results name no inputs; give the "
                                     f"file it saved with --save-inputs as "
                                     f"--polygraphy-inputs")
                work = stack.enter_context(tempfile.TemporaryDirectory(prefix="mp-pg-"))
                for path in from_polygraphy(item, polygraphy_inputs, model, work):
                    manifests[path] = read_manifest(path)
                    specs.append(f"capture:{path}")
            else:
                specs.append(item)
        captured = [s[len("capture:"):] for s in specs if s.startswith("capture:")]
        if not captured:
            raise InputError("compare: none of these is a capture folder or Polygraphy "
                             "results; use 'modelparity run' for live backends only")
        _same_models(manifests)
        if inputs is None:
            keeper = next((p for p in captured if manifests[p].inputs_kept), None)
            if keeper is None:
                raise InputError(f"{captured[0]}: no capture kept its inputs (--no-inputs); "
                                 f"give the data with --data")
            inputs = CapturedInputs(keeper)
        _same_inputs(captured)
        return audit(model, specs[1:], inputs, reference=specs[0], **audit_options)


def _model(model: str | None, manifests: dict[str, Manifest]) -> str:
    """The model to audit: as given, or the one the captures name, with their content."""
    if not manifests:
        if model is None:
            raise InputError("compare: give --model (no capture names one)")
        return model
    first = next(iter(manifests.values()))
    named = [first.model.get("source"), first.model.get("path")]  # as given, and absolute
    candidate = model or next((p for p in named if p and os.path.isfile(str(p))), None)
    if not candidate or not os.path.isfile(str(candidate)):
        raise InputError(f"compare: the captures were taken of {first.model.get('source')!r}, "
                         f"which is not here: give the same model file with --model")
    digest = hash_file(str(candidate)).hexdigest()
    if digest != first.model.get("sha256"):
        raise InputError(f"--model {candidate}: not the model the captures were taken of "
                         f"(sha256 {digest[:12]}, captured {str(first.model.get('sha256'))[:12]})")
    return str(candidate)


def _same_models(manifests: dict[str, Manifest]) -> None:
    first_path, first = next(iter(manifests.items()))
    for path, manifest in manifests.items():
        if manifest.model.get("sha256") != first.model.get("sha256"):
            raise InputError(f"{path}: captured from another model than {first_path} (sha256 "
                             f"{str(manifest.model.get('sha256'))[:12]} against "
                             f"{str(first.model.get('sha256'))[:12]})")


def _same_inputs(captured: list[str]) -> None:
    """Every capture ran the same samples, and its outputs have the same shapes."""
    first = Capture(captured[0])
    digests = np.sort(first.digests())
    shapes = _shapes(first)
    for path in captured[1:]:
        other = Capture(path)
        theirs = np.sort(other.digests())
        if len(theirs) != len(digests) or not np.array_equal(theirs, digests):
            differ = len(np.setxor1d(theirs, digests))
            raise InputError(f"{path}: captured on other inputs than {captured[0]} "
                             f"({len(theirs)} samples against {len(digests)}; {differ} "
                             f"digests in one and not the other)")
        theirs_shapes = _shapes(other)  # a capture with the probes has an output more
        differ = {k for k in shapes.keys() & theirs_shapes.keys()
                  if shapes[k] != theirs_shapes[k]}
        if differ:
            name = sorted(differ)[0]
            raise InputError(f"{path}: output {name!r} of shape {theirs_shapes[name]} per "
                             f"sample, {shapes[name]} in {captured[0]}")


def _shapes(capture: Capture) -> dict[str, tuple[int, ...]]:
    if not capture.manifest.shards:
        return {}
    return {k[len(OUT):]: tuple(v.shape[1:]) for k, v in capture.shard(0).items()
            if k.startswith(OUT)}


# --------------------------------------------------------------------------- Polygraphy


def _array(value: Any, where: str) -> np.ndarray:
    """A Polygraphy-encoded array (`{"array": base64 of .npy bytes}`, possibly inside a
    LazyArray's `values`), loaded without pickle."""
    if isinstance(value, dict) and "values" in value:  # LazyArray
        value = value["values"]
    if not isinstance(value, dict) or not isinstance(value.get("array"), str):
        raise InputError(f"{where}: not an inline array (Polygraphy wrote it to another "
                         f"file, or this is not its JSON)")
    try:
        raw = base64.b64decode(value["array"].encode(), validate=True)
        return np.load(io.BytesIO(raw), allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise InputError(f"{where}: not a readable array ({exc})") from None


def _load_json(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: not readable JSON ({exc})") from None


def from_polygraphy(results: str, saved_inputs: str, model: str, folder: str) -> list[str]:
    """Captures (one per runner) made from Polygraphy's `--save-outputs` results and the
    inputs it saved with `--save-inputs`: iteration i of each runner ran feed i. The inputs
    are cast to the model's types and digested as an audit's are; returns the folders."""
    from modelparity.model import prepare_model

    data = _load_json(results)
    if not isinstance(data, dict) or data.get("polygraphy_class") != "RunResults" or \
            not isinstance(data.get("lst"), list):
        raise InputError(f"{results}: not Polygraphy results (polygraphy run "
                         f"--save-outputs writes a RunResults JSON)")
    feeds = _load_json(saved_inputs)
    if not isinstance(feeds, list) or not all(isinstance(f, dict) for f in feeds):
        raise InputError(f"{saved_inputs}: not Polygraphy inputs (polygraphy run "
                         f"--save-inputs writes a list of feeds)")
    prepared = prepare_model(model, folder)
    fed = [conform_batch({k: _array(v, f"{saved_inputs}: feed {i}, {k}")
                          for k, v in feed.items() if k != "polygraphy_class"},
                         prepared.signature, saved_inputs) for i, feed in enumerate(feeds)]
    sha = hash_file(model).hexdigest()
    made = []
    for number, entry in enumerate(data["lst"]):
        if not (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[1], list)):
            raise InputError(f"{results}: runner {number} is not [name, iterations]")
        runner, iterations = str(entry[0]), entry[1]
        if len(iterations) != len(fed):
            raise InputError(f"{results}: runner {runner!r} has {len(iterations)} iterations "
                             f"and {saved_inputs} {len(fed)} feeds; give the inputs that run "
                             f"saved")
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", runner)[:80] or f"runner{number}"
        path = os.path.join(folder, f"{name}.mpc")
        writer = CaptureWriter(path, Manifest(
            {"source": model, "sha256": sha}, f"polygraphy:{runner}",
            f"the feeds in {saved_inputs}", max((len(next(iter(f.values()))) for f in fed),
                                                default=0)))
        times = []
        for index, (iteration, feed) in enumerate(zip(iterations, fed, strict=True)):
            outputs = iteration.get("outputs") if isinstance(iteration, dict) else None
            if not isinstance(outputs, dict):
                raise InputError(f"{results}: runner {runner!r}, iteration {index} has no "
                                 f"outputs")
            writer.add({k: _array(v, f"{results}: {runner}, iteration {index}, {k}")
                        for k, v in outputs.items() if k != "polygraphy_class"},
                       row_digests(feed), feed)
            if isinstance(iteration.get("runtime"), (int, float)):
                times.append(float(iteration["runtime"]))
        writer.finish({"runtime": "polygraphy", "runner": runner,
                       "source": f"{results} (polygraphy run --save-outputs)"},
                      _latency(times, [len(next(iter(f.values()))) for f in fed]))
        made.append(path)
    return made


def _latency(times: list[float], rows: list[int]) -> dict[str, Any] | None:
    from modelparity.numerics.latency import Latency

    if not times:
        return None
    return Latency.from_times(times, sum(rows), 0).to_dict()


__all__ = ["compare", "from_polygraphy", "is_capture", "is_polygraphy"]
