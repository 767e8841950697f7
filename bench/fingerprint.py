"""Does the fingerprint name the precision a backend really used?

Five model families built in code (MLP, CNN with batch norm, a transformer block with LayerNorm
and Softmax, a GRU, a regression model with large outputs) run against backends whose true
precision is known and which are NOT modelparity's own emulations (those are the yardsticks):

    fp32   OpenVINO CPU pinned to f32, and PyTorch CPU (other kernels: FP32 reordering noise)
    bf16   OpenVINO CPU default, where it reports bfloat16 (CPUs with avx512_bf16 / AMX)
    fp16   OpenVINO CPU with INFERENCE_PRECISION_HINT=f16, where it reports float16
    tf32   PyTorch with TF32-rounded matmul/conv operands (bench/fingerprint_backends.py)
    int8   ONNX Runtime static QDQ quantization calibrated on other data, and PyTorch dynamic
           quantization of Linear/GRU layers (not for the CNN or the transformer block, where
           it leaves the convolutions or the attention projections in FP32)

Then the real models of bench/realmodels.py (prepared by it in bench/.envs/realmodels/work;
nothing is prepared or downloaded here), each audited once through the CLI with its own flags
(`./modelparity run MODEL -b ... -d ITEMS <flags> --out DIR`, reference ONNX Runtime CPU),
against OpenVINO CPU default, pinned to f32 and hinted f16, and the ORT static int8 truth
calibrated on the model's first 8 items. The PyTorch truths need a PyTorch model, which the
real models are not. Verdict, confidence, evidence and the reported precision are read from
DIR/report.json. A candidate that cannot run (OpenVINO cannot read scikit-learn's tree
ensembles; quantize_static fails or quantizes nothing) is listed without a verdict ("failed",
or "no truth" for the int8 truth) and left out of the counts.

The truth of an OpenVINO backend is what it reports after compiling, never assumed: where the
CPU has no native BF16 or FP16, OpenVINO's default and its f16 hint both compile FP32, and the
only downcast truth among the real models is then int8. Prints every verdict with its
evidence, the confusion matrix, the targets (issue 11: >= 95% of the conclusive verdicts right,
no FP32 run called a downcast, no downcast called FP32, "inconclusive" (or "unknown") at most
10%) over everything and over the real models alone, and one line per model family (a real
model is its own family).

    .venv/bin/python bench/fingerprint.py                  # built-in and real: ~2 + 5 min
    .venv/bin/python bench/fingerprint.py --builtin-only   # ~3 minutes on 2 cores
    .venv/bin/python bench/fingerprint.py --only-real --models skl_mlp_digits,gru_vad
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from typing import NamedTuple

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [HERE, os.environ.get("PYTHONPATH")]))

from fingerprint_models import FAMILIES  # noqa: E402
from realmodels import CLI, DEFAULT_WORK, ROOT, _short, error_line  # noqa: E402

import modelparity  # noqa: E402
from modelparity.decisions import TaskConfig  # noqa: E402
from modelparity.spec import read_spec  # noqa: E402

LABELS = ["fp32", "fp16", "bf16", "tf32", "int8"]
SHORT = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16", "tfloat32": "tf32",
         "int8": "int8"}
CANDIDATES = [
    "openvino:cpu?INFERENCE_PRECISION_HINT=f32",
    "torch:cpu",
    "openvino:cpu",
    "openvino:cpu?INFERENCE_PRECISION_HINT=f16",
    "py:fingerprint_backends:torch_tf32",
    "py:fingerprint_backends:ort_static_int8",
    "py:fingerprint_backends:torch_dynamic_int8",
]
# PyTorch's dynamic quantization leaves convolutions and MultiheadAttention's projections in
# FP32: for the CNN and the transformer block it is mixed precision, not an INT8 truth.
SKIP = {("cnn", "py:fingerprint_backends:torch_dynamic_int8"),
        ("transformer", "py:fingerprint_backends:torch_dynamic_int8")}


REAL_CANDIDATES = [
    "openvino:cpu",
    "openvino:cpu?INFERENCE_PRECISION_HINT=f32",
    "openvino:cpu?INFERENCE_PRECISION_HINT=f16",
]
INT8_TRUTH = "py:fingerprint_backends:ort_static_int8"
UNSURE = ("inconclusive", "unknown")
NO_VERDICT = ("failed", "no truth")

class Run(NamedTuple):
    family: str
    seed: str  # the input seed of a built-in family; "-" for a real model
    spec: str
    truth: str | None
    verdict: str  # a fingerprint verdict, or "failed" / "no truth"
    detail: str
    real: bool


def true_precision(reported: str | None) -> str | None:
    if reported is None:
        return None
    return SHORT.get(reported, reported)


def run_builtin(families: list[str], args: argparse.Namespace, started: float) -> list[Run]:
    runs = []
    for family in families:
        entry, kind, options = FAMILIES[family]
        task = TaskConfig(kind=kind, atol=1e-3, rtol=1e-3, **options)
        for seed in range(args.seeds):
            with tempfile.TemporaryDirectory() as out:
                candidates = [c for c in CANDIDATES if (family, c) not in SKIP]
                result = modelparity.audit(entry, candidates, None, task=task,
                                           samples=args.samples, seed=seed,
                                           batch_size=args.batch_size, out=out,
                                           profile_samples=args.samples)
            for candidate in result.candidates:
                truth = true_precision(candidate.precision)
                if not candidate.ok or truth is None or candidate.fingerprint is None:
                    runs.append(Run(family, str(seed), candidate.spec, truth, "failed",
                                    candidate.error or "no fingerprint", False))
                    continue
                runs.append(Run(family, str(seed), candidate.spec, truth,
                                candidate.fingerprint.verdict,
                                f"{candidate.fingerprint.confidence:.2f} "
                                f"{candidate.fingerprint.evidence}", False))
            print(f"  {family} seed {seed}: done ({time.perf_counter() - started:.0f} s)",
                  flush=True)
    return runs


def real_names(work: str) -> list[str]:
    if not os.path.isdir(work):
        return []
    return sorted(n for n in os.listdir(work)
                  if os.path.exists(os.path.join(work, n, "manifest.json")))


def _shown_spec(spec: str) -> str:
    """The int8 truth's calibration folder as 'items' (the row names the model)."""
    return re.sub(r"calib=[^&]*", "calib=items", spec)


