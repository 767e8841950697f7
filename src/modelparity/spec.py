"""Backend spec strings: `runtime:target?key=value&key=value`.

Examples: `ort:cpu`, `ort:cuda?use_tf32=0`, `openvino:cpu?INFERENCE_PRECISION_HINT=f32`,
`torch:cpu`, `py:my_pkg.backends:make_backend?flag=1`, `ort:tensorrt?env.NVIDIA_TF32_OVERRIDE=0`.
This module knows the syntax only; `modelparity.backends.parse_spec` checks a spec against its
runtime's declaration (targets, option names, types and choices) and gives it its canonical
form. `env.NAME=value` options are kept apart (`BackendSpec.env`): the worker sets them in its
environment before it imports the runtime, which never sees them as options.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, quote

from modelparity.errors import SpecError

#: Options named env.NAME set an environment variable in the backend's worker process before
#: its runtime is imported (NVIDIA_TF32_OVERRIDE=0, ONEDNN_DEFAULT_FPMATH_MODE=strict, ...).
ENV_PREFIX = "env."
#: Characters left as typed in `text`; `&`, `=`, `%`, `+`, `#` and spaces are percent-encoded,
#: so the text parses back to the same options.
_SAFE = "/:,.-_~*@!$'()[]{}|;^"


def _encode(text: str) -> str:
    return quote(text, safe=_SAFE)


@dataclass(frozen=True)
class BackendSpec:
    runtime: str
    target: str
    options: dict[str, str] = field(default_factory=dict)  # for the runtime
    env: dict[str, str] = field(default_factory=dict)  # env.NAME=value: for the worker process

    def _query(self, items: list[tuple[str, str]]) -> str:
        query = "&".join(f"{_encode(k)}={_encode(v)}" for k, v in items)
        return f"{self.runtime}:{self.target}" + (f"?{query}" if query else "")

    @property
    def text(self) -> str:
        """The spec as written (options in the order given); parses back to an equal spec."""
        return self._query([*self.options.items(),
                            *((ENV_PREFIX + k, v) for k, v in self.env.items())])

    @property
    def key(self) -> str:
        """The identity of a configuration: options sorted, so their order does not matter."""
        return self._query([*sorted(self.options.items()),
                            *sorted((ENV_PREFIX + k, v) for k, v in self.env.items())])

    def with_options(self, **options: str) -> BackendSpec:
        return BackendSpec(self.runtime, self.target, {**self.options, **options}, self.env)

    def __str__(self) -> str:
        return self.text


def read_spec(text: str) -> BackendSpec:
    """Split a spec into runtime, target, options and env.* options (syntax only: the
    runtime, target and options are not checked here)."""
    raw = text.strip()
    head, _, query = raw.partition("?")
    runtime, _, target = head.partition(":")
    runtime = runtime.strip().lower()
    if not runtime:
        raise SpecError(f"backend '{text}': expected runtime:target?option=value")
    options: dict[str, str] = {}
    env: dict[str, str] = {}
    if query:
        for part in query.split("&"):
            if "=" not in part or not part.split("=", 1)[0]:
                raise SpecError(f"backend '{text}': option '{part}' is not key=value")
        for key, value in parse_qsl(query, keep_blank_values=True, strict_parsing=False):
            name, into = (key[len(ENV_PREFIX):], env) if key.startswith(ENV_PREFIX) \
                else (key, options)
            if not name or name in into:
                raise SpecError(f"backend '{text}': option '{key}' "
                                + ("given twice" if name else "names no variable"))
            into[name] = value
    return BackendSpec(runtime, target.strip(), options, env)


SLUG_LIMIT = 120
"""Characters of a file name made from a spec: file systems refuse names over 255 bytes, and a
spec with a long option (a list of rows, a path) would make the audit fail to write its log."""


def slug(text: str) -> str:
    """A spec as a file name: worker logs, saved results and repro folders are named by it. A
    long one keeps its start and ends in a hash of the whole, so two specs never share one."""
    name = re.sub(r"[^A-Za-z0-9_.=-]+", "_", text).strip("_")
    if len(name) <= SLUG_LIMIT:
        return name
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    return f"{name[: SLUG_LIMIT - 13]}_{digest}"
