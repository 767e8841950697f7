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
