"""`modelparity demo`: the whole story on any laptop, with nothing downloaded.

Two models built in code run on ONNX Runtime CPU (the reference), PyTorch CPU, OpenVINO CPU with
its default settings, and OpenVINO pinned to FP32. On a CPU with native BF16, OpenVINO's default
quietly computes in BF16 and decisions near the threshold flip; the FP32 pin removes the flips.

The 4->3 MLP without bias is also the article's Core ML case: ONNX Runtime's CoreML provider
with its default (a NeuralNetwork model, FP16 on the GPU and Neural Engine) and with
`ModelFormat=MLProgram`, and Core ML itself in FP32 and in its FP16 default. On macOS they run;
elsewhere they are predicted rows (an emulation stands in, and the rows say so), and
`--capture-dir` puts captures taken on a Mac (`modelparity capture`) in their place.
"""

from __future__ import annotations

import os

import numpy as np
from rich.console import Console
from rich.rule import Rule
from rich.text import Text

from modelparity.api import audit
from modelparity.decisions import TaskConfig
from modelparity.folders import output_folder
from modelparity.report.html import write_html
from modelparity.report.terminal import render
from modelparity.result import AuditResult

OPENVINO_DEFAULT = "openvino:cpu"
OPENVINO_FP32 = "openvino:cpu?INFERENCE_PRECISION_HINT=f32"
BACKENDS = ["torch:cpu", OPENVINO_DEFAULT, OPENVINO_FP32]
COREML_DEFAULT = "ort:coreml"
COREML_BACKENDS = [COREML_DEFAULT, "ort:coreml?ModelFormat=MLProgram",
                   "coreml:all?compute_precision=fp32", "coreml:all"]
JITTER_COPIES = 40  # noisy copies of each breast-cancer sample: more samples near the threshold


def demo_data(out: str) -> dict[str, tuple[str, str]]:
    """Write the demo's inputs and labels; return {model: (data path, labels path or "")}."""
    from modelparity.demo.models import breast_cancer_data

    output_folder(out)
    rng = np.random.default_rng(0)
    mlp = os.path.join(out, "mlp_inputs.npz")
    np.savez(mlp, x=rng.uniform(-1, 1, size=(20_000, 4)).astype(np.float32))

    features, target = breast_cancer_data()
    noise = rng.normal(0.0, 0.1, size=(JITTER_COPIES, *features.shape)) * features.std(axis=0)
    jittered = (features[None] + noise).astype(np.float32).reshape(-1, features.shape[1])
    cancer_x = np.concatenate([features, jittered])
    cancer_y = np.concatenate([target, np.tile(target, JITTER_COPIES)])
    cancer = os.path.join(out, "breast_cancer_inputs.npz")
    labels = os.path.join(out, "breast_cancer_labels.npy")
    np.savez(cancer, x=cancer_x)
    np.save(labels, cancer_y)
    return {"mlp": (mlp, ""), "cancer": (cancer, labels)}


def explain(result: AuditResult, console: Console) -> None:
    """Say in words what the OpenVINO rows mean on this machine."""
    default = result.backend(OPENVINO_DEFAULT)
    pinned = result.backend(OPENVINO_FP32)
    if not default.ok:
        console.print(Text(f"OpenVINO did not run here: {default.error}", style="yellow"))
        return
    chosen = default.precision or "unknown"
    flips = default.flips.count if default.flips else 0
    fixed = pinned.flips.count if pinned.ok and pinned.flips else 0
    if chosen == "float32":
        console.print(Text(
            "OpenVINO chose FP32 on this CPU (it has no native BF16), so its default is not a "
            "downcast here: on a CPU with avx512_bf16 or AMX it would pick BF16.", style="green"))
        return
    speed = ""
    if default.latency and pinned.latency:
        speed = (f" Median batch latency: {default.latency.p50_ms:.3f} ms by default, "
                 f"{pinned.latency.p50_ms:.3f} ms pinned to FP32.")
    measured = ""
    if default.fingerprint is not None:
        verdict = default.fingerprint.verdict
        agree = {"bfloat16": "bf16", "float16": "fp16"}.get(chosen) == verdict
        measured = (f" Measured from its outputs: {verdict} (confidence "
                    f"{default.fingerprint.confidence:.2f}"
                    + (", agreeing with what it reports)." if agree else
                       f"; it reports {chosen}: see the evidence above)."))
    console.print(Text(
        f"OpenVINO's default compiled this FP32 model to {chosen} on this CPU without a word: "
        f"{flips} decision(s) flipped. With INFERENCE_PRECISION_HINT=f32: {fixed} flipped."
        + measured + speed, style="bold"))


