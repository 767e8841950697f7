"""The HTML report: one self-contained file (`--html report.html`) that opens offline.

Plotting choice: every chart is inline SVG written here in Python, with no plotting library.
- Size: a chart is a few KB of text. A JavaScript library inlined for offline use would add
  0.5-3.5 MB (Plotly ~3.5 MB, Vega-Lite + Vega ~0.8 MB) before any data; matplotlib PNGs
  would add a heavy dependency and ~50-150 KB per chart, base64-encoded.
- Clarity: vector marks stay crisp at any zoom and in print, text is selectable, and each
  flipped sample carries a `<title>` tooltip without a script.
- Offline and checkable: no script runs at all, so nothing can fail to load, and a browser's
  DOM holds every mark, which the browser test counts.
The charts are few and fixed (histograms, a scatter, bars), so a small amount of code to draw
them buys all of the above. Scatter points are subsampled (<= 5000, flips always kept) and
deduplicated at the chart's pixel resolution, drawn as one `<path>`, which keeps a 20k-sample
audit well under 500 KB.

Public: `render_html(result) -> str` and `write_html(result, path) -> str`.
"""

from __future__ import annotations

import datetime as _dt
import itertools
import math
from collections.abc import Iterable, Sequence

import numpy as np

from modelparity.analyse.testimony import disagrees, runtime_says, told_line
from modelparity.folders import write_atomic
from modelparity.numerics.error_stats import Log2Histogram
from modelparity.numerics.floats import describe_value
from modelparity.report import (
    DRIFT_COLUMNS,
    ELEMENT_COLUMNS,
    FIX_COLUMNS,
    YARDSTICK_COLUMNS,
    drift_rows,
    element_cells,
    fix_rows,
    flipped_text,
    flips_count,
    predicted_note,
    profile_samples,
    yardstick_rows,
)
from modelparity.report.markup import CSS, _c, _e, _legend, _svg, _text
from modelparity.report.names import class_label, result_change_text
from modelparity.result import AuditResult, BackendResult

__all__ = ["render_html", "write_html"]

MAX_SCATTER_POINTS = 5000
MAX_FLIP_ROWS = 50
MAX_CONFUSION_CLASSES = 30  # a wider matrix is shown as its most confused pairs
MAX_CONFUSED_PAIRS = 25
MAX_DECISION_CLASSES = 20  # classes shown of one top-k or multilabel decision
DISPLAY_BIN = 0.25  # octaves per bar in the error histograms (the data has 1/8 octave bins)

SHORT = {"accuracy": "acc", "precision": "prec", "recall": "rec", "precision_macro": "prec",
         "recall_macro": "rec", "f1_macro": "f1", "top1_accuracy": "top1", "topk_accuracy": "topk",
         "subset_accuracy": "subset acc", "hamming_loss": "hamming"}
SHORT_PRECISION = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16", "tfloat32": "tf32",
                   "f32": "fp32", "f16": "fp16", "bf16": "bf16"}
# one colour per precision family; variants ("bf16 layer", "int8 static") are dashed
PROFILE_COLOURS = {"fp32": "#7f7f7f", "fp16": "#2ca02c", "bf16": "#d62728", "tf32": "#9467bd",
                   "int8": "#ff7f0e"}
UNIT_ROUNDOFF = {"fp32": -24, "fp16/tf32": -11, "bf16": -8}  # log2 of half an ulp at 1.0
CANDIDATE = "#1f77b4"
_CLIP_IDS = itertools.count(1)
FLIP = "#d62728"
BAND = "#ff7f0e"





def _finite(value: float | None) -> bool:
    return value is not None and isinstance(value, (int, float, np.number)) \
        and math.isfinite(float(value))


def _num(value: float | None, fmt: str = ".2e") -> str:
    return format(float(value), fmt) if _finite(value) else "-"


def _short(value: float) -> str:
    """A compact number for chart labels."""
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 1e4 or magnitude < 1e-3:
        return f"{value:.1e}".replace("e-0", "e-").replace("e+0", "e")
    return f"{value:.4g}"




_SUPERSCRIPT = str.maketrans("-0123456789", "\u207b\u2070\u00b9\u00b2\u00b3\u2074\u2075\u2076"
                                            "\u2077\u2078\u2079")


def _pow2_label(exponent: float) -> str:
    return "2" + str(round(exponent)).translate(_SUPERSCRIPT)


def _nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    if not (math.isfinite(low) and math.isfinite(high)) or high <= low:
        return [low] if math.isfinite(low) else []
    raw = (high - low) / max(count, 1)
    step = 10 ** math.floor(math.log10(raw))
    for factor in (1, 2, 2.5, 5, 10):
        if raw <= factor * step:
            step *= factor
            break
    first = math.ceil(low / step - 1e-9) * step
    ticks = []
    value = first
    while value <= high + step * 1e-9:
        ticks.append(0.0 if abs(value) < step * 1e-9 else value)
        value += step
    return ticks


def _precision_name(value: str | None) -> str:
    return SHORT_PRECISION.get(value or "", value or "-")


def _profile_family(label: str) -> str:
    return label.split()[0]


def _profile_colour(label: str) -> str:
    return PROFILE_COLOURS.get(_profile_family(label), "#8c564b")


def _metric_changes(backend: BackendResult) -> str:
    if not backend.metric_deltas:
        return "-"
    changed = [f"{SHORT.get(name, name)} {delta * 100:+.2g}pp"
               for name, delta in backend.metric_deltas.items()
               if delta is not None and _finite(delta) and abs(delta) > 0]
    return ", ".join(changed) if changed else "none"


