"""Matching rules against a resolved configuration, and the fix for what matched.

Pure Python: no runtime is imported, so `modelparity lint` explains a CUDA or Core ML
configuration on a machine that has neither. A condition that cannot be checked here (no NVIDIA
GPU to read the compute capability from, say) does not stop a rule: the finding is kept and
says what it depends on.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import re
from dataclasses import dataclass, field
from typing import Any

from modelparity.knowledge.configuration import Configuration
from modelparity.knowledge.rules import KIND_WORDS, PRECISION_WORDS, Fix, Rule, load_rules
from modelparity.numerics.fingerprint import WEAK_CONFIDENCE
from modelparity.spec import BackendSpec

#: What a measured fingerprint verdict says about a rule's precision.
AGREES, CONTRADICTS, DIFFERS, PREDICTED, UNMEASURED, UNCONFIRMED, WEIGHTS = (
    "confirmed", "contradicted", "different", "predicted", "not measured", "unconfirmed",
    "weights")


#: The rule's fields that `Finding.to_dict` writes under the same name.
_RULE_FIELDS = ("family", "title", "precision", "kind", "default", "effect", "bites", "versions",
                "source", "status")


@dataclass(frozen=True)
class Finding:
    """A rule that applies to one backend's configuration."""

    rule: Rule
    backend: str
    unchecked: list[str] = field(default_factory=list)  # conditions this machine cannot check
    fixed_spec: str | None = None
    measured: str | None = None  # the fingerprint's verdict, once the backend ran
    agreement: str = UNMEASURED

    @property
    def conditional(self) -> bool:
        return bool(self.unchecked)

    def headline(self) -> str:
        return (f"{self.rule.id}: {self.rule.title} ({PRECISION_WORDS[self.rule.precision]}, "
                f"{KIND_WORDS[self.rule.kind]})")

    def precision_line(self) -> str:
        """What precision, why it happens, and the default: "BF16, silent default: ..."."""
        rule = self.rule
        head = f"{PRECISION_WORDS[rule.precision]}, {KIND_WORDS[rule.kind]}"
        if rule.kind == "default":
            return f"{head}: {rule.default}"
        return f"{head} (the default: {rule.default})"

    def verdict(self) -> str | None:
        """The measurement's word on the rule, in a sentence; None before a measurement."""
        expected = PRECISION_WORDS[self.rule.precision]
        measured = (self.measured or "").upper()
        if self.agreement == AGREES:
            return f"measured {measured}: the outputs confirm the rule"
        if self.agreement == CONTRADICTS:
            return (f"measured FP32: the rule expects {expected} here, but the outputs show "
                    "FP32; the measurement wins")
        if self.agreement == DIFFERS:
            return (f"measured {measured}, not the {expected} the rule expects; the measurement "
                    "wins")
        if self.agreement == PREDICTED:
            return "predicted, not measured: this runtime cannot execute here"
        if self.agreement == WEIGHTS:
            computed = f" (the compute measured {measured})" if measured else ""
            return (f"about weights stored as {expected}, which the compute's precision does "
                    f"not show{computed}: its effect is this backend's error and flips against "
                    f"the reference")
        if self.agreement == UNCONFIRMED:
            return (f"measured {measured or 'nothing clear'}, but too weakly to confirm or "
                    f"overrule the rule: the rule's {expected} stands")
        return None

    def to_dict(self) -> dict[str, Any]:
        rule = self.rule
        return {
            "rule": rule.id,
            "family": rule.family,
            "title": rule.title,
            "precision": rule.precision,
            "kind": rule.kind,
            "default": rule.default,
            "effect": rule.effect,
            "bites": rule.bites,
            "versions": rule.versions,
            "source": rule.source,
            "links": list(rule.links),
            "status": rule.status,
            "unchecked": self.unchecked,
            "fix": {"spec": self.fixed_spec, "code": rule.fix.code, "note": rule.fix.note},
            "measured": self.measured,
            "agreement": self.agreement,
            "verdict": self.verdict(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], backend: str = "") -> Finding:
        """Inverse of `to_dict`, from the JSON form. `to_dict` does not write the backend, so
        the caller passes it (the spec of the result the finding belongs to).

        The rule is the bundled one with that id; where the saved fields differ from it (a
        report from another version) the saved ones win. An id that is not bundled gets a rule
        rebuilt from the saved fields, with what `to_dict` does not write (runtime, package,
        targets, conditions, example, the fix's options/env/target) empty; the runtime is
        taken from `backend` when given. "verdict" is derived, so it is not read.
        """
        fix = data.get("fix") or {}
        saved = {name: data.get(name, "") or "" for name in _RULE_FIELDS}
        code, note = fix.get("code", "") or "", fix.get("note")
        links = tuple(str(link) for link in data.get("links") or ())
        rule = next((r for r in load_rules() if r.id == data["rule"]), None)
        if rule is None:
            rule = Rule(id=str(data["rule"]), runtime=backend.split(":", 1)[0], package="",
                        targets=(), when=(), example="", fix=Fix(code=code, note=note),
                        links=links, **saved)
        else:
            changed = {k: v for k, v in saved.items() if getattr(rule, k) != v}
            if "links" in data and links != rule.links:
                changed["links"] = links
            if (code, note) != (rule.fix.code, rule.fix.note):
                changed["fix"] = dataclasses.replace(rule.fix, code=code, note=note)
            if changed:
                rule = dataclasses.replace(rule, **changed)
        return cls(
            rule=rule,
            backend=backend,
            unchecked=list(data.get("unchecked") or []),
            fixed_spec=fix.get("spec"),
            measured=data.get("measured"),
            agreement=data.get("agreement") or UNMEASURED,
        )


