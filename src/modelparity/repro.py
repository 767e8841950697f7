"""Standalone repro scripts: one per backend with findings, written next to the report.

A repro is what a user attaches to a bug report upstream: a short Python script that needs only
NumPy and the runtime, the model's path, a few inputs saved beside it (the samples whose decision
flipped, closest to the threshold first, or the first samples when none flipped), and the
session built twice: as configured and as fixed. Each side runs in its own child process,
because some fixes are environment variables that a runtime reads once per process.
"""

from __future__ import annotations

import math
import os
import pprint
from typing import Any

import numpy as np

from modelparity.backends.registry import get_runtime, parse_spec
from modelparity.inputs import InputSource, conform_batch
from modelparity.knowledge.rules import PRECISION_WORDS
from modelparity.model import PreparedModel
from modelparity.report.names import plain
from modelparity.result import AuditResult, BackendResult
from modelparity.spec import BackendSpec

REPRO_SAMPLES = 8


def _indices(backend: BackendResult, total: int) -> list[int]:
    if backend.flips is not None and backend.flips.count:
        return [r["index"] for r in backend.flips.records(REPRO_SAMPLES)]
    return list(range(min(REPRO_SAMPLES, total)))


def gather_inputs(source: InputSource, model: PreparedModel, indices: list[int],
                  batch_size: int) -> dict[str, np.ndarray]:
    """The model inputs of the samples at `indices`, in that order, as the model received them."""
    wanted = sorted(set(indices))
    rows: dict[int, dict[str, np.ndarray]] = {}
    start = 0
    for batch in source.batches(batch_size):
        feed = conform_batch(batch, model.signature, source.describe())
        count = len(next(iter(feed.values())))
        for index in wanted:
            if start <= index < start + count:
                rows[index] = {name: value[index - start] for name, value in feed.items()}
        start += count
        if wanted and start > wanted[-1]:
            break
    return {name: np.stack([rows[i][name] for i in indices])
            for name in model.signature.input_names}


def _side(spec: BackendSpec) -> dict[str, Any]:
    """How the script builds one side: the runtime's own settings (from its declaration) and
    the environment."""
    repro = get_runtime(spec.runtime).repro
    assert repro is not None
    return {"spec": spec.text, "env": spec.env, **repro.side(spec)}


def write_repros(result: AuditResult, model: PreparedModel, source: InputSource,
                 batch_size: int) -> list[str]:
    """Write the repro script of every candidate the analysis gave a repro path
    (`BackendResult.repro`), with its inputs beside it."""
    written = []
    for backend in result.candidates:
        fixed = next((f.fixed_spec for f in backend.findings if f.fixed_spec), None)
        if backend.repro is None or fixed is None:
            continue
        folder = os.path.dirname(backend.repro)
        os.makedirs(folder, exist_ok=True)
        indices = _indices(backend, result.inputs["samples"])
        np.savez(os.path.join(folder, "inputs.npz"),
                 **gather_inputs(source, model, indices, batch_size))
        with open(backend.repro, "w") as handle:
            handle.write(script(result, backend, model, parse_spec(fixed), indices))
        written.append(backend.repro)
    return written


def _audit_scores(result: AuditResult, backend: BackendResult, indices: list[int]
                  ) -> list[list[Any]]:
    """(index, reference score, candidate score) as the audit measured them."""
    reference, candidate = result.reference.decided, backend.decided
    if reference is None or candidate is None:
        return []
    def plain(value: float) -> float | None:  # NaN is not a Python literal
        return None if math.isnan(value) else value

    return [[i, plain(float(reference.score[i])), plain(float(candidate.score[i]))]
            for i in indices]


