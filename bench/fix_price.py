"""What does each fix buy, and what does it cost? `audit(..., fix=True)` on models of three sizes.

For every backend given (default: `openvino:cpu`, whose default on CPUs with native BF16 is
the knowledge base's OV-1), the audit runs the backend as configured and its fixed variant on
the same inputs, against ONNX Runtime CPU. Printed per model: the rules that applied, flips and
max abs error before and after, the measured precision of each, and the median batch latency of
each with their ratio (the price of the fix). Models: the tabular MLPs of bench/overhead.py
(small, medium, large; 64 features, seeded weights), 100k seeded samples.

    .venv/bin/python bench/fix_price.py                      # ~2 min on 2 cores
    .venv/bin/python bench/fix_price.py --backend 'ort:cuda' --backend torch:cuda   # on a GPU

Latency ratios are measured side by side in one audit; absolute times are noisy on shared
machines.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from overhead import MODELS, build_model, describe_model, write_data

from modelparity import audit
from modelparity.environment import cpu_flags, cpu_name


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", action="append", help="backend spec (repeatable)")
    parser.add_argument("--samples", type=int, default=100_000)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--models", default=",".join(MODELS))
    args = parser.parse_args(argv)
    backends = args.backend or ["openvino:cpu"]
    print(f"fix price benchmark on {cpu_name()} ({', '.join(cpu_flags())}); "
          f"{args.samples} samples, batch {args.batch_size}")
    with tempfile.TemporaryDirectory(prefix="modelparity-fix-") as folder:
        data = os.path.join(folder, "x.npy")
        write_data(data, args.samples)
        for name in args.models.split(","):
            path = os.path.join(folder, f"{name}.onnx")
            build_model(path, MODELS[name])
            result = audit(path, backends, data, task="binary", batch_size=args.batch_size,
                           fix=True, profile_samples=5000)
            print(f"\n== {name}: {describe_model(MODELS[name])}")
            for backend in result.candidates:
                if backend.fix_of is None and backend.fixed_by is None:
                    rules = ", ".join(f.rule.id for f in backend.findings) or "none"
                    print(f"  {backend.spec}: {backend.status}; no fix to run (rules: {rules})"
                          + (f"; {backend.error}" if backend.error else ""))
            for outcome in result.fixes:
                ratio = outcome.latency_ratio
                for label, side, spec in (("before", outcome.before, outcome.backend),
                                          ("fixed", outcome.after, outcome.fixed)):
                    p50 = side["p50_ms"]
                    print(f"  {label:6} {spec:45} {side['status']:6} flips {side['flips']!s:>6}"
                          f"  max abs {side['max_abs'] or 0:.2e}  measured "
                          f"{side['measured'] or '-':5}  p50 "
                          + ("-" if p50 is None else f"{p50:.3f} ms"))
                print(f"  rules {', '.join(outcome.rules)}; latency fixed / before: "
                      + ("-" if ratio is None else f"{ratio:.2f}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
