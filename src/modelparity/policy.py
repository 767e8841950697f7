"""Policies: `--fail-on` expressions that turn an audit into a red or green answer.

A policy names a condition that FAILS the run when it is true for any candidate backend
(the reference is never checked). Grammar, one expression per `--fail-on` (repeat the option,
or separate expressions with commas):

    POLICY   := QUANTITY OP VALUE            spaces around OP are allowed
    OP       := >  >=  <  <=  ==  !=
    QUANTITY := flips                number of flipped decisions           flips>0, flips>=3
              | flip_rate            flips / samples compared (0-1)        flip_rate>0.001
              | max_abs              largest |candidate - reference|       max_abs>1e-4
              | max_rel              largest relative error                max_rel>1e-3
              | max_ulp              largest error in units in last place  max_ulp>8
              | nonfinite            values NaN or Inf where the reference  nonfinite>0
                                     is finite
              | metric.NAME          candidate metric minus reference's    metric.f1<-0.001
              | precision            precision the outputs show (fingerprint verdict)
              | reported_precision   precision the runtime itself reports  precision!=fp32
              | status               ok, failed or skipped                 status!=ok
              | findings             knowledge-base rules that apply       findings>0
    VALUE    := a number for the numeric quantities; for precision and reported_precision
                one of fp32 fp16 bf16 tf32 int8 (float32, float16, bfloat16 ... also accepted),
                for status one of ok failed skipped; those three take only == and !=.

`max_abs`, `max_rel` and `max_ulp` are the largest over all outputs, and infinite when any
output value is NaN or Inf where the reference's is finite (`nonfinite` > 0): no error
threshold passes a backend that lost its numbers. `metric.NAME` is a delta
(candidate minus reference), so `metric.f1<-0.001` fails when F1 drops by more than 0.001;
`metric.f1` also matches `f1_macro` for multi-class and multi-label tasks. Metric names:
accuracy, precision, recall, f1 (and their `_macro` forms), top1_accuracy, topk_accuracy,
subset_accuracy, hamming_loss, mae, rmse, r2.

A quantity that a backend does not have cannot be checked, and is then listed as
"not checked" with the reason, and does NOT fail the run: `metric.*` without labels (or for a
metric the task does not compute), `precision` without a fingerprint (fingerprint=False) or
with an `unknown` verdict, `reported_precision` when the runtime reports none, and every
quantity but `status` and `findings` on a backend that did not run (a failed backend fails the
run anyway, with exit code 2). `findings` counts the silent-precision rules that apply to the
backend's configuration, whether or not it ran (`modelparity lint` shows the same).

    policies = [parse_policy("flips>0"), parse_policy("max_abs>1e-4")]
    report = evaluate(result, policies)
    report.failed            # True when any policy failed on any candidate
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from modelparity.errors import ModelParityError
from modelparity.result import AuditResult, BackendResult
from modelparity.serialize import jsonable

OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    ">=": operator.ge, "<=": operator.le, "==": operator.eq, "!=": operator.ne,
    ">": operator.gt, "<": operator.lt,
}
NUMERIC = ("flips", "flip_rate", "max_abs", "max_rel", "max_ulp", "nonfinite", "findings")
CATEGORICAL = {
    "precision": ("fp32", "fp16", "bf16", "tf32", "int8"),
    "reported_precision": ("fp32", "fp16", "bf16", "tf32", "int8"),
    "status": ("ok", "failed", "skipped"),
}
METRICS = ("accuracy", "precision", "recall", "f1", "precision_macro", "recall_macro",
           "f1_macro", "top1_accuracy", "topk_accuracy", "subset_accuracy", "hamming_loss",
           "mae", "rmse", "r2")
PRECISION_ALIASES = {"float32": "fp32", "f32": "fp32", "fp32": "fp32", "float16": "fp16",
                     "half": "fp16", "f16": "fp16", "fp16": "fp16", "bfloat16": "bf16",
                     "bf16": "bf16", "tfloat32": "tf32", "tf32": "tf32", "int8": "int8",
                     "i8": "int8", "u8": "int8"}
VALID_FORMS = ("expected QUANTITY OP VALUE such as flips>0, flip_rate>0.001, max_abs>1e-4, "
               "max_rel>1e-3, max_ulp>8, metric.f1<-0.001, precision!=fp32, "
               "reported_precision!=fp32, status!=ok, findings>0 (operators > >= < <= == !=)")
_PATTERN = re.compile(r"^\s*(?P<quantity>[A-Za-z_][\w.]*)\s*(?P<op>>=|<=|==|!=|>|<)\s*"
                      r"(?P<value>[^\s<>=!]+)\s*$")


class PolicyError(ModelParityError):
    """A `--fail-on` expression that cannot be parsed or names an unknown quantity."""


@dataclass(frozen=True)
class Policy:
    quantity: str  # flips, flip_rate, max_abs, max_rel, max_ulp, metric.NAME, precision, ...
    op: str  # > >= < <= == !=
    value: float | str
    text: str  # the expression as written

    def holds_for(self, actual: float | str) -> bool:
        """True when the failing condition is met for `actual`."""
        return OPERATORS[self.op](actual, self.value)

    def __str__(self) -> str:
        return self.text


def _error(text: str, problem: str) -> PolicyError:
    return PolicyError(f"--fail-on {text!r}: {problem}; {VALID_FORMS}")


def parse_policy(text: str) -> Policy:
    """Parse one expression such as `flips>0` (see the module docstring for the grammar)."""
    if not isinstance(text, str) or not text.strip():
        raise _error(str(text), "empty expression")
    match = _PATTERN.match(text)
    if match is None:
        hint = " (use == to compare for equality)" if re.search(r"(?<![<>=!])=(?!=)", text) \
            else ""
        raise _error(text, f"cannot read it{hint}")
    quantity, op, raw = match["quantity"].lower(), match["op"], match["value"]
    clean = text.strip()
    if quantity.startswith("metric."):
        name = quantity.removeprefix("metric.")
        if name not in METRICS:
            raise _error(text, f"unknown metric '{name}' (metrics: {', '.join(METRICS)})")
    elif quantity not in NUMERIC and quantity not in CATEGORICAL:
        known = ", ".join([*NUMERIC, "metric.NAME", *CATEGORICAL])
        raise _error(text, f"unknown quantity '{quantity}' (quantities: {known})")
    if quantity in CATEGORICAL:
        if op not in ("==", "!="):
            raise _error(text, f"'{quantity}' can only be compared with == or !=")
        word = raw.lower()
        if quantity != "status":
            word = PRECISION_ALIASES.get(word, word)
        allowed = CATEGORICAL[quantity]
        if word not in allowed:
            raise _error(text, f"'{raw}' is not a {quantity} value (one of {', '.join(allowed)})")
        return Policy(quantity, op, word, clean)
    try:
        number = float(raw)
    except ValueError:
        raise _error(text, f"'{raw}' is not a number") from None
    if math.isnan(number):
        raise _error(text, "NaN is not a threshold")
    return Policy(quantity, op, number, clean)


def parse_policies(texts: str | Policy | Iterable[str | Policy] | None) -> list[Policy]:
    """Policies from strings (each may hold several expressions separated by commas)."""
    if texts is None:
        return []
    if isinstance(texts, (str, Policy)):
        texts = [texts]
    policies: list[Policy] = []
    for item in texts:
        if isinstance(item, Policy):
            policies.append(item)
            continue
        parts = [part for part in str(item).split(",") if part.strip()]
        if not parts:
            raise _error(str(item), "empty expression")
        policies.extend(parse_policy(part) for part in parts)
    return policies


@dataclass
class PolicyOutcome:
    policy: Policy
    backend: str  # the candidate's spec
    actual: float | str | None  # the value the policy was checked against (None: not checked)
    failed: bool
    checked: bool = True
    reason: str | None = None  # why it was not checked

    @property
    def verdict(self) -> str:
        if not self.checked:
            return "not checked"
        return "failed" if self.failed else "held"

    def describe(self) -> str:
        """One line: `spec: flips>0 failed (flips = 2)`."""
        if not self.checked:
            return f"{self.backend}: {self.policy.text} not checked ({self.reason})"
        return (f"{self.backend}: {self.policy.text} {self.verdict} "
                f"({self.policy.quantity} = {format_actual(self.actual)})")

    def to_dict(self) -> dict[str, Any]:
        return jsonable({
            "policy": self.policy.text,
            "backend": self.backend,
            "actual": self.actual,
            "verdict": self.verdict,
            "failed": self.failed,
            "reason": self.reason,
        })


@dataclass
class PolicyReport:
    outcomes: list[PolicyOutcome] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return any(outcome.failed for outcome in self.outcomes)

    @property
    def failures(self) -> list[PolicyOutcome]:
        return [outcome for outcome in self.outcomes if outcome.failed]

    @property
    def not_checked(self) -> list[PolicyOutcome]:
        return [outcome for outcome in self.outcomes if not outcome.checked]

    def for_backend(self, spec: str) -> list[PolicyOutcome]:
        return [outcome for outcome in self.outcomes if outcome.backend == spec]

    def summary(self) -> str:
        failed, unchecked = len(self.failures), len(self.not_checked)
        held = len(self.outcomes) - failed - unchecked
        return f"policies: {failed} failed, {held} held, {unchecked} not checked"

    def to_dict(self) -> dict[str, Any]:
        return {"failed": self.failed, "outcomes": [o.to_dict() for o in self.outcomes]}


def format_actual(value: float | str | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.4g}"


def _max_over_outputs(backend: BackendResult, attribute: str) -> float | None:
    """The largest error over the outputs; inf where any output value came back NaN or Inf
    for a finite reference value (an error no threshold allows, even where nothing finite
    was left to compare)."""
    if backend.nonfinite:
        return math.inf
    values = [float(getattr(stats, attribute)) for stats in backend.errors.values()]
    values = [v for v in values if not math.isnan(v)]
    return max(values) if values else None


def _actual(backend: BackendResult, quantity: str) -> tuple[float | str | None, str | None]:
    """The backend's value for `quantity`, or (None, why it cannot be checked)."""
    if quantity == "status":
        return backend.status, None
    if quantity == "findings":
        return float(len(backend.findings)), None
    if not backend.ok:
        return None, f"backend {backend.status}"
    if quantity in ("flips", "flip_rate"):
        if backend.flips is None:
            return None, "no decisions compared"
        flips = backend.flips
        return (float(flips.count) if quantity == "flips" else flips.rate), None
    if quantity == "nonfinite":
        return (float(backend.nonfinite), None) if backend.errors else (
            None, "no output values compared")
    if quantity in ("max_abs", "max_rel", "max_ulp"):
        value = _max_over_outputs(backend, quantity)
        return (value, None) if value is not None else (None, "no output values compared")
    if quantity == "precision":
        if backend.fingerprint is None:
            return None, "no fingerprint: the audit ran with fingerprint off"
        verdict = backend.fingerprint.verdict
        if verdict not in CATEGORICAL["precision"]:
            return None, f"fingerprint verdict {verdict}"
        return verdict, None
    if quantity == "reported_precision":
        reported = backend.precision
        if not reported:
            return None, "the runtime reports no precision"
        return PRECISION_ALIASES.get(str(reported).lower(), str(reported).lower()), None
    name = quantity.removeprefix("metric.")
    deltas = backend.metric_deltas
    if not deltas:
        return None, "no labels, so no metrics"
    for key in (name, f"{name}_macro"):
        if key in deltas:
            value = deltas[key]
            if value is None or math.isnan(value):
                return None, f"metric {key} is undefined here"
            return float(value), None
    return None, f"this task computes no {name} (it has {', '.join(deltas)})"


def evaluate(result: AuditResult, policies: Sequence[Policy | str] | Policy | str
             ) -> PolicyReport:
    """Check every policy on every candidate backend of `result`."""
    outcomes = []
    parsed = parse_policies(policies)
    for backend in result.candidates:
        for policy in parsed:
            actual, reason = _actual(backend, policy.quantity)
            if reason is not None:
                outcomes.append(PolicyOutcome(policy, backend.spec, None, False, False, reason))
            else:
                assert actual is not None
                outcomes.append(PolicyOutcome(policy, backend.spec, actual,
                                              bool(policy.holds_for(actual))))
    return PolicyReport(outcomes)


def requirement_met(backend: BackendResult, requirement: Policy | str) -> bool:
    """A policy read the other way round, as a requirement (`keep-fp32 --policy flips==0`):
    True when its condition holds for `backend`; False where it cannot be checked."""
    parsed = requirement if isinstance(requirement, Policy) else parse_policy(requirement)
    actual, reason = _actual(backend, parsed.quantity)
    return reason is None and actual is not None and bool(parsed.holds_for(actual))
