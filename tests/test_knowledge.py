"""The knowledge base: every rule file validates against the schema, and every rule fires on its
own example configuration and stays silent once its fix is applied. Pure Python: nothing runs."""

from __future__ import annotations

import dataclasses
import json
import re
from importlib import resources

import jsonschema
import pytest

from modelparity.backends import parse_spec
from modelparity.errors import ModelParityError
from modelparity.knowledge import Finding, compare_with_measurement, fixed_spec, lint, match
from modelparity.knowledge.configuration import Configuration, resolve
from modelparity.knowledge.matcher import (
    AGREES,
    CONTRADICTS,
    DIFFERS,
    PREDICTED,
    UNCONFIRMED,
    UNMEASURED,
)
from modelparity.knowledge.rules import Rule, load_rules, parse_rule_file, rule_files
from modelparity.spec import BackendSpec

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

RULES = load_rules()


def schema() -> dict:
    return json.loads(resources.files("modelparity.knowledge").joinpath(
        "rule-schema.json").read_text())


def config_for(spec: BackendSpec, context: dict, *, environ: dict | None = None
               ) -> Configuration:
    """`spec` resolved on a made-up machine: nothing from this one leaks into the check."""
    base = resolve(spec, environ=environ or {})
    return dataclasses.replace(
        base,
        machine=context.get("machine", "x86_64"),
        system=context.get("os", "linux"),
        cpu_flags=tuple(context.get("cpu_flags", ())),
        gpu_sm=context.get("gpu_sm"),
        gpu_name="test GPU" if "gpu_sm" in context else None,
        version=context.get("version", "99.0"),
        os_version=context.get("os_version"),
        qairt=context.get("qairt"),
        reported={**base.reported, **context.get("reported", {})},
    )


@pytest.mark.parametrize("path", rule_files(), ids=lambda p: p.name)
def test_rule_file_validates_against_the_schema(path) -> None:
    data = tomllib.loads(path.read_text())
    jsonschema.validate(data, schema())
    assert data["family"] + ".toml" == path.name


def test_the_schema_rejects_a_rule_without_a_fix() -> None:
    path = next(p for p in rule_files() if p.name == "openvino.toml")
    data = tomllib.loads(path.read_text())
    del data["rules"][0]["fix"]
    with pytest.raises(jsonschema.ValidationError, match="fix"):
        jsonschema.validate(data, schema())


def test_rule_ids_are_unique_across_files() -> None:
    ids = [rule.id for rule in RULES]
    assert len(ids) == len(set(ids))
    assert len(ids) >= 20


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.id)
def test_rule_fires_on_its_example_and_not_once_fixed(rule: Rule) -> None:
    spec = parse_spec(rule.example)
    config = config_for(spec, rule.example_context)
    fired = {f.rule.id: f for f in match(config)}
    assert rule.id in fired, f"{rule.id} does not fire on its example {rule.example}"
    assert not fired[rule.id].unchecked, "the example context should settle every condition"

    fixed = fixed_spec(spec, [fired[rule.id]])
    assert fixed is not None and fixed.text != spec.text
    after = {f.rule.id for f in match(config_for(fixed, rule.example_context))}
    assert rule.id not in after, f"{rule.id} still fires after its fix: {fixed.text}"


def test_openvino_cpu_rule_depends_on_the_cpu() -> None:
    spec = parse_spec("openvino:cpu")
    with_bf16 = {f.rule.id for f in match(config_for(spec, {"cpu_flags": ["amx_bf16"]}))}
    without = {f.rule.id for f in match(config_for(spec, {"cpu_flags": ["avx2", "avx512f"]}))}
    assert "OV-1" in with_bf16
    assert "OV-1" not in without


