"""The audit's stages: a plan checked before anything runs, one identity per configuration,
results that load back, and a saved report gated like the run."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from modelparity import audit
from modelparity.backends import parse_spec
from modelparity.errors import SpecError
from modelparity.plan import Settings, make_plan
from modelparity.result import AuditResult

# every test here runs on the local engine and on Ray (conftest.engine)
pytestmark = pytest.mark.usefixtures("engine")


@pytest.mark.parametrize(("text", "suggestion"), [
    ("ort:cpu?intra_op_num_thread=1", "intra_op_num_threads"),
    ("ort:cuda?use_tf3=0", "use_tf32"),
    ("openvino:cpu?INFERENCE_PRECISION=f32", "INFERENCE_PRECISION_HINT"),
    ("torch:cpu?thread=2", "threads"),
])
def test_misspelt_options_are_refused_with_the_known_ones(text, suggestion):
    with pytest.raises(SpecError) as info:
        parse_spec(text)
    message = str(info.value)
    assert "\n" not in message and message.startswith(text.split("?")[0])
    assert f"did you mean {suggestion}?" in message


def test_a_bad_spec_fails_the_audit_before_any_backend_runs(models, data_files, tmp_path):
    entry = data_files["binary"]
    with pytest.raises(SpecError, match="intra_op_num_threads"):
        audit(models["binary"]["path"], ["openvino:cpu", "ort:cpu?intra_op_num_thread=1"],
              entry["data"], out=str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()  # nothing was started, not even the model export


def test_lint_refuses_a_misspelt_option_instead_of_suggesting_a_fix_beside_it():
    done = subprocess.run([sys.executable, "-m", "modelparity.cli", "lint", "-b",
                           "ort:cuda?use_tf3=0"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "did you mean use_tf32?" in done.stderr
    assert "use_tf3=0&use_tf32=0" not in done.stdout + done.stderr


def test_option_order_does_not_make_two_backends():
    plan = make_plan(["ort:cpu?intra_op_num_threads=1&graph_optimization_level=basic",
                      "ort:cpu?graph_optimization_level=basic&intra_op_num_threads=1",
                      "ort:CPUExecutionProvider?graph_optimization_level=basic"
                      "&intra_op_num_threads=1"],
                     "ort:cpu", Settings(fingerprint=False))
    assert [p.text for p in plan.candidates] == [
        "ort:cpu?intra_op_num_threads=1&graph_optimization_level=basic"]


def test_spec_text_round_trips_characters_that_mean_something_in_a_query():
    spec = parse_spec("ort:cpu?session.x=a%2Bb%26c%3Dd%25e&env.NAME=1%202")
    assert spec.options == {"session.x": "a+b&c=d%e"} and spec.env == {"NAME": "1 2"}
    assert parse_spec(spec.text) == spec


def test_fixed_variants_and_yardsticks_are_planned_by_canonical_spec():
    plan = make_plan(["openvino:cpu"], "ort:cpu", Settings(fix=True))
    texts = [p.text for p in plan.candidates]
    # the fixed variant follows the candidate it fixes (OV-1 fires on CPUs with native BF16)
    if len(texts) == 2:
        assert texts[1] == "openvino:cpu?INFERENCE_PRECISION_HINT=f32"
        assert plan.candidates[0].fixed_by == texts[1] and plan.candidates[1].fix_of == texts[0]
    labels = [p.label for p in plan.yardsticks]
    assert labels[0] == "fp32" and "bf16 layer" in labels
    assert len({p.key for p in plan.backends}) == len(plan.backends)


def test_fp32_noise_has_several_yardsticks_and_none_runs_where_it_cannot():
    """The FP32 band comes from several FP32 implementations; a candidate that is one serves
    as it, the batch-size yardstick runs at its own batch size, and `fitted` drops those that
    cannot run on the model."""
    plan = make_plan(["openvino:cpu?INFERENCE_PRECISION_HINT=f32"], "ort:cpu")
    by_label = {p.label: p for p in plan.yardsticks}
    assert {"fp32", "fp32 batch", "fp32 torch"} <= set(by_label)
    assert "fp32 openvino" not in by_label  # the candidate is that yardstick
    assert plan.candidates[0].label == "fp32 openvino"
    batch = by_label["fp32 batch"]
    assert batch.batch_size == 1 and batch.key == "ort:cpu [batch 1]" != plan.reference.key
    assert by_label["fp32"].batch_size is None
    fitted = plan.fitted({"fp32 torch": "the model is not a PyTorch model"})
    assert "fp32 torch" not in {p.label for p in fitted.yardsticks}
    assert len(fitted.yardsticks) == len(plan.yardsticks) - 1
    assert make_plan(["openvino:cpu"], "ort:cpu", Settings(fingerprint=False)).yardsticks == ()


def test_results_load_back_from_report_json(models, data_files, tmp_path):
    entry = data_files["binary"]
    out = tmp_path / "out"
    result = audit(models["binary"]["path"], ["emulate:fp16", "openvino:cpu"], entry["data"],
                   labels=entry["labels"], batch_size=128, profile_samples=400, fix=True,
                   out=str(out))
    saved = json.loads((out / "report.json").read_text())
    loaded = AuditResult.from_dict(saved)
    assert loaded.to_dict() == saved
    again = AuditResult.load(str(out / "report.json"))
    fp16 = again.backend("emulate:fp16")
    assert fp16.decided is not None  # the decisions saved beside report.json came back
    assert (fp16.decided.score == result.backend("emulate:fp16").decided.score).all()
    assert fp16.flips.count == result.backend("emulate:fp16").flips.count
    with pytest.raises(dataclasses_frozen()):
        fp16.status = "failed"  # type: ignore[misc]


def dataclasses_frozen() -> type[Exception]:
    import dataclasses

    return dataclasses.FrozenInstanceError


def test_report_refuses_a_file_that_is_not_a_report(tmp_path):
    bogus = tmp_path / "report.json"
    bogus.write_text(json.dumps({"tool": "something else"}))
    done = subprocess.run([sys.executable, "-m", "modelparity.cli", "report", str(bogus)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "not a modelparity report" in done.stderr and "Traceback" not in done.stderr


def test_a_long_spec_still_names_its_files():
    """A spec with a long option (a list of 569 rows) made a log name over 255 bytes, and the
    audit died with OSError: File name too long."""
    from modelparity.spec import SLUG_LIMIT, slug

    long_a = "py:planted_backends:make?rows=" + ",".join(map(str, range(569))) + "&nudge=nan"
    long_b = long_a.replace("nudge=nan", "nudge=inf")
    assert len(slug(long_a)) == SLUG_LIMIT and slug(long_a) != slug(long_b)
    assert slug(long_a).startswith("py_planted_backends_make_rows=0_1_2")
    assert slug("ort:cpu?intra_op_num_threads=1") == "ort_cpu_intra_op_num_threads=1"
