"""Memory and time of `locate` on a large graph: thousands of nodes, ~100 MB of weights.

The model is built here (no download): an MLP of `--layers` Gemm+Relu layers of width
`--width` with seeded He-scaled weights (the default 1000 x 160: 2001 nodes, 102 MB). `locate`
runs it with every intermediate exposed on `--samples` samples, against `emulate:fp16`.

Printed: the nodes compared, the bytes of every intermediate of every sample (what holding them
all would take), the audit process's peak RSS and the largest worker's, the wall time, and
what locate found. The intermediates stream through the workers batch by batch and are spooled
to disk for the comparison, so the peaks stay near the model's own size.

    .venv/bin/python bench/locate_memory.py                  # ~2 min on 2 cores
    .venv/bin/python bench/locate_memory.py --layers 300 --samples 32
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


def build(path: str, layers: int, width: int) -> int:
    rng = np.random.default_rng(0)
    inits, nodes, prev = [], [], "x"
    for i in range(layers):
        weight = (rng.normal(size=(width, width)) * np.sqrt(2.0 / width)).astype(np.float32)
        inits += [numpy_helper.from_array(weight, f"W{i}"),
                  numpy_helper.from_array(np.zeros(width, np.float32), f"b{i}")]
        nodes += [helper.make_node("Gemm", [prev, f"W{i}", f"b{i}"], [f"h{i}"], name=f"fc{i}"),
                  helper.make_node("Relu", [f"h{i}"], [f"r{i}"], name=f"relu{i}")]
        prev = f"r{i}"
    inits.append(numpy_helper.from_array(
        (rng.normal(size=(width, 10)) / np.sqrt(width)).astype(np.float32), "Wo"))
    nodes.append(helper.make_node("MatMul", [prev, "Wo"], ["logits"], name="head"))
    graph = helper.make_graph(
        nodes, "deep", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", width])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path, save_as_external_data=True, location="deep.onnx.data")
    return sum(t.nbytes for t in (numpy_helper.to_array(i) for i in inits))


class WorkerPeak:
    """The largest resident size of this process's children, sampled every 0.2 s from /proc
    (a child's own ru_maxrss counts its parent's memory from before it exec'ed)."""

    def __init__(self) -> None:
        import threading

        self.peak_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        me = str(os.getpid())
        while not self._stop.wait(0.2):
            for entry in os.listdir("/proc"):
                if not entry.isdigit():
                    continue
                try:
                    with open(f"/proc/{entry}/status") as handle:
                        status = dict(line.split(":", 1) for line in handle if ":" in line)
                except OSError:
                    continue
                if status.get("PPid", "").strip() == me and "VmRSS" in status:
                    self.peak_kb = max(self.peak_kb, int(status["VmRSS"].split()[0]))

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.peak_kb / 1024


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=1000)
    parser.add_argument("--width", type=int, default=160)
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args(argv)
    from modelparity import localize

    folder = tempfile.mkdtemp(prefix="locate-memory-")
    path = os.path.join(folder, "deep.onnx")
    weights = build(path, args.layers, args.width)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    workers = WorkerPeak()
    start = time.perf_counter()
    result = localize(path, "emulate:fp16", task="multiclass", precision="fp16",
                      samples=args.samples, batch_size=args.batch_size,
                      out=os.path.join(folder, "out"))
    wall = time.perf_counter() - start
    parent = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    child = workers.stop()
    compared = len(result.nodes)
    every = args.samples * args.width * 4 * (2 * args.layers) / 2**20
    print(f"model: {2 * args.layers + 1} nodes, {weights / 2**20:.0f} MB of weights; "
          f"{args.samples} samples, batch {args.batch_size}")
    print(f"nodes compared: {compared}; every intermediate of every sample: {every:.0f} MB "
          f"(per backend)")
    print(f"peak RSS: audit process {parent:.0f} MB (before locate: {before:.0f} MB), "
          f"largest worker {child:.0f} MB (sampled every 0.2 s); wall {wall:.0f} s")
    print(f"first divergent: {result.first}; largest gain: "
          f"{max((n.gain for n in result.nodes), default=float('nan')):.3g}; "
          f"not compared: {len(result.unmatched)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