class _Frame:
    """A plot area inside an SVG: data ranges mapped linearly (or log10) onto pixels."""

    def __init__(self, left: float, top: float, width: float, height: float,
                 xrange: tuple[float, float], yrange: tuple[float, float],
                 xlog: bool = False) -> None:
        self.left, self.top, self.width, self.height = left, top, width, height
        self.xlog = xlog
        x0, x1 = (math.log10(v) for v in xrange) if xlog else xrange
        y0, y1 = yrange
        if x1 <= x0:
            x0, x1 = x0 - 0.5, x1 + 0.5
        if y1 <= y0:
            y0, y1 = y0 - 0.5, y1 + 0.5
        self.x0, self.x1, self.y0, self.y1 = x0, x1, y0, y1

    def x(self, value: float) -> float:
        v = math.log10(value) if self.xlog else value
        return self.left + (v - self.x0) / (self.x1 - self.x0) * self.width

    def y(self, value: float) -> float:
        return self.top + self.height - (value - self.y0) / (self.y1 - self.y0) * self.height

    @property
    def right(self) -> float:
        return self.left + self.width

    @property
    def bottom(self) -> float:
        return self.top + self.height

    def box(self) -> str:
        return (f'<rect x="{_c(self.left)}" y="{_c(self.top)}" width="{_c(self.width)}" '
                f'height="{_c(self.height)}" fill="#fff" stroke="#999"/>')

    def xticks(self, ticks: Iterable[float], label=_short, grid: bool = True) -> str:
        parts = []
        for value in ticks:
            px = self.x(value)
            if px < self.left - 0.5 or px > self.right + 0.5:
                continue
            if grid:
                parts.append(f'<line x1="{_c(px)}" y1="{_c(self.top)}" x2="{_c(px)}" '
                             f'y2="{_c(self.bottom)}" stroke="#eee"/>')
            parts.append(f'<text x="{_c(px)}" y="{_c(self.bottom + 15)}" font-size="11" '
                         f'text-anchor="middle" fill="#444">{_e(label(value))}</text>')
        return "".join(parts)

    def yticks(self, ticks: Iterable[float], label=_short, grid: bool = True) -> str:
        parts = []
        for value in ticks:
            py = self.y(value)
            if py < self.top - 0.5 or py > self.bottom + 0.5:
                continue
            if grid:
                parts.append(f'<line x1="{_c(self.left)}" y1="{_c(py)}" x2="{_c(self.right)}" '
                             f'y2="{_c(py)}" stroke="#eee"/>')
            parts.append(f'<text x="{_c(self.left - 5)}" y="{_c(py + 4)}" font-size="11" '
                         f'text-anchor="end" fill="#444">{_e(label(value))}</text>')
        return "".join(parts)








# ---------------------------------------------------------------------------- charts


def _display_bins(hist: Log2Histogram, octaves: float) -> tuple[np.ndarray, np.ndarray]:
    """(left edges, fractions of all elements) on `octaves`-wide bins.

    The first and last bins of a Log2Histogram collect everything beyond 2**-64 and 2**64
    (a reference of exactly zero gives a relative error of about 2**126): they are left out
    here and reported as "off the chart" instead.
    """
    total = hist.total
    factor = max(1, round(octaves / hist.bin_width))
    counts = np.asarray(hist.counts, dtype=np.float64).copy()
    if counts.size > 2:
        counts[0] = counts[-1] = 0.0
    pad = (-counts.size) % factor
    if pad:
        counts = np.concatenate([counts, np.zeros(pad)])
    grouped = counts.reshape(-1, factor).sum(axis=1)
    edges = hist.start + np.arange(grouped.size) * hist.bin_width * factor
    return edges, grouped / total if total else grouped


def _overflow_share(hist: Log2Histogram) -> tuple[float, float]:
    """Shares of all elements in the catch-all first and last bins."""
    total = hist.total
    if not total or hist.counts.size < 3:
        return 0.0, 0.0
    return float(hist.counts[0]) / total, float(hist.counts[-1]) / total


def _mass_span(edges: np.ndarray, fractions: np.ndarray,
               tail: float = 0.0025) -> tuple[float, float] | None:
    """Left edges of the first and last bins inside the central (1 - 2 * tail) of the mass."""
    total = float(fractions.sum())
    if total <= 0:
        return None
    cumulative = np.cumsum(fractions) / total
    first = int(np.searchsorted(cumulative, tail, side="right"))
    last = int(np.searchsorted(cumulative, 1 - tail, side="left"))
    last = min(max(last, first), edges.size - 1)
    return float(edges[min(first, edges.size - 1)]), float(edges[last])


