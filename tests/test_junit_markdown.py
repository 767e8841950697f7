"""JUnit XML and the Markdown CI summary, from a real audit: ONNX Runtime as the reference, a
planted backend that flips chosen samples, one that fails to load, and one that agrees."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np
import pytest

from modelparity import audit
from modelparity.policy import evaluate
from modelparity.report.junit import write_junit
from modelparity.report.markdown import write_markdown
from modelparity.result import AuditResult

AGREEING = "ort:cpu?intra_op_num_threads=1"
BROKEN = "py:planted_backends:make?fail=load"


@pytest.fixture(scope="module")
def audited(models, data_files, tmp_path_factory):
    import onnxruntime as ort

    entry = models["binary"]
    session = ort.InferenceSession(entry["path"], providers=["CPUExecutionProvider"])
    prob = session.run(None, {"x": entry["x"]})[0][:, 0]
    rows = [int(i) for i in np.flatnonzero(prob < 0.4)[:3]]
    flipping = f"py:planted_backends:make?rows={','.join(map(str, rows))}&nudge=0.6"
    files = data_files["binary"]
    out = tmp_path_factory.mktemp("audit")
    audit(entry["path"], [flipping, BROKEN, AGREEING], files["data"], task="binary",
          labels=files["labels"], warmup=0, fingerprint=False, out=str(out))
    result = AuditResult.load(str(out / "report.json"))  # the reports render a saved audit
    report = evaluate(result, ["flips>0", "max_abs>10", "precision!=fp32"])
    return result, report, flipping, rows


def cases(root: ET.Element) -> dict[str, ET.Element]:
    return {case.get("name"): case for case in root.iter("testcase")}


def test_junit_has_a_case_per_backend_and_check(audited, tmp_path):
    result, report, flipping, rows = audited
    path = write_junit(result, str(tmp_path / "out" / "results.xml"), report)
    root = ET.parse(path).getroot()
    suite = root.find("testsuite")
    assert suite is not None and suite.get("name") == "modelparity"
    found = cases(root)
    for spec in (flipping, BROKEN, AGREEING):
        for check in ("ran", "flips", "policy flips>0", "policy max_abs>10",
                      "policy precision!=fp32"):
            assert f"{spec} / {check}" in found, sorted(found)
    # the flipping backend: a failure listing its flipped samples
    failure = found[f"{flipping} / flips"].find("failure")
    assert failure is not None
    total = result.backend(flipping).flips.total
    assert failure.get("message") == f"3 of {total} decisions flipped against ort:cpu"
    for row in rows:
        assert f"sample {row}: reference score" in failure.text
    policy = found[f"{flipping} / policy flips>0"].find("failure")
    assert policy is not None and "flips = 3" in policy.get("message")
    assert found[f"{flipping} / policy max_abs>10"].find("failure") is None
    # the backend that failed to load: an error, and its other checks skipped
    error = found[f"{BROKEN} / ran"].find("error")
    assert error is not None and "planted failure while loading" in error.get("message")
    assert found[f"{BROKEN} / flips"].find("skipped") is not None
    # the agreeing backend passes everything it can check; precision was not measured
    for check in ("ran", "flips", "policy flips>0", "policy max_abs>10"):
        assert len(found[f"{AGREEING} / {check}"]) == 0, check
    skipped = found[f"{AGREEING} / policy precision!=fp32"].find("skipped")
    assert skipped is not None and "not checked" in skipped.get("message")
    assert suite.get("errors") == "1"
    assert suite.get("failures") == "2"
    assert int(suite.get("tests")) == len(found)


def test_junit_without_policies(audited, tmp_path):
    result, _, flipping, _ = audited
    root = ET.parse(write_junit(result, str(tmp_path / "plain.xml"))).getroot()
    names = set(cases(root))
    assert f"{flipping} / flips" in names
    assert not any("/ policy" in name for name in names)


def test_markdown_summary(audited, tmp_path):
    result, report, flipping, rows = audited
    path = write_markdown(result, str(tmp_path / "summary.md"), report)
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    lines = text.splitlines()
    assert lines[0].startswith("## modelparity: ❌")
    header = ("| backend | status | precision reported / measured | max abs error | flips "
              "| metric changes | p50 ms/batch |")
    at = lines.index(header)
    table = lines[at + 2: at + 2 + len(result.backends)]
    assert table[0].startswith("| `ort:cpu` | ref |")
    flipped_row = next(line for line in table if flipping in line)
    total = result.backend(flipping).flips.total
    assert f"**3 / {total}**" in flipped_row
    assert flipped_row.count(" | ") == 6  # seven cells
    assert any(BROKEN in line and "**failed**" in line for line in table)
    assert any(AGREEING in line and f"| 0 / {total} |" in line for line in table)
    assert "### Policies" in text
    assert f"| `flips>0` | `{flipping}` | 3 | ❌ failed |" in text
    assert f"| `flips>0` | `{AGREEING}` | 0 | ✅ held |" in text
    assert "➖ not checked" in text
    assert f"### {flipping}: 3 flipped decision(s)" in text
    for row in rows:
        assert any(line.startswith(f"| {row} | ") for line in lines), row


def test_control_characters_never_break_the_xml(audited, tmp_path):
    """A control character in a node name reached results.xml through ORT's error text, and
    the file no longer parsed. XML 1.0 forbids them: they are replaced."""
    import dataclasses

    result = audited[0]
    hostile = "node \x1b[31mconv\x00\x07 failed\x0c"
    broken = dataclasses.replace(result.candidates[1], error=hostile, status="failed")
    result = dataclasses.replace(result, candidates=[result.candidates[0], broken,
                                                     *result.candidates[2:]])
    root = ET.parse(write_junit(result, str(tmp_path / "hostile.xml"))).getroot()
    error = next(case.find("error") for case in root.iter("testcase")
                 if case.find("error") is not None)
    assert error.get("message") == "node \ufffd[31mconv\ufffd\ufffd failed\ufffd"
