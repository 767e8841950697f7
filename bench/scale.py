"""A large tabular audit on the local engine and on Ray: wall time, peak memory per worker, and
whether the two audits agree.

The model is built here (no download): an MLP 30 -> 64 -> 64 -> 1 with a sigmoid, seeded
weights. The inputs are `--samples` (10M by default) seeded synthetic rows, generated batch by
batch in each process that reads them. The audit compares `emulate:bf16` and `openvino:cpu`
with ONNX Runtime CPU (the reference), fingerprint off, once on the local engine (a worker
process per backend) and once with `--engine ray` (a local Ray, `--workers` actors per
backend). Printed per engine: wall time, the largest worker's peak resident memory (local: each
worker process, sampled from /proc; Ray: each actor's own peak), the audit process's peak, and
then whether flips and error statistics are equal.

    .venv/bin/python bench/scale.py                     # 10M samples, about a minute on 2 cores
    .venv/bin/python bench/scale.py --samples 1000000
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from locate_memory import WorkerPeak  # the same /proc sampler

BACKENDS = ["emulate:bf16", "openvino:cpu"]


def build(path: str) -> str:
    rng = np.random.default_rng(0)
    widths, nodes, inits, prev = [30, 64, 64], [], [], "x"
    for i, (n_in, n_out) in enumerate(zip(widths, [*widths[1:], 1], strict=True)):
        inits += [numpy_helper.from_array((rng.normal(size=(n_in, n_out)) * np.sqrt(2 / n_in))
                                          .astype(np.float32), f"W{i}"),
                  numpy_helper.from_array(np.zeros(n_out, np.float32), f"b{i}")]
        nodes.append(helper.make_node("Gemm", [prev, f"W{i}", f"b{i}"], [f"h{i}"]))
        if n_out != 1:
            nodes.append(helper.make_node("Relu", [f"h{i}"], [f"r{i}"]))
            prev = f"r{i}"
    nodes.append(helper.make_node("Sigmoid", [nodes[-1].output[0]], ["prob"]))
    graph = helper.make_graph(nodes, "scale", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, ["N", 30])], [helper.make_tensor_value_info(
            "prob", TensorProto.FLOAT, ["N", 1])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def run(model: str, samples: int, engine: str, workers: int, batch: int):
    import modelparity

    sampler = WorkerPeak()
    start = time.perf_counter()
    result = modelparity.audit(model, BACKENDS, None, samples=samples, batch_size=batch,
                               fingerprint=False, engine=engine, workers=workers, warmup=1)
    wall = time.perf_counter() - start
    local_peak = sampler.stop()
    if engine == "ray":
        peaks = [p for b in result.backends for p in b.description["ray"]["peak_rss_mb"]]
        worker_peak = max(peaks)
    else:
        worker_peak = local_peak
    return result, wall, worker_peak


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=10_000_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=4096)
    args = parser.parse_args(argv)
    folder = tempfile.mkdtemp(prefix="mp-scale-")
    model = build(os.path.join(folder, "mlp.onnx"))
    print(f"{args.samples:,} samples, batch {args.batch_size}, backends: ort:cpu (reference), "
          f"{', '.join(BACKENDS)}; Ray: {args.workers} actors per backend")
    runs = {}
    for engine in ("local", "ray"):
        runs[engine] = run(model, args.samples, engine, args.workers, args.batch_size)
        _, wall, peak = runs[engine]
        audit_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"{engine:5}: wall {wall:7.1f} s   largest worker peak RSS {peak:6.0f} MB   "
              f"audit process peak RSS so far {audit_peak:6.0f} MB")
    local, ray = runs["local"][0], runs["ray"][0]
    equal = True
    for a, b in zip(local.candidates, ray.candidates, strict=True):
        same_flips = np.array_equal(a.flips.index, b.flips.index)
        ea, eb = a.errors["prob"], b.errors["prob"]
        same_stats = (ea.count, ea.max_abs, ea.max_ulp) == (eb.count, eb.max_abs, eb.max_ulp)
        close = np.isclose(ea.norm_error, eb.norm_error, rtol=1e-12, atol=0)
        equal &= same_flips and same_stats and bool(close)
        print(f"{a.spec:14} flips local {a.flips.count:,} / ray {b.flips.count:,} "
              f"(same samples: {same_flips}); max_abs {ea.max_abs:.3e} / {eb.max_abs:.3e}; "
              f"norm_error equal to 1e-12: {bool(close)}")
    print(f"ray / local wall time: x{runs['ray'][1] / runs['local'][1]:.2f}; results equal: "
          f"{equal}")
    return 0 if equal else 1


if __name__ == "__main__":
    sys.exit(main())
