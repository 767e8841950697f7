"""Custom decisions for bench/realmodels.py, numpy only (they run inside the modelparity process).

    --task custom --custom bench.realmodels_decode:ctc_text

`ctc_text` decodes ddddocr's recognizer output the way ddddocr does (ddddocr 1.6.1,
core/ocr_engine.py): argmax over the classes at each time step, collapse repeated indices, drop
the blank (index 0), map the rest through ddddocr's charset. It gets the output with the batch
first, [B, T, C] (ddddocr's ONNX computes [T, 1, C]: time first, so the audit passes
`--batch-axis 387=1`), and returns one string per sample.

The charset (a JSON list of 8210 strings, index 0 = '') is the file named by the environment
variable REALMODELS_OCR_CHARSET, else bench/.envs/realmodels/work/ddddocr/charset.json beside this
file; realmodels_prepare.py writes it from ddddocr's own CharsetManager.
"""
from __future__ import annotations

import json
import os

import numpy as np

_HERE = os.path.dirname(os.path.abspath(__file__))
_DEFAULT_CHARSET = os.path.join(_HERE, ".envs", "realmodels", "work", "ddddocr", "charset.json")
_CHARSETS: dict[str, list[str]] = {}


def _charset() -> list[str]:
    path = os.environ.get("REALMODELS_OCR_CHARSET") or _DEFAULT_CHARSET
    if path not in _CHARSETS:
        with open(path, encoding="utf-8") as f:
            _CHARSETS[path] = list(json.load(f))
    return _CHARSETS[path]


def ctc_collapse(indices: np.ndarray, blank: int = 0) -> list[int]:
    """Greedy CTC: drop repeats of the previous step's index, then the blank."""
    idx = np.asarray(indices).reshape(-1)
    if idx.size == 0:
        return []
    keep = np.ones(idx.shape, dtype=bool)
    keep[1:] = idx[1:] != idx[:-1]
    keep &= idx != blank
    return [int(i) for i in idx[keep]]


def _as_btc(output: np.ndarray) -> np.ndarray:
    out = np.asarray(output)
    if out.ndim == 2:  # one sample's [T, C]
        out = out[None]
    if out.ndim != 3:
        raise ValueError(f"ctc_text: expected the output [batch, time, classes], got {out.shape}")
    return out


def ctc_text(output: np.ndarray) -> list[str]:
    """[B, T, C] class scores -> one decoded string per sample."""
    out = _as_btc(output)
    charset = _charset()
    if out.shape[-1] != len(charset):
        raise ValueError(f"ctc_text: {out.shape[-1]} classes but the charset has {len(charset)}")
    best = np.argmax(out, axis=-1)  # [B, T]
    return ["".join(charset[i] for i in ctc_collapse(row)) for row in best]


def ctc_text_margin(output: np.ndarray) -> tuple[list[str], np.ndarray]:
    """As ctc_text, with a score per sample: the smallest top-1 minus top-2 gap over the time
    steps (how close the line came to reading differently)."""
    out = _as_btc(output)
    texts = ctc_text(out)
    if out.shape[1] == 0 or out.shape[2] < 2:
        return texts, np.full(out.shape[0], np.nan)
    top2 = np.partition(out, -2, axis=-1)[..., -2:]
    gap = (top2[..., 1] - top2[..., 0]).min(axis=1)
    return texts, gap.astype(np.float64)


def _nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> list[int]:
    """Greedy non-maximum suppression on (x, y, w, h) boxes, best score first (as OpenCV's
    cv2.dnn.NMSBoxes, which nudenet uses)."""
    order = list(np.argsort(-scores, kind="stable"))
    x1, y1 = boxes[:, 0], boxes[:, 1]
    x2, y2 = x1 + boxes[:, 2], y1 + boxes[:, 3]
    area = np.maximum(boxes[:, 2], 0) * np.maximum(boxes[:, 3], 0)
    keep: list[int] = []
    while order:
        best = order.pop(0)
        keep.append(best)
        if not order:
            break
        rest = np.array(order)
        w = np.clip(np.minimum(x2[best], x2[rest]) - np.maximum(x1[best], x1[rest]), 0, None)
        h = np.clip(np.minimum(y2[best], y2[rest]) - np.maximum(y1[best], y1[rest]), 0, None)
        inter = w * h
        overlap = inter / np.maximum(area[best] + area[rest] - inter, 1e-12)
        order = [int(i) for i, o in zip(rest, overlap, strict=True) if o <= iou]
    return keep


def nudenet_detections(output: np.ndarray) -> list[tuple]:
    """nudenet's YOLOv8 output [B, 22, anchors] -> per image, its detections after nudenet's own
    post-processing (an anchor kept when its best class score is >= 0.2, NMS at 0.25 / 0.45),
    as a sorted tuple of (class index, x, y, w, h) in whole model pixels: what a deployment
    acts on. A flip is a detection that appears, disappears, changes class or moves a pixel."""
    out = np.asarray(output, dtype=np.float64)
    if out.ndim != 3 or out.shape[1] < 5:
        raise ValueError(f"nudenet_detections: expected [batch, 4 + classes, anchors], got "
                         f"{out.shape}")
    decided = []
    for sample in out:
        rows = sample.T  # [anchors, 4 + classes]
        scores = rows[:, 4:].max(axis=1)
        keep = scores >= 0.2
        cx, cy, w, h = rows[keep, :4].T
        boxes = np.stack([cx - w / 2, cy - h / 2, w, h], axis=1)
        classes = rows[keep, 4:].argmax(axis=1)
        strong = scores[keep] >= 0.25  # NMSBoxes' own score threshold
        picked = _nms(boxes[strong], scores[keep][strong], 0.45)
        found = [(int(classes[strong][i]), *(int(v) for v in boxes[strong][i]))
                 for i in picked]
        decided.append(tuple(sorted(found)))
    return decided