@pytest.mark.parametrize("text", [
    "openvino:cpu?INFERENCE_PRECISION_HINT=f32",
    "openvino:cpu?EXECUTION_MODE_HINT=ACCURACY",
    "openvino:cpu?inference_precision_hint=f32",  # keys match case-insensitively
    "ort:coreml?MLComputeUnits=CPUOnly",
    "ort:cpu",
    "ort:cuda?use_tf32=0",
    "torch:cuda?allow_tf32=false",
])
def test_configurations_that_stay_fp32_have_no_findings(text: str) -> None:
    config = config_for(parse_spec(text), {"cpu_flags": ["avx512_bf16"], "gpu_sm": 90})
    assert [f.rule.id for f in match(config)] == []


def test_a_condition_this_machine_cannot_check_keeps_the_finding_as_conditional() -> None:
    spec = parse_spec("ort:cuda")
    unknown = match(config_for(spec, {}))  # no GPU: compute capability unknown
    assert [f.rule.id for f in unknown] == ["ORT-4"]
    assert "compute capability 8.0" in unknown[0].unchecked[0]
    assert match(config_for(spec, {"gpu_sm": 75})) == []  # Turing: no TF32
    assert not match(config_for(spec, {"gpu_sm": 80}))[0].unchecked


def test_environment_variables_come_from_the_process_and_the_spec() -> None:
    spec = parse_spec("ort:tensorrt")
    context = {"gpu_sm": 90}
    assert "ORT-6" in {f.rule.id for f in match(config_for(spec, context))}
    quiet = config_for(spec, context, environ={"NVIDIA_TF32_OVERRIDE": "0"})
    assert "ORT-6" not in {f.rule.id for f in match(quiet)}
    fixed = config_for(parse_spec("ort:tensorrt?env.NVIDIA_TF32_OVERRIDE=0"), context)
    assert "ORT-6" not in {f.rule.id for f in match(fixed)}
    assert fixed.options == {}  # env.* options are not runtime options


def test_env_options_are_kept_apart_from_runtime_options() -> None:
    spec = parse_spec("ort:tensorrt?env.NVIDIA_TF32_OVERRIDE=0&trt_fp16_enable=1")
    assert spec.options == {"trt_fp16_enable": "1"}
    assert spec.env == {"NVIDIA_TF32_OVERRIDE": "0"}
    assert spec.text == "ort:tensorrt?trt_fp16_enable=1&env.NVIDIA_TF32_OVERRIDE=0"
    assert parse_spec(spec.text) == spec
    for bad, needle in [("ort:cpu?env.=1", "names no variable"),
                        ("ort:cpu?env.A=1&env.A=2", "given twice")]:
        with pytest.raises(ModelParityError, match=needle):
            parse_spec(bad)


def test_version_conditions_use_the_runtime_version() -> None:
    spec = parse_spec("torch:cuda")
    old = {f.rule.id for f in match(config_for(spec, {"gpu_sm": 80, "version": "1.11.0"}))}
    new = {f.rule.id for f in match(config_for(spec, {"gpu_sm": 80, "version": "2.13.0"}))}
    assert "PT-1" in old and "PT-1" not in new
    assert "PT-2" in old and "PT-2" in new


def test_options_reported_by_the_runtime_count_as_defaults() -> None:
    # ONNX Runtime reports effective provider options; a reported use_tf32=0 silences ORT-4
    spec = parse_spec("ort:cuda")
    description = {"provider_options": {"CUDAExecutionProvider": {"use_tf32": "0"}}}
    config = dataclasses.replace(resolve(spec, description, environ={}), gpu_sm=90)
    assert match(config) == []


def test_fixed_spec_merges_every_fix_and_replaces_options_case_insensitively() -> None:
    spec = parse_spec("ort:coreml?modelformat=NeuralNetwork&AllowLowPrecisionAccumulationOnGPU=1")
    findings = match(config_for(spec, {}))
    assert {f.rule.id for f in findings} == {"ORT-1", "ORT-3"}
    fixed = fixed_spec(spec, findings)
    assert fixed is not None
    assert fixed.options == {"ModelFormat": "MLProgram", "AllowLowPrecisionAccumulationOnGPU": "0"}
    assert all(f.fixed_spec == fixed.text for f in findings)
    assert match(config_for(fixed, {})) == []


