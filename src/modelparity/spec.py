"""Backend spec strings: `runtime:target?key=value&key=value`.

Examples: `ort:cpu`, `ort:cuda?use_tf32=0`, `openvino:cpu?INFERENCE_PRECISION_HINT=f32`,
`torch:cpu`, `py:my_pkg.backends:make_backend?flag=1`. Values stay strings here; each backend
converts and validates its own options, so this module knows no runtime.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import parse_qsl

from modelparity.errors import SpecError

RUNTIMES = {
    "ort": "ONNX Runtime: ort:<execution provider>?<provider or session option>=<value>",
    "openvino": "OpenVINO: openvino:<device>?<PROPERTY>=<value>",
    "torch": "PyTorch eager: torch:<cpu|cuda|mps>",
    "py": "your own backend: py:<module>:<factory>?<key>=<value>",
    "emulate": "a lower precision emulated on the CPU: emulate:<fp16|bf16|tf32|int8>",
}
DEFAULT_TARGET = {"ort": "cpu", "openvino": "cpu", "torch": "cpu"}


@dataclass(frozen=True)
class BackendSpec:
    runtime: str
    target: str
    options: dict[str, str] = field(default_factory=dict)

    @property
    def text(self) -> str:
        query = "&".join(f"{k}={v}" for k, v in self.options.items())
        return f"{self.runtime}:{self.target}" + (f"?{query}" if query else "")

    def with_options(self, **options: str) -> BackendSpec:
        return BackendSpec(self.runtime, self.target, {**self.options, **options})

    def __str__(self) -> str:
        return self.text


def parse_spec(text: str) -> BackendSpec:
    """Parse a backend spec; raise `SpecError` with the expected syntax when it does not fit."""
    raw = text.strip()
    head, _, query = raw.partition("?")
    runtime, _, target = head.partition(":")
    runtime = runtime.strip().lower()
    if runtime not in RUNTIMES:
        known = "; ".join(RUNTIMES.values())
        raise SpecError(f"backend '{text}': unknown runtime '{runtime}' (expected one of: {known})")
    target = target.strip()
    if not target:
        if runtime not in DEFAULT_TARGET:
            raise SpecError(f"backend '{text}': expected {RUNTIMES[runtime]}")
        target = DEFAULT_TARGET[runtime]
    if runtime == "py" and ":" not in target:
        raise SpecError(f"backend '{text}': expected {RUNTIMES['py']}")
    if runtime != "py":
        target = target.lower()
    options: dict[str, str] = {}
    if query:
        for part in query.split("&"):
            if "=" not in part or not part.split("=", 1)[0]:
                raise SpecError(f"backend '{text}': option '{part}' is not key=value")
        for key, value in parse_qsl(query, keep_blank_values=True, strict_parsing=False):
            if key in options:
                raise SpecError(f"backend '{text}': option '{key}' given twice")
            options[key] = value
    return BackendSpec(runtime, target, options)