def error_histogram_svg(name: str, stats_hist: Log2Histogram,
                        profiles: dict[str, Log2Histogram], title: str) -> str | None:
    """Bars: this backend's log2 relative errors; lines: each emulation profile's."""
    if stats_hist.total == 0:
        return None
    width, height = 860, 300
    frame = _Frame(60, 34, 590, 220, (0, 1), (0, 1))
    octaves = DISPLAY_BIN if stats_hist.total >= 5000 else 2 * DISPLAY_BIN
    series = {"candidate": _display_bins(stats_hist, octaves)}
    for label, hist in profiles.items():
        if hist.total:
            series[label] = _display_bins(hist, octaves)
    # the range holding all but 0.5% of each series' errors: a few outliers (a reference of
    # exactly zero makes a relative error of 2**126) would squeeze everything else into a line
    spans = [_mass_span(edges, fractions) for edges, fractions in series.values()]
    spans = [span for span in spans if span is not None]
    if not spans:
        lo, hi = -30.0, 0.0
    else:
        lo = min(span[0] for span in spans) - 1
        hi = max(span[1] for span in spans) + octaves + 1
    lo, hi = max(lo, -64.0), min(hi, 64.0)
    edges, fractions = series["candidate"]
    below, above = _overflow_share(stats_hist)
    outside_low = below + float(fractions[edges + octaves <= lo].sum())
    outside_high = above + float(fractions[edges >= hi].sum())
    peak = max(float(f.max()) for _, f in series.values() if f.size) or 1.0
    frame = _Frame(60, 34, 590, 220, (lo, hi), (0, peak * 1.08))
    span = hi - lo
    step = next(s for s in (1, 2, 4, 5, 8, 10, 16, 20, 32) if span / s <= 12)
    ticks = [float(t) for t in range(math.ceil(lo / step) * step, math.floor(hi) + 1, step)]
    parts = [frame.box(), frame.xticks(ticks, label=_pow2_label),
             frame.yticks(_nice_ticks(0, peak * 1.08, 4), label=lambda v: f"{v * 100:.3g}%")]
    for i, (label, exponent) in enumerate(UNIT_ROUNDOFF.items()):
        if lo <= exponent <= hi:
            px = frame.x(exponent)
            parts.append(f'<line x1="{_c(px)}" y1="{_c(frame.top)}" x2="{_c(px)}" '
                         f'y2="{_c(frame.bottom)}" stroke="#aaa" stroke-dasharray="2 3"/>')
            parts.append(_text(px + 2, frame.top + 11 + 12 * i, f"{label} u", size=10,
                               fill="#777"))
    bar = octaves
    path = []
    base = frame.y(0)
    for edge, fraction in zip(edges, fractions, strict=True):
        if fraction <= 0 or edge + bar < lo or edge > hi:
            continue
        x0, x1 = frame.x(max(edge, lo)), frame.x(min(edge + bar, hi))
        path.append(f"M{_c(x0)} {_c(base)}V{_c(frame.y(fraction))}H{_c(x1)}V{_c(base)}Z")
    parts.append(f'<path d="{"".join(path)}" fill="{CANDIDATE}" fill-opacity="0.55" '
                 f'stroke="{CANDIDATE}" stroke-width="0.5"/>')
    legend = [(title if len(title) <= 26 else title[:25] + "\u2026", CANDIDATE, "bar")]
    for label in profiles:
        if label not in series:
            continue
        p_edges, p_fractions = series[label]
        keep = (p_edges + bar >= lo) & (p_edges <= hi)
        p_edges, p_fractions = p_edges[keep], p_fractions[keep]
        if not p_edges.size:
            continue
        d = [f"M{_c(frame.x(max(p_edges[0], lo)))} {_c(base)}"]
        for edge, fraction in zip(p_edges, p_fractions, strict=True):
            py = frame.y(fraction)
            d.append(f"V{_c(py)}H{_c(frame.x(min(edge + bar, hi)))}")
        d.append(f"V{_c(base)}")
        colour = _profile_colour(label)
        dashed = " " in label
        dash = ' stroke-dasharray="4 3"' if dashed else ""
        parts.append(f'<path d="{"".join(d)}" fill="none" stroke="{colour}" '
                     f'stroke-opacity="0.9" stroke-width="{1.2 if dashed else 1.5}"{dash}/>')
        legend.append((f"{label} noise" if label == "fp32" else f"emulated {label}", colour,
                       "dash" if dashed else "line"))
    exact = stats_hist.zero_count / stats_hist.total
    parts.append(_text(frame.left, 20, f"output '{name}': log2 relative error |c - r| / |r| "
                       f"({stats_hist.total} values, {exact * 100:.3g}% exact, not drawn)",
                       size=12, weight="600"))
    off = [f"{share * 100:.2g}% of values off the chart {side}"
           for share, side in ((outside_low, "to the left"), (outside_high, "to the right"))
           if share > 0]
    if off:
        parts.append(_text(frame.right, frame.top - 4, "; ".join(off), size=10, anchor="end",
                           fill="#777"))
    parts.append(_text(frame.left + frame.width / 2, frame.bottom + 32,
                       f"relative error (log2 scale, {octaves:g}-octave bins)", size=11,
                       anchor="middle", fill="#555"))
    parts.append(f'<text transform="translate(16 {_c(frame.top + frame.height / 2)}) '
                 f'rotate(-90)" font-size="11" text-anchor="middle" fill="#555">'
                 f'share of values</text>')
    parts.append(_legend(frame.right + 16, frame.top + 10, legend[:16]))
    return _svg(width, height, "".join(parts), "histogram",
                f"error histogram of {title} on {name}")


def _bands(threshold: float, verdict: str | None) -> list[tuple[str, float, float]]:
    """Rounding bands around the threshold: the measured precision's, else fp16's and bf16's."""
    formats = [verdict] if verdict in ("fp16", "bf16", "tf32") else ["fp16", "bf16"]
    bands = []
    for view in describe_value(threshold, formats):
        if view.flip_band is not None:
            low, high = view.flip_band
            if high == low:  # a tie: draw it one ulp wide so it shows
                high = low + max(view.gap_above, 1e-300) / 2
            bands.append((view.format, float(low), float(high)))
    return bands


def _scatter_indices(reference: np.ndarray, candidate: np.ndarray, flipped: np.ndarray,
                     rng: np.random.Generator) -> np.ndarray:
    """<= MAX_SCATTER_POINTS finite samples: every flip, then a random share of the rest."""
    finite = np.flatnonzero(np.isfinite(reference) & np.isfinite(candidate))
    if finite.size <= MAX_SCATTER_POINTS:
        return finite
    flips = np.intersect1d(flipped, finite)[:MAX_SCATTER_POINTS]
    rest = np.setdiff1d(finite, flips, assume_unique=False)
    take = rng.choice(rest, size=MAX_SCATTER_POINTS - flips.size, replace=False)
    return np.sort(np.concatenate([flips, take]))


def _points_path(frame: _Frame, xs: np.ndarray, ys: np.ndarray, size: float = 2.5) -> str:
    """Small squares, deduplicated at 0.5 px, in one path."""
    if xs.size == 0:
        return ""
    px = np.round(np.array([frame.x(v) for v in xs]) * 2) / 2
    py = np.round(np.array([frame.y(v) for v in ys]) * 2) / 2
    unique = np.unique(np.stack([px, py], axis=1), axis=0)
    half = size / 2
    d = "".join(f"M{_c(x - half)} {_c(y - half)}h{_c(size)}v{_c(size)}h-{_c(size)}z"
                for x, y in unique)
    return f'<path d="{d}" fill="{CANDIDATE}" fill-opacity="0.6"/>'