def _matches(value: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(value.lower(), p.lower()) for p in patterns)


def _in_not_in(value: str, condition: dict[str, Any]) -> bool:
    """The value matches the condition's `in` patterns (if any) and none of its `not_in`."""
    if "in" in condition and not _matches(value, condition["in"]):
        return False
    return not ("not_in" in condition and _matches(value, condition["not_in"]))


def _version_tuple(text: str) -> str | None:
    found = re.match(r"\d+(\.\d+)*", text.strip())
    return found.group(0) if found else None


def evaluate(condition: dict[str, Any], config: Configuration) -> bool | None:
    """True or False; None when this machine cannot tell (no GPU, unknown CPU flags)."""
    if "option" in condition:
        name = condition["option"]
        if "given" in condition and config.given(name) != condition["given"]:
            return False
        value = config.option(name)
        return _in_not_in(condition.get("default", "") if value is None else value, condition)
    if "env" in condition:
        return _in_not_in(config.env.get(condition["env"], ""), condition)
    if "cpu_flags_any" in condition:
        if config.cpu_flags is None:
            return None
        return any(flag in config.cpu_flags for flag in condition["cpu_flags_any"])
    if "machine_in" in condition:
        return _matches(config.machine, condition["machine_in"])
    if "os_in" in condition:
        return _matches(config.system, condition["os_in"])
    if "gpu_sm_at_least" in condition:
        if config.gpu_sm is None:
            return None
        return config.gpu_sm >= condition["gpu_sm_at_least"]
    if "macos_in" in condition:  # a Mac's OS version; unknown anywhere else
        if config.os_version is None:
            return None
        return _matches(config.os_version, condition["macos_in"])
    if "qairt_at_least" in condition:
        from packaging.version import Version

        if config.qairt is None or _version_tuple(config.qairt) is None:
            return None
        return Version(_version_tuple(config.qairt)) >= Version(condition["qairt_at_least"])
    if "version" in condition:
        from packaging.specifiers import SpecifierSet

        version = _version_tuple(config.version or "")
        if version is None:
            return None
        return version in SpecifierSet(condition["version"])
    raise ValueError(f"unknown condition {condition}")


