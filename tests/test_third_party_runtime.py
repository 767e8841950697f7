"""A runtime from another package: it declares itself under the `modelparity.runtimes` entry
point, brings its own rules file, and is audited, linted and fixed with no edit anywhere in
modelparity. The package is installed the way pip lays one out (a folder with a .dist-info),
on PYTHONPATH for the audit and its workers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

PACKAGE = '''
"""tinyrt: ONNX Runtime's CPU provider, returning its outputs rounded to FP16 unless told
`half=0`: a runtime with a silent FP16 default, for modelparity's plugin test."""

import numpy as np

from modelparity.backends import Option, Runtime
from modelparity.backends.base import Backend


class TinyBackend(Backend):
    def activate_impl(self, model):
        import onnxruntime as ort

        self.session = ort.InferenceSession(model.onnx_path, providers=["CPUExecutionProvider"])
        self.names = [o.name for o in self.session.get_outputs()]
        self.half = self.spec.options.get("half", "1") == "1"

    def infer_impl(self, feed):
        outputs = dict(zip(self.names, self.session.run(None, feed)))
        if self.half:
            outputs = {k: v.astype(np.float16).astype(np.float32) for k, v in outputs.items()}
        return outputs

    def describe_impl(self):
        return {"runtime": "tinyrt", "version": "0.1", "options": dict(self.spec.options)}


def create(spec):
    return TinyBackend(spec)


RUNTIME = Runtime(
    name="tiny",
    title="Tiny runtime",
    usage="tiny:cpu?half=<0|1>",
    module="tinyrt",
    package="onnxruntime",
    distribution="tinyrt",
    default_target="cpu",
    targets={"cpu": "cpu"},
    options=(Option("half", "bool", "return FP16-rounded outputs (the default)"),),
    rules=("tinyrt", "rules.toml"),
)
'''

RULES = '''
family = "tinyrt"
runtime = "tiny"
package = "tinyrt"

[[rules]]
id = "TINY-1"
title = "tinyrt rounds every output to FP16 unless half=0"
targets = ["cpu"]
precision = "fp16"
kind = "default"
when = [{ option = "half", default = "1", in = ["1"] }]
default = "half unset (1)"
effect = "Outputs are rounded to FP16 before they are returned."
bites = "every tinyrt user"
versions = "all"
source = "tinyrt's own docstring"
status = "verified"
example = "tiny:cpu"
[rules.fix]
options = { half = "0" }
code = "tinyrt.session(half=False)"
'''


def _install(site) -> dict[str, str]:
    package = site / "tinyrt"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(textwrap.dedent(PACKAGE))
    (package / "rules.toml").write_text(RULES)
    info = site / "tinyrt-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tinyrt\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[modelparity.runtimes]\ntiny = tinyrt:RUNTIME\n")
    paths = [str(site), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}


def _cli(env, *args):
    return subprocess.run([sys.executable, "-m", "modelparity.cli", *args], env=env,
                          capture_output=True, text=True, timeout=300)


def test_a_third_party_runtime_is_audited_linted_and_fixed(models, data_files, tmp_path):
    env = _install(tmp_path / "site")
    entry = data_files["binary"]
    out = tmp_path / "out"
    run = _cli(env, "run", models["binary"]["path"], "-b", "tiny:cpu", "--data", entry["data"],
               "--fix", "--profile-samples", "2000", "--out", str(out))
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    tiny, fixed = report["candidates"]
    assert tiny["spec"] == "tiny:cpu" and fixed["spec"] == "tiny:cpu?half=0"
    assert [f["rule"] for f in tiny["findings"]] == ["TINY-1"]
    assert tiny["findings"][0]["agreement"] == "confirmed"  # measured FP16, as the rule says
    assert tiny["fingerprint"]["verdict"] == "fp16"
    assert fixed["findings"] == [] and fixed["fingerprint"]["verdict"] == "fp32"
    # the fixed variant is ORT's CPU provider unrounded: the reference's computation exactly
    assert all(stats["max_abs"] == 0.0 for stats in fixed["errors"].values())
    assert fixed["flips"]["count"] == 0
    assert report["fixes"][0]["rules"] == ["TINY-1"]

    lint = _cli(env, "lint", "-b", "tiny:cpu")
    assert lint.returncode == 1 and "TINY-1" in lint.stdout
    assert "tiny:cpu?half=0" in lint.stdout
    bad = _cli(env, "lint", "-b", "tiny:cpu?halve=0")
    assert bad.returncode == 2 and "did you mean half?" in bad.stderr
    syntax = subprocess.run([sys.executable, "-c", "from modelparity.cli import backend_syntax; "
                             "print(backend_syntax())"], env=env, capture_output=True,
                            text=True, timeout=60)
    assert "tiny:cpu?half=<0|1>" in syntax.stdout  # run --help lists it with the others
