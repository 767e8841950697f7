"""JUnit XML for CI test-report viewers: one testsuite "modelparity", one testcase per candidate
backend and check.

Test cases, for each candidate backend SPEC:
    SPEC / ran            an <error> when the backend failed, <skipped> when it did not run
    SPEC / flips          a <failure> listing the first flipped samples when any decision flipped
    SPEC / policy EXPR    one per policy: a <failure> when it failed, <skipped> when it could not
                          be checked (with the reason)
and `reference SPEC / ran` for the reference.
"""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET

from modelparity.policy import PolicyReport, format_actual
from modelparity.report import flips_count
from modelparity.report.names import result_change_text
from modelparity.result import AuditResult, BackendResult

FLIPS_IN_MESSAGE = 10


def flip_lines(backend: BackendResult, limit: int,
               result: AuditResult | None = None) -> list[str]:
    """The first flipped samples, closest to the boundary first, one readable line each; with
    `result`, decisions read with its class names."""
    if backend.flips is None:
        return []
    lines = []
    for record in backend.flips.records(limit):
        change = result_change_text(result, record)
        where = ""
        if backend.flips.per_element:
            position = ", ".join(str(p) for p in record.get("position") or ())
            where = (f" at ({position}), {record.get('flipped_elements', 0):,} element(s) "
                     "flipped")
        lines.append(
            f"sample {record['index']}{where}: reference score "
            f"{_score(record['reference_score'])}, "
            f"candidate score {_score(record['candidate_score'])}, "
            f"margin {_margin(record['reference_margin'])}, {change}")
    if backend.flips.count > limit:
        lines.append(f"... and {backend.flips.count - limit} more")
    return lines


def _score(value: float | None) -> str:
    return "-" if value is None else f"{value:.7f}"


def _margin(value: float | None) -> str:
    return "-" if value is None else f"{value:.2e}"


def _case(suite: ET.Element, classname: str, name: str, seconds: float = 0.0) -> ET.Element:
    return ET.SubElement(suite, "testcase", classname=classname, name=name,
                         time=f"{seconds:.3f}")


def _seconds(backend: BackendResult) -> float:
    latency = backend.latency
    return latency.batches * latency.mean_ms / 1e3 if latency else 0.0


def _ran_case(suite: ET.Element, backend: BackendResult, name: str) -> None:
    case = _case(suite, "modelparity", name, _seconds(backend))
    if backend.status == "failed":
        error = ET.SubElement(case, "error", message=backend.error or "backend failed",
                              type=(backend.failure or {}).get("kind", "failed"))
        trace = (backend.failure or {}).get("traceback")
        error.text = "\n".join(filter(None, [backend.error, trace]))
    elif backend.status == "skipped":
        ET.SubElement(case, "skipped", message=backend.error or "skipped")


def build_junit(result: AuditResult, policies_report: PolicyReport | None = None) -> ET.Element:
    suites = ET.Element("testsuites", name="modelparity")
    suite = ET.SubElement(suites, "testsuite", name="modelparity")
    properties = ET.SubElement(suite, "properties")
    for key, value in (("model", result.model.get("source")),
                       ("inputs", result.inputs.get("source")),
                       ("task", result.task.get("kind")),
                       ("reference", result.reference.spec)):
        ET.SubElement(properties, "property", name=key, value=str(value))

    _ran_case(suite, result.reference, f"reference {result.reference.spec} / ran")
    for backend in result.candidates:
        spec = backend.spec
        _ran_case(suite, backend, f"{spec} / ran")
        case = _case(suite, "modelparity", f"{spec} / flips")
        if backend.flips is None:
            ET.SubElement(case, "skipped", message=f"no decisions compared (backend "
                                                   f"{backend.status})")
        elif backend.flips.count:
            flips = backend.flips
            if flips.per_element:
                message = f"{flips_count(flips)} flipped against {result.reference.spec}"
            else:
                message = (f"{flips.count} of {flips.total} decisions flipped against "
                           f"{result.reference.spec}")
            failure = ET.SubElement(case, "failure", message=message, type="flips")
            lines = [message + ", closest to the boundary first:",
                     *flip_lines(backend, FLIPS_IN_MESSAGE, result)]
            if backend.fingerprint is not None:
                lines.append(f"precision: {backend.fingerprint.evidence}")
            failure.text = "\n".join(lines)
        if policies_report is None:
            continue
        for outcome in policies_report.for_backend(spec):
            case = _case(suite, "modelparity", f"{spec} / policy {outcome.policy.text}")
            if not outcome.checked:
                ET.SubElement(case, "skipped", message=f"not checked: {outcome.reason}")
            elif outcome.failed:
                message = (f"policy {outcome.policy.text} failed: {outcome.policy.quantity} = "
                           f"{format_actual(outcome.actual)}")
                failure = ET.SubElement(case, "failure", message=message, type="policy")
                lines = [message]
                if outcome.policy.quantity in ("flips", "flip_rate"):
                    lines += flip_lines(backend, FLIPS_IN_MESSAGE, result)
                failure.text = "\n".join(lines)

    cases = suite.findall("testcase")
    suite.set("tests", str(len(cases)))
    suite.set("failures", str(sum(1 for c in cases if c.find("failure") is not None)))
    suite.set("errors", str(sum(1 for c in cases if c.find("error") is not None)))
    suite.set("skipped", str(sum(1 for c in cases if c.find("skipped") is not None)))
    suite.set("time", f"{sum(float(c.get('time', 0)) for c in cases):.3f}")
    for key in ("tests", "failures", "errors", "skipped", "time"):
        suites.set(key, suite.get(key, "0"))
    for element in suites.iter():  # model names and runtime errors are anybody's text
        element.text = xml_text(element.text)
        element.tail = xml_text(element.tail)
        for key, value in element.attrib.items():
            element.set(key, xml_text(value))
    return suites


_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def xml_text(text: str | None) -> str | None:
    """`text` without the characters XML 1.0 forbids (control characters from a node name in
    a runtime's error message): ElementTree writes them, and no parser reads the file back."""
    return None if text is None else _NOT_XML.sub("\ufffd", text)


def write_junit(result: AuditResult, path: str,
                policies_report: PolicyReport | None = None) -> str:
    """Write the JUnit XML file for `result` (and the policy outcomes) to `path`."""
    tree = ET.ElementTree(build_junit(result, policies_report))
    ET.indent(tree)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tree.write(path, encoding="utf-8", xml_declaration=True)
    return path