def script(result: AuditResult, backend: BackendResult, model: PreparedModel,
           fixed: BackendSpec, indices: list[int]) -> str:
    spec = parse_spec(backend.spec)
    runtime = get_runtime(spec.runtime)
    rules = "\n".join(
        f"  {f.rule.id} ({PRECISION_WORDS[f.rule.precision]}): {f.rule.title}\n"
        f"    source: {f.rule.source}" for f in backend.findings)
    flips = backend.flips.count if backend.flips is not None else 0
    predicted = backend.description.get("predicted")
    how = (f" (predicted: {predicted.get('stand_in')} stood in, since "
           f"{predicted.get('reason', 'the runtime cannot execute there')};\nrun this script "
           "where the runtime executes to measure it)" if predicted else "")
    task = result.task
    constants = {
        "MODEL": os.path.abspath(model.onnx_path),
        "INPUT_NAMES": list(model.signature.input_names),
        "OUTPUT_NAMES": list(model.signature.output_names),
        "SIDES": {"configured": _side(spec), "fixed": _side(fixed)},
        "TASK": {"kind": task["kind"], "output": task["output"],
                 "threshold": task.get("threshold"), "logits": task.get("logits", False)},
        "AUDIT": {"reference": result.reference.spec, "samples": indices,
                  "scores": _audit_scores(result, backend, indices)},
    }
    if spec.runtime == "torch" and model.torch_source is not None:
        constants["ENTRY"] = model.torch_source.entry
        constants["WEIGHTS"] = os.path.abspath(model.torch_source.weights or "")
        constants["WORKDIR"] = os.getcwd()
    header = (
        f"modelparity repro: {backend.spec} against {fixed.text}\n\n"
        f"In the audit, {flips} of {result.inputs['samples']} decisions flipped on "
        f"{backend.spec} against {result.reference.spec}{how}.\nRules that apply:\n{rules}\n\n"
        f"This script runs the model as configured and as fixed on the {len(indices)} samples "
        "in inputs.npz\n(the flipped ones, closest to the threshold first, or the first samples "
        "when none flipped)\nand prints both outputs side by side. It needs only numpy and "
        f"{runtime.package}.\nRun: python repro.py")
    # comments, each line: spec options, rule titles and reasons are text from outside (a spec
    # value with three quotes would end a docstring and run what follows); every value below
    # is written by pprint, as a Python literal
    lines = ["\n".join("# " + plain(line) for line in header.splitlines()) + "\n", _PRELUDE]
    for name, value in constants.items():
        lines.append(f"{name} = {pprint.pformat(value, width=96, sort_dicts=False)}")
    assert runtime.repro is not None
    lines.append(runtime.repro.code)
    lines.append(_MAIN)
    return "\n".join(lines)


_PRELUDE = '''import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
'''

_MAIN = '''

def load_inputs():
    with np.load(HERE / "inputs.npz") as data:
        return {name: data[name] for name in INPUT_NAMES}


def decide(values):
    """The task's decision per sample (binary/multilabel: score > threshold; multiclass: argmax)."""
    v = np.asarray(values, dtype=np.float64).reshape(len(values), -1)
    kind, threshold = TASK["kind"], TASK["threshold"]
    if kind in ("binary", "multilabel"):
        if kind == "binary" and v.shape[1] == 2:
            v = v[:, 1:] - v[:, :1] if TASK["logits"] else v[:, 1:]
        if TASK["logits"]:
            v = 1.0 / (1.0 + np.exp(-v))
        above = v > np.asarray(threshold, dtype=np.float64)
        return [int(row[0]) if kind == "binary" else "".join(str(int(x)) for x in row)
                for row in above]
    if kind == "multiclass":
        return [int(i) for i in v.argmax(axis=1)]
    return ["-"] * len(v)


def main():
    if len(sys.argv) == 3:  # a child: run one side and save its outputs
        np.savez(sys.argv[2], **run(SIDES[sys.argv[1]]))
        return
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, side in SIDES.items():
            path = os.path.join(tmp, name + ".npz")
            # each side in its own process: env fixes (NVIDIA_TF32_OVERRIDE=0, ...) are read once
            subprocess.run([sys.executable, __file__, name, path], check=True,
                           env={**os.environ, **side["env"]})
            with np.load(path) as data:
                results[name] = dict(data)
    configured, fixed = results["configured"], results["fixed"]
    for output in OUTPUT_NAMES:
        diff = np.abs(configured[output].astype(np.float64) - fixed[output].astype(np.float64))
        print(f"output {output!r}: max |configured - fixed| = {diff.max():.3e}")
    output = TASK["output"]
    a, b = decide(configured[output]), decide(fixed[output])
    audit = {row[0]: row[1:] for row in AUDIT["scores"]}
    print(f"{'sample':>8} {'audit reference':>16} {'configured':>14} {'fixed':>14}  decision")
    flipped = 0
    for row, index in enumerate(AUDIT["samples"]):
        ref = audit.get(index, [None])[0]
        ref = float("nan") if ref is None else ref
        first, second = (np.ravel(side[output][row]) for side in (configured, fixed))
        # show the element that decides: one whose decision differs, else the largest change
        j = int(np.argmax(np.abs(first - second)))
        if TASK["kind"] in ("binary", "multilabel") and not TASK["logits"]:
            t = np.broadcast_to(np.asarray(TASK["threshold"], dtype=np.float64), first.shape)
            changed = np.flatnonzero((first > t) != (second > t))
            j = int(changed[0]) if len(changed) else int(np.argmin(np.abs(first - t)))
        first, second = first[j], second[j]
        flipped += a[row] != b[row]
        mark = "  <- differs" if a[row] != b[row] else ""
        print(f"{index:>8} {ref:>16.9f} {first:>14.9f} {second:>14.9f}  {a[row]} -> {b[row]}{mark}")
    print(f"{flipped} of {len(a)} decisions differ between {SIDES['configured']['spec']} and "
          f"{SIDES['fixed']['spec']}")


if __name__ == "__main__":
    main()
'''