def _scatter_panel(frame: _Frame, ref: np.ndarray, cand: np.ndarray, flip_mask: np.ndarray,
                   index: np.ndarray, threshold: float | None,
                   bands: list[tuple[str, float, float]], title: str) -> str:
    lo, hi = frame.x0, frame.x1
    ticks = _nice_ticks(lo, hi, 4)
    parts = [frame.box()]
    clip_id = f"clip{next(_CLIP_IDS)}"
    parts.append(f'<clipPath id="{clip_id}"><rect x="{_c(frame.left)}" y="{_c(frame.top)}" '
                 f'width="{_c(frame.width)}" height="{_c(frame.height)}"/></clipPath>')
    parts.append(frame.xticks(ticks))
    parts.append(frame.yticks(ticks))
    inner = []
    for _, low, high in bands:  # reference scores in the band round across the threshold
        x0, x1 = frame.x(max(low, lo)), frame.x(min(high, hi))
        if x1 - x0 < 1.0:  # narrower than a pixel: widen it to one so it can be seen
            mid = (x0 + x1) / 2
            x0, x1 = mid - 0.5, mid + 0.5
        inner.append(f'<rect x="{_c(x0)}" y="{_c(frame.top)}" width="{_c(x1 - x0)}" '
                     f'height="{_c(frame.height)}" fill="{BAND}" fill-opacity="0.22"/>')
    inner.append(f'<line x1="{_c(frame.x(lo))}" y1="{_c(frame.y(lo))}" x2="{_c(frame.x(hi))}" '
                 f'y2="{_c(frame.y(hi))}" stroke="#bbb" stroke-dasharray="3 3"/>')
    if threshold is not None and lo <= threshold <= hi:
        tx, ty = frame.x(threshold), frame.y(threshold)
        inner.append(f'<line x1="{_c(tx)}" y1="{_c(frame.top)}" x2="{_c(tx)}" '
                     f'y2="{_c(frame.bottom)}" stroke="#333" stroke-width="1"/>')
        inner.append(f'<line x1="{_c(frame.left)}" y1="{_c(ty)}" x2="{_c(frame.right)}" '
                     f'y2="{_c(ty)}" stroke="#333" stroke-width="1"/>')
    inside = (ref >= lo) & (ref <= hi) & (cand >= lo) & (cand <= hi)
    plain = inside & ~flip_mask
    inner.append(_points_path(frame, ref[plain], cand[plain]))
    for i in np.flatnonzero(inside & flip_mask)[:500]:
        inner.append(f'<circle cx="{_c(frame.x(ref[i]))}" cy="{_c(frame.y(cand[i]))}" r="3.5" '
                     f'fill="{FLIP}" stroke="#fff" stroke-width="0.6"><title>sample '
                     f'{int(index[i])}: reference {ref[i]:.7g}, candidate {cand[i]:.7g}'
                     f'</title></circle>')
    parts.append(f'<g clip-path="url(#{clip_id})">{"".join(inner)}</g>')
    parts.append(_text(frame.left, frame.top - 8, title, size=12, weight="600"))
    parts.append(_text(frame.left + frame.width / 2, frame.bottom + 32, "reference score",
                       size=11, anchor="middle", fill="#555"))
    parts.append(f'<text transform="translate({_c(frame.left - 48)} '
                 f'{_c(frame.top + frame.height / 2)}) rotate(-90)" font-size="11" '
                 f'text-anchor="middle" fill="#555">candidate score</text>')
    return "".join(parts)


def score_scatter_svg(result: AuditResult, backend: BackendResult) -> str | None:
    """Reference vs candidate decision score: everything, and zoomed on the threshold."""
    reference = result.reference.decided
    decided = backend.decided
    if reference is None or decided is None or len(reference) != len(decided):
        return None
    ref_all = np.asarray(reference.score, dtype=np.float64)
    cand_all = np.asarray(decided.score, dtype=np.float64)
    if ref_all.ndim != 1 or cand_all.shape != ref_all.shape or ref_all.size == 0:
        return None
    flipped = np.asarray(backend.flips.index, dtype=np.int64) if backend.flips is not None \
        and backend.flips.count else np.zeros(0, dtype=np.int64)
    rng = np.random.default_rng(0)
    index = _scatter_indices(ref_all, cand_all, flipped, rng)
    if index.size == 0:
        return None
    ref, cand = ref_all[index], cand_all[index]
    flip_mask = np.isin(index, flipped)
    threshold = result.task.get("threshold")
    if result.task.get("kind") not in ("binary", "multilabel") or not _finite(threshold):
        threshold = None  # argmax and top-k have no fixed threshold to draw
    verdict = backend.fingerprint.verdict if backend.fingerprint else None
    bands = _bands(float(threshold), verdict) if threshold is not None else []
    lo = float(min(ref.min(), cand.min()))
    hi = float(max(ref.max(), cand.max()))
    pad = (hi - lo) * 0.03 or 0.5
    width = 860
    full = _Frame(70, 40, 300, 300, (lo - pad, hi + pad), (lo - pad, hi + pad))
    parts = [_scatter_panel(full, ref, cand, flip_mask, index, threshold, bands,
                            "all samples")]
    legend = [("sample", CANDIDATE, "dot"), ("flipped decision", FLIP, "dot")]
    window = np.zeros(0, dtype=np.int64)
    if threshold is not None:
        widest = max((high - low for _, low, high in bands), default=0.0)
        moved = np.abs(cand - ref)
        typical = float(np.quantile(moved, 0.99)) if moved.size else 0.0
        reach = max(4 * widest, 4 * typical, abs(threshold) * 1e-6, 1e-9)
        reach = min(reach, (hi - lo) / 2 or reach)
        zoom = _Frame(480, 40, 300, 300, (threshold - reach, threshold + reach),
                      (threshold - reach, threshold + reach))
        # the zoom draws every sample inside its window (nearest the threshold first, up to
        # the cap), not only those in the overall subsample: these are the interesting ones
        window = np.flatnonzero(np.isfinite(ref_all) & np.isfinite(cand_all)
                                & (np.abs(ref_all - threshold) <= reach)
                                & (np.abs(cand_all - threshold) <= reach))
        if window.size > MAX_SCATTER_POINTS:
            order = np.argsort(np.abs(ref_all[window] - threshold), kind="stable")
            window = np.sort(np.union1d(window[order[:MAX_SCATTER_POINTS]],
                                        np.intersect1d(window, flipped)))
        parts.append(_scatter_panel(zoom, ref_all[window], cand_all[window],
                                    np.isin(window, flipped), window, threshold, bands,
                                    f"near the threshold {threshold:g} (\u00b1{reach:.2g})"))
        legend.append((f"threshold {threshold:g}", "#333", "line"))
        for name, low, high in bands:
            legend.append((f"{name} rounding band [{low:.6g}, {high:.6g}]", BAND, "band"))
    shown = int(index.size)
    parts.append(_text(70, 394, f"{shown} of {ref_all.size} samples drawn"
                       + ("" if shown == ref_all.size else " (every flip, then a random "
                          "sample)") + (f"; {window.size} inside the zoom window"
                                        if threshold is not None else "")
                       + "; points off the dashed diagonal moved.", size=11,
                       fill="#555"))
    if bands:
        parts.append(_text(70, 408, "Band: reference scores that round across the threshold "
                           "when returned in that format.", size=11, fill="#555"))
    left, right = legend[:2], legend[2:]
    parts.append(_legend(70, 430, left))
    parts.append(_legend(480, 430, right))
    height = 430 + 17 * max(len(left), len(right))
    return _svg(width, height, "".join(parts), "scatter",
                f"reference vs candidate scores for {backend.spec}")


