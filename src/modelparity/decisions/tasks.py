"""Task-aware decisions: turn a model output into per-sample decisions, scores and margins.

A precision change matters when it changes what the model *decides*, so each task kind has a
head that knows its decision rule, the score the decision rests on, and the margin to the
decision boundary (how close a sample was to flipping). Pure NumPy; no runtime, no I/O.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from modelparity.decisions.elements import Elements, nearest
from modelparity.entrypoints import load_entry_point as _load_entry_point
from modelparity.errors import InputError
from modelparity.serialize import jsonable

KINDS = ("binary", "multiclass", "topk", "multilabel", "regression", "custom")


@dataclass(frozen=True)
class TaskConfig:
    """What decision the model makes, and the parameters of its decision rule."""

    kind: str
    output: str | None = None
    threshold: float | tuple[float, ...] = 0.5
    logits: bool = False
    k: int = 5
    atol: float = 1e-5
    rtol: float = 1e-3
    custom: str | None = None
    class_axis: int | None = None  # multiclass on rank > 2: the class axis, samples first

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise InputError(f"task: unknown kind {self.kind!r}; valid kinds: {', '.join(KINDS)}")
        threshold = self.threshold
        if isinstance(threshold, (list, tuple, np.ndarray)):
            threshold = tuple(float(t) for t in np.asarray(threshold, dtype=np.float64).ravel())
            if self.kind != "multilabel":
                raise InputError(
                    f"task: one threshold per class is only for multilabel, not {self.kind}"
                )
            if not threshold:
                raise InputError("task: threshold list is empty")
        else:
            threshold = float(threshold)
        object.__setattr__(self, "threshold", threshold)
        values = threshold if isinstance(threshold, tuple) else (threshold,)
        if any(math.isnan(t) for t in values):
            raise InputError("task: threshold is NaN")
        if self.logits and any(not 0.0 < t < 1.0 for t in values):
            raise InputError("task: with logits the threshold must be a probability in (0, 1)")
        if self.kind == "topk" and self.k < 1:
            raise InputError(f"task: k must be >= 1, got {self.k}")
        if self.atol < 0 or self.rtol < 0:
            raise InputError("task: atol and rtol must be >= 0")
        if self.class_axis is not None and self.kind not in ("multiclass", "multilabel"):
            raise InputError(f"--class-axis applies to multiclass and multilabel, not "
                             f"{self.kind}")
        if self.kind == "custom" and (not self.custom or ":" not in self.custom):
            raise InputError("task: kind 'custom' needs custom='module:function'")


@dataclass
class Decided:
    """Per-sample decisions, scores and margins for one batch or a whole run.

    `num_classes` is the width of the output the decision was made on (classification kinds),
    so that metrics can lay out the confusion matrix without seeing the raw output.
    """

    decision: np.ndarray
    score: np.ndarray
    margin: np.ndarray
    num_classes: int | None = None

    def __len__(self) -> int:
        return int(self.decision.shape[0])

    def head(self, n: int) -> Decided:
        """The first n samples (profiles run on the first samples of the data only)."""
        return Decided(self.decision[:n], self.score[:n], self.margin[:n], self.num_classes)

    @staticmethod
    def concat(parts: list[Decided]) -> Decided:
        """Join batches in order; an empty list gives an empty result."""
        if not parts:
            empty = np.zeros(0, dtype=np.float64)
            return Decided(np.zeros(0, dtype=np.int64), empty, empty.copy())
        sizes = {p.num_classes for p in parts if p.num_classes is not None}
        return Decided(
            decision=np.concatenate([p.decision for p in parts], axis=0),
            score=np.concatenate([p.score for p in parts]),
            margin=np.concatenate([p.margin for p in parts]),
            num_classes=max(sizes) if sizes else None,
        )


def _logit(p: float | np.ndarray) -> float | np.ndarray:
    return np.log(p) - np.log1p(-np.asarray(p))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-x))


def _nan(n: int) -> np.ndarray:
    return np.full(n, np.nan, dtype=np.float64)


class DecisionHead:
    """Decision rule for one task kind. Subclasses implement `_decide` (one decision per
    sample) and, where an output of rank > 2 is decided per element, `elements`; `flipped`
    compares per-sample decisions, `element_flipped` per-element ones."""

    def __init__(self, task: TaskConfig) -> None:
        self.task = task

    def decide(self, output: np.ndarray) -> Decided:
        """Decide for each sample (first axis = samples); an output decided per element is
        summarised by its element closest to the boundary."""
        elements = self.elements(output)
        return self._decide(output) if elements is None else self.summarise(elements, output)

    def summarise(self, elements: Elements, output: np.ndarray) -> Decided:
        """Per-sample decisions from per-element ones: each sample's element closest to the
        boundary (a sample is as much at risk as its most marginal element)."""
        decision, score, margin = nearest(elements)
        return Decided(decision, score, margin, num_classes=self.element_classes(output))

    def _decide(self, output: np.ndarray) -> Decided:
        raise NotImplementedError

    def elements(self, output: np.ndarray) -> Elements | None:
        """Per-element decisions (n, *E), or None where this output is decided per sample."""
        return None

    def element_classes(self, output: np.ndarray) -> int | None:
        return None

    def element_flipped(self, reference: Elements, candidate: Elements) -> np.ndarray:
        """Bool mask (n, *E): where the candidate's element decision differs."""
        return reference.decision != candidate.decision

    def element_priority(self, reference: Elements, candidate: Elements) -> np.ndarray:
        """Which flipped element of a sample is shown: the lowest value (closest to the
        boundary)."""
        return reference.margin

    def flipped(self, reference: Decided, candidate: Decided) -> np.ndarray:
        """Bool mask (n,): the candidate's decision differs anywhere in the sample."""
        _check_same_length(reference, candidate)
        n = len(reference)
        r = reference.decision.reshape(n, -1)
        c = candidate.decision.reshape(n, -1)
        if r.shape != c.shape:
            return np.ones(n, dtype=bool)
        return np.any(r != c, axis=1)

    def _as_array(self, output: np.ndarray, min_ndim: int = 1) -> np.ndarray:
        out = np.asarray(output)
        if out.ndim < min_ndim:
            want = "(n,)" if min_ndim == 1 else "(n, C)"
            raise InputError(
                f"{self.task.kind} task: expected output of shape {want}, got {out.shape}"
            )
        return out


