"""Per-sample decisions on disk (NPZ, read without pickle), beside a run's report.json: for
--resume, and so a saved report re-renders its score scatter."""

from __future__ import annotations

import os

import numpy as np

from modelparity.decisions.elements import ElementFlips
from modelparity.decisions.tasks import Decided
from modelparity.spec import slug


def decided_path(folder: str, spec: str) -> str:
    """Where a backend's per-sample decisions are saved in `folder`."""
    return os.path.join(folder, slug(spec) + ".npz")


def save_decided(path: str, decided: Decided) -> None:
    np.savez(path, decision=decided.decision, score=decided.score, margin=decided.margin,
             num_classes=np.array(-1 if decided.num_classes is None else decided.num_classes))


def load_decided(path: str) -> Decided | None:
    """The decisions saved at `path`, or None when there are none (or they do not read)."""
    if not os.path.exists(path):
        return None
    try:
        with np.load(path, allow_pickle=False) as arrays:
            classes = int(arrays["num_classes"])
            return Decided(arrays["decision"], arrays["score"], arrays["margin"],
                           None if classes < 0 else classes)
    except (OSError, ValueError, KeyError):
        return None


def element_flips_path(folder: str, spec: str) -> str:
    """Where a backend's per-sample element flips (outputs decided per element) are saved."""
    return os.path.join(folder, slug(spec) + ".elements.npz")


def save_element_flips(path: str, flips: ElementFlips) -> None:
    np.savez(path, **flips.arrays())


def load_element_flips(path: str) -> ElementFlips | None:
    if not os.path.exists(path):
        return None
    try:
        with np.load(path, allow_pickle=False) as arrays:
            return ElementFlips.from_arrays(dict(arrays))
    except (OSError, ValueError, KeyError):
        return None
