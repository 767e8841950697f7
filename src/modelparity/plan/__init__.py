"""Plan an audit before any process starts (pure: no runtime, no I/O).

Every spec is parsed and checked here with its runtime's own declaration, so a misspelt option
fails the whole audit at once, not as a failed row after the reference has run. The plan names
every backend that will run, by canonical spec: the reference, the candidates (each followed by
its fixed variant with `fix`), the yardsticks the fingerprint needs, and, for a runtime that
cannot execute on this machine, the precision predicted for it and the stand-in that runs.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from modelparity.backends.registry import get_runtime, parse_spec
from modelparity.backends.standin import Prediction
from modelparity.errors import InputError, SpecError
from modelparity.knowledge import fixed_spec, lint, predicted_precision
from modelparity.spec import BackendSpec

DEFAULT_REFERENCE = "ort:cpu"
PROFILE_SAMPLES = 20_000  # an error profile needs a sample of the data, not all of it
# Yardsticks by name; the first word is the precision. Runtimes round differently within one
# precision (after every op; or only where values enter and leave fused compute layers, with
# what runs before the first layer and after the last in FP32, as OpenVINO does; dynamic, 7-bit
# or calibrated static INT8), so a precision may have several: the nearest one speaks for it.
#
# FP32 noise has several yardsticks because FP32 implementations differ by more than one ulp:
# other kernels sum in another order, and on a deep or ill-conditioned model that reordering
# grows to 1e-3 (measured: OpenVINO f32 against ONNX Runtime on a 214-class conv net, where ONNX
# Runtime against itself with other optimisations showed 5.5e-6). The FP32 band is the widest
# of them; the ones that cannot run on this model or machine are left out (`fitted`).
PROFILE_BACKENDS = {
    "fp32": "ort:cpu?graph_optimization_level=basic&intra_op_num_threads=1",
    "fp32 batch": "ort:cpu",
    "fp32 openvino": "openvino:cpu?INFERENCE_PRECISION_HINT=f32",
    "fp32 torch": "torch:cpu",
    "fp16": "emulate:fp16",
    "fp16 layer": "emulate:fp16?rounding=layer",
    "bf16": "emulate:bf16",
    "bf16 layer": "emulate:bf16?rounding=layer",
    "tf32": "emulate:tf32",
    "int8": "emulate:int8",
    "int8 7-bit": "emulate:int8?reduce_range=1",
    "int8 static": "emulate:int8?mode=static",
}
# Yardsticks run at another batch size than the audit's: ONNX Runtime picks other kernels for
# one sample than for a batch (a matrix-vector product instead of a matrix product).
PROFILE_BATCH_SIZES = {"fp32 batch": 1}


@dataclass(frozen=True)
class Settings:
    """How the backends run; every default is here, once (the CLI reads them too)."""

    batch_size: int = 256
    timeout: float = 300.0
    warmup: int = 3
    fingerprint: bool = True
    profile_samples: int = PROFILE_SAMPLES
    fix: bool = False

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise InputError(f"--batch-size: expected a positive integer, got {self.batch_size}")
        if self.warmup < 0:
            raise InputError(f"--warmup: expected an integer >= 0, got {self.warmup}")
        if not math.isfinite(self.timeout) or self.timeout <= 0:  # nan and inf too
            raise InputError(f"--timeout: expected a positive, finite number of seconds, got "
                             f"{self.timeout}")
        if self.profile_samples < 1:
            raise InputError(f"--profile-samples: expected a positive count, got "
                             f"{self.profile_samples}")


@dataclass(frozen=True)
class Planned:
    """One backend the audit will run."""

    spec: BackendSpec
    role: str  # reference | candidate | profile
    label: str | None = None  # a yardstick's name ("bf16 layer"), also on a candidate that is one
    fix_of: str | None = None  # a fixed variant: the spec text of the candidate it fixes
    fixed_by: str | None = None  # a candidate with a fixable finding: its fixed variant
    prediction: Prediction | None = None  # cannot execute here: what a stand-in emulates
    teacher_forced: bool = False  # carried state: fed the reference's state, not its own
    batch_size: int | None = None  # a yardstick run at its own batch size, not the audit's

    @property
    def suffix(self) -> str:
        """What tells this run from another of the same spec."""
        return ((TEACHER_FORCED if self.teacher_forced else "")
                + (f" [batch {self.batch_size}]" if self.batch_size is not None else ""))

    @property
    def text(self) -> str:
        return self.spec.text + self.suffix

    @property
    def key(self) -> str:
        return self.spec.key + self.suffix


TEACHER_FORCED = " [teacher-forced]"


@dataclass(frozen=True)
class Plan:
    reference: Planned
    candidates: tuple[Planned, ...]
    yardsticks: tuple[Planned, ...] = ()
    settings: Settings = field(default_factory=Settings)
    # With carried state, each candidate again, fed the reference's state at every step: its
    # flips beside the candidate's own-state ones tell one step's error from drift.
    teacher_forced: tuple[Planned, ...] = ()

    @property
    def backends(self) -> tuple[Planned, ...]:
        return (self.reference, *self.candidates, *self.teacher_forced, *self.yardsticks)

    def fitted(self, unable: dict[str, str]) -> Plan:
        """The plan without the yardsticks that cannot run here ({label: why}): OpenVINO where
        it is not installed, PyTorch where the model is not a PyTorch model, another batch size
        where the model takes one batch (or one item) per call."""
        kept = tuple(y for y in self.yardsticks if y.label not in unable)
        return dataclasses.replace(self, yardsticks=kept)


def predict(spec: BackendSpec) -> Prediction | None:
    """For a runtime that cannot execute here (Core ML's provider off macOS): the precision the
    knowledge base expects of this configuration, which an emulation then stands in for."""
    runtime = get_runtime(spec.runtime)
    reason = runtime.cannot_execute(spec) if runtime.cannot_execute else None
    if reason is None:
        return None
    findings = lint(spec)
    rules = ", ".join(f.rule.id for f in findings) or "no rule applies"
    return Prediction(predicted_precision(findings), reason=reason,
                      basis=f"the knowledge base ({rules}) for these provider options")


def make_plan(backends: Sequence[str | BackendSpec], reference: str | BackendSpec =
              DEFAULT_REFERENCE, settings: Settings | None = None, *,
              carries_state: bool = False) -> Plan:
    """Parse and check every spec, and name every backend the audit will run. Raises
    `SpecError` (one line) for a bad spec, before anything has started. With
    `carries_state`, each candidate (not its fixed variant) also runs teacher-forced."""
    settings = settings or Settings()
    ref = parse_spec(reference)
    specs: list[BackendSpec] = []
    for value in backends:
        spec = parse_spec(value)
        if spec.key != ref.key and spec.key not in {s.key for s in specs}:
            specs.append(spec)
    if not specs:
        raise SpecError("--backend: name at least one backend besides the reference "
                        f"({ref.text})")
    ordered: list[BackendSpec] = []
    fixes: dict[str, BackendSpec] = {}  # a candidate's key -> its fixed variant
    taken = {ref.key, *(s.key for s in specs)}
    for spec in specs:
        ordered.append(spec)
        fixed = fixed_spec(spec, lint(spec)) if settings.fix else None
        if fixed is None or fixed.key == ref.key:
            continue
        fixes[spec.key] = fixed
        if fixed.key not in taken:  # run right after the candidate it fixes
            taken.add(fixed.key)
            ordered.append(fixed)
    text_of = {spec.key: spec.text for spec in ordered}
    fix_of = {fixed.key: text_of[key] for key, fixed in fixes.items()}
    candidates = tuple(
        Planned(spec, "candidate", fix_of=fix_of.get(spec.key),
                fixed_by=text_of[fixes[spec.key].key] if spec.key in fixes else None,
                prediction=predict(spec))
        for spec in ordered)
    profiles = {label: parse_spec(text) for label, text in PROFILE_BACKENDS.items()}
    if settings.fingerprint:  # a candidate that is a yardstick serves as one: it has its label
        label_of = {spec.key: label for label, spec in profiles.items()
                    if label not in PROFILE_BATCH_SIZES}
        candidates = tuple(dataclasses.replace(c, label=label_of.get(c.key)) for c in candidates)
    yardsticks = tuple(
        Planned(spec, "profile", label=label, batch_size=PROFILE_BATCH_SIZES.get(label))
        for label, spec in profiles.items()
        if settings.fingerprint and (spec.key not in taken or label in PROFILE_BATCH_SIZES))
    teacher = tuple(dataclasses.replace(c, role="teacher-forced", teacher_forced=True,
                                        fixed_by=None, label=None)
                    for c in candidates if carries_state and c.fix_of is None)
    return Plan(Planned(ref, "reference", prediction=predict(ref)), candidates, yardsticks,
                settings, teacher)