def test_matmul_precision_highest_leaves_cudnn_tf32_on() -> None:
    """set_float32_matmul_precision('highest') governs matmuls only: PT-2 (cuDNN's TF32 for
    convolutions) still holds, and goes only with allow_tf32=0."""
    context = {"gpu_sm": 86}
    highest = {f.rule.id for f in match(config_for(parse_spec(
        "torch:cuda?matmul_precision=highest"), context))}
    assert "PT-2" in highest
    off = {f.rule.id for f in match(config_for(parse_spec(
        "torch:cuda?matmul_precision=highest&allow_tf32=0"), context))}
    assert "PT-2" not in off


def test_conditions_this_machine_cannot_read_make_a_finding_conditional() -> None:
    """ORT-8-qairt depends on the QNN SDK's version and ORT-16 on macOS's: off a Mac and
    without the SDK's version they are kept, marked conditional, and say what they need."""
    qnn = next(f for f in match(config_for(parse_spec("ort:qnn?enable_htp_fp16_precision=0"),
                                           {})) if f.rule.id == "ORT-8-qairt")
    assert qnn.conditional and "QAIRT (the QNN SDK) 2.35 or newer" in qnn.unchecked[0]
    assert "no FP32" in qnn.rule.fix.note
    coreml = next(f for f in match(config_for(parse_spec(
        "ort:coreml?ModelFormat=MLProgram&RequireStaticInputShapes=1"), {}))
        if f.rule.id == "ORT-16")
    assert coreml.conditional and "macOS 15" in coreml.unchecked[0]
    newer = {f.rule.id for f in match(config_for(parse_spec(
        "ort:coreml?ModelFormat=MLProgram&RequireStaticInputShapes=1"),
        {"os": "darwin", "os_version": "26.1"}))}
    assert "ORT-16" not in newer
    old = {f.rule.id for f in match(config_for(parse_spec(
        "ort:qnn?enable_htp_fp16_precision=0"), {"qairt": "2.31"}))}
    assert "ORT-8-qairt" not in old


def test_a_fix_may_change_the_device() -> None:
    findings = match(config_for(parse_spec("openvino:npu"), {}))
    assert [f.rule.id for f in findings] == ["OV-4", "OV-9"]
    assert findings[0].fixed_spec == "openvino:cpu?INFERENCE_PRECISION_HINT=f32"


def test_the_measurement_wins_over_the_rule() -> None:
    rule = next(r for r in RULES if r.id == "OV-1")
    cases = {("bf16", False): AGREES, ("fp32", False): CONTRADICTS, ("fp16", False): DIFFERS,
             ("bf16", True): PREDICTED}
    for (verdict, predicted), expected in cases.items():
        unmeasured = Finding(rule, "openvino:cpu")
        finding = compare_with_measurement(unmeasured, verdict, predicted)
        assert finding.agreement == expected
        assert unmeasured.agreement == UNMEASURED and unmeasured.measured is None
    finding = compare_with_measurement(Finding(rule, "openvino:cpu"), "fp32", False)
    assert "measurement wins" in (finding.verdict() or "")
    assert finding.to_dict()["measured"] == "fp32"


def test_a_weak_or_unknown_measurement_overrules_nothing() -> None:
    """A fingerprint of confidence 0.00 once said "measured FP32: the measurement wins" about
    OpenVINO's BF16 on a saturated map while the map was wrecked: weak evidence must not
    overrule a documented default, though it may still confirm it."""
    rule = next(r for r in RULES if r.id == "OV-1")
    for verdict, confidence in (("fp32", 0.0), ("fp16", 0.2), ("unknown", 0.0),
                                ("fp32", 0.29)):
        finding = compare_with_measurement(Finding(rule, "openvino:cpu"), verdict, False,
                                           confidence)
        assert finding.agreement == UNCONFIRMED
        assert "the rule's BF16 stands" in (finding.verdict() or "")
        assert "measurement wins" not in (finding.verdict() or "")
    assert compare_with_measurement(Finding(rule, "openvino:cpu"), "bf16", False,
                                    0.1).agreement == AGREES
    assert compare_with_measurement(Finding(rule, "openvino:cpu"), "fp32", False,
                                    0.3).agreement == CONTRADICTS


