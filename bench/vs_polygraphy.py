"""Polygraphy against modelparity on one job, measured side by side in one run.

The job: compare ONNX Runtime CPU with itself on a 48-256-128-1 tabular MLP (FP32, Relu,
Sigmoid; built here in code, seeded weights), over 200,000 seeded float32 samples in batches
of 100 (2,000 batches).

- Polygraphy (its own virtualenv, bench/.envs/polygraphy, created on first use; never a project
  dependency), "save, then compare", as a Polygraphy user would:

      polygraphy run model.onnx --onnxrt --data-loader-script loader.py --save-outputs ref.json
      polygraphy run model.onnx --onnxrt --data-loader-script loader.py --load-outputs ref.json

  Each command's wall time, from this process (subprocess); Polygraphy's total is both.
- modelparity: `modelparity.audit(model, [CANDIDATE], x.npy, task="binary",
  reference="ort:cpu", batch_size=100, fingerprint=False)`, in a fresh process
  (`--child`), so that it pays its imports as Polygraphy's CLI processes do. Both the whole
  process's wall time and the audit call's own are printed; the ratio uses the whole process.
- Plain loops, for context: two plain ONNX Runtime loops over the same batches (one
  InferenceSession each, one run per batch, batches pre-sliced in memory), in this process.

Repeated `--repeats` times in alternating order; medians are reported. Prints the ratio
Polygraphy / modelparity (target >= 10) and modelparity / plain loops, and whether the two
sides agree (Polygraphy's comparison passes; modelparity reports 0 flips). Exit status is 0
whatever the numbers (a measurement, not a test); 2 when the Polygraphy virtualenv cannot be
installed.

    .venv/bin/python bench/vs_polygraphy.py            # 200k samples, 3 repeats
    .venv/bin/python bench/vs_polygraphy.py --quick    # smoke run: 20k samples, 1 repeat
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # bench/overhead.py's helpers

POLYGRAPHY_VERSION = "0.53.6"
REFERENCE = "ort:cpu"
# The audit drops a candidate whose spec is the reference's, so the candidate is ORT CPU spelt
# differently: graph_optimization_level=all is ONNX Runtime's default (ORT_ENABLE_ALL), so this
# is the same FP32 computation as the reference. Kept here in case spec validation changes.
CANDIDATE = "ort:cpu?graph_optimization_level=all"
FEATURES = 48
HIDDEN = (256, 128)
SAMPLES = 200_000
QUICK_SAMPLES = 20_000
BATCH_SIZE = 100
WARMUP = 3  # audit()'s default warm-up; the plain loops do the same (not timed in "loop")
TARGET = 10.0  # Polygraphy / modelparity
HERE = os.path.dirname(os.path.abspath(__file__))
ENV_DIR = os.path.join(HERE, ".envs", "polygraphy")

LOADER = '''\
import numpy as np

DATA = {data!r}
BATCH = {batch}


def load_data():
    x = np.load(DATA, mmap_mode="r")
    for start in range(0, len(x), BATCH):
        yield {{"x": np.ascontiguousarray(x[start : start + BATCH])}}
'''


# ---------------------------------------------------------------------------------------------
# the Polygraphy virtualenv


def _env_python() -> str:
    return os.path.join(ENV_DIR, "bin", "python")


def _env_versions() -> dict[str, str] | None:
    code = ("import json, numpy, onnx, onnxruntime, polygraphy; print(json.dumps({"
            "'polygraphy': polygraphy.__version__, 'onnxruntime': onnxruntime.__version__, "
            "'numpy': numpy.__version__, 'onnx': onnx.__version__}))")
    if not os.path.exists(_env_python()):
        return None
    proc = subprocess.run([_env_python(), "-c", code], capture_output=True, text=True,
                          check=False)
    if proc.returncode != 0:
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def ensure_polygraphy_env() -> dict[str, str]:
    """Create (once) bench/.envs/polygraphy with Polygraphy pinned; exit 2 if pip fails.

    onnxruntime is pinned to the version this project's virtualenv runs, so both sides run the
    same ONNX Runtime build.
    """
    import onnxruntime

    wanted = {"polygraphy": POLYGRAPHY_VERSION, "onnxruntime": onnxruntime.__version__}
    found = _env_versions()
    if found and all(found.get(k) == v for k, v in wanted.items()):
        return found
    print(f"  setting up {os.path.relpath(ENV_DIR)} (pip install polygraphy=="
          f"{POLYGRAPHY_VERSION} onnxruntime=={onnxruntime.__version__} numpy onnx) ...",
          flush=True)
    steps = []
    if not os.path.exists(_env_python()):
        steps.append([sys.executable, "-m", "venv", ENV_DIR])
    steps.append([_env_python(), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                  f"polygraphy=={POLYGRAPHY_VERSION}", f"onnxruntime=={onnxruntime.__version__}",
                  "numpy", "onnx"])
    for cmd in steps:
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            last = (proc.stderr.strip() or proc.stdout.strip() or "no output").splitlines()[-1]
            print(f"error: could not install the Polygraphy virtualenv ({' '.join(cmd[:4])} ... "
                  f"exited {proc.returncode}: {last})")
            sys.exit(2)
    found = _env_versions()
    if not found or found.get("polygraphy") != POLYGRAPHY_VERSION:
        print(f"error: {ENV_DIR} has no working polygraphy {POLYGRAPHY_VERSION} after pip install")
        sys.exit(2)
    return found


# ---------------------------------------------------------------------------------------------
# machine, model and data


def build_model(path: str, seed: int = 0) -> None:
    """x float32 [batch, 48] -> 256 Relu -> 128 Relu -> 1 -> Sigmoid -> y, seeded weights."""
    from overhead import build_model as build_mlp

    build_mlp(path, HIDDEN, seed, features=FEATURES, output="y")


def write_data(path: str, samples: int, seed: int = 1) -> None:
    rng = np.random.default_rng(seed)
    np.save(path, rng.standard_normal((samples, FEATURES), dtype=np.float32))


def print_header(env: dict[str, str]) -> None:
    import onnxruntime
    import psutil

    import modelparity
    from modelparity.environment import cpu_name

    print("Polygraphy vs modelparity: ORT CPU against itself")
    print(f"  machine      {cpu_name()}, {psutil.cpu_count()} logical CPUs "
          f"({psutil.cpu_count(logical=False)} physical), "
          f"{psutil.virtual_memory().total / 2**30:.1f} GiB RAM")
    print(f"  platform     {platform.platform()}, python {platform.python_version()}")
    print(f"  modelparity  {modelparity.__version__} (onnxruntime {onnxruntime.__version__}, "
          f"numpy {np.__version__}), {sys.prefix}, "
          f"{os.path.dirname(os.path.dirname(modelparity.__file__))}")
    print(f"  polygraphy   {env['polygraphy']} (onnxruntime {env['onnxruntime']}, "
          f"numpy {env['numpy']}, onnx {env['onnx']}), {os.path.relpath(ENV_DIR)}")


# ---------------------------------------------------------------------------------------------
# the three sides


def run_polygraphy(model: str, loader: str, tmp: str) -> dict[str, Any]:
    """Save, then compare: two `polygraphy run` processes, each timed end to end."""
    exe = os.path.join(ENV_DIR, "bin", "polygraphy")
    ref = os.path.join(tmp, "ref.json")
    if os.path.exists(ref):
        os.remove(ref)
    base = [exe, "run", model, "--onnxrt", "--data-loader-script", loader]
    out: dict[str, Any] = {}
    for step, extra in (("save", ["--save-outputs", ref]), ("compare", ["--load-outputs", ref])):
        t0 = time.perf_counter()
        proc = subprocess.run(base + extra, capture_output=True, text=True, check=False)
        out[step] = time.perf_counter() - t0
        text = proc.stdout + proc.stderr
        out[f"{step}_rc"] = proc.returncode
        out[f"{step}_log_lines"] = len(text.splitlines())
        if step == "compare":
            out["passed"] = proc.returncode == 0 and "PASSED" in text
            verdict = next((line for line in reversed(text.splitlines())
                            if "PASSED" in line or "FAILED" in line), "no verdict line")
            out["verdict"] = verdict.split(" | Command:")[0].strip()
        if proc.returncode != 0:
            out["tail"] = "\n".join(text.splitlines()[-15:])
            break
    out["ref_mib"] = os.path.getsize(ref) / 2**20 if os.path.exists(ref) else float("nan")
    out["total"] = out.get("save", 0.0) + out.get("compare", 0.0)
    return out


def child(model: str, data: str, batch_size: int) -> None:
    """The audit in this (fresh) process; one JSON line with its timings and verdict."""
    t0 = time.perf_counter()
    import modelparity
    import modelparity.api  # `modelparity` itself imports its API lazily

    t1 = time.perf_counter()
    from overhead import PhaseClock  # the same timeline as bench/overhead.py's

    clock = PhaseClock()
    result = modelparity.audit(model, [CANDIDATE], data, task="binary", reference=REFERENCE,
                               batch_size=batch_size, fingerprint=False, progress=clock)
    t2 = time.perf_counter()
    info: dict[str, Any] = {"import": t1 - t0, "audit": t2 - t1, "backends": {}}
    for backend in (result.reference, *result.candidates):
        if not backend.ok:
            info["error"] = f"{backend.spec}: {backend.error}"
            continue
        t = clock.t.get(backend.spec, {})
        lat = backend.latency
        # times from the start of the audit() call
        info["backends"][backend.spec] = {
            "first": t.get("first", t2) - t1,
            "finish": t.get("finish", t2) - t1,
            "infer": lat.mean_ms * lat.batches / 1e3 if lat else float("nan"),
        }
        if backend.role == "candidate":
            info["flips"] = backend.flips.count if backend.flips else None
            info["max_abs"] = max((e.max_abs for e in backend.errors.values()), default=None)
            info["samples"] = backend.flips.total if backend.flips else None
    print(json.dumps(info))


def run_modelparity(model: str, data: str, batch_size: int) -> dict[str, Any]:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", model, data, str(batch_size)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"audit child failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    info["process"] = wall
    return info


def plain_loop(model: str, batches: list[np.ndarray]) -> tuple[float, float, np.ndarray]:
    """(loop seconds, creation + warm-up + loop seconds, outputs) of one plain ORT loop."""
    import onnxruntime as ort

    t0 = time.perf_counter()
    so = ort.SessionOptions()
    so.log_severity_level = 3
    session = ort.InferenceSession(model, sess_options=so, providers=["CPUExecutionProvider"])
    for _ in range(WARMUP):
        session.run(None, {"x": batches[0]})
    t1 = time.perf_counter()
    outputs = [session.run(None, {"x": batch})[0] for batch in batches]
    t2 = time.perf_counter()
    del session
    gc.collect()
    return t2 - t1, t2 - t0, np.concatenate(outputs)


def run_plain(model: str, batches: list[np.ndarray]) -> dict[str, Any]:
    a_loop, a_all, a_out = plain_loop(model, batches)
    b_loop, b_all, b_out = plain_loop(model, batches)
    return {"loops": a_loop + b_loop, "with_creation": a_all + b_all,
            "identical": bool(np.array_equal(a_out, b_out))}


# ---------------------------------------------------------------------------------------------
# report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=None,
                        help=f"samples (default {SAMPLES}; {QUICK_SAMPLES} with --quick)")
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    parser.add_argument("--repeats", type=int, default=None, help="default 3 (1 with --quick)")
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke run: {QUICK_SAMPLES} samples, 1 repeat")
    parser.add_argument("--child", nargs=3, metavar=("MODEL", "DATA", "BATCH"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not args.child:  # byte-compiled like the pip-installed Polygraphy it is timed against
        from overhead import byte_compile

        byte_compile()
    if args.child:
        model, data, batch = args.child
        child(model, data, int(batch))
        return 0
    samples = args.samples or (QUICK_SAMPLES if args.quick else SAMPLES)
    repeats = args.repeats or (1 if args.quick else 3)
    batch_size = args.batch_size

    started = time.perf_counter()
    env = ensure_polygraphy_env()
    print_header(env)
    n_batches = -(-samples // batch_size)
    print(f"  model        MLP {' -> '.join(str(n) for n in (FEATURES, *HIDDEN, 1))}, Relu, "
          f"Sigmoid, FP32, built in code; input x [batch, {FEATURES}], output y [batch, 1]")
    print(f"  data         {samples} seeded float32 samples, batch size {batch_size} "
          f"({n_batches} batches), {repeats} repeat(s), order alternating")
    print(f"  audit        modelparity.audit(reference={REFERENCE!r}, [{CANDIDATE!r}], "
          f"task='binary', batch_size={batch_size}, fingerprint=False), fresh process")
    print("  polygraphy   polygraphy run --onnxrt --data-loader-script loader.py --save-outputs "
          "ref.json, then ... --load-outputs ref.json")

    with tempfile.TemporaryDirectory(prefix="modelparity-vs-polygraphy-") as tmp:
        model = os.path.join(tmp, "mlp48.onnx")
        data = os.path.join(tmp, f"x_{samples}.npy")
        loader = os.path.join(tmp, "loader.py")
        build_model(model)
        write_data(data, samples)
        with open(loader, "w") as handle:
            handle.write(LOADER.format(data=data, batch=batch_size))
        x = np.load(data)
        batches = [x[i : i + batch_size] for i in range(0, len(x), batch_size)]

        sides = ("polygraphy", "modelparity", "plain")
        got: dict[str, list[dict[str, Any]]] = {s: [] for s in sides}
        print()
        for rep in range(repeats):
            order = sides if rep % 2 == 0 else sides[::-1]
            for side in order:
                if side == "polygraphy":
                    got[side].append(run_polygraphy(model, loader, tmp))
                elif side == "modelparity":
                    got[side].append(run_modelparity(model, data, batch_size))
                else:
                    got[side].append(run_plain(model, batches))
            p, m, q = (got[s][-1] for s in sides)
            print(f"  repeat {rep + 1}/{repeats} ({', '.join(order)}): polygraphy "
                  f"{p['total']:.2f} s (save {p.get('save', 0):.2f} + compare "
                  f"{p.get('compare', 0):.2f}), modelparity {m['process']:.2f} s, plain loops "
                  f"{q['loops']:.2f} s", flush=True)
            if "tail" in p:
                print(f"  polygraphy failed (rc {p.get('save_rc')}/{p.get('compare_rc')}):\n"
                      f"{p['tail']}")

    med = statistics.median
    poly, mp, plain = got["polygraphy"], got["modelparity"], got["plain"]
    specs = [REFERENCE, CANDIDATE]
    rows = [
        ("polygraphy run --save-outputs (process)", med(r.get("save", 0) for r in poly)),
        ("polygraphy run --load-outputs (process)", med(r.get("compare", 0) for r in poly)),
        ("polygraphy, total", med(r["total"] for r in poly)),
        ("modelparity audit, whole process", med(r["process"] for r in mp)),
        ("  import modelparity.api", med(r["import"] for r in mp)),
        ("  audit() call (times below: from its start)", med(r["audit"] for r in mp)),
    ]
    for spec in specs:
        short = "reference" if spec == REFERENCE else "candidate"
        rows += [
            (f"    {short}: first batch back, at",
             med(r["backends"][spec]["first"] for r in mp if spec in r["backends"])),
            (f"    {short}: last batch back, at",
             med(r["backends"][spec]["finish"] for r in mp if spec in r["backends"])),
            (f"    {short}: inference inside its worker",
             med(r["backends"][spec]["infer"] for r in mp if spec in r["backends"])),
        ]
    rows += [
        ("plain ORT loops, two, sum", med(r["loops"] for r in plain)),
        ("plain ORT loops incl. session creation + warm-up",
         med(r["with_creation"] for r in plain)),
    ]
    print(f"\n  {'median over ' + str(repeats) + ' repeat(s)':<52}{'seconds':>9}")
    for label, value in rows:
        print(f"  {label:<52}{value:>9.3f}")
    p_log = med(r.get("compare_log_lines", 0) for r in poly)
    print(f"  (ref.json {med(r['ref_mib'] for r in poly):.1f} MiB; polygraphy compare printed "
          f"{p_log:.0f} log lines)")

    poly_total = med(r["total"] for r in poly)
    mp_process = med(r["process"] for r in mp)
    mp_call = med(r["audit"] for r in mp)
    loops = med(r["loops"] for r in plain)
    created = med(r["with_creation"] for r in plain)
    poly_ok = all(r.get("passed") for r in poly)
    flips = [r.get("flips") for r in mp]
    mp_ok = all(f == 0 for f in flips) and not any("error" in r for r in mp)
    max_abs = max((r.get("max_abs") or 0.0) for r in mp)
    print("\n== agreement")
    print(f"  polygraphy   compare {'passes' if poly_ok else 'does NOT pass'} in every repeat "
          f"(last: {poly[-1].get('verdict', 'n/a')})")
    print(f"  modelparity  flips per repeat {flips} of {mp[-1].get('samples')} samples, max abs "
          f"error {max_abs:.3g}: {'0 flips' if mp_ok else 'NOT 0 flips'}")
    print(f"  plain loops  outputs identical: {all(r['identical'] for r in plain)}")
    print(f"  both sides agree: {'yes' if poly_ok and mp_ok else 'NO'}")

    ratio = poly_total / mp_process
    verdict = "PASS" if ratio >= TARGET else "FAIL"
    print(f"\n== summary (total {time.perf_counter() - started:.0f} s)")
    print(f"Polygraphy / modelparity (whole processes): {poly_total:.2f} / {mp_process:.2f} s = "
          f"{ratio:.2f}  target >= {TARGET:g}  {verdict}")
    print(f"  (against the audit() call alone: {poly_total / mp_call:.2f})")
    print(f"modelparity / plain loops: {mp_process / loops:.2f} (whole process), "
          f"{mp_call / loops:.2f} (audit() call); against loops incl. session creation: "
          f"{mp_process / created:.2f} / {mp_call / created:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