def distances_svg(backend: BackendResult) -> str | None:
    """How far this backend's error profile is from each yardstick (octaves; smaller = closer)."""
    fingerprint = backend.fingerprint
    if fingerprint is None or not fingerprint.distances:
        return None
    items = [(k, float(v)) for k, v in fingerprint.distances.items() if _finite(v)]
    if not items:
        return None
    items.sort(key=lambda kv: kv[1])
    row = 20
    width, height = 640, 40 + row * len(items) + 30
    top = 28
    frame = _Frame(110, top, 440, row * len(items), (0, max(v for _, v in items) * 1.1 or 1),
                   (0, 1))
    parts = [_text(10, 18, "Wasserstein distance to each yardstick's error profile (octaves)",
                   size=12, weight="600")]
    parts.append(frame.xticks(_nice_ticks(frame.x0, frame.x1, 5)))
    for i, (label, value) in enumerate(items):
        y = top + i * row
        chosen = label == fingerprint.verdict
        colour = _profile_colour(label)
        parts.append(f'<rect x="{_c(frame.left)}" y="{_c(y + 3)}" '
                     f'width="{_c(max(frame.x(value) - frame.left, 1.0))}" height="{row - 6}" '
                     f'fill="{colour}" fill-opacity="{0.9 if chosen else 0.45}"/>')
        name = f"{label} noise" if label == "fp32" else label
        parts.append(_text(frame.left - 6, y + row / 2 + 4, name, size=11, anchor="end",
                           weight="700" if chosen else "normal"))
        parts.append(_text(frame.x(value) + 4, y + row / 2 + 4, f"{value:.3g}", size=11,
                           fill="#444"))
    parts.append(f'<line x1="{_c(frame.left)}" y1="{top}" x2="{_c(frame.left)}" '
                 f'y2="{_c(frame.bottom)}" stroke="#999"/>')
    return _svg(width, height, "".join(parts), "distances",
                f"fingerprint distances for {backend.spec}")