def _check_same_length(reference: Decided, candidate: Decided) -> None:
    if len(reference) != len(candidate):
        raise ValueError(f"reference has {len(reference)} samples, candidate has {len(candidate)}")


class BinaryHead(DecisionHead):
    """score > threshold (strict); with logits the raw output is compared to logit(threshold)."""

    def _raw(self, output: np.ndarray) -> np.ndarray:
        out = np.asarray(output)
        if out.ndim == 1:
            return out.astype(np.float64)
        if out.ndim == 2 and out.shape[1] == 1:
            return out[:, 0].astype(np.float64)
        if out.ndim == 2 and out.shape[1] == 2:
            if self.task.logits:
                # Two-class softmax: p1 = sigmoid(z1 - z0).
                return out[:, 1].astype(np.float64) - out[:, 0].astype(np.float64)
            return out[:, 1].astype(np.float64)
        raise InputError(
            f"binary task: expected output of shape (n,), (n, 1) or (n, 2), got {out.shape}"
        )

    def _decide(self, output: np.ndarray) -> Decided:
        decision, score, margin = _threshold(self._raw(output), self.task.threshold,
                                             self.task.logits)
        return Decided(decision, score, margin, num_classes=2)

    def elements(self, output: np.ndarray) -> Elements | None:
        """A map of rank > 2 ([B, 1, H, W]) is a probability per element."""
        out = np.asarray(output)
        if out.ndim < 3:
            return None
        return Elements(*_threshold(out.astype(np.float64), self.task.threshold,
                                    self.task.logits))

    def element_classes(self, output: np.ndarray) -> int | None:
        return 2