def _alias(spec: str) -> str:
    """A short name for a real model's candidate, for the per-family lines."""
    if spec.startswith(INT8_TRUTH):
        return "ort_static_int8"
    return spec.replace("INFERENCE_PRECISION_HINT=", "")


def _cli(cmd: list[str], env: dict[str, str], timeout: float) -> tuple[int | str, str]:
    """The command in its own session, so a timeout ends its workers too (its group only)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env, cwd=ROOT, start_new_session=True)
    try:
        text, _ = proc.communicate(timeout=timeout)
        return proc.returncode, text
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        text, _ = proc.communicate()
        return "timeout", (text or "") + f"\nerror: timed out after {timeout:.0f} s"


def run_real(name: str, folder: str, args: argparse.Namespace,
             out_root: str) -> tuple[list[Run], dict]:
    """One CLI audit of a prepared real model against REAL_CANDIDATES and the int8 truth."""
    with open(os.path.join(folder, "manifest.json")) as f:
        manifest = json.load(f)
    items = os.path.join(folder, "items")
    int8 = f"{INT8_TRUTH}?calib={items}&calib_items={args.calib_items}"
    candidates = [*REAL_CANDIDATES, int8]
    out = os.path.join(out_root, name)
    shutil.rmtree(out, ignore_errors=True)
    cmd = [CLI, "run", os.path.join(folder, "model.onnx")]
    for spec in candidates:
        cmd += ["-b", spec]
    cmd += ["-d", items, *manifest["args"], "--out", out]
    env = dict(os.environ, COLUMNS="200", **manifest.get("env", {}))
    print(f"\n$ {' '.join(shlex.quote(_short(c)) for c in cmd)}", flush=True)
    start = time.perf_counter()
    rc, text = _cli(cmd, env, args.timeout)
    info = {"wall_s": time.perf_counter() - start, "rc": rc, "error": None,
            "quantized_model": False}
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "cli.log"), "w") as f:
        f.write(text)
    report: dict = {}
    try:
        with open(os.path.join(out, "report.json")) as f:
            report = json.load(f)
    except (OSError, ValueError) as exc:
        info["error"] = error_line(text) or f"no report.json: {exc}"
    # a model quantized by its maker (ddddocr's default OCR model): its reference runs int8
    # kernels too, which the FP32 truth of a backend that reports float32 does not say
    info["quantized_model"] = bool((report.get("model") or {}).get("quantized"))
    if rc != 0 and not info["error"]:
        info["error"] = error_line(text)
    # the candidates as the user named them; no --fix variants, no teacher-forced reruns
    found = {read_spec(c["spec"]).key: c for c in report.get("candidates") or []
             if c.get("spec") and not c.get("fix_of")}
    runs = []
    for spec in candidates:
        cand = found.get(read_spec(spec).key)
        failed = "no truth" if spec == int8 else "failed"
        if cand is None:
            runs.append(Run(name, "-", _shown_spec(spec), None, failed,
                            info["error"] or "not in report.json", True))
            continue
        desc = cand.get("description") or {}
        truth = true_precision((desc.get("precision") or {}).get("reported"))
        fp = cand.get("fingerprint")
        if cand.get("status") != "ok" or truth is None or not fp:
            err = cand.get("error") or cand.get("failure") or "no fingerprint"
            if isinstance(err, dict):
                err = err.get("message") or json.dumps(err)[:300]
            runs.append(Run(name, "-", _shown_spec(spec), truth, failed,
                            " ".join(str(err).split())[:300], True))
            continue
        detail = f"{fp['confidence']:.2f} {fp['evidence']}"
        if desc.get("quantized_ops"):
            detail += f" [int8 truth quantized: {desc['quantized_ops']}]"
        runs.append(Run(name, "-", _shown_spec(spec), truth, fp["verdict"], detail, True))
    missing = [_alias(r.spec) for r in runs if r.verdict in NO_VERDICT]
    shown = (f": {info['error']}" if not report and info["error"] else
             f" (without a verdict: {', '.join(missing)})" if missing else "")
    print(f"  {name}: rc={rc}{shown} ({info['wall_s']:.0f} s)", flush=True)
    return runs, info


def summarize(runs: list[Run], title: str) -> None:
    """Confusion matrix and the issue-11 targets over the runs that have a verdict."""
    judged = [r for r in runs if r.verdict not in NO_VERDICT]
    confusion = Counter((r.truth, r.verdict) for r in judged)
    truths = [*LABELS, *sorted({str(r.truth) for r in judged} - set(LABELS))]
    verdicts = [*LABELS, *UNSURE]
    print(f"\n{title}: confusion matrix (rows: true precision, columns: verdict)")
    print("        " + "".join(f"{v:>13}" for v in verdicts))
    for truth in truths:
        print(f"  {truth:<6}" + "".join(f"{confusion[truth, v]:>13}" for v in verdicts))
    total = len(judged)
    unsure = sum(1 for r in judged if r.verdict in UNSURE)
    conclusive = total - unsure
    correct = sum(1 for r in judged if r.truth == r.verdict)
    fp32_called_downcast = sum(1 for r in judged if r.truth == "fp32" and r.verdict in LABELS
                               and r.verdict != "fp32")
    downcast_called_fp32 = sum(1 for r in judged if r.truth != "fp32" and r.verdict == "fp32")
    accuracy = correct / conclusive if conclusive else 0.0
    unsure_share = unsure / total if total else 0.0
    downcasts = Counter(str(r.truth) for r in judged if r.truth != "fp32")
    print(f"{title}: {total} runs with a verdict: FP32 {total - sum(downcasts.values())}, "
          + (", ".join(f"{t} {n}" for t, n in sorted(downcasts.items())) or "no downcast"))
    print(f"correct: {correct} / {conclusive} conclusive = {accuracy:.1%}  target >= 95%  "
          f"{'PASS' if accuracy >= 0.95 else 'FAIL'}")
    print(f"inconclusive or unknown: {unsure} / {total} = {unsure_share:.1%}  target <= 10%  "
          f"{'PASS' if unsure_share <= 0.10 else 'FAIL'}")
    print(f"FP32 runs called a downcast: {fp32_called_downcast}  target 0  "
          f"{'PASS' if fp32_called_downcast == 0 else 'FAIL'}")
    print(f"downcasts called FP32: {downcast_called_fp32}  target 0  "
          f"{'PASS' if downcast_called_fp32 == 0 else 'FAIL'}")
    without = len(runs) - total
    if without:
        print(f"runs without a verdict (failed or no truth), not counted: {without}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=2000, help="built-in families")
    parser.add_argument("--seeds", type=int, default=2, help="input seeds per built-in family")
    parser.add_argument("--batch-size", type=int, default=250, help="built-in families")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--only-real", action="store_true", help="only the real models")
    which.add_argument("--builtin-only", action="store_true", help="only the built-in families")
    parser.add_argument("--models", default="", help="comma-separated built-in families and/or "
                        f"real models (built-in: {', '.join(FAMILIES)})")
    parser.add_argument("--work", default=DEFAULT_WORK,
                        help="the real models, as bench/realmodels.py prepared them")
    parser.add_argument("--timeout", type=float, default=900.0,
                        help="seconds per real model's audit (default 900)")
    parser.add_argument("--calib-items", type=int, default=8,
                        help="items the int8 truth of a real model is calibrated on")
    parser.add_argument("--out", default=None, help="keep each real model's --out folder here "
                        "(default: a temporary folder, removed at the end)")
    args = parser.parse_args(argv)

    available = real_names(args.work)
    picked = [m for m in args.models.split(",") if m]
    unknown = [m for m in picked if m not in FAMILIES and m not in available]
    if unknown:
        parser.error(f"--models: not a built-in family nor a prepared real model in "
                     f"{args.work}: {', '.join(unknown)}")
    families = [] if args.only_real else [f for f in FAMILIES if not picked or f in picked]
    reals = [] if args.builtin_only else [n for n in available if not picked or n in picked]
    if not args.builtin_only and not available:
        print(f"no real models prepared in {args.work} (run bench/realmodels.py once): "
              "built-in families only", flush=True)

    started = time.perf_counter()
    runs = run_builtin(families, args, started)
    infos: dict[str, dict] = {}
    out_root = args.out or tempfile.mkdtemp(prefix="fingerprint-real-")
    try:
        for name in reals:
            try:
                more, infos[name] = run_real(name, os.path.join(args.work, name), args,
                                             out_root)
            except Exception as exc:  # the bench goes on with the next model
                message = f"bench error: {type(exc).__name__}: {exc}"
                print(f"  {name}: {message}", flush=True)
                more = [Run(name, "-", _shown_spec(s), None, "failed", message, True)
                        for s in REAL_CANDIDATES]
                infos[name] = {"wall_s": 0.0, "rc": "bench error", "error": message,
                               "quantized_model": False}
            runs += more
    finally:
        if not args.out:
            shutil.rmtree(out_root, ignore_errors=True)

    print("\nper run: family, seed, backend, true precision, verdict, confidence, evidence")
    width = max([42, *(len(r.spec) for r in runs)])
    for r in runs:
        mark = ("" if r.truth == r.verdict or r.verdict in NO_VERDICT else "   (inconclusive)"
                if r.verdict in UNSURE else "   <-- wrong")
        print(f"  {r.family:<17} {r.seed} {r.spec:<{width}} {r.truth!s:<5} {r.verdict:<8} "
              f"{r.detail}{mark}")

    ov_truths = Counter((r.spec, str(r.truth)) for r in runs
                        if r.real and r.spec.startswith("openvino") and r.verdict not in NO_VERDICT)
    if ov_truths:
        print("\nOpenVINO's truth on the real models is what it reported after compiling: "
              + "; ".join(f"{spec} {truth} x{n}" for (spec, truth), n in sorted(ov_truths.items())))
        if all(truth == "fp32" for _, truth in ov_truths):
            print("This CPU gives OpenVINO no native BF16 or FP16 (default and f16 hint compile "
                  "FP32): the real models' only downcast truth here is ORT's static int8.")
    summarize(runs, "all runs" if families else "real models")
    if reals and families:
        summarize([r for r in runs if r.real], "real models")

    print("\nper model family: right / conclusive, inconclusive, wrong, without a verdict")
    for family in [*families, *reals]:
        mine = [r for r in runs if r.family == family]
        judged = [r for r in mine if r.verdict not in NO_VERDICT]
        right = sum(1 for r in judged if r.truth == r.verdict)
        unclear = sum(1 for r in judged if r.verdict in UNSURE)
        wrong = len(judged) - right - unclear
        line = (f"  {family:<17} {right} / {len(judged) - unclear}, {unclear} inconclusive, "
                f"{wrong} wrong, {len(mine) - len(judged)} without")
        info = infos.get(family)
        if info is not None:
            line += f"  ({info['wall_s']:.0f} s"
            if info["quantized_model"]:
                line += "; the model itself is int8-quantized, so is its reference"
            line += ")"
            reasons: dict[str, list[str]] = {}
            for r in mine:
                if r.verdict in NO_VERDICT:  # the spec and the folders said once
                    reason = r.detail.removeprefix(f"{r.spec}: ")
                    reason = re.sub(r"/\S*/([^/\s]+)", r"\1", reason)[:160]
                    reasons.setdefault(reason, []).append(_alias(r.spec))
            for reason, specs in reasons.items():
                line += f"\n      {', '.join(specs)}: {reason}"
        print(line)
    print(f"total {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
