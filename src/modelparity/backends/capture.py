"""A capture replayed as a backend: `capture:<folder>` (written by `modelparity capture`).

It gives, for each sample it is fed, the outputs the captured backend computed for that very
sample, found by the digest of its inputs (so any batch size works, and a sample the capture
did not run is refused in one line, never replaced by another). Its description is the
captured backend's (versions, options, device, precision testimony) with where and when it was
captured, so the knowledge base and the reports judge the configuration that really ran, and
its latency is the one measured at capture time. It mixes with live backends in one audit.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from modelparity.backends.base import Backend
from modelparity.backends.runtime import Runtime
from modelparity.errors import ModelError, SpecError
from modelparity.model import PreparedModel
from modelparity.spec import BackendSpec


class CaptureBackend(Backend):
    def activate_impl(self, model: PreparedModel) -> None:
        from modelparity.capture.artifact import Capture
        from modelparity.errors import ModelParityError
        from modelparity.inputs.base import hash_file

        try:
            self.capture = Capture(self.spec.target)
        except ModelParityError as exc:
            raise ModelError(f"{self.spec.text}: {exc}") from None
        taken = self.capture.manifest.model
        here = hash_file(model.onnx_path).hexdigest()
        if here not in (taken.get("sha256"), taken.get("probed_sha256")):  # as is, or probed
            raise ModelError(f"{self.spec.text}: captured from another model (sha256 "
                             f"{str(taken.get('sha256'))[:12]}, the audited one is "
                             f"{here[:12]})")
        self.outputs = list(model.signature.output_names)

    def infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from modelparity.inputs.base import row_digests

        found = self.capture.lookup(row_digests(feed))
        if isinstance(found, int):
            raise ModelError(f"{self.spec.text}: holds no outputs for a sample fed to it "
                             f"(row {found} of this batch): the capture was taken on other "
                             f"data, or on fewer samples")
        missing = [name for name in self.outputs if name not in found]
        if missing:
            raise ModelError(f"{self.spec.text}: holds no output {missing[0]!r} (captured "
                             f"from another version of the model?)")
        return {name: found[name] for name in self.outputs}

    def describe_impl(self) -> dict[str, Any]:
        manifest = self.capture.manifest
        return {**manifest.description,
                "capture": {"path": self.spec.target, "spec": manifest.spec,
                            "data": manifest.data, "samples": manifest.samples,
                            "latency": manifest.latency,
                            "captured_at": manifest.environment.get("audited_at"),
                            "machine": {k: manifest.environment.get(k) for k in
                                        ("platform", "cpu", "cpu_flags", "machine", "system",
                                         "os_version", "gpu", "env")
                                        if k in manifest.environment}}}


def create(spec: BackendSpec) -> CaptureBackend:
    return CaptureBackend(spec)


def check_spec(spec: BackendSpec) -> None:
    if not spec.target:
        raise SpecError(f"backend '{spec.text}': expected {RUNTIME.usage}")
    if spec.options:
        raise SpecError(f"backend '{spec.text}': a capture takes no options (it replays what "
                        f"was captured)")


RUNTIME = Runtime(
    name="capture",
    title="A capture replayed (modelparity capture)",
    usage="capture:<folder written by modelparity capture>",
    module=__name__,
    open_targets=None,
    check=check_spec,
    keep_target_case=True,
)