def _threshold(raw: np.ndarray, threshold: object, logits: bool
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decision, score and margin of `score > threshold` (with logits: the raw value against
    logit(threshold), the score a sigmoid)."""
    t = np.asarray(threshold, dtype=np.float64)
    if logits:
        decision = raw > _logit(t)
        score = _sigmoid(raw)
    else:
        decision = raw > t
        score = raw
    return decision.astype(np.int64), score, np.abs(score - t)


def _top2(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """argmax, top-1 value and top-1 minus top-2 along the last axis."""
    num = x.shape[-1]
    decision = np.argmax(x, axis=-1).astype(np.int64)
    top2 = np.partition(x, num - 2, axis=-1)[..., -2:]
    return decision, top2[..., 1], top2[..., 1] - top2[..., 0]


class MulticlassHead(DecisionHead):
    """argmax over classes; margin = top-1 minus top-2 value. On an output of rank > 2 (a
    sequence [B, T, C], a segmentation [B, C, H, W]) the argmax is taken along `class_axis`
    for every other position."""

    def _class_axis(self, out: np.ndarray) -> int:
        axis = self.task.class_axis
        if axis is None:
            raise InputError(
                f"multiclass task: the output has shape {out.shape} (rank {out.ndim}); say which "
                f"axis holds the classes with --class-axis (for example 2 for [B, T, C], 1 for "
                f"[B, C, H, W])")
        if not -out.ndim <= axis < out.ndim or axis % out.ndim == 0:
            raise InputError(
                f"--class-axis {axis}: not a class axis of an output of shape {out.shape} "
                f"(axis 0 holds the samples)")
        return axis % out.ndim

    def elements(self, output: np.ndarray) -> Elements | None:
        out = np.asarray(output)
        if out.ndim < 3:
            return None
        x = np.moveaxis(out, self._class_axis(out), -1).astype(np.float64)
        if x.shape[-1] < 2:
            raise InputError(f"multiclass task: the class axis of output shape {out.shape} has "
                             f"{x.shape[-1]} class; expected at least 2")
        if x.size == 0:
            empty = np.zeros(x.shape[:-1])
            return Elements(empty.astype(np.int64), empty, empty.copy())
        return Elements(*_top2(x))

    def element_classes(self, output: np.ndarray) -> int | None:
        out = np.asarray(output)
        return int(out.shape[self._class_axis(out)])

    def _decide(self, output: np.ndarray) -> Decided:
        out = np.asarray(output)
        if out.ndim != 2 or out.shape[1] < 2:
            raise InputError(
                f"multiclass task: expected output of shape (n, C>=2), got {out.shape}"
            )
        n, num = out.shape
        x = out.astype(np.float64)
        if n == 0:
            return Decided(np.zeros(0, np.int64), _nan(0), _nan(0), num_classes=num)
        return Decided(*_top2(x), num_classes=num)


class TopKHead(DecisionHead):
    """The k highest classes, best first; a flip is a change of the top-k *set*."""

    def _decide(self, output: np.ndarray) -> Decided:
        out = np.asarray(output)
        k = self.task.k
        if out.ndim != 2:
            raise InputError(f"topk task: expected output of shape (n, C), got {out.shape}")
        n, num = out.shape
        if k >= num:
            raise InputError(f"topk task: k must be < C, got k={k} and C={num}")
        x = out.astype(np.float64)
        if n == 0:
            return Decided(np.zeros((0, k), np.int64), _nan(0), _nan(0), num_classes=num)
        # The k+1 largest, in any order, then sorted descending.
        part = np.argpartition(-x, k, axis=1)[:, : k + 1]
        vals = np.take_along_axis(x, part, axis=1)
        order = np.argsort(-vals, axis=1, kind="stable")
        part = np.take_along_axis(part, order, axis=1)
        vals = np.take_along_axis(vals, order, axis=1)
        return Decided(
            part[:, :k].astype(np.int64),
            vals[:, k - 1],
            vals[:, k - 1] - vals[:, k],
            num_classes=num,
        )

    def flipped(self, reference: Decided, candidate: Decided) -> np.ndarray:
        _check_same_length(reference, candidate)
        r = np.sort(reference.decision, axis=1)
        c = np.sort(candidate.decision, axis=1)
        if r.shape != c.shape:
            return np.ones(len(reference), dtype=bool)
        return np.any(r != c, axis=1)


class MultilabelHead(DecisionHead):
    """Per class score > threshold; margin = distance of the closest class to its threshold.
    An output of rank > 2 (several maps, [B, K, H, W]) is decided per element."""

    def elements(self, output: np.ndarray) -> Elements | None:
        out = np.asarray(output)
        if out.ndim < 3:
            return None
        t = np.asarray(self.task.threshold, dtype=np.float64).ravel()
        if t.size > 1:  # one per class, along the class axis
            axis = self.task.class_axis
            if axis is None or axis % out.ndim == 0:
                raise InputError(f"multilabel task: {t.size} thresholds (one per class) on an "
                                 f"output of shape {out.shape} need --class-axis")
            if out.shape[axis] != t.size:
                raise InputError(f"multilabel task: {t.size} thresholds for the "
                                 f"{out.shape[axis]} classes on axis {axis} of {out.shape}")
            shape = [1] * out.ndim
            shape[axis] = t.size
            t = t.reshape(shape)
        return Elements(*_threshold(out.astype(np.float64), t if t.size > 1 else t[0],
                                    self.task.logits))

    def _decide(self, output: np.ndarray) -> Decided:
        out = np.asarray(output)
        if out.ndim != 2:
            raise InputError(f"multilabel task: expected output of shape (n, C), got {out.shape}")
        n, num = out.shape
        t = np.asarray(self.task.threshold, dtype=np.float64)
        if t.ndim == 1 and t.size != num:
            raise InputError(
                f"multilabel task: expected 1 or {num} thresholds (one per class), got {t.size}"
            )
        decision, scores, dist = _threshold(out.astype(np.float64), t, self.task.logits)
        if n == 0 or num == 0:
            return Decided(decision, _nan(n), _nan(n), num_classes=num)
        closest = np.argmin(dist, axis=1)
        rows = np.arange(n)
        return Decided(decision, scores[rows, closest], dist[rows, closest], num_classes=num)


class RegressionHead(DecisionHead):
    """The values themselves; a flip is |c - r| > atol + rtol*|r| anywhere in the sample. An
    output of rank > 2 is checked per element and only per-sample counts are kept."""

    def _decide(self, output: np.ndarray) -> Decided:
        out = self._as_array(output)
        n = out.shape[0]
        values = out.astype(np.float64)
        score = values.copy() if values.ndim == 1 else _nan(n)
        return Decided(values, score, _nan(n))

    def elements(self, output: np.ndarray) -> Elements | None:
        out = np.asarray(output)
        if out.ndim < 3:
            return None
        values = out.astype(np.float64)
        return Elements(values, values, np.full(values.shape, np.nan))

    def _far(self, r: np.ndarray, c: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore"):
            close = np.abs(c - r) <= self.task.atol + self.task.rtol * np.abs(r)
        close &= np.isfinite(r)  # an infinite reference would make the tolerance infinite
        # Identical values (same Inf) and NaN on both sides are agreement, not a flip.
        close |= (r == c) | (np.isnan(r) & np.isnan(c))
        return ~close

    def flipped(self, reference: Decided, candidate: Decided) -> np.ndarray:
        _check_same_length(reference, candidate)
        n = len(reference)
        r = reference.decision.reshape(n, -1).astype(np.float64)
        c = candidate.decision.reshape(n, -1).astype(np.float64)
        if r.shape != c.shape:
            return np.ones(n, dtype=bool)
        return np.any(self._far(r, c), axis=1)

    def element_flipped(self, reference: Elements, candidate: Elements) -> np.ndarray:
        return self._far(reference.decision, candidate.decision)

    def element_priority(self, reference: Elements, candidate: Elements) -> np.ndarray:
        """The largest difference is shown (regression has no boundary)."""
        with np.errstate(invalid="ignore"):
            return -np.abs(candidate.decision - reference.decision)


def load_entry_point(spec: str, what: str = "custom task") -> Callable:
    """The custom decision function named by `module:function`."""
    return _load_entry_point(spec, InputError, expected=f"{what}: module:function")


def _sample_text(value: object) -> str:
    """One sample's non-numeric decision (a decoded text line, a set of boxes) as the text
    flips compare: a string as it is, anything else as canonical JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, (set, frozenset)):
        value = sorted(value, key=repr)
    return json.dumps(jsonable(value), sort_keys=True, default=str)


