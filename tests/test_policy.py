"""--fail-on policies: the grammar, their evaluation on real audits (ONNX Runtime in worker
processes, a planted backend that flips chosen samples) and the CLI's exit codes."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from modelparity import audit
from modelparity.cli import app
from modelparity.errors import ModelParityError
from modelparity.policy import Policy, PolicyError, evaluate, parse_policies, parse_policy
from modelparity.result import AuditResult

runner = CliRunner()
AGREEING = "ort:cpu?intra_op_num_threads=1"  # the reference runtime again: no flips


def flip_rows(models, count: int = 2) -> list[int]:
    """Samples the reference scores below 0.4: adding 0.6 flips each of them."""
    import onnxruntime as ort

    entry = models["binary"]
    session = ort.InferenceSession(entry["path"], providers=["CPUExecutionProvider"])
    prob = session.run(None, {"x": entry["x"]})[0][:, 0]
    return [int(i) for i in np.flatnonzero(prob < 0.4)[:count]]


def flipping_backend(rows: list[int]) -> str:
    return f"py:planted_backends:make?rows={','.join(map(str, rows))}&nudge=0.6"


@pytest.fixture(scope="module")
def flipped_audit(models, data_files, tmp_path_factory):
    rows = flip_rows(models)
    entry = data_files["binary"]
    out = tmp_path_factory.mktemp("audit")
    audit(models["binary"]["path"], [flipping_backend(rows), AGREEING], entry["data"],
          task="binary", labels=entry["labels"], warmup=0, fingerprint=False, out=str(out))
    result = AuditResult.load(str(out / "report.json"))  # policies gate a saved audit
    assert result.ok
    return result, rows


@pytest.mark.parametrize(("text", "quantity", "op", "value"), [
    ("flips>0", "flips", ">", 0.0),
    ("flips >= 3", "flips", ">=", 3.0),
    ("flip_rate>0.001", "flip_rate", ">", 0.001),
    ("max_abs>1e-4", "max_abs", ">", 1e-4),
    ("max_rel>1e-3", "max_rel", ">", 1e-3),
    ("max_ulp>8", "max_ulp", ">", 8.0),
    ("max_abs<=0", "max_abs", "<=", 0.0),
    ("precision!=fp32", "precision", "!=", "fp32"),
    ("precision==bfloat16", "precision", "==", "bf16"),
    ("reported_precision!=float32", "reported_precision", "!=", "fp32"),
    ("metric.f1<-0.001", "metric.f1", "<", -0.001),
    ("metric.accuracy<-0.01", "metric.accuracy", "<", -0.01),
    ("status!=ok", "status", "!=", "ok"),
    ("findings>0", "findings", ">", 0.0),
])
def test_valid_expressions(text, quantity, op, value):
    policy = parse_policy(text)
    assert (policy.quantity, policy.op, policy.value) == (quantity, op, value)
    assert policy.text == text


@pytest.mark.parametrize(("text", "needle"), [
    ("flips>>0", "cannot read"),
    ("flips=0", "use =="),
    ("flips>", "cannot read"),
    ("", "empty"),
    ("max_abs>1e-4 extra", "cannot read"),
    ("flipz>0", "unknown quantity 'flipz'"),
    ("metric.auc<0", "unknown metric 'auc'"),
    ("flips>many", "'many' is not a number"),
    ("precision>fp32", "only be compared with == or !="),
    ("precision!=fp64", "'fp64' is not a precision value"),
    ("status==broken", "'broken' is not a status value"),
])
def test_malformed_or_unknown_is_one_line_naming_the_expression(text, needle):
    with pytest.raises(PolicyError) as caught:
        parse_policy(text)
    message = str(caught.value)
    assert isinstance(caught.value, ModelParityError)
    assert len(message.splitlines()) == 1
    assert needle in message
    assert f"--fail-on {text!r}" in message
    assert "flips>0" in message and "precision!=fp32" in message  # the valid forms


def test_several_expressions_and_policy_objects():
    policies = parse_policies(["flips>0, max_abs>1e-4", parse_policy("status!=ok")])
    assert [p.text for p in policies] == ["flips>0", "max_abs>1e-4", "status!=ok"]
    assert all(isinstance(p, Policy) for p in policies)
    assert parse_policies(None) == []


def test_evaluate_on_a_real_audit_with_planted_flips(flipped_audit):
    result, rows = flipped_audit
    planted, same = result.candidates
    assert sorted(planted.flips.index.tolist()) == rows
    report = evaluate(result, ["flips>0", "flips>=3", "max_abs>10", "flip_rate>0.001",
                               "metric.accuracy<-0.0001", "status!=ok"])
    verdicts = {(o.policy.text, o.backend): o for o in report.outcomes}
    flips = verdicts["flips>0", planted.spec]
    assert flips.failed and flips.actual == 2
    assert not verdicts["flips>0", same.spec].failed
    assert verdicts["flips>0", same.spec].actual == 0
    assert not verdicts["flips>=3", planted.spec].failed
    assert not verdicts["max_abs>10", planted.spec].failed
    assert verdicts["max_abs>10", planted.spec].actual == pytest.approx(planted.max_abs)
    assert verdicts["flip_rate>0.001", planted.spec].failed
    # metric deltas: candidate minus reference, as the audit computed them
    accuracy = verdicts["metric.accuracy<-0.0001", planted.spec]
    assert accuracy.actual == pytest.approx(planted.metric_deltas["accuracy"])
    assert accuracy.failed == (planted.metric_deltas["accuracy"] < -0.0001)
    assert not any(verdicts["status!=ok", b.spec].failed for b in result.candidates)
    assert report.failed
    assert {(o.policy.text, o.backend) for o in report.failures} >= {
        ("flips>0", planted.spec), ("flip_rate>0.001", planted.spec)}
    assert all(o.backend != result.reference.spec for o in report.outcomes)
    json.dumps(report.to_dict())  # plain JSON
    assert not evaluate(result, ["max_abs>10"]).failed


def test_missing_quantities_are_not_checked_and_do_not_fail(flipped_audit):
    result, _ = flipped_audit
    planted, same = result.candidates
    # fingerprint=False: no measured precision; ort:cpu reports float32, the planted one nothing
    report = evaluate(result, ["precision!=fp32", "reported_precision!=fp32"])
    by = {(o.policy.quantity, o.backend): o for o in report.outcomes}
    assert by["precision", same.spec].verdict == "not checked"
    assert "fingerprint" in by["precision", same.spec].reason
    assert by["reported_precision", same.spec].verdict == "held"
    assert by["reported_precision", same.spec].actual == "fp32"
    assert by["reported_precision", planted.spec].verdict == "not checked"
    assert not report.failed
    # the same audit without labels: metric.* cannot be checked
    unlabelled = dataclasses.replace(result, candidates=[
        dataclasses.replace(c, metric_deltas=None, metrics=None) for c in result.candidates])
    report = evaluate(unlabelled, ["metric.f1<-0.001"])
    assert not report.failed
    assert [o.verdict for o in report.outcomes] == ["not checked", "not checked"]
    assert "no labels" in report.outcomes[0].reason
    assert "not checked (no labels" in report.outcomes[0].describe()
    # a metric the task does not compute
    report = evaluate(result, ["metric.mae>0"])
    assert report.not_checked and "computes no mae" in report.outcomes[0].reason
    # a backend that did not run: only status is checked
    broken = dataclasses.replace(result, candidates=[
        dataclasses.replace(planted, status="failed", error="boom", flips=None)])
    report = evaluate(broken, ["status!=ok", "flips>0"])
    assert [o.verdict for o in report.outcomes] == ["failed", "not checked"]


def run_cli(models, data_files, backend: str, *extra: str):
    entry = data_files["binary"]
    return runner.invoke(app, ["run", models["binary"]["path"], "--backend", backend,
                               "--data", entry["data"], "--labels", entry["labels"],
                               "--warmup", "0", "--no-fingerprint", *extra])


def test_cli_fail_on_flips_exits_1_with_flips_and_writes_reports(models, data_files, tmp_path):
    rows = flip_rows(models)
    junit, summary = tmp_path / "ci" / "results.xml", tmp_path / "summary.md"
    outcome = run_cli(models, data_files, flipping_backend(rows), "--fail-on", "flips>0",
                      "--fail-on", "max_abs>10", "--junit", str(junit),
                      "--markdown", str(summary))
    assert outcome.exit_code == 1, outcome.output
    assert "flips>0 failed (flips = 2)" in outcome.stdout
    assert "max_abs>10 held" in outcome.stdout
    assert "policies: 1 failed, 1 held, 0 not checked" in outcome.stdout
    assert "<failure" in junit.read_text()
    assert "| backend | status |" in summary.read_text()


def test_cli_fail_on_exits_0_without_flips(models, data_files):
    outcome = run_cli(models, data_files, AGREEING, "--fail-on", "flips>0,precision!=fp32")
    assert outcome.exit_code == 0, outcome.output
    assert "flips>0 held (flips = 0)" in outcome.stdout
    assert "precision!=fp32 not checked" in outcome.stdout


def test_cli_malformed_policy_exits_2_with_one_line(models, data_files):
    outcome = run_cli(models, data_files, AGREEING, "--fail-on", "flips>>0")
    assert outcome.exit_code == 2, outcome.output
    text = outcome.stderr.strip()
    assert len(text.splitlines()) == 1, text
    assert text.startswith("error: --fail-on 'flips>>0'")
    assert "Traceback" not in outcome.output


def test_findings_policy_counts_rules_even_when_the_backend_failed(models):
    """A CI gate against silent defaults: findings>0 fails on ort:coreml even where the Core ML
    EP cannot run, and holds on a backend no rule applies to."""
    result = audit(models["binary"]["path"], ["ort:coreml", "ort:cpu?intra_op_num_threads=1"],
                   samples=50, fingerprint=False)
    report = evaluate(result, ["findings>0"])
    verdicts = {o.backend: o for o in report.outcomes}
    assert verdicts["ort:coreml"].failed and verdicts["ort:coreml"].actual == 1
    assert not verdicts["ort:cpu?intra_op_num_threads=1"].failed


@pytest.mark.parametrize("rows", [range(10), range(569)], ids=["some NaN", "all NaN"])
def test_nan_outputs_fail_every_error_gate(models, data_files, rows):
    """A backend that returns NaN where the reference is finite passed max_abs>1e-6 with
    "max abs error 0.00e+00" (NaN is left out of the statistics); all-NaN was "not checked".
    NaN/Inf there is an unbounded error: every error gate fails, and `nonfinite` counts it."""
    nan_backend = f"py:planted_backends:make?rows={','.join(map(str, rows))}&nudge=nan"
    outcome = run_cli(models, data_files, nan_backend, "--fail-on",
                      "max_abs>1e-6,max_rel>1e-6,max_ulp>0,nonfinite>0")
    assert outcome.exit_code == 1, outcome.output
    for gate in ("max_abs>1e-6", "max_rel>1e-6", "max_ulp>0"):
        assert f"{gate} failed ({gate.split('>')[0]} = inf)" in outcome.stdout, outcome.stdout
    assert f"nonfinite>0 failed (nonfinite = {len(rows)})" in outcome.stdout
    assert "policies: 4 failed, 0 held, 0 not checked" in outcome.stdout
    if len(rows) < 50:  # a spec short enough for its table row to show the error column
        row = next(line for line in outcome.stdout.splitlines() if "planted_backends" in line)
        assert " inf " in row and "0.00e+00" not in row  # the table shows the loss, not 0
    clean = run_cli(models, data_files, AGREEING, "--fail-on", "nonfinite>0,max_ulp>0")
    assert clean.exit_code == 0 and "nonfinite>0 held (nonfinite = 0)" in clean.stdout