def captures(folder: str | None) -> dict[str, str]:
    """{captured spec: `capture:<folder>`} for the capture folders in `folder`."""
    from modelparity.capture.artifact import read_manifest
    from modelparity.errors import ModelParityError

    if not folder:
        return {}
    if not os.path.isdir(folder):
        raise ModelParityError(f"--capture-dir {folder}: no such folder")
    found = {}
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if os.path.isdir(path) and os.path.exists(os.path.join(path, "manifest.json")):
            found[read_manifest(path).spec] = f"capture:{path}"
    return found


def explain_coreml(result: AuditResult, out: str, console: Console) -> None:
    """Say what the Core ML rows show, and how captures from a Mac replace predicted ones."""
    rows = [b for b in result.candidates if b.spec in COREML_BACKENDS
            or b.description.get("capture", {}).get("spec") in COREML_BACKENDS]
    if not rows:
        return
    for backend in rows:
        how = ("predicted: " + backend.description["predicted"].get("stand_in", "?")
               + " ran in its place") if backend.predicted else (
            f"captured: {backend.description['capture']['path']}" if "capture" in
            backend.description else "measured here")
        flips = backend.flips.count if backend.ok and backend.flips else "-"
        console.print(Text(f"{backend.spec}: {flips} flipped ({how})", style="dim"))
    if any(b.predicted for b in rows):
        model = os.path.join(out, "mlp", "model.onnx")
        console.print(Text(
            "The Core ML rows are predicted here (Core ML runs only on macOS). On a Mac, with "
            f"this folder copied: modelparity capture {model} -b 'ort:coreml' --data "
            f"{os.path.join(out, 'mlp_inputs.npz')} -o macos/ort_coreml.mpc, the same for "
            "'ort:coreml?ModelFormat=MLProgram', and for coreml:all and "
            "coreml:all?compute_precision=fp32 with the model modelparity.demo.models:mlp_4x3 "
            "(Core ML converts the PyTorch module; the same modelparity and torch versions "
            "export the same file); then here: modelparity demo --capture-dir macos",
            style="yellow"))


def run_demo(out: str, console: Console, capture_dir: str | None = None) -> int:
    data = demo_data(out)
    captured = captures(capture_dir)
    coreml = [captured.get(spec, spec) for spec in COREML_BACKENDS]
    runs = [
        ("One linear layer, 4 inputs -> 3 sigmoid outputs, no bias (multi-label, threshold 0.5)",
         "modelparity.demo.models:mlp_4x3", "mlp", TaskConfig(kind="multilabel"),
         BACKENDS + coreml),
        ("Breast-cancer classifier trained here (scikit-learn's bundled data + jittered copies),"
         " threshold 0.5", "modelparity.demo.models:breast_cancer_classifier", "cancer",
         TaskConfig(kind="binary"), BACKENDS),
    ]
    code = 0
    for title, model, name, task, backends in runs:
        console.print(Rule(title))
        inputs, labels = data[name]
        result = audit(model, backends, inputs, task=task, labels=labels or None,
                       out=os.path.join(out, name), batch_size=512, fix=True)
        render(result, console, show_flips=5)
        explain(result, console)
        explain_coreml(result, out, console)
        page = write_html(result, os.path.join(out, name, "report.html"))
        console.print(Text(f"HTML report: {page}", style="dim"))
        label_option = f" --labels {labels}" if labels else ""
        console.print(Text(
            f"Re-run: modelparity run {model} " + " ".join(f"-b '{b}'" for b in backends)
            + f" --data {inputs} --task {task.kind}{label_option} --fix", style="dim"))
        code = max(code, 0 if result.ok else 2)
    return code