def _custom_decisions(values: object) -> np.ndarray:
    """Numbers stay an array (n,) or (n, k); strings, tuples, lists of boxes become one text
    per sample (a string array, saved without pickle). A sequence of tuples or lists is text
    whatever its shape: one box per image in one batch, none in the next must not turn the
    decisions of one batch into numbers and the next into an empty (n, 0) array."""
    array = None
    sequences = isinstance(values, (list, tuple)) and any(
        isinstance(v, (list, tuple)) for v in values)
    if not sequences:
        try:
            array = np.asarray(values)
        except ValueError:  # ragged: a different number of items per sample
            array = None
    if array is not None and array.dtype.kind in "biuf":
        return array
    if array is not None and array.ndim == 0:
        return array
    items = list(values)  # type: ignore[call-overload]
    texts = [_sample_text(v.tolist() if isinstance(v, np.ndarray) else v) for v in items]
    return np.array(texts, dtype=str) if texts else np.zeros(0, dtype="<U1")


class CustomHead(DecisionHead):
    """A user function: output -> decisions or (decisions, scores). Decisions are numbers
    (n,) or (n, k), or one string / tuple / list per sample (a decoded text, a set of boxes),
    which flips compare as text."""

    def __init__(self, task: TaskConfig) -> None:
        super().__init__(task)
        self.fn: Callable = load_entry_point(str(task.custom))

    def decide(self, output: np.ndarray) -> Decided:
        out = np.asarray(output)
        n = out.shape[0] if out.ndim else 0
        try:
            result = self.fn(out)
        except Exception as exc:  # the user's code: one line, never a traceback
            text = " ".join(str(exc).split()) or type(exc).__name__
            raise InputError(f"custom task: {self.task.custom} raised {type(exc).__name__} on "
                             f"an output of shape {out.shape}: {text}") from exc
        if isinstance(result, tuple):
            if len(result) != 2:
                raise InputError(
                    f"custom task: {self.task.custom} must return decisions or (decisions, scores)"
                )
            decision = _custom_decisions(result[0])
            score = np.asarray(result[1], dtype=np.float64)
        else:
            decision, score = _custom_decisions(result), _nan(n)
        name = self.task.custom
        if decision.ndim == 0 or decision.shape[0] != n:
            raise InputError(
                f"custom task: {name} returned decisions of shape {decision.shape} for {n} samples"
            )
        if score.shape != (n,):
            raise InputError(
                f"custom task: {name} returned scores of shape {score.shape}, expected ({n},)"
            )
        return Decided(decision, score, _nan(n))


