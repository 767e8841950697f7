"""Capture anywhere, compare anywhere (issue 14, part 1): a backend's outputs kept as a capture
folder and compared elsewhere give the numbers a direct run gives; Polygraphy's own results
are read as captures; captures that do not belong together are refused in one line."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

import modelparity
from modelparity.capture import Capture, capture
from modelparity.capture.compare import compare
from modelparity.cli import app

PLANTED = "py:planted_backends:make"


def _same_backend(ours, theirs) -> None:
    """What a compare must reproduce of a direct run: errors, flips, fingerprint, metrics."""
    assert ours.ok and theirs.ok, (ours.error, theirs.error)
    assert ours.flips.count == theirs.flips.count
    assert np.array_equal(ours.flips.index, theirs.flips.index)
    assert np.array_equal(ours.flips.candidate_score, theirs.flips.candidate_score)
    for name, stats in theirs.errors.items():
        mine = ours.errors[name]
        assert (mine.max_abs, mine.mean_abs, mine.norm_error, mine.count) == \
            (stats.max_abs, stats.mean_abs, stats.norm_error, stats.count)
    if theirs.fingerprint is not None:
        assert ours.fingerprint.verdict == theirs.fingerprint.verdict
        assert ours.fingerprint.distances == pytest.approx(theirs.fingerprint.distances)
    if theirs.metrics is not None:
        assert ours.metrics.values == theirs.metrics.values
        assert np.array_equal(ours.metrics.confusion, theirs.metrics.confusion)


@pytest.fixture(scope="module")
def captured(models, data_files, tmp_path_factory):
    folder = tmp_path_factory.mktemp("captures")
    path, data = models["binary"]["path"], data_files["binary"]["data"]
    made = {name: str(folder / f"{name}.mpc") for name in ("ref", "fp16", "openvino")}
    capture(path, "ort:cpu", data, out=made["ref"], batch_size=64)
    capture(path, "emulate:fp16", data, out=made["fp16"], batch_size=100)
    capture(path, "openvino:cpu", data, out=made["openvino"], batch_size=64)
    return {"model": path, "data": data, "labels": data_files["binary"]["labels"], **made}


def test_capture_then_compare_equals_a_direct_run(captured, engine):
    """Two backends captured on their own, compared later without the data (the captures
    kept the inputs): the same errors, flips, fingerprints and metrics as one direct run."""
    direct = modelparity.audit(captured["model"], ["emulate:fp16", "openvino:cpu"],
                               captured["data"], labels=captured["labels"], batch_size=64)
    # the captures replay at any batch size; the yardsticks run here, and INT8's dynamic
    # quantization scales per batch, so the fingerprint is the direct run's at its batch size
    later = compare([captured["ref"], captured["fp16"], captured["openvino"]],
                    labels=captured["labels"], batch_size=64)
    assert later.reference.spec == f"capture:{captured['ref']}"
    for ours, theirs in zip(later.candidates, direct.candidates, strict=True):
        _same_backend(ours, theirs)
    fp16 = later.candidates[0]
    assert fp16.description["capture"]["spec"] == "emulate:fp16"
    assert fp16.description["emulates"] == "fp16"  # the captured backend's own description
    manifest = Capture(captured["fp16"]).manifest
    assert fp16.latency.p50_ms == manifest.latency["p50_ms"]  # as measured when captured


def test_a_live_backend_and_captures_mix(captured, engine):
    # OpenVINO's last bits depend on the batch size and on the outputs the model has (a
    # capture runs it as an audit with the fingerprint does: with the Sigmoid's input as an
    # output too), so the direct run is made the same way
    mixed = compare([captured["ref"], "emulate:fp16", captured["openvino"]], batch_size=64)
    direct = modelparity.audit(captured["model"], ["emulate:fp16", "openvino:cpu"],
                               captured["data"], batch_size=64)
    assert mixed.candidates[0].spec == "emulate:fp16"
    for ours, theirs in zip(mixed.candidates, direct.candidates, strict=True):
        _same_backend(ours, theirs)


def test_findings_are_judged_on_the_machine_the_capture_was_taken_on(captured, tmp_path):
    """OpenVINO's BF16 default (OV-1) depends on the CPU: a capture taken on a CPU with
    avx512_bf16 carries the rule, whatever CPU compares it, and its FP32 outputs say the
    measurement overrules it."""
    xeon = tmp_path / "xeon.mpc"
    shutil.copytree(captured["openvino"], xeon)
    manifest = json.loads((xeon / "manifest.json").read_text())
    manifest["environment"].update(cpu_flags=["avx512f", "avx512_bf16"], system="linux",
                                   machine="x86_64")
    (xeon / "manifest.json").write_text(json.dumps(manifest))
    here = compare([captured["ref"], str(xeon)])
    taken = next(f for f in here.candidates[0].findings if f.rule.id == "OV-1")
    # the outputs are this machine's: FP32 where it has no BF16, and then the measurement
    # contradicts the rule; BF16 where it has, and then it confirms it
    measured = here.candidates[0].fingerprint.verdict
    assert taken.agreement == {"fp32": "contradicted", "bf16": "confirmed"}[measured]


def test_polygraphy_results_compare_like_a_capture(captured, tmp_path):
    """Polygraphy itself (its ONNX Runtime runner) writes results and inputs; compared as the
    reference, they give the errors the same candidate shows against our ONNX Runtime."""
    polygraphy = shutil.which("polygraphy", path=os.path.dirname(sys.executable))
    if polygraphy is None:
        pytest.skip("Polygraphy is not installed (pip install polygraphy)")
    from polygraphy.json import save_json

    x = np.load(captured["data"])["x"][:96]
    save_json([{"x": x[i:i + 32]} for i in range(0, 96, 32)], str(tmp_path / "feeds.json"))
    subprocess.run([polygraphy, "run", captured["model"], "--onnxrt", "--load-inputs",
                    str(tmp_path / "feeds.json"), "--save-inputs", str(tmp_path / "in.json"),
                    "--save-outputs", str(tmp_path / "out.json")], check=True,
                   capture_output=True)
    np.savez(tmp_path / "x96.npz", x=x)
    fp16 = str(tmp_path / "fp16.mpc")
    capture(captured["model"], "emulate:fp16", str(tmp_path / "x96.npz"), out=fp16)
    theirs = compare([str(tmp_path / "out.json"), fp16],
                     polygraphy_inputs=str(tmp_path / "in.json"), fingerprint=False)
    direct = modelparity.audit(captured["model"], ["emulate:fp16"], str(tmp_path / "x96.npz"),
                               fingerprint=False)
    assert theirs.reference.description["runtime"] == "polygraphy"
    _same_backend(theirs.candidates[0], direct.candidates[0])


def test_an_interrupted_capture_resumes_to_the_same_capture(models, data_files, tmp_path):
    """The backend fails after its first block was written; --resume runs the rest only and
    the capture equals one taken in one go."""
    path, data = models["binary"]["path"], data_files["binary"]["data"]
    once = tmp_path / "failed-once"
    out = tmp_path / "flaky.mpc"
    # 569 samples in batches of 2: a block goes out when it holds 256 batches (or after
    # 0.25 s), so a failure in batch 270 comes after at least one whole shard
    flaky = f"{PLANTED}?fail=raise&at=270&once={once}"
    with pytest.raises(modelparity.ModelParityError, match="planted failure"):
        capture(path, flaky, data, out=str(out), batch_size=2, warmup=0)
    assert once.exists()
    partial = json.loads((out / "manifest.json").read_text())
    assert not partial["complete"] and 0 < partial["samples"] < 569
    with pytest.raises(modelparity.ModelParityError, match="holds a capture already"):
        capture(path, flaky, data, out=str(out), batch_size=2, warmup=0)
    resumed = capture(path, flaky, data, out=str(out), batch_size=2, warmup=0, resume=True)
    whole = capture(path, flaky, data, out=str(tmp_path / "whole.mpc"), batch_size=2,
                    warmup=0)
    assert resumed.complete and resumed.samples == whole.samples == 569
    assert len(resumed.shards) > 1
    first, second = Capture(str(out)), Capture(str(tmp_path / "whole.mpc"))
    assert np.array_equal(first.digests(), second.digests())
    assert np.array_equal(first.lookup(first.digests())["prob"],
                          second.lookup(second.digests())["prob"])


@pytest.mark.parametrize("case", ["other model", "other inputs", "other shapes", "interrupted",
                                  "not a capture", "polygraphy without inputs",
                                  "capture a capture"])
def test_captures_that_do_not_belong_together_are_one_line(captured, models, tmp_path, case):
    if case == "other model":
        other = str(tmp_path / "digits.mpc")
        capture(models["multiclass"]["path"], "ort:cpu", out=other, samples=16)
        args, needle = ["compare", captured["ref"], other], "captured from another model"
    elif case == "other inputs":
        other = str(tmp_path / "few.mpc")
        capture(captured["model"], "ort:cpu", out=other, samples=16)
        args, needle = ["compare", captured["ref"], other], "captured on other inputs"
    elif case == "other shapes":  # the same samples, an output twice as wide per sample
        from safetensors.numpy import load_file, save_file

        wide = tmp_path / "wide.mpc"
        shutil.copytree(captured["fp16"], wide)
        for shard in sorted(wide.glob("shard-*.safetensors")):
            tensors = load_file(str(shard))
            name = sorted(k for k in tensors if k.startswith("out/"))[0]
            tensors[name] = np.ascontiguousarray(np.stack([tensors[name]] * 2, axis=-1))
            save_file(tensors, str(shard))
        args, needle = ["compare", captured["ref"], str(wide)], "per sample,"
    elif case == "interrupted":
        broken = tmp_path / "broken.mpc"
        shutil.copytree(captured["fp16"], broken)
        manifest = json.loads((broken / "manifest.json").read_text())
        manifest["complete"] = False
        (broken / "manifest.json").write_text(json.dumps(manifest))
        args, needle = ["compare", captured["ref"], str(broken)], "was interrupted"
    elif case == "not a capture":
        (tmp_path / "empty.mpc").mkdir()
        args, needle = ["compare", captured["ref"], str(tmp_path / "empty.mpc")], \
            "no manifest.json; not a capture folder"
    elif case == "polygraphy without inputs":
        (tmp_path / "out.json").write_text("{}")
        args, needle = ["compare", captured["ref"], str(tmp_path / "out.json")], \
            "give the file it saved with --save-inputs"
    else:
        args, needle = ["capture", captured["model"], "-b", f"capture:{captured['ref']}",
                        "-o", str(tmp_path / "again.mpc")], "already a capture"
    outcome = CliRunner().invoke(app, args, terminal_width=400)
    assert outcome.exit_code == 2, outcome.output
    assert needle in outcome.output, outcome.output
    assert len(outcome.output.strip().splitlines()) == 1
