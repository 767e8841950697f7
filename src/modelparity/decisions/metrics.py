"""Task metrics against labels, per backend, and their deltas against the reference.

A flip only matters to a user through what it does to the metrics they report, so the same
metrics are computed on every backend's decisions (scikit-learn, zero_division=0).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from modelparity.decisions.tasks import Decided, DecisionHead, TaskConfig
from modelparity.errors import InputError
from modelparity.serialize import json_float


def _skm():
    """scikit-learn is imported on first use: ~1 s and ~150 MiB that audits without labels skip."""
    from sklearn import metrics

    return metrics


@dataclass(frozen=True)
class Metrics:
    """Metric values, and for classification the confusion matrix with its class labels."""

    values: dict[str, float]
    confusion: np.ndarray | None
    classes: list

    def to_dict(self) -> dict:
        return {
            "values": {k: json_float(v) for k, v in self.values.items()},
            "confusion": None if self.confusion is None else self.confusion.tolist(),
            "classes": [c.item() if isinstance(c, np.generic) else c for c in self.classes],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Metrics:
        """Inverse of `to_dict`, from the JSON form: a value saved as None (NaN or Inf) comes
        back as NaN, the confusion matrix as an int64 array (an empty one as (0, 0))."""
        confusion = data.get("confusion")
        matrix = None
        if confusion is not None:
            matrix = np.asarray(confusion, dtype=np.int64)
            if matrix.size == 0 and matrix.ndim == 1:
                matrix = matrix.reshape(0, 0)
        return cls(
            values={k: math.nan if v is None else float(v)
                    for k, v in (data.get("values") or {}).items()},
            confusion=matrix,
            classes=list(data.get("classes") or []),
        )


def _integer_labels(labels: np.ndarray, kind: str) -> np.ndarray:
    """Class-index labels as int64; (n, 1) is accepted as (n,)."""
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1:
        raise InputError(
            f"labels: {kind} task expects shape (n,) class indices, got {labels.shape}"
        )
    if labels.dtype.kind == "b":
        return labels.astype(np.int64)
    if labels.dtype.kind not in "iuf":
        raise InputError(f"labels: {kind} task expects integer class indices, got {labels.dtype}")
    if labels.dtype.kind == "f" and not np.all(np.isfinite(labels) & (labels == np.round(labels))):
        raise InputError(f"labels: {kind} task expects integer class indices, got non-integers")
    return labels.astype(np.int64)


def _binary(labels: np.ndarray, decided: Decided) -> Metrics:
    y = _integer_labels(labels, "binary")
    bad = np.setdiff1d(np.unique(y), [0, 1])
    if bad.size:
        raise InputError(f"labels: binary task expects 0/1 labels, got values such as {bad[0]}")
    pred = decided.decision.astype(np.int64).ravel()
    kw = {"zero_division": 0}
    values = {
        "accuracy": _skm().accuracy_score(y, pred),
        "precision": _skm().precision_score(y, pred, labels=[0, 1], pos_label=1, **kw),
        "recall": _skm().recall_score(y, pred, labels=[0, 1], pos_label=1, **kw),
        "f1": _skm().f1_score(y, pred, labels=[0, 1], pos_label=1, **kw),
    }
    confusion = _skm().confusion_matrix(y, pred, labels=[0, 1])
    return Metrics({k: float(v) for k, v in values.items()}, confusion, [0, 1])


def _multiclass(labels: np.ndarray, decided: Decided) -> Metrics:
    y = _integer_labels(labels, "multiclass")
    pred = decided.decision.astype(np.int64).ravel()
    num = decided.num_classes or (int(pred.max()) + 1 if pred.size else 0)
    outside = y[(y < 0) | (y >= num)] if decided.num_classes else y[y < 0]
    if outside.size:  # a 4-class model scored on labels 0..8 is the wrong labels file
        raise InputError(f"labels: the model's output has {num} classes (0..{num - 1}), but "
                         f"the labels hold {int(outside[0])}")
    classes = sorted(set(range(num)) | {int(v) for v in np.unique(y)})
    kw = {"average": "macro", "zero_division": 0}
    # Macro averages run over the classes present in labels or predictions (sklearn's default),
    # so a 1000-class model evaluated on 50 samples is not averaged with 950 zeros.
    values = {
        "accuracy": _skm().accuracy_score(y, pred),
        "precision_macro": _skm().precision_score(y, pred, **kw),
        "recall_macro": _skm().recall_score(y, pred, **kw),
        "f1_macro": _skm().f1_score(y, pred, **kw),
    }
    confusion = _skm().confusion_matrix(y, pred, labels=classes)
    return Metrics({k: float(v) for k, v in values.items()}, confusion, classes)


def _topk(labels: np.ndarray, decided: Decided) -> Metrics:
    y = _integer_labels(labels, "topk")
    top = decided.decision.reshape(len(decided), -1)
    if y.size == 0:
        return Metrics({"top1_accuracy": math.nan, "topk_accuracy": math.nan}, None, [])
    values = {
        "top1_accuracy": float(np.mean(top[:, 0] == y)),
        "topk_accuracy": float(np.mean(np.any(top == y[:, None], axis=1))),
    }
    return Metrics(values, None, [])


def _multilabel(labels: np.ndarray, decided: Decided) -> Metrics:
    pred = decided.decision.astype(np.int64)
    if labels.shape != pred.shape:
        raise InputError(
            f"labels: multilabel task expects shape {pred.shape} (n, C) of 0/1, got {labels.shape}"
        )
    if labels.dtype.kind not in "biuf" or not np.all((labels == 0) | (labels == 1)):
        raise InputError("labels: multilabel task expects 0/1 values")
    y = labels.astype(np.int64)
    kw = {"average": "macro", "zero_division": 0}
    values = {
        "subset_accuracy": _skm().accuracy_score(y, pred),
        "precision_macro": _skm().precision_score(y, pred, **kw),
        "recall_macro": _skm().recall_score(y, pred, **kw),
        "f1_macro": _skm().f1_score(y, pred, **kw),
        "hamming_loss": _skm().hamming_loss(y, pred),
    }
    confusion = _skm().multilabel_confusion_matrix(y, pred)
    return Metrics({k: float(v) for k, v in values.items()}, confusion, list(range(pred.shape[1])))


def _regression(labels: np.ndarray, decided: Decided) -> Metrics:
    pred = decided.decision.astype(np.float64)
    if labels.dtype.kind not in "biuf":
        raise InputError(f"labels: regression task expects numbers, got {labels.dtype}")
    y = labels.astype(np.float64)
    if y.size != pred.size:
        raise InputError(
            f"labels: regression task expects shape {pred.shape} like the output, "
            f"got {labels.shape}"
        )
    y = y.reshape(pred.shape)
    nan = math.nan
    if not np.all(np.isfinite(pred)) or not np.all(np.isfinite(y)):
        # A backend that produced NaN/Inf has no meaningful error metric.
        return Metrics({"mae": nan, "rmse": nan, "r2": nan}, None, [])
    values = {
        "mae": float(_skm().mean_absolute_error(y, pred)),
        "rmse": float(math.sqrt(_skm().mean_squared_error(y, pred))),
        "r2": float(_skm().r2_score(y, pred)) if len(y) >= 2 else nan,
    }
    return Metrics(values, None, [])


def _custom(labels: np.ndarray, decided: Decided) -> Metrics:
    pred = decided.decision
    n = len(decided)
    if labels.size != pred.size:
        raise InputError(
            f"labels: custom task expects shape {pred.shape} like the decisions, got {labels.shape}"
        )
    equal = labels.reshape(pred.shape).reshape(n, -1) == pred.reshape(n, -1)
    accuracy = float(np.mean(np.all(equal, axis=1))) if n else math.nan
    return Metrics({"accuracy": accuracy}, None, [])


_BY_KIND = {
    "binary": _binary,
    "multiclass": _multiclass,
    "topk": _topk,
    "multilabel": _multilabel,
    "regression": _regression,
    "custom": _custom,
}


def compute_metrics(
    head_or_task: DecisionHead | TaskConfig, labels: np.ndarray, decided: Decided
) -> Metrics:
    """Metrics of one backend's decisions against the labels (first axis = samples)."""
    task = head_or_task.task if isinstance(head_or_task, DecisionHead) else head_or_task
    labels = np.asarray(labels)
    n = len(decided)
    if labels.ndim == 0:
        raise InputError(f"labels: expected {n} labels, got a scalar")
    if labels.shape[0] != n:
        raise InputError(f"labels: expected {n} labels, got {labels.shape[0]}")
    return _BY_KIND[task.kind](labels, decided)


def metric_deltas(reference: Metrics, candidate: Metrics) -> dict[str, float]:
    """candidate - reference for each metric both have."""
    return {
        name: float(candidate.values[name]) - float(value)
        for name, value in reference.values.items()
        if name in candidate.values
    }