_HEADS: dict[str, type[DecisionHead]] = {
    "binary": BinaryHead,
    "multiclass": MulticlassHead,
    "topk": TopKHead,
    "multilabel": MultilabelHead,
    "regression": RegressionHead,
    "custom": CustomHead,
}


def make_head(task: TaskConfig) -> DecisionHead:
    """The decision head for a task (a custom entry point is imported now, so errors come early)."""
    return _HEADS[task.kind](task)


class DecisionAccumulator:
    """Collects per-batch `Decided` results in compact arrays, in order.

    These are the only per-sample state an audit keeps, so they are stored small: class
    indices in the narrowest integer type that holds them, scores and margins as float32
    (enough for scores that came from float32 outputs). With `expected` (the sample count, when
    known) the arrays are allocated once and `result()` makes no copy.
    """

    def __init__(self, expected: int | None = None) -> None:
        self._expected = expected
        self._arrays: dict[str, np.ndarray] = {}
        self._filled = 0
        self._num_classes: int | None = None

    @staticmethod
    def _compact(name: str, values: np.ndarray, num_classes: int | None) -> np.ndarray:
        if name in ("score", "margin"):
            return values.astype(np.float32, copy=False)
        if values.dtype.kind in "iu" and num_classes is not None:
            return values.astype(np.min_scalar_type(-max(num_classes, 1)), copy=False)
        return values

    def update(self, decided: Decided) -> None:
        if decided.num_classes is not None:
            self._num_classes = max(self._num_classes or 0, decided.num_classes)
        n = len(decided)
        parts = {"decision": decided.decision, "score": decided.score, "margin": decided.margin}
        for name, values in parts.items():
            values = self._compact(name, np.asarray(values), decided.num_classes)
            array = self._arrays.get(name)
            if array is None:
                capacity = max(self._expected or 0, n, 1024)
                array = np.empty((capacity, *values.shape[1:]), dtype=values.dtype)
            elif values.dtype != array.dtype:
                array = array.astype(np.promote_types(array.dtype, values.dtype))
            if self._filled + n > len(array):  # unknown or wrong count: grow geometrically
                grown = np.empty((max(2 * len(array), self._filled + n), *array.shape[1:]),
                                 dtype=array.dtype)
                grown[: self._filled] = array[: self._filled]
                array = grown
            array[self._filled : self._filled + n] = values
            self._arrays[name] = array
        self._filled += n

    def result(self) -> Decided:
        if not self._arrays:
            return Decided.concat([])
        return Decided(
            decision=self._arrays["decision"][: self._filled],
            score=self._arrays["score"][: self._filled],
            margin=self._arrays["margin"][: self._filled],
            num_classes=self._num_classes,
        )
