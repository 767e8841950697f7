"""The knowledge base as data: one TOML file per runtime family in `rules/`, each rule a silent
(or requested) lower-precision path with the conditions under which it applies and its fix.

The format is described by `rule-schema.json` (the tests validate every file against it) and in
docs/knowledge-base.md. This module only reads the files; `matcher.py` decides.
"""

from __future__ import annotations

import functools
import sys
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

PRECISION_WORDS = {"fp16": "FP16", "bf16": "BF16", "tf32": "TF32", "int8": "INT8",
                   "reduced": "reduced precision"}
KIND_WORDS = {"default": "silent default", "requested": "set in your configuration",
              "environment": "set by an environment variable"}


@dataclass(frozen=True)
class Fix:
    code: str
    options: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    target: str | None = None
    note: str | None = None


@dataclass(frozen=True)
class Rule:
    id: str
    family: str
    runtime: str  # the spec prefix it applies to: ort, openvino, torch, coreml
    package: str  # the distribution whose version the rule is matched against
    title: str
    targets: tuple[str, ...]
    precision: str
    kind: str
    when: tuple[dict[str, Any], ...]
    default: str
    effect: str
    bites: str
    versions: str
    source: str
    status: str
    example: str
    fix: Fix
    example_context: dict[str, Any] = field(default_factory=dict)
    # "compute": the rule says the runtime computes in `precision`, which the fingerprint
    # measures; "weights": it stores the weights in `precision` and computes in FP32, which the
    # fingerprint does not see (the effect is the backend's error and flips)
    scope: str = "compute"
    # where a reader checks the fact: GitHub files pinned to a release tag or a commit, pull
    # requests and issues, docs pages (`source` says the same in words)
    links: tuple[str, ...] = ()


def rule_files() -> list[Any]:
    """The rule files the runtimes declare (`Runtime.rules`: a package and a file in it, read
    with importlib resources so they work from a wheel too), built-in runtimes first."""
    from modelparity.backends.registry import runtimes

    files: list[Any] = []
    for runtime in runtimes().values():
        if runtime.rules is not None:
            package, name = runtime.rules
            path = resources.files(package).joinpath(name)
            if str(path) not in {str(f) for f in files}:
                files.append(path)
    return files


def parse_rule_file(text: str, name: str) -> list[Rule]:
    data = tomllib.loads(text)
    rules = []
    for raw in data["rules"]:
        values = dict(raw)
        fix = Fix(**values.pop("fix"))
        rules.append(Rule(
            family=data["family"], runtime=data["runtime"], package=data["package"],
            targets=tuple(values.pop("targets")), when=tuple(values.pop("when")), fix=fix,
            links=tuple(values.pop("links", ())), **values))
    ids = [rule.id for rule in rules]
    duplicates = {i for i in ids if ids.count(i) > 1}
    if duplicates:
        raise ValueError(f"{name}: rule ids used twice: {', '.join(sorted(duplicates))}")
    return rules


@functools.cache
def load_rules() -> tuple[Rule, ...]:
    """Every bundled rule, in file order."""
    rules: list[Rule] = []
    for path in rule_files():
        rules.extend(parse_rule_file(path.read_text(encoding="utf-8"), path.name))
    return tuple(rules)