def describe_condition(condition: dict[str, Any]) -> str:
    """What an unchecked condition needs, in words."""
    if "gpu_sm_at_least" in condition:
        sm = condition["gpu_sm_at_least"]
        return (f"applies on NVIDIA GPUs of compute capability {sm // 10}.{sm % 10} or newer; "
                "no NVIDIA GPU was found here")
    if "cpu_flags_any" in condition:
        return (f"applies on CPUs with {' or '.join(condition['cpu_flags_any'])}; this OS does "
                "not say which CPU features are present")
    if "version" in condition:
        return f"applies to versions {condition['version']}; the runtime is not installed here"
    if "macos_in" in condition:
        return (f"applies on macOS {' or '.join(condition['macos_in'])}; this machine is not a "
                f"Mac, so it cannot tell")
    if "qairt_at_least" in condition:
        return (f"applies with QAIRT (the QNN SDK) {condition['qairt_at_least']} or newer behind "
                f"the QNN EP; its version is not read here")
    return str(condition)


def match(config: Configuration, rules: tuple[Rule, ...] | None = None) -> list[Finding]:
    """The findings for one configuration, with the spec that fixes them."""
    matched: list[tuple[Rule, list[str]]] = []
    for rule in load_rules() if rules is None else rules:
        if rule.runtime != config.runtime or not _matches(config.target, list(rule.targets)):
            continue
        outcomes = [(c, evaluate(c, config)) for c in rule.when]
        if any(outcome is False for _, outcome in outcomes):
            continue
        unchecked = [describe_condition(c) for c, outcome in outcomes if outcome is None]
        matched.append((rule, unchecked))
    fixed = _apply_fixes(config.spec, [rule for rule, _ in matched])
    text = fixed.text if fixed is not None else None
    return [Finding(rule, config.spec.text, unchecked, fixed_spec=text)
            for rule, unchecked in matched]


def fixed_spec(spec: BackendSpec, findings: list[Finding]) -> BackendSpec | None:
    """`spec` with every finding's fix applied (options, environment variables, target); None
    when the fixes change nothing."""
    return _apply_fixes(spec, [finding.rule for finding in findings])


def _apply_fixes(spec: BackendSpec, rules: list[Rule]) -> BackendSpec | None:
    target, options, env = spec.target, dict(spec.options), dict(spec.env)
    for rule in rules:
        fix = rule.fix
        if fix.target:
            target = fix.target
        for key, value in fix.options.items():
            for existing in [k for k in options if k.lower() == key.lower()]:
                del options[existing]
            options[key] = value
        env.update(fix.env)
    fixed = BackendSpec(spec.runtime, target, options, env)
    return None if fixed.text == spec.text else fixed


def compare_with_measurement(finding: Finding, verdict: str | None, predicted: bool,
                             confidence: float | None = None) -> Finding:
    """The finding with what the fingerprint's verdict says about the rule (the measurement
    wins, when it is clear); a new Finding, `finding` is left as it was. Unchanged without a
    verdict. A verdict of "unknown" or "inconclusive", or one below `WEAK_CONFIDENCE` that
    would disagree with the rule, overrules nothing: a weak measurement is not evidence against
    a documented default."""
    if predicted:
        return dataclasses.replace(finding, agreement=PREDICTED)
    if finding.rule.scope == "weights":  # ran, with or without a fingerprint
        return dataclasses.replace(finding, measured=verdict, agreement=WEIGHTS)
    if verdict is None:
        return finding
    expected = finding.rule.precision
    unclear = verdict in ("unknown", "inconclusive")
    agrees = verdict == expected or (expected == "reduced" and verdict != "fp32" and not unclear)
    weak = confidence is not None and confidence < WEAK_CONFIDENCE
    if unclear or (weak and not agrees):
        return dataclasses.replace(finding, measured=verdict, agreement=UNCONFIRMED)
    if verdict == expected or (expected == "reduced" and verdict != "fp32"):
        agreement = AGREES
    elif verdict == "fp32":
        agreement = CONTRADICTS
    else:
        agreement = DIFFERS
    return dataclasses.replace(finding, measured=verdict, agreement=agreement)