def latency_svg(backends: Sequence[BackendResult]) -> str | None:
    """p50 per batch as bars, p95 as a whisker; log scale when the spread is wide."""
    rows = [b for b in backends if b.measured_latency is not None
            and _finite(b.measured_latency.p50_ms) and b.measured_latency.p50_ms > 0]
    if not rows:
        return None
    values = [v for b in rows for v in (b.latency.p50_ms, b.latency.p95_ms) if _finite(v)
              and v > 0]
    low, high = min(values), max(values)
    xlog = high / low > 20
    row = 26
    label_width = min(420, max(120, 7 * max(len(b.spec) for b in rows)))
    width = label_width + 560
    height = 40 + row * len(rows) + 40
    if xlog:
        xrange = (10 ** math.floor(math.log10(low)), 10 ** math.ceil(math.log10(high)))
        ticks = [10.0 ** e for e in range(int(math.log10(xrange[0])),
                                          int(math.log10(xrange[1])) + 1)]
    else:
        xrange = (0.0, high * 1.1)
        ticks = _nice_ticks(0, high * 1.1, 5)
    frame = _Frame(label_width + 10, 30, 440, row * len(rows), xrange, (0, 1), xlog=xlog)
    parts = [_text(10, 18, "ms per batch: bar = median (p50), whisker = p95"
                   + (" (log scale)" if xlog else ""), size=12, weight="600"),
             frame.xticks(ticks, label=lambda v: f"{v:g}")]
    base = frame.x(xrange[0])
    for i, backend in enumerate(rows):
        lat = backend.latency
        y = frame.top + i * row
        colour = "#888" if backend.role == "reference" else CANDIDATE
        parts.append(f'<rect x="{_c(base)}" y="{_c(y + 5)}" '
                     f'width="{_c(max(frame.x(lat.p50_ms) - base, 1.0))}" height="{row - 10}" '
                     f'fill="{colour}" fill-opacity="0.75"><title>{_e(backend.spec)}: p50 '
                     f'{lat.p50_ms:.3g} ms, p95 {lat.p95_ms:.3g} ms</title></rect>')
        if _finite(lat.p95_ms) and lat.p95_ms > 0:
            x50, x95 = frame.x(lat.p50_ms), frame.x(lat.p95_ms)
            cy = y + row / 2
            parts.append(f'<path d="M{_c(x50)} {_c(cy)}H{_c(x95)}M{_c(x95)} {_c(cy - 5)}'
                         f'V{_c(cy + 5)}" stroke="#333" fill="none"/>')
            end = max(x50, x95)
        else:
            end = frame.x(lat.p50_ms)
        parts.append(_text(end + 5, y + row / 2 + 4, f"{lat.p50_ms:.3g} / {lat.p95_ms:.3g}",
                           size=11, fill="#444"))
        name = backend.spec if len(backend.spec) * 7 <= label_width else \
            backend.spec[: label_width // 7 - 1] + "\u2026"
        parts.append(_text(frame.left - 6, y + row / 2 + 4, name, size=11, anchor="end"))
    parts.append(f'<line x1="{_c(base)}" y1="{_c(frame.top)}" x2="{_c(base)}" '
                 f'y2="{_c(frame.bottom)}" stroke="#999"/>')
    return _svg(width, height, "".join(parts), "latency", "latency per backend")


# ---------------------------------------------------------------------------- sections


def _table(headers: Sequence[str], rows: Iterable[Sequence[str]], numeric: Sequence[bool],
           escaped: bool = False) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cells = []
        for value, is_num in zip(row, numeric, strict=True):
            text = value if escaped else _e(value)
            cells.append(f'<td class="num">{text}</td>' if is_num else f"<td>{text}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _summary(result: AuditResult) -> str:
    rows = []
    for backend in result.backends:
        reference = backend.role == "reference"
        status_text = "ref" if reference and backend.ok else backend.status
        status = f'<span class="{_e(backend.status)}">{_e(status_text)}</span>'
        reported = _precision_name(backend.precision)
        predicted = backend.description.get("predicted")
        if predicted and backend.ok:
            reported = "pred " + predicted.get("precision", "?")
            status = (f'<span class="predicted" title="{_e(predicted.get("reason", ""))}">'
                      f"predicted ({_e(predicted.get('stand_in', '?'))})</span>")
        fingerprint = backend.fingerprint
        if fingerprint is None:
            precision = _e(reported)
        else:
            css = "" if fingerprint.verdict == "fp32" else ' class="bad"'
            disagree = reported.removeprefix("pred ") not in ("-", fingerprint.verdict)
            precision = (f"{_e(reported)} / <span{css}>{_e(fingerprint.verdict)} "
                         f"{fingerprint.confidence:.2f}</span>"
                         + (' <span class="bad" title="reported and measured disagree">!</span>'
                            if disagree else ""))
        flips = "-"
        if backend.flips is not None:
            css = ' class="bad"' if backend.flips.count else ""
            flips = f"<span{css}>{_e(flips_count(backend.flips))}</span>"
        latency = backend.measured_latency
        rows.append([
            _e(backend.spec), status, precision,
            "-" if reference else _e(_num(backend.max_abs)), flips,
            "-" if reference else _e(_metric_changes(backend)),
            _e(f"{latency.p50_ms:.2f} / {latency.p95_ms:.2f}") if latency else "-",
        ])
    parts = ["<h2>Summary</h2>", _table(
        ["backend", "status", "precision reported / measured (confidence)", "max abs error",
         "flips", "metric changes", "p50 / p95 ms per batch"], rows,
        [False, False, False, True, True, False, True], escaped=True)]
    for backend in result.backends:
        note = predicted_note(backend)
        if note:
            parts.append(f'<p class="note predicted">{_e(note)}</p>')
        if backend.error:
            parts.append(f'<p class="note"><span class="{_e(backend.status)}">'
                         f"{_e(backend.spec)}: {_e(backend.status)}</span>: "
                         f"{_e(backend.error)}</p>")
        for name, stats in backend.errors.items():
            if stats.nan_mismatch or stats.inf_mismatch:
                parts.append(f'<p class="note bad">{_e(backend.spec)}: output {_e(name)!s} has '
                             f"{stats.nan_mismatch} NaN and {stats.inf_mismatch} Inf value(s) "
                             "where the reference differs</p>")
    flipped = [b for b in result.candidates if b.flips is not None and b.flips.count]
    if flipped:
        names = ", ".join(f"{b.spec} ({b.flips.count})" for b in flipped if b.flips)
        parts.append(f'<p class="banner bad">Decisions flipped on: {_e(names)}.</p>')
    elif result.ok:
        parts.append('<p class="banner good">No decision flipped on any backend.</p>')
    return "".join(parts)


def _findings(result: AuditResult) -> str:
    """The knowledge base's findings with their fixes, and each fix run beside the original."""
    findings = [f for backend in result.backends for f in backend.findings]
    if not findings:
        return ""
    parts = ["<h2>Silent precision defaults and their fixes</h2>"]
    for finding in findings:
        rule = finding.rule
        css = {"confirmed": "bad", "contradicted": "warn", "different": "warn"}.get(
            finding.agreement, "note")
        lines = [
            f"<b>{_e(finding.backend)}</b> &middot; <b>{_e(rule.id)}</b> {_e(rule.title)}"
            + ("" if rule.status == "verified" else ' <span class="warn">(unverified)</span>'),
            _e(finding.precision_line()),
            f"why: {_e(rule.effect)}",
            f"where it bites: {_e(rule.bites)}",
        ]
        lines += [f'<span class="warn">conditional: {_e(u)}</span>' for u in finding.unchecked]
        if finding.verdict():
            lines.append(f'<span class="{css}">{_e(finding.verdict())}</span>')
        if finding.fixed_spec:
            lines.append(f"fix: <code>{_e(finding.fixed_spec)}</code>")
        lines.append(f"<code>{_e(rule.fix.code)}</code>")
        if rule.fix.note:
            lines.append(_e(rule.fix.note))
        lines.append(f'<span class="note">source: {_e(rule.source)}</span>')
        backend = result.backend(finding.backend)
        if backend.repro:
            lines.append(f"repro: <code>python {_e(backend.repro)}</code>")
        parts.append('<div class="finding">' + "<br>".join(lines) + "</div>")
    if result.fixes:
        parts.append("<h3>Each fix, run beside the original on the same inputs</h3>")
        parts.append(_table(FIX_COLUMNS, fix_rows(result, _num),
                            [False, False, False, False, True, True, False, True, True]))
    return "".join(parts)


def _drift(result: AuditResult) -> str:
    rows = drift_rows(result, _num)
    if not rows:
        return ""
    return ("<h2>Carried state</h2>"
            '<p class="note">Each backend on its own state, as a deployment runs it, and '
            "teacher-forced: fed the reference's state at every call. Flips only on its own "
            "state are drift, a small error per step carried from call to call.</p>"
            + _table(DRIFT_COLUMNS, rows, [False, True, True, True, True]))


def _fingerprints(result: AuditResult) -> str:
    found = [b for b in result.candidates if b.fingerprint is not None]
    if not found:
        return ""
    parts = ["<h2>Precision fingerprint</h2>",
             '<p class="note">Which precision each backend really computed in, read from its '
             "outputs: its log2 relative-error profile is matched against the same model run "
             "in emulated FP16, BF16, TF32 and INT8 and against FP32 noise.</p>"]
    for backend in found:
        fp = backend.fingerprint
        reported = _precision_name(backend.precision)
        parts.append(f"<h3>{_e(backend.spec)}</h3>")
        parts.append(f'<p>measured: <span class="verdict">{_e(fp.verdict)}</span> '
                     f"(confidence {fp.confidence:.2f}); reported by the runtime: "
                     f"{_e(reported)}</p>")
        parts.append(f'<div class="evidence">{_e(fp.evidence)}</div>')
        told = runtime_says(backend.description)
        if told is not None:
            css = "bad" if disagrees(told, fp) else "note"
            parts.append(f'<p class="{css}">{_e(told_line(told, fp))}</p>')
        if backend.at_risk_flips:
            risk = backend.at_risk_flips
            parts.append(f'<p class="note">{_e(risk.get("flips_in_at_risk_set"))} of its '
                         f'{_e(risk.get("flips"))} flips were among the samples predicted at '
                         f'risk for {_e(risk.get("precision"))}</p>')
        chart = distances_svg(backend)
        if chart:
            parts.append(chart)
    return "".join(parts)


def _histograms(result: AuditResult) -> str:
    charts = []
    for backend in result.candidates:
        for name, stats in backend.errors.items():
            profiles = {label: p.errors[name].log2_rel_hist for label, p in result.profiles.items()
                        if p.ok and name in p.errors and " " not in label}
            chart = error_histogram_svg(name, stats.log2_rel_hist, profiles, backend.spec)
            feeds = (result.model.get("probes") or {}).get(name)
            what = (f"{_e(name)}, the input of the final activation of '{_e(feeds)}' (where "
                    "the fingerprint reads the precision)" if feeds else f"output {_e(name)}")
            if chart:
                charts.append(f"<h3>{_e(backend.spec)}: {what}</h3>{chart}")
    if not charts:
        return ""
    intro = ('<p class="note">Bars: this backend\'s relative errors against the reference. '
             "Lines: the same model emulated in each precision (on the first samples). The "
             "closest line is the precision it most likely used; dotted verticals mark each "
             "format's unit roundoff. Variants (layer-wise rounding, INT8 modes) are in the "
             "at-risk table and report.json.</p>")
    return "<h2>Error histograms</h2>" + intro + "".join(charts)


def _scatters(result: AuditResult) -> str:
    if result.task.get("kind") in ("regression", "custom"):
        return ""
    charts = []
    for backend in result.candidates:
        if not backend.ok:
            continue
        chart = score_scatter_svg(result, backend)
        if chart:
            charts.append(f"<h3>{_e(backend.spec)}</h3>{chart}")
    if not charts:
        return ""
    output = result.task.get("output")
    return (f"<h2>Scores: reference vs candidate</h2><p class=\"note\">The score each decision "
            f"on output {_e(output)} rests on, reference against candidate.</p>"
            + "".join(charts))


def _confusion_table(result: AuditResult, backend: BackendResult) -> str | None:
    metrics = backend.metrics
    if metrics is None or metrics.confusion is None or np.ndim(metrics.confusion) != 2:
        return None
    classes = [class_label(c, result.class_names) for c in metrics.classes]
    reference = result.reference.metrics
    compare = backend is not result.reference and reference is not None \
        and reference.confusion is not None \
        and np.shape(reference.confusion) == np.shape(metrics.confusion)
    confusion = np.asarray(metrics.confusion)
    if len(classes) > MAX_CONFUSION_CLASSES or confusion.shape != (len(classes),) * 2:
        return _confused_pairs(backend, classes, confusion,
                               np.asarray(reference.confusion) if compare and reference
                               else None)
    peak = max(int(confusion.max()), 1)
    head = "<th>true \\ predicted</th>" + "".join(f"<th>{_e(c)}</th>" for c in classes)
    rows = []
    for i, name in enumerate(classes):
        cells = []
        for j in range(len(classes)):
            value = int(confusion[i, j])
            shade = 0.08 + 0.5 * value / peak if value else 0.0
            colour = "26,127,55" if i == j else "198,40,40"
            text = str(value)
            if compare:
                delta = value - int(reference.confusion[i, j])
                if delta:
                    text += f' <b class="bad">({delta:+d})</b>'
            cells.append(f'<td class="num" style="background:rgba({colour},{shade:.2f})">'
                         f"{text}</td>")
        rows.append(f"<tr><th>{_e(name)}</th>{''.join(cells)}</tr>")
    title = backend.spec + (" (change vs reference)" if compare else " (reference)")
    return (f"<h3>{_e(title)}</h3><table><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>")


def _confused_pairs(backend: BackendResult, classes: list[str], confusion: np.ndarray,
                    before: np.ndarray | None) -> str:
    """A matrix too wide to show: its most frequent confusions (true class, predicted class),
    and with a reference to compare, the pairs that changed most."""
    title = backend.spec + (" (change vs reference)" if before is not None else " (reference)")
    note = (f"{len(classes):,} classes, too many for a matrix: the "
            + ("confusions that changed most against the reference" if before is not None
               else "most frequent confusions")
            + f" (up to {MAX_CONFUSED_PAIRS}) are listed; report.json has the whole matrix")
    if confusion.ndim != 2 or confusion.shape[0] != confusion.shape[1] \
            or confusion.shape[0] != len(classes):
        return f'<h3>{_e(title)}</h3><p class="note">{_e(note)}</p>'
    # row blocks, each with its own top pairs: a 6,625-class matrix is never copied whole
    best: list[tuple[int, int, int, int, int]] = []  # (-key, i, j, count, change)
    step = max(1, 2_000_000 // max(len(classes), 1))
    for start in range(0, len(classes), step):
        rows_ = np.arange(start, min(start + step, len(classes)))
        off = confusion[rows_].astype(np.int64)
        off[np.arange(rows_.size), rows_] = 0
        change = None
        if before is not None:
            change = off - before[rows_].astype(np.int64)
            change[np.arange(rows_.size), rows_] = 0
        key = (np.abs(change) if change is not None else off).ravel()
        take = min(MAX_CONFUSED_PAIRS, int(np.count_nonzero(key)))
        if take == 0:
            continue
        for flat in np.argpartition(-key, take - 1)[:take]:
            r, j = divmod(int(flat), len(classes))
            best.append((-int(key[flat]), int(rows_[r]), j, int(off[r, j]),
                         int(change[r, j]) if change is not None else 0))
    best = sorted(best)[:MAX_CONFUSED_PAIRS]
    if not best:
        return (f'<h3>{_e(title)}</h3><p class="note">{_e(note)}; no class is confused with '
                "another" + (" differently from the reference" if before is not None else "")
                + ".</p>")
    rows = []
    for _, i, j, count, change_ in best:
        row = [classes[i], classes[j], f"{count:,}"]
        if before is not None:
            row.append(f"{change_:+,}")
        rows.append(row)
    headers = ["true", "predicted", "count"] + (["change"] if before is not None else [])
    return (f'<h3>{_e(title)}</h3><p class="note">{_e(note)}</p>'
            + _table(headers, rows, [False, False, True, True][:len(headers)]))


def _confusions(result: AuditResult) -> str:
    tables = [t for t in (_confusion_table(result, b) for b in result.backends if b.ok) if t]
    if not tables:
        return ""
    return ('<h2>Confusion matrices</h2><p class="note">Rows: true label; columns: predicted. '
            "Changes against the reference in brackets.</p>" + "".join(tables))


def _flips(result: AuditResult) -> str:
    parts = []
    for backend in result.candidates:
        flips = backend.flips
        if flips is None or flips.count == 0:
            continue
        records = flips.records(MAX_FLIP_ROWS)
        rows = [[str(r["index"]), _num(r["reference_score"], ".7f"),
                 _num(r["candidate_score"], ".7f"), _num(r["reference_margin"], ".2e"),
                 result_change_text(result, r, "\u2192", MAX_DECISION_CLASSES),
                 *element_cells(flips, r)] for r in records]
        shown = "" if flips.count <= len(records) else f" (first {len(records)} shown)"
        parts.append(f"<h3>{_e(backend.spec)}: {_e(flipped_text(flips))}, closest to "
                     f"the boundary first{_e(shown)}</h3>")
        extra = list(ELEMENT_COLUMNS) if flips.per_element else []
        parts.append(_table(["sample", "reference score", "candidate score", "margin",
                             "decision", *extra], rows,
                            [True, True, True, True, False, *(True for _ in extra)]))
    if not parts:
        return ""
    return "<h2>Flipped decisions</h2>" + "".join(parts)


def _at_risk(result: AuditResult) -> str:
    if not result.profiles and not result.at_risk:
        return ""
    samples = profile_samples(result)
    rows = yardstick_rows(result, _num)
    intro = (f'<p class="note">The same model in each precision, emulated on the first '
             f"{samples} samples. At risk: reference samples whose score rounds across the "
             "threshold in that format (format band), or whose margin is below the error that "
             "precision's emulation showed (error scale).</p>")
    table = _table(list(YARDSTICK_COLUMNS), rows, [False, False, True, True, True, True])
    return "<h2>At-risk samples</h2>" + intro + table


def _latency(result: AuditResult) -> str:
    chart = latency_svg(result.backends)
    return f"<h2>Latency</h2>{chart}" if chart else ""


def _locate(result: AuditResult) -> str:
    """Where in the model the error comes from, when the report is a locate run's."""
    if result.locate is None:
        return ""
    from modelparity.report.locate_html import locate_meta, locate_section

    return (f"<h2>Where in the model: {_e(result.locate.candidate)}</h2>"
            f"{locate_meta(result.locate)}{locate_section(result.locate)}")


def _header(result: AuditResult) -> str:
    task = result.task
    task_text = f"{task.get('kind')} on '{task.get('output')}'"
    if task.get("kind") in ("binary", "multilabel"):
        task_text += f", threshold {task.get('threshold')}"
    env = result.environment or {}
    cpu = env.get("cpu") or env.get("cpu_model") or env.get("processor")
    if isinstance(cpu, dict):
        cpu = cpu.get("model") or cpu.get("name")
    lines = [
        f"model: <code>{_e(result.model.get('source'))}</code>",
        f"inputs: {_e(result.inputs.get('source'))}",
        f"task: {_e(task_text)}" + (f"; labels: <code>{_e(result.labels)}</code>"
                                    if result.labels else ""),
    ]
    if cpu:
        flags = env.get("cpu_flags") or []
        flag_text = f" ({', '.join(str(f) for f in flags)})" if flags else ""
        lines.append(f"machine: {_e(cpu)}{_e(flag_text)}")
    lines.append(f"audited {_e(_audited_at(env))} by modelparity "
                 f"{_e(env.get('modelparity', ''))}")
    return "<h1>modelparity report</h1>" + "".join(f'<p class="meta">{line}</p>'
                                                   for line in lines)


def _audited_at(env: dict) -> str:
    """When the audit ran (report.json's environment), so that re-rendering a saved report
    gives the same page; reports from before schema 1.3 do not say."""
    try:
        return _dt.datetime.fromisoformat(str(env["audited_at"])).strftime("%Y-%m-%d %H:%M %Z")
    except (KeyError, ValueError):
        return "at an unrecorded time"


def render_html(result: AuditResult) -> str:
    """The whole report as one HTML document (inline CSS and SVG, no scripts, no links). The
    same result renders to the same bytes, in any process and after any other render."""
    global _CLIP_IDS
    _CLIP_IDS = itertools.count(1)
    body = "".join([
        _header(result), _summary(result), _drift(result), _findings(result), _fingerprints(result),
        _histograms(result),
        _scatters(result), _confusions(result), _flips(result), _at_risk(result),
        _latency(result), _locate(result),
    ])
    title = f"modelparity: {result.model.get('source')}"
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{_e(title)}</title><style>{CSS}</style></head><body>{body}"
            "</body></html>\n")


def write_html(result: AuditResult, path: str) -> str:
    """Write the report to `path` (atomically) and return the path."""
    return write_atomic(path, render_html(result))
