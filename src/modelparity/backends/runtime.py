"""What a runtime declares about itself, once, in its own backend file.

Each backend module ends with `RUNTIME = Runtime(...)`: its spec prefix, the package it needs,
its help line, its targets and options (with types, choices and where each option goes), how
its backend is created, what it reports to the knowledge base and how a repro script builds it.
The spec parser, the registry, `modelparity lint`, the knowledge base's package list, repro
scripts, CLI help and `modelparity version` all read these declarations, so a runtime is one
file (and, for the knowledge base, one rules file). Third-party runtimes declare themselves the
same way and register under the `modelparity.runtimes` entry point group.

Declarations are plain data plus small pure functions: importing one never imports its runtime.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from modelparity.errors import SpecError
from modelparity.spec import BackendSpec

TRUE = frozenset({"1", "true", "yes", "on"})
FALSE = frozenset({"0", "false", "no", "off"})
KINDS = ("bool", "int", "choice", "text")


@dataclass(frozen=True)
class Option:
    """One spec option: `name` may be a glob (`session.*`) for families of free-form keys."""

    name: str
    kind: str = "text"  # bool | int | choice | text
    help: str = ""
    choices: tuple[str, ...] = ()  # for kind "choice", matched case-insensitively
    group: str = ""  # where the runtime puts it: "session", "provider", "property", ...
    minimum: int = 0  # for kind "int"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"option {self.name}: kind must be one of {KINDS}")

    def matches(self, key: str) -> bool:
        """Names match case-insensitively, as the runtimes themselves mostly do."""
        key, name = key.lower(), self.name.lower()
        return fnmatch.fnmatchcase(key, name) if "*" in name else key == name

    @property
    def usage(self) -> str:
        """`name=<a|b>` as shown in help and error messages."""
        values = {"bool": "0|1", "int": f"integer>={self.minimum}",
                  "choice": "|".join(self.choices), "text": "text"}[self.kind]
        return f"{self.name}=<{values}>"

    def convert(self, spec: BackendSpec, key: str, value: str) -> Any:
        """The typed value, or `SpecError` naming the spec, the option and what it takes."""
        low = value.strip().lower()
        if self.kind == "bool":
            if low in TRUE:
                return True
            if low in FALSE:
                return False
            raise SpecError(f"{spec.text}: option {key}={value} is not a boolean "
                            "(expected 1/0, true/false)")
        if self.kind == "int":
            try:
                number = int(low)
            except ValueError:
                number = self.minimum - 1
            if number < self.minimum:
                raise SpecError(f"{spec.text}: option {key}={value} is not an integer >= "
                                f"{self.minimum}")
            return number
        if self.kind == "choice":
            for choice in self.choices:
                if low == choice.lower():
                    return choice
            raise SpecError(f"{spec.text}: option {key}={value} is not one of: "
                            f"{', '.join(self.choices)}")
        return value


@dataclass(frozen=True)
class Repro:
    """How a standalone repro script builds this runtime: `side(spec)` gives the settings the
    script's `run(side)` reads; `code` defines `run(side) -> {output name: array}`."""

    side: Callable[[BackendSpec], dict[str, Any]]
    code: str
    needs_factory: bool = False  # only for models given as a PyTorch module:factory


@dataclass(frozen=True)
class Runtime:
    """A runtime family's declaration. Only `name`, `title`, `usage` and `module` are needed;
    everything else has a default that suits a runtime with free-form options."""

    name: str  # the spec prefix: "ort"
    title: str  # "ONNX Runtime"
    usage: str  # "ort:<execution provider>?<option>=<value>"
    module: str  # where `create(spec) -> Backend` lives, imported in the worker only
    package: str | None = None  # the import name it needs ("onnxruntime"); None: nothing
    distribution: str | None = None  # for versions and the knowledge base ("onnxruntime")
    extra: str | None = None  # the pip hint when the package is missing
    default_target: str | None = None  # the target of a bare "ort:"
    targets: Mapping[str, str] | None = None  # accepted target (lower case) -> canonical
    target_words: str = "target"  # what a target is called in errors: "device", ...
    options: tuple[Option, ...] = ()  # options every target takes
    target_options: Mapping[str, tuple[Option, ...]] = field(default_factory=dict)
    open_targets: frozenset[str] | None = frozenset()  # targets whose options are not all
    # known (any key passes through); None: every target is open
    check: Callable[[BackendSpec], Any] | None = None  # further static checks
    cannot_execute: Callable[[BackendSpec], str | None] | None = None  # why not on this machine
    reported_options: Callable[[Mapping[str, Any]], dict[str, str]] | None = None
    # what the files a spec names say before anything runs (an OpenVINO IR's stored weights),
    # matched like reported options; the run's own report wins
    static_options: Callable[[BackendSpec], dict[str, str]] | None = None
    repro: Repro | None = None  # how a standalone repro script builds it
    rules: tuple[str, str] | None = None  # (package, file) of its knowledge-base rules
    keep_target_case: bool = False  # py:module:factory keeps its case

    # targets -----------------------------------------------------------------------------
    def canonical_target(self, spec: BackendSpec) -> str:
        target = spec.target if self.keep_target_case else spec.target.lower()
        if self.targets is None:
            return target
        if target in self.targets:
            return self.targets[target]
        known = list(dict.fromkeys(self.targets.values()))
        raise SpecError(f"{spec.text}: unknown {self.target_words} '{spec.target}' (expected "
                        f"one of: {', '.join(known)})")

    # options -----------------------------------------------------------------------------
    def options_for(self, target: str) -> tuple[Option, ...]:
        return (*self.options, *self.target_options.get(target, ()))

    def is_open(self, target: str) -> bool:
        return self.open_targets is None or target in self.open_targets

    def option(self, target: str, key: str) -> Option | None:
        return next((o for o in self.options_for(target) if o.matches(key)), None)

    def unknown_option(self, spec: BackendSpec, key: str) -> SpecError:
        known = [o.name for o in self.options_for(spec.target)]
        close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]}?)" if close else ""
        listed = ", ".join(known) if known else "none"
        return SpecError(f"{spec.text}: unknown {self.title} option '{key}' for "
                         f"{spec.runtime}:{spec.target}{hint}; known options: {listed}")

    def validate(self, spec: BackendSpec) -> dict[str, Any]:
        """Check every option of a spec whose target is canonical; the typed values. A runtime
        that declares its options for help but checks them in its own words (`open_targets`
        None, with `check`) is left to `check`."""
        if self.open_targets is None and self.check is not None:
            self.check(spec)
            return dict(spec.options)
        typed: dict[str, Any] = {}
        for key, value in spec.options.items():
            option = self.option(spec.target, key)
            if option is None:
                if not self.is_open(spec.target):
                    raise self.unknown_option(spec, key)
                typed[key] = value
                continue
            typed[key] = option.convert(spec, key, value)
        if self.check is not None:
            self.check(spec)
        return typed

    def group_of(self, target: str, key: str, default: str = "") -> str:
        option = self.option(target, key)
        return option.group if option is not None and option.group else default

    def help_line(self) -> str:
        return f"{self.title}: {self.usage}"
