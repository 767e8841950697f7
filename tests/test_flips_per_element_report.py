"""Flips decided per element (a map per pixel, a sequence per time step) in report.json and in
every rendering: sample and element totals, each listed flip's position and flipped elements.
And the terminal and the HTML stay bounded for outputs with thousands of classes."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import jsonschema
import numpy as np
from rich.console import Console

from modelparity.decisions import Flips, Metrics
from modelparity.report.html import MAX_CONFUSED_PAIRS, render_html
from modelparity.report.junit import build_junit
from modelparity.report.markdown import render_markdown
from modelparity.report.terminal import render
from modelparity.result import AuditResult, BackendResult

SCHEMA = Path(__file__).parents[1] / "src" / "modelparity" / "report" / "schema.json"
TOTALS = "12 / 40 samples (3,411 of 1,228,800 elements)"


def element_flips() -> Flips:
    """12 of 40 samples of a 1x160x192 map flipped: 3,411 of 1,228,800 pixels."""
    rng = np.random.default_rng(3)
    index = np.sort(rng.choice(40, size=12, replace=False))
    margin = rng.uniform(1e-4, 1e-2, size=12)
    margin[4] = 1e-6  # listed first: closest to the boundary
    position = [(int(r), int(c)) for r, c in zip(rng.integers(0, 160, 12),
                                                  rng.integers(0, 192, 12), strict=True)]
    position[4] = (120, 33)
    flipped = rng.integers(1, 600, size=12)
    flipped[4] = 17
    flipped[-1] += 3411 - int(flipped.sum())  # the per-sample counts add up to the total
    return Flips(
        count=12, total=40, index=index,
        reference_score=0.5 + margin, candidate_score=0.5 - margin, reference_margin=margin,
        reference_decision=[1] * 12, candidate_decision=[0] * 12,
        position=position, flipped_elements=flipped, elements=40 * 160 * 192,
        elements_flipped=3411,
    )


def result_with(flips: Flips, *, metrics: tuple[Metrics, Metrics] | None = None,
                class_names: list[str] | None = None, kind: str = "binary") -> AuditResult:
    reference = BackendResult(spec="ort:cpu", role="reference",
                              metrics=metrics[0] if metrics else None)
    candidate = BackendResult(spec="openvino:cpu", role="candidate", flips=flips,
                              metrics=metrics[1] if metrics else None,
                              metric_deltas={"accuracy": -0.001} if metrics else None)
    return AuditResult(
        model={"source": "unet.onnx", "onnx_path": "unet.onnx", "exporter": None,
               "inputs": [], "outputs": []},
        inputs={"source": "tiles.npz", "samples": flips.total, "batch_size": 4},
        task={"kind": kind, "output": "mask", "threshold": 0.5},
        labels=None, reference=reference, candidates=[candidate],
        environment={"modelparity": "test", "python": "3", "platform": "linux"},
        class_names=class_names,
    )


def test_per_element_flips_round_trip_through_report_json():
    flips = element_flips()
    assert flips.per_element and flips.elements == 1_228_800
    result = result_with(flips)
    data = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    jsonschema.validate(data, json.loads(SCHEMA.read_text()))
    saved = data["candidates"][0]["flips"]
    assert saved["elements"] == 1_228_800 and saved["elements_flipped"] == 3411
    assert saved["listed"][0]["position"] == [120, 33]
    assert saved["listed"][0]["flipped_elements"] == 17
    loaded = AuditResult.from_dict(data)
    back = loaded.candidates[0].flips
    assert back.per_element and back.elements_flipped == 3411
    assert back.position == flips.position
    assert back.flipped_elements.tolist() == flips.flipped_elements.tolist()
    assert loaded.to_dict() == data


def test_terminal_shows_element_totals_and_positions():
    console = Console(record=True, width=220)
    render(result_with(element_flips()), console, show_flips=5)
    text = console.export_text()
    assert TOTALS in text  # the summary row
    assert f"openvino:cpu: {TOTALS} flipped, closest to the boundary first" in text
    header = next(line for line in text.splitlines() if "reference score" in line)
    assert "position" in header and "flipped" in header
    first = next(line for line in text.splitlines() if "(120, 33)" in line)
    assert re.search(r"\b17\b", first) and "1 -> 0" in first
    # 5 listed rows, each with a position
    assert len(re.findall(r"\(\d+, \d+\)", text)) == 5


def test_per_sample_flips_get_no_element_columns():
    flips = element_flips()
    plain = Flips(flips.count, flips.total, flips.index, flips.reference_score,
                  flips.candidate_score, flips.reference_margin, flips.reference_decision,
                  flips.candidate_decision)
    console = Console(record=True, width=220)
    render(result_with(plain), console)
    text = console.export_text()
    assert "12 / 40" in text and "elements" not in text and "position" not in text
    assert "position" not in render_html(result_with(plain))


def test_html_markdown_and_junit_show_element_totals_and_positions():
    result = result_with(element_flips())
    html = render_html(result)
    assert TOTALS in html
    assert "<th>position</th><th>flipped elements</th>" in html
    assert '<td class="num">(120, 33)</td><td class="num">17</td>' in html

    markdown = render_markdown(result)
    assert TOTALS in markdown
    assert "| decision | position | flipped elements |" in markdown
    assert "| 1 → 0 | (120, 33) | 17 |" in markdown

    root = build_junit(result)
    failure = next(c for c in root.iter("testcase")
                   if c.get("name") == "openvino:cpu / flips").find("failure")
    assert TOTALS in failure.get("message")
    assert "at (120, 33), 17 element(s) flipped" in failure.text
    ET.tostring(root)  # still serialises


def big_confusion_result(classes: int = 6625) -> AuditResult:
    """A 6,625-class classifier (say, a product catalogue) with labels: two full confusion
    matrices and 6,625 class names."""
    rng = np.random.default_rng(0)
    reference = np.zeros((classes, classes), dtype=np.int8)
    reference[np.arange(classes), np.arange(classes)] = 3
    rows, cols = rng.integers(0, classes, 200), rng.integers(0, classes, 200)
    reference[rows, cols] = 1
    candidate = reference.copy()
    candidate[17, 4242] += 5  # the confusion the candidate made
    names = [f"product <{i}>" for i in range(classes)]
    flips = Flips(count=5, total=classes * 3, index=np.arange(5),
                  reference_score=np.full(5, 0.4), candidate_score=np.full(5, 0.39),
                  reference_margin=np.full(5, 1e-3), reference_decision=[17] * 5,
                  candidate_decision=[4242] * 5)
    return result_with(flips, kind="multiclass", class_names=names, metrics=(
        Metrics({"accuracy": 0.9}, reference, list(range(classes))),
        Metrics({"accuracy": 0.899}, candidate, list(range(classes)))))


def test_thousands_of_classes_keep_the_terminal_and_the_html_bounded():
    result = big_confusion_result()
    console = Console(record=True, width=160)
    render(result, console)
    lines = console.export_text().splitlines()
    assert len(lines) < 300
    assert any("6,625 classes, too many to print here" in line for line in lines)
    assert any("product <17> (17) -> product <4242> (4242)" in line for line in lines)

    html = render_html(result)
    assert len(html) < 500_000
    assert "6,625 classes, too many for a matrix" in html
    # the candidate's table lists the pair it changed first, escaped
    changed = html.split("openvino:cpu (change vs reference)")[1]
    first_row = changed.split("<tbody>")[1].split("</tr>")[0]
    assert "product &lt;17&gt; (17)" in first_row and "product &lt;4242&gt; (4242)" in first_row
    assert "+5" in first_row
    assert changed.split("</table>")[0].count("<tr>") == 2  # the header and the one change
    most = html.split("ort:cpu (reference)")[1].split("</table>")[0]
    assert most.count("<tr>") == MAX_CONFUSED_PAIRS + 1  # the reference's most frequent
    assert "<product" not in html