def test_duplicate_rule_ids_in_a_file_are_refused() -> None:
    text = next(p for p in rule_files() if p.name == "coreml.toml").read_text()
    doubled = text.replace('id = "CML-3"', 'id = "CML-1"')
    with pytest.raises(ValueError, match="CML-1"):
        parse_rule_file(doubled, "coreml.toml")


def test_lint_resolves_this_machine_without_running_anything() -> None:
    findings = lint("ort:coreml")
    assert [f.rule.id for f in findings] == ["ORT-1"]
    assert findings[0].fixed_spec == "ort:coreml?ModelFormat=MLProgram"
    assert lint("py:planted_backends:make") == []  # no rules for user backends


def test_the_documentation_lists_every_rule() -> None:
    from pathlib import Path

    page = (Path(__file__).parents[1] / "docs" / "knowledge-base.md").read_text()
    missing = [rule.id for rule in RULES if f"| {rule.id} |" not in page]
    assert missing == [], f"docs/knowledge-base.md does not list {missing}"


#: Where a source can be opened and stays what it was: a GitHub file at a release tag or a
#: 40-hex commit (never a branch), a pull request or an issue, or a runtime's docs page.
PINNED = re.compile(r"^https://github\.com/[\w.-]+/[\w.-]+/blob/(?!(main|master|HEAD|develop)/)"
                    r"[\w.-]+/\S+$")
THREAD = re.compile(r"^https://github\.com/[\w.-]+/[\w.-]+/(pull|issues)/\d+$")
DOCS = re.compile(r"^https://(www\.)?(docs\.openvino\.ai|onnxruntime\.ai|docs\.pytorch\.org|"
                  r"pytorch\.org/docs|apple\.github\.io/coremltools|docs\.nvidia\.com)/\S+$")


def test_every_rule_has_a_source_a_reader_can_open() -> None:
    """Each rule links its fact: a GitHub file pinned to a tag or commit, a pull request or
    issue, or a docs page; a branch (blob/main) moves and does not count. The docs page
    lists every link beside its rule."""
    from pathlib import Path

    page = (Path(__file__).parents[1] / "docs" / "knowledge-base.md").read_text()
    for rule in RULES:
        assert rule.links, f"{rule.id}: no links"
        for link in rule.links:
            assert PINNED.match(link) or THREAD.match(link) or DOCS.match(link), \
                f"{rule.id}: {link} is not a pinned file, a thread or a docs page"
            assert link in page, f"docs/knowledge-base.md does not list {link} ({rule.id})"
    assert not PINNED.match("https://github.com/o/r/blob/main/x.h")  # the pattern can fail


def test_os_conditions_use_the_platform() -> None:
    spec = parse_spec("ort:cpu?mlas.enable_gemm_fastmath_arm64_bfloat16=1")
    linux = match(config_for(spec, {"machine": "aarch64", "os": "linux"}))
    mac = match(config_for(spec, {"machine": "arm64", "os": "darwin"}))
    assert [f.rule.id for f in linux] == ["ORT-14"] and mac == []


def test_every_rule_file_belongs_to_a_registered_runtime():
    """The schema no longer lists the runtimes: each is a registered declaration, which names
    its own rules file."""
    from modelparity.backends import runtimes

    declared = {r.name: r.rules for r in runtimes().values() if r.rules}
    assert {"ort", "openvino", "torch", "coreml"} <= set(declared)
    for rule in load_rules():
        assert rule.runtime in declared, rule.id
    assert [path.name for path in rule_files()] == [
        name.rsplit("/", 1)[-1] for _, name in declared.values()]
