"""The HTML report (`modelparity.report.html`): built from real audits of real ONNX models, then
opened in a real headless Chromium (Debian's; `scripts/install-chromium` installs it), which must
lay out every chart with drawn marks and log no console error. A screenshot is kept under
tests/artifacts/ to look at."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import pytest

from modelparity import TaskConfig, audit
from modelparity.report.html import render_html, write_html
from modelparity.result import AuditResult

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).parent / "artifacts"
PLANTED = "py:planted_backends:make?rows=0,1&nudge=0.6"  # rows 0 and 1 score ~0: both flip
SECTIONS = ("Summary", "Precision fingerprint", "Error histograms",
            "Scores: reference vs candidate", "Confusion matrices", "Flipped decisions",
            "At-risk samples", "Latency")


class _Charts(HTMLParser):
    """The <svg class="chart"> elements with their attributes and the marks drawn inside."""

    def __init__(self) -> None:
        super().__init__()
        self.charts: list[dict] = []
        self.headings: list[str] = []
        self._depth = 0
        self._heading: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "svg" and "chart" in (attributes.get("class") or "").split():
            self.charts.append({"attrs": attributes, "marks": 0})
            self._depth = 1
        elif tag == "svg" and self._depth:
            self._depth += 1
        if self._depth and tag in ("rect", "path", "circle"):
            self.charts[-1]["marks"] += 1
        if tag == "h2":
            self._heading = []

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag == "svg" and self._depth:
            self._depth -= 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "svg" and self._depth:
            self._depth -= 1
        if tag == "h2" and self._heading is not None:
            self.headings.append("".join(self._heading).strip())
            self._heading = None

    def handle_data(self, data: str) -> None:
        if self._heading is not None:
            self._heading.append(data)


def _parse(document: str) -> _Charts:
    parser = _Charts()
    parser.feed(document)
    parser.close()
    return parser


def _assert_offline(document: str) -> None:
    """No script, stylesheet, image, font or frame is fetched from anywhere."""
    assert "<script" not in document.lower()
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", document, re.I)
    assert not re.search(r"""url\(\s*["']?\s*(?:https?:)?//""", document, re.I)
    assert "@import" not in document
    assert "<link" not in document.lower()
    # the only http(s) text is the SVG namespace name, which is never fetched
    remaining = re.sub(r'xmlns="http://www\.w3\.org/2000/svg"', "", document)
    assert "http://" not in remaining and "https://" not in remaining


@pytest.fixture(scope="module")
def binary_audit(models, data_files, tmp_path_factory):
    """A saved audit, loaded back: the renderers draw what report.json (and the decisions saved
    beside it) holds."""
    entry = data_files["binary"]
    out = tmp_path_factory.mktemp("audit")
    result = audit(models["binary"]["path"], [PLANTED, "emulate:bf16"], entry["data"],
                   task="binary", labels=entry["labels"], warmup=0, profile_samples=300,
                   out=str(out))
    assert result.ok
    assert result.backend(PLANTED).flips.count == 2
    return AuditResult.load(str(out / "report.json"))


@pytest.fixture(scope="module")
def binary_report(binary_audit, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("html") / "report.html"
    assert write_html(binary_audit, str(path)) == str(path)
    return path


def test_binary_report_has_every_section_and_chart(binary_audit, binary_report):
    document = binary_report.read_text(encoding="utf-8")
    _assert_offline(document)
    parsed = _parse(document)
    assert parsed.headings == list(SECTIONS)
    kinds = [chart["attrs"]["data-chart"] for chart in parsed.charts]
    # per candidate: fingerprint distances, two error histograms (the output, and the logits
    # before its Sigmoid, probed), one score scatter; then one latency chart for all
    assert sorted(kinds) == sorted(["distances"] * 2 + ["histogram"] * 4 + ["scatter"] * 2
                                   + ["latency"])
    assert document.count("<svg") == 9
    assert "the input of the final activation of" in document
    for chart in parsed.charts:
        assert float(chart["attrs"]["width"]) > 0 and float(chart["attrs"]["height"]) > 0
        assert chart["marks"] > 0
    planted = binary_audit.backend(PLANTED)
    # the flip table lists both planted flips with their sample numbers
    for index in planted.flips.index:
        assert f'<td class="num">{int(index)}</td>' in document
    # the emulated-bf16 candidate is measured as bf16, and its band is drawn at the threshold
    assert binary_audit.backend("emulate:bf16").fingerprint.verdict == "bf16"
    assert "bf16 rounding band [0.5, 0.501953]" in document
    # emulation profiles are overlaid on the histograms
    assert "emulated fp16" in document and "fp32 noise" in document
    # the flipped samples are marked in the scatter, with their numbers as tooltips
    assert document.count("<circle") >= 2
    assert len(document.encode()) < 500_000


def test_text_is_escaped(binary_audit):
    binary_audit.model["source"] = "<script>alert('x')</script>&"
    try:
        document = render_html(binary_audit)
    finally:
        binary_audit.model["source"] = binary_audit.model["onnx_path"]
    assert "<script>" not in document
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;&amp;" in document


def test_regression_without_fingerprint_omits_what_has_no_data(models, data_files, tmp_path):
    entry = data_files["regression"]
    result = audit(models["regression"]["path"], ["ort:cpu?intra_op_num_threads=1"],
                   entry["data"], task=TaskConfig(kind="regression"), labels=entry["labels"],
                   warmup=0, fingerprint=False)
    assert result.ok
    path = write_html(result, str(tmp_path / "regression.html"))
    document = Path(path).read_text(encoding="utf-8")
    _assert_offline(document)
    parsed = _parse(document)
    assert parsed.headings[0] == "Summary" and parsed.headings[-1] == "Latency"
    for absent in ("Precision fingerprint", "Scores: reference vs candidate",
                   "Confusion matrices", "At-risk samples"):
        assert absent not in parsed.headings
    kinds = {chart["attrs"]["data-chart"] for chart in parsed.charts}
    assert "scatter" not in kinds and "distances" not in kinds and "latency" in kinds


def test_large_audit_stays_small(models, tmp_path):
    """20k samples: the scatter keeps <= 5000 points and the file stays under 500 KB."""
    import numpy as np

    x = models["binary"]["x"]
    rng = np.random.default_rng(1)
    rows = rng.integers(0, len(x), size=20_000)
    jittered = x[rows] * rng.normal(1.0, 0.02, size=(20_000, x.shape[1])).astype(np.float32)
    data = tmp_path / "big.npz"
    np.savez(data, x=jittered.astype(np.float32))
    result = audit(models["binary"]["path"], ["emulate:bf16"], str(data), task="binary",
                   warmup=0, profile_samples=300, batch_size=2048)
    document = render_html(result)
    assert len(document.encode()) < 500_000
    assert "5000 of 20000 samples drawn" in document
    assert document.count("<circle") <= 2 * 500 + 10  # flips: at most 500 marked per panel


# ---------------------------------------------------------------------------- real browser


def _chromium(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", f"--user-data-dir={profile}", "--enable-logging=stderr",
             "--v=0", *args],
            capture_output=True, text=True, timeout=timeout, check=False,
            env={**os.environ, "HOME": profile})


def _console_errors(stderr: str) -> list[str]:
    """Console output of the page: the report runs no script, so any line is an error."""
    return [line for line in stderr.splitlines()
            if ":CONSOLE" in line or "Uncaught" in line]


# Test-only probe, appended to a copy of the report: writes what the browser laid out into the
# DOM (the report itself has no script), so --dump-dom shows rendered sizes and drawn marks.
PROBE = """<script>
for (const svg of document.querySelectorAll('svg.chart')) {
  const box = svg.getBoundingClientRect();
  let drawn = 0;
  for (const mark of svg.querySelectorAll('rect, path, circle')) {
    const b = mark.getBBox();
    if (b.width > 0 || b.height > 0) drawn++;
  }
  svg.setAttribute('data-rendered-width', box.width);
  svg.setAttribute('data-rendered-height', box.height);
  svg.setAttribute('data-drawn', drawn);
}
document.body.setAttribute('data-probed', 'yes');
</script>"""

needs_chromium = pytest.mark.skipif(
    not os.path.exists(CHROMIUM),
    reason=f"{CHROMIUM} is absent: run scripts/install-chromium (Debian's chromium package)")


@needs_chromium
def test_console_capture_sees_errors(tmp_path):
    """The check below would be vacuous if Chromium's console never reached stderr."""
    page = tmp_path / "broken.html"
    page.write_text("<html><body><script>throw new Error('planted')</script></body></html>")
    run = _chromium("--dump-dom", page.as_uri())
    assert any("Uncaught" in line for line in _console_errors(run.stderr)), run.stderr[-2000:]


@needs_chromium
def test_report_renders_in_chromium(binary_report, tmp_path):
    # 1. the report as written: the DOM holds every chart and the console stays silent
    run = _chromium("--dump-dom", binary_report.as_uri())
    assert run.returncode == 0, run.stderr[-2000:]
    assert _console_errors(run.stderr) == []
    dom = _parse(run.stdout)
    assert len(dom.charts) == 9
    assert all(chart["marks"] > 0 for chart in dom.charts)
    assert dom.headings == list(SECTIONS)

    # 2. laid out: every chart has a size on the page and marks with a size inside it
    probed = tmp_path / "probed.html"
    probed.write_text(binary_report.read_text(encoding="utf-8")
                      .replace("</body>", PROBE + "</body>"), encoding="utf-8")
    run = _chromium("--window-size=1280,4000", "--dump-dom", probed.as_uri())
    assert run.returncode == 0, run.stderr[-2000:]
    assert _console_errors(run.stderr) == []
    assert 'data-probed="yes"' in run.stdout
    charts = _parse(run.stdout).charts
    assert len(charts) == 9
    for chart in charts:
        attrs = chart["attrs"]
        assert float(attrs["data-rendered-width"]) > 100, attrs
        assert float(attrs["data-rendered-height"]) > 50, attrs
        assert int(attrs["data-drawn"]) >= 3, attrs  # frame, axis and at least one mark

    # 3. a screenshot to look at, kept as a test artifact
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "html-report.png"
    if shot.exists():
        shot.unlink()
    run = _chromium(f"--screenshot={shot}", "--window-size=1280,4000",
                    binary_report.as_uri())
    assert run.returncode == 0, run.stderr[-2000:]
    assert _console_errors(run.stderr) == []
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert shot.stat().st_size > 20_000
    shutil.copy(binary_report, ARTIFACTS / "html-report.html")
