"""A pytest helper: assert that a model makes the same decisions on other runtimes.

    from modelparity.testing import assert_parity

    def test_openvino_agrees():
        assert_parity("model.onnx", ["openvino:cpu"], "inputs.npz",
                      policy=["flips>0", "max_abs>1e-4"], task="binary")

The policies use the `--fail-on` grammar (see `modelparity.policy`): each names a condition
that FAILS the test. A backend that does not run also fails it. On failure the AssertionError
lists the failing policies, the flipped samples (index, reference score, candidate score,
margin) and the evidence for the precision each failing backend really used.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from modelparity.policy import Policy, PolicyReport, evaluate, parse_policies
from modelparity.result import AuditResult

FLIPS_IN_MESSAGE = 10


def parity_message(result: AuditResult, report: PolicyReport) -> str | None:
    """The failure message for an audit and its policy outcomes, or None when it passed."""
    failed_backends = [b for b in result.backends if not b.ok]
    if not failed_backends and not report.failed:
        return None
    from modelparity.report.junit import flip_lines

    problems = []
    if failed_backends:
        problems.append(f"{len(failed_backends)} backend(s) did not run")
    if report.failed:
        problems.append(f"{len(report.failures)} policy check(s) failed")
    lines = [f"modelparity: {' and '.join(problems)} for {result.model.get('source')} "
             f"(reference {result.reference.spec}, {result.inputs.get('samples')} samples)"]
    for backend in failed_backends:
        lines.append(f"  {backend.spec}: {backend.status}: {backend.error}")
    for outcome in report.failures:
        lines.append(f"  {outcome.describe()}")
    for backend in result.candidates:
        if not any(o.backend == backend.spec for o in report.failures):
            continue
        if backend.flips is not None and backend.flips.count:
            lines.append(f"{backend.spec}: {backend.flips.count} of {backend.flips.total} "
                         "decisions flipped, closest to the boundary first:")
            lines += [f"  {line}" for line in flip_lines(backend, FLIPS_IN_MESSAGE, result)]
        reported = backend.precision or "none"
        if backend.fingerprint is not None:
            lines.append(f"{backend.spec}: precision reported {reported}, measured "
                         f"{backend.fingerprint.verdict}: {backend.fingerprint.evidence}")
        else:
            lines.append(f"{backend.spec}: precision reported {reported}, not measured "
                         "(fingerprint=False)")
    if report.not_checked:
        lines.append("not checked: " + "; ".join(o.describe() for o in report.not_checked))
    return "\n".join(lines)


def assert_parity(
    model: Any,
    backends: Sequence[str] | str,
    inputs: Any = None,
    *,
    policy: Sequence[str | Policy] | str | Policy = ("flips>0",),
    **audit_kwargs: Any,
) -> AuditResult:
    """Audit `model` on `backends` against the reference (see `modelparity.audit` for the
    arguments) and raise AssertionError when a backend fails or any `policy` fails.

    Returns the AuditResult when everything holds. A malformed policy raises
    `modelparity.policy.PolicyError` before anything runs.
    """
    from modelparity.api import audit

    policies = parse_policies(policy)
    if isinstance(backends, str):
        backends = [backends]
    result = audit(model, list(backends), inputs, **audit_kwargs)
    report = evaluate(result, policies)
    message = parity_message(result, report)
    if message is not None:
        raise AssertionError(message)
    return result
