"""The command line: a thin layer that parses options, calls the API and renders the result.

Exit codes: 0 when every backend ran and every --fail-on policy held, 1 when a policy failed,
2 on an error (bad input, or a backend that failed).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

from modelparity import __version__
from modelparity.errors import ModelParityError
from modelparity.folders import report_files
from modelparity.plan import DEFAULT_REFERENCE, Settings
from modelparity.report.names import plain

if TYPE_CHECKING:
    from modelparity.decisions import TaskConfig
    from modelparity.result import AuditResult

app = typer.Typer(
    help="Run one ML model on several runtimes and show where outputs and decisions differ.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# A pipe or a CI log gets 130 columns rather than rich's 80, so the tables stay readable.
# no emoji codes: a name such as "nosuchmodule:factory:" is text, not a picture
console = Console(width=None if sys.stdout.isatty() else 130, emoji=False)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 200, emoji=False)
EXIT_OK, EXIT_ERROR = 0, 2
EXIT_POLICY = 1  # a --fail-on policy failed


def backend_syntax() -> str:
    """Each runtime's spec syntax, from its declaration (third-party runtimes included)."""
    from modelparity.backends import runtimes

    return "; ".join(runtime.usage for runtime in runtimes().values())


class BarProgress:
    """Draws one progress bar per backend while the audit runs."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.tasks: dict[str, int] = {}

    def start(self, spec: str, total: int | None) -> None:
        self.tasks[spec] = self.progress.add_task(plain(spec), total=total)

    def advance(self, spec: str, rows: int) -> None:
        self.progress.advance(self.tasks[spec], rows)

    def finish(self, spec: str, result: object) -> None:
        if spec in self.tasks:
            task = self.tasks[spec]
            self.progress.update(task, total=self.progress.tasks[task].completed)


@contextlib.contextmanager
def progress_bars() -> Iterator[BarProgress]:
    """One bar per backend on the terminal while the backends run, gone when they end."""
    with Progress(TextColumn("{task.description}", markup=False), BarColumn(),
                  MofNCompleteColumn(), TimeElapsedColumn(), console=console,
                  transient=True) as bar:
        yield BarProgress(bar)


def task_config(task: str, output: str | None, threshold: str, logits: bool, k: int,
                custom: str | None, **more: object) -> TaskConfig:
    """The task options every command takes, as one TaskConfig (`more`: run's extra ones)."""
    from modelparity.decisions import TaskConfig

    return TaskConfig(kind=task, output=output, threshold=parse_threshold(threshold),
                      logits=logits, k=k, custom=custom, **more)  # type: ignore[arg-type]


def fail(message: str, debug: bool) -> typer.Exit:
    if debug:
        err_console.print(traceback.format_exc())
    # Text, not markup: the message quotes paths, specs and names from the model file
    err_console.print(Text.assemble(("error:", "bold red"), " ", plain(message)),
                      highlight=False, soft_wrap=True)
    return typer.Exit(EXIT_ERROR)


def parse_range(text: str) -> tuple[float, float]:
    try:
        low, high = (float(part) for part in text.split(","))
    except ValueError:
        raise ModelParityError(f"--value-range {text}: expected two numbers LOW,HIGH "
                               "such as -1,1") from None
    if not low < high:
        raise ModelParityError(f"--value-range {text}: LOW must be below HIGH")
    return low, high


def parse_threshold(text: str) -> float | tuple[float, ...]:
    try:
        values = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise ModelParityError(f"--threshold {text}: expected a number, or one per class "
                               "separated by commas") from None
    return values[0] if len(values) == 1 else values


# Options more than one command takes, declared once.
ModelArgument = Annotated[str, typer.Argument(
    help="The model: an ONNX file, a torch.export program (.pt2), or a PyTorch "
         "'module:factory' entry point (exported to ONNX for the ONNX backends).")]

ReferenceOption = Annotated[str, typer.Option(help="The backend every other is compared to.")]

DataOption = Annotated[str | None, typer.Option(
    "--data", "-d",
    help="Inputs: .npz (keys = input names), .npy (one input), a folder of .npy/.npz "
         "shards, .csv/.parquet (tabular), or 'module:function' yielding dicts of arrays. "
         "Omit for seeded synthetic inputs.")]

ShapeOption = Annotated[list[str] | None, typer.Option(
    help="Set an input's dynamic dimensions for synthetic data, e.g. x:1x3x224x224 "
         "(the first dimension is the batch and is ignored).")]

SeedOption = Annotated[int, typer.Option(help="Seed for synthetic inputs.")]

ValueRangeOption = Annotated[str, typer.Option(
    help="LOW,HIGH of synthetic input values.")]

TaskOption = Annotated[str, typer.Option(
    help="What the model decides: binary (score > threshold), multiclass (argmax), topk, "
         "multilabel (per-class thresholds), regression (tolerance), custom.")]

OutputOption = Annotated[str | None, typer.Option(
    help="The output the decision is made on (default: the first output).")]

ThresholdOption = Annotated[str, typer.Option(
    help="binary: the threshold; multilabel: one, or one per class separated by commas.")]

LogitsOption = Annotated[bool, typer.Option(
    help="binary/multilabel: the output is a logit; a sigmoid gives the probability.")]

KOption = Annotated[int, typer.Option(help="topk: how many top classes make the decision.")]

CustomOption = Annotated[str | None, typer.Option(
    help="custom: 'module:function' mapping an output array (samples first) to one "
         "decision per sample: numbers, or a string or tuple per sample (a decoded text "
         "line, a set of boxes), compared as text.")]

TimeoutOption = Annotated[float, typer.Option(
    help="Seconds one step of a backend (loading the model, or one batch) may take "
         "before it is stopped and reported as failed; also the limit for exporting a "
         "PyTorch model to ONNX.")]

DebugOption = Annotated[bool, typer.Option(help="Show tracebacks for errors.")]

# the report files of 'report' and 'compare' ('run' says more about each)
JunitOption = Annotated[str | None, typer.Option("--junit", metavar="PATH",
                                                 help="Write JUnit XML here.")]
MarkdownOption = Annotated[str | None, typer.Option("--markdown", metavar="PATH",
                                                    help="Write a Markdown summary here.")]
HtmlOption = Annotated[str | None, typer.Option("--html", metavar="PATH",
                                                help="Write the HTML report here.")]

EngineOption = Annotated[str | None, typer.Option(
    help="local: each backend in a worker process here; ray: each backend on a pool of Ray "
         "actors (a local Ray, or --ray-address), the data sharded across them, for large "
         "evaluations; the results are the same. Default: $MODELPARITY_ENGINE, else local.")]

WorkersOption = Annotated[int, typer.Option(
    help="--engine ray: actors per backend (fewer when the data has fewer shards of 64 "
         "batches).")]

RayAddressOption = Annotated[str | None, typer.Option(
    help="--engine ray: the Ray cluster to use (ray://host:10001, or auto); a local Ray "
         "by default. Nodes that declare a backend's target or runtime as a resource (cuda, "
         "coreml, openvino) run that backend.")]

AllowPickleOption = Annotated[bool, typer.Option(
    help="Allow opening a .pt2 model: torch.export.load unpickles parts of the file, which "
         "can run code. Only for files you trust.")]


@app.command()
def run(
    model: ModelArgument,
    backend: Annotated[list[str], typer.Option(
        "--backend", "-b",
        help="A backend to compare against the reference; repeat for several. Spec syntax: "
             + backend_syntax() + ".")],
    reference: ReferenceOption = DEFAULT_REFERENCE,
    data: DataOption = None,
    shape: ShapeOption = None,
    samples: Annotated[int, typer.Option(help="How many synthetic samples.")] = 1000,
    seed: SeedOption = 0,
    value_range: ValueRangeOption = "-1,1",
    batch_size: Annotated[int, typer.Option(help="Samples per inference call (a model whose "
                                                 "batch is fixed takes its own).")] \
        = Settings.batch_size,
    per_item: Annotated[bool, typer.Option(
        "--per-item",
        help="Run each item of a module:function feed, or each shard of a --data folder, as "
             "one call, never re-batched: images of different sizes, one per call.")] = False,
    batch_axis: Annotated[list[str] | None, typer.Option(
        "--batch-axis", metavar="NAME=AXIS",
        help="Where an input or output keeps its batch, when not on axis 0 and the model "
             "does not name it: e.g. state=1 for a recurrent state of shape (layers, B, hidden). "
             "Repeatable.")] = None,
    carry: Annotated[list[str] | None, typer.Option(
        "--carry", metavar="OUTPUT=INPUT",
        help="Feed each call's OUTPUT into the next call's INPUT, as a deployment runs a "
             "recurrent model (e.g. stateN=state); implies --per-item. An item that gives "
             "INPUT starts a new sequence with it. Each backend also runs teacher-forced (fed "
             "the reference's state): the gap is drift. Repeatable.")] = None,
    task: TaskOption = "binary",
    output: OutputOption = None,
    threshold: ThresholdOption = "0.5",
    logits: LogitsOption = False,
    k: KOption = 5,
    class_axis: Annotated[int | None, typer.Option(
        help="multiclass on an output of rank > 2: the axis holding the classes, as the model "
             "gives it (2 for [B, T, C] decided per time step, 1 for [B, C, H, W] per pixel); "
             "multilabel: the axis its per-class thresholds apply along. binary, multilabel "
             "and regression decide such outputs per element.")] = None,
    atol: Annotated[float, typer.Option(help="regression: absolute tolerance.")] = 1e-5,
    rtol: Annotated[float, typer.Option(help="regression: relative tolerance.")] = 1e-3,
    custom: CustomOption = None,
    labels: Annotated[str | None, typer.Option(
        help="True labels (.npy or .csv), one per sample: adds confusion matrices and "
             "metrics per backend.")] = None,
    class_names: Annotated[str | None, typer.Option(
        "--class-names", metavar="FILE",
        help="Names of the classes, so flips read 'cat (3) -> dog (5)' instead of '3 -> 5': "
             "a text file with one name per line (line 1 is class 0), or a .json list of "
             "names or mapping {\"0\": \"cat\"} / {\"cat\": 0}.")] = None,
    timeout: TimeoutOption = Settings.timeout,
    warmup: Annotated[int, typer.Option(
        help="Untimed runs of the first batch before latency is measured.")] \
        = Settings.warmup,
    out: Annotated[str | None, typer.Option(
        help="Folder for report.json, per-backend results (written as each finishes) and "
             "worker logs.")] = None,
    resume: Annotated[bool, typer.Option(
        help="Reuse the backends already finished in --out instead of running them again.")]
        = False,
    fingerprint: Annotated[bool, typer.Option(
        help="Also run the model emulated in FP16, BF16, TF32 and INT8 and as FP32 noise (on "
             "the first --profile-samples samples) to tell which precision each backend really "
             "used, and which samples are at risk.")] = True,
    profile_samples: Annotated[int, typer.Option(
        help="How many samples the emulations and the FP32-noise run use.")] \
        = Settings.profile_samples,
    allow_pickle: AllowPickleOption = False,
    fix: Annotated[bool, typer.Option(
        help="For each backend the knowledge base has a finding for (a silent precision "
             "default such as OpenVINO's BF16), also run its fixed variant and show flips, "
             "errors and latency before and after. With --out, a standalone repro script per "
             "finding is written too.")] = False,
    show_flips: Annotated[int, typer.Option(help="How many flipped samples to list per "
                                                 "backend in the terminal.")] = 10,
    fail_on: Annotated[list[str] | None, typer.Option(
        "--fail-on", metavar="EXPR",
        help="A policy that fails the run (exit code 1) when it is true for any candidate "
             "backend; repeat, or separate with commas. QUANTITY OP VALUE, OP one of > >= < <= "
             "== !=: flips>0, flips>=3, flip_rate>0.001, max_abs>1e-4, max_rel>1e-3, "
             "max_ulp>8, nonfinite>0 (NaN or Inf where the reference is finite; then every "
             "max_* is infinite), metric.f1<-0.001 (candidate minus reference; needs --labels), "
             "precision!=fp32 (measured by the fingerprint), reported_precision!=fp32 (what "
             "the runtime reports), status!=ok, findings>0 (a known silent precision default "
             "applies). A quantity a backend lacks is listed as not "
             "checked and does not fail.")] = None,
    junit: Annotated[str | None, typer.Option(
        "--junit", metavar="PATH",
        help="Write JUnit XML here: one test case per candidate backend and check "
             "(ran, flips, each --fail-on policy).")] = None,
    markdown: Annotated[str | None, typer.Option(
        "--markdown", metavar="PATH",
        help="Write a Markdown summary here (fits $GITHUB_STEP_SUMMARY).")]
        = None,
    html: Annotated[str | None, typer.Option(
        "--html", metavar="PATH",
        help="Write a self-contained HTML report here (works offline): the summary, "
             "fingerprints, error histograms with the emulation profiles, score scatter with "
             "the threshold's rounding band, confusion matrices, flips, at-risk counts, "
             "latency.")] = None,
    engine: EngineOption = None,
    workers: WorkersOption = 2,
    ray_address: RayAddressOption = None,
    original: Annotated[str | None, typer.Option(
        "--original", metavar="ONNX",
        help="MODEL is an OpenVINO IR (.xml, its .bin beside it) made from this ONNX file: "
             "the reference runs the ONNX, each openvino backend the IR, so what converting "
             "changed (weights stored as FP16 by ovc's and save_model's default) shows as "
             "its error and flips.")] = None,
    debug: DebugOption = False,
) -> None:
    """Compare MODEL on each --backend against the reference, on the same inputs.

    Shows output errors, flipped decisions, metric changes (with
    --labels), the precision each backend really used, the known silent
    defaults behind it with their fixes (--fix runs them), and latency;
    --out also writes report.json and repro scripts. Exit code 0 when
    all is well, 1 when a --fail-on policy fails, 2 on an error (bad
    input, or a backend that failed).
    """
    from modelparity.api import audit
    from modelparity.inputs import parse_shape
    from modelparity.inputs.layout import parse_axes, parse_carry
    from modelparity.policy import parse_policies

    try:
        report_files(html=html, junit=junit, markdown=markdown)
        policies = parse_policies(fail_on)
        shapes = dict(parse_shape(text) for text in shape or [])
        config = task_config(task, output, threshold, logits, k, custom, atol=atol,
                             rtol=rtol, class_axis=class_axis)
        axes = parse_axes(batch_axis or [])
        carried = dict(parse_carry(carry or []))
        with progress_bars() as bars:
            result = audit(
                model, backend, data, task=config, labels=labels, class_names=class_names,
                reference=reference,
                batch_size=batch_size, shapes=shapes, samples=samples, seed=seed,
                value_range=parse_range(value_range), timeout=timeout, warmup=warmup,
                out=out, resume=resume, allow_pickle=allow_pickle, fingerprint=fingerprint,
                profile_samples=profile_samples, fix=fix, batch_axes=axes, per_item=per_item,
                carry=carried, progress=bars, original=original, engine=engine,
                workers=workers, ray_address=ray_address,
            )
    except ModelParityError as exc:
        raise fail(str(exc), debug) from None
    finish(result, policies, show_flips=show_flips, junit=junit, markdown=markdown, html=html,
           debug=debug, saved=os.path.join(out, "report.json") if out else None)


def finish(result: AuditResult, policies: list, *, show_flips: int, junit: str | None,
           markdown: str | None, html: str | None, debug: bool, saved: str | None = None
           ) -> None:
    """Render a result, gate it and exit: shared by `run` (a fresh audit) and `report` (a
    saved one), so both give the same output and the same exit code."""
    from modelparity.policy import evaluate
    from modelparity.report.terminal import render

    render(result, console, show_flips=show_flips)
    if saved:
        console.print(f"report: {saved}", markup=False)
    policy_report = evaluate(result, policies) if policies else None
    if policy_report is not None:
        for outcome in policy_report.outcomes:
            style = {"failed": "bold red", "held": "green"}.get(outcome.verdict, "dim")
            console.print(plain(outcome.describe()), style=style, highlight=False,
                          markup=False)
        console.print(policy_report.summary(), highlight=False,
                      style="bold red" if policy_report.failed else "bold green")
    try:
        if junit:
            from modelparity.report.junit import write_junit

            console.print(f"junit: {write_junit(result, junit, policy_report)}", markup=False)
        if markdown:
            from modelparity.report.markdown import write_markdown

            written = write_markdown(result, markdown, policy_report)
            console.print(f"markdown: {written}", markup=False)
        if html:
            from modelparity.report.html import write_html

            console.print(f"html: {write_html(result, html)}", markup=False)
    except OSError as exc:
        raise fail(f"--junit/--markdown/--html: cannot write {exc.filename}: {exc.strerror}",
                   debug) from None
    if not result.ok:
        raise typer.Exit(EXIT_ERROR)
    raise typer.Exit(EXIT_POLICY if policy_report is not None and policy_report.failed
                     else EXIT_OK)


@app.command()
def locate(
    model: ModelArgument,
    backend: Annotated[str, typer.Option(
        "--backend", "-b",
        help="The backend whose error to locate (one; it must run the ONNX file: ort, "
             "openvino, emulate, py). Spec syntax: " + backend_syntax() + ".")],
    precision: Annotated[str | None, typer.Option(
        help="What the backend is meant to compute in: fp32, tf32, fp16 or bf16. Default: "
             "what the fingerprint measures (FP32 where it finds no downcast).")] = None,
    reference: ReferenceOption = DEFAULT_REFERENCE,
    data: DataOption = None,
    samples: Annotated[int, typer.Option(
        help="How many samples (the first ones of --data): every intermediate tensor of each "
             "is compared, so a few dozen are enough.")] = 64,
    shape: ShapeOption = None,
    seed: SeedOption = 0,
    value_range: ValueRangeOption = "-1,1",
    batch_size: Annotated[int, typer.Option(help="Samples per inference call.")] = 16,
    task: TaskOption = "binary",
    output: OutputOption = None,
    threshold: ThresholdOption = "0.5",
    logits: LogitsOption = False,
    k: KOption = 5,
    custom: CustomOption = None,
    timeout: TimeoutOption = Settings.timeout,
    out: Annotated[str | None, typer.Option(
        help="Folder for report.json (the audit of the model as shipped, with every node's "
             "error in graph order, ready for a chart; 'modelparity report' draws it), "
             "locate.json (the node data alone) and the exposed model's audit.")] = None,
    every_node: Annotated[bool, typer.Option(
        "--all", help="List every compared node, not only those that amplify most.")] = False,
    html: Annotated[str | None, typer.Option(
        "--html", metavar="PATH",
        help="Also write an HTML page: the error of every node along the graph (a chart "
             "with the first divergent node marked) and the table.")] = None,
    model_explorer: Annotated[str | None, typer.Option(
        "--model-explorer", metavar="PATH",
        help="Also write each node's error (log10) as node data for Google AI Edge Model "
             "Explorer, to paint the errors on the graph.")] = None,
    isolate: Annotated[bool, typer.Option(
        "--isolate", help="Also run the first divergent node and the largest amplifiers "
                          "alone on the backend, fed the reference's values of what they "
                          "read: each one's own error, apart from what it inherits (column "
                          "'alone').")] = False,
    allow_pickle: AllowPickleOption = False,
    debug: DebugOption = False,
) -> None:
    """Find where in MODEL the --backend's error comes from.

    Every intermediate tensor is compared with the reference's, node by
    node, beside an FP32 run of another implementation (the noise floor)
    and an emulation of the backend's precision. Names the first node
    whose error grows far beyond what it inherits and its precision's
    rounding (an overflow, a cancellation, a Softmax over large logits)
    with the error reaching the outputs, then the nodes that amplify most
    and a summary by op type. Exit 0 when it ran, 2 on an error.
    """
    from modelparity.inputs import parse_shape
    from modelparity.locate import localize
    from modelparity.report.locate import render_locate
    from modelparity.report.locate_html import write_locate_html, write_model_explorer

    try:
        report_files(html=html, model_explorer=model_explorer)
        shapes = dict(parse_shape(text) for text in shape or [])
        config = task_config(task, output, threshold, logits, k, custom)
        with progress_bars() as bars:
            result = localize(model, backend, data, task=config, reference=reference,
                              precision=precision, samples=samples, batch_size=batch_size,
                              shapes=shapes, seed=seed, value_range=parse_range(value_range),
                              timeout=timeout, out=out, allow_pickle=allow_pickle,
                              isolate=isolate, progress=bars)
    except ModelParityError as exc:
        raise fail(str(exc), debug) from None
    render_locate(result, console, every_node=every_node)
    written = [*([os.path.join(out, name) for name in ("report.json", "locate.json")]
                 if out else []),
               *([write_locate_html(result, html)] if html else []),
               *([write_model_explorer(result, model_explorer)] if model_explorer else [])]
    for path in written:
        console.print(Text(plain(f"written: {path}"), style="dim"))


@app.command()
def capture(
    model: ModelArgument,
    backend: Annotated[str, typer.Option(
        "--backend", "-b", help="The backend to run and keep the outputs of, as for 'run' "
                                "(ort:coreml?ModelFormat=MLProgram, openvino:gpu, ...).")],
    out: Annotated[str, typer.Option(
        "--out", "-o", help="The capture folder to write (run.mpc): the outputs as "
                            "safetensors shards, each sample's input digest, the model's "
                            "hash, the backend's description and timings.")],
    data: DataOption = None,
    shape: ShapeOption = None,
    samples: Annotated[int, typer.Option(help="How many synthetic samples.")] = 1000,
    seed: SeedOption = 0,
    value_range: ValueRangeOption = "-1,1",
    batch_size: Annotated[int, typer.Option(help="Samples per inference call.")] \
        = Settings.batch_size,
    timeout: TimeoutOption = Settings.timeout,
    warmup: Annotated[int, typer.Option(
        help="Untimed runs of the first batch before latency is measured.")] \
        = Settings.warmup,
    keep_inputs: Annotated[bool, typer.Option(
        help="Keep the inputs in the capture too, so 'compare' needs no data (--no-keep-"
             "inputs for data too large or private to carry).")] = True,
    resume: Annotated[bool, typer.Option(
        help="Continue an interrupted capture in --out after its last whole shard.")]
        = False,
    allow_pickle: AllowPickleOption = False,
    debug: DebugOption = False,
) -> None:
    """Run MODEL on one --backend and keep its outputs, to compare anywhere.

    For the backends that live on other machines (Core ML on a Mac, CUDA
    on a GPU server): capture there, copy the folder, and run 'modelparity
    compare' where the CI is. Exit 0 when written, 2 on an error.
    """
    from modelparity.capture import capture as capture_outputs
    from modelparity.inputs import parse_shape

    try:
        shapes = dict(parse_shape(text) for text in shape or [])
        manifest = capture_outputs(model, backend, data, out=out, batch_size=batch_size,
                                   shapes=shapes, samples=samples, seed=seed,
                                   value_range=parse_range(value_range), timeout=timeout,
                                   warmup=warmup, keep_inputs=keep_inputs, resume=resume,
                                   allow_pickle=allow_pickle)
    except ModelParityError as exc:
        raise fail(str(exc), debug) from None
    precision = (manifest.description.get("precision") or {}).get("reported")
    console.print(Text(plain(f"captured {manifest.spec} on {manifest.samples} samples"
                             + (f" (precision reported: {precision})" if precision else "")
                             + f": {out}")))


@app.command()
def compare(
    items: Annotated[list[str], typer.Argument(
        help="The reference, then the candidates: capture folders (modelparity capture), "
             "backend specs that run here (ort:cpu), or Polygraphy results (polygraphy run "
             "--save-outputs out.json).", metavar="REF CAND...")],
    model: Annotated[str | None, typer.Option(
        help="The model, when the one the captures name is not at that path here (its "
             "content must match).")] = None,
    data: Annotated[str | None, typer.Option(
        "--data", "-d", help="Inputs, when no capture kept them (as for 'run').")] = None,
    polygraphy_inputs: Annotated[str | None, typer.Option(
        "--polygraphy-inputs", metavar="FILE",
        help="The inputs Polygraphy saved with --save-inputs, for its results.")] = None,
    task: TaskOption = "binary",
    output: OutputOption = None,
    threshold: ThresholdOption = "0.5",
    logits: LogitsOption = False,
    k: KOption = 5,
    custom: CustomOption = None,
    labels: Annotated[str | None, typer.Option(
        help="True labels (.npy or .csv), one per sample: adds metrics per backend.")] = None,
    batch_size: Annotated[int, typer.Option(help="Samples per call of a live backend.")] \
        = Settings.batch_size,
    timeout: TimeoutOption = Settings.timeout,
    out: Annotated[str | None, typer.Option(
        help="Folder for report.json and the per-backend results.")] = None,
    fingerprint: Annotated[bool, typer.Option(
        help="Also run the model's emulations here to tell which precision each capture "
             "really used (needs the model).")] = True,
    fail_on: Annotated[list[str] | None, typer.Option(
        "--fail-on", metavar="EXPR", help="A policy that fails the compare (exit 1), as for "
                                          "'run': flips>0, max_abs>1e-4, ...")] = None,
    junit: JunitOption = None,
    markdown: MarkdownOption = None,
    html: HtmlOption = None,
    show_flips: Annotated[int, typer.Option(help="Flipped samples listed per backend.")] = 10,
    engine: EngineOption = None,
    workers: WorkersOption = 2,
    ray_address: RayAddressOption = None,
    debug: DebugOption = False,
) -> None:
    """Audit captures (and live backends) against a reference, on any machine.

    The same audit as 'run': errors, flips, metrics with --labels, the
    silent defaults of each captured configuration (judged on the
    machine it was captured on), the fingerprint, every report. Exit 0
    when all is well, 1 when a --fail-on policy fails, 2 on an error
    (captures of other models or inputs are refused in one line).
    """
    from modelparity.capture.compare import compare as compare_items
    from modelparity.policy import parse_policies

    try:
        report_files(html=html, junit=junit, markdown=markdown)
        policies = parse_policies(fail_on)
        config = task_config(task, output, threshold, logits, k, custom)
        with progress_bars() as bars:
            result = compare_items(items, model=model, inputs=data,
                                   polygraphy_inputs=polygraphy_inputs, task=config,
                                   labels=labels, batch_size=batch_size, timeout=timeout,
                                   out=out, fingerprint=fingerprint, progress=bars,
                                   engine=engine, workers=workers, ray_address=ray_address)
    except ModelParityError as exc:
        raise fail(str(exc), debug) from None
    finish(result, policies, show_flips=show_flips, junit=junit, markdown=markdown, html=html,
           debug=debug, saved=os.path.join(out, "report.json") if out else None)


@app.command("keep-fp32")
def keep_fp32_command(
    model: ModelArgument,
    precision: Annotated[str, typer.Option(
        help="The low precision the model is to run in: fp16 or bf16.")],
    policy: Annotated[str, typer.Option(
        help="What must hold for the mixed model, in --fail-on's grammar read as a "
             "requirement: flips==0, flip_rate<=0.001, max_abs<1e-3.")] = "flips==0",
    reference: ReferenceOption = DEFAULT_REFERENCE,
    data: DataOption = None,
    samples: Annotated[int, typer.Option(
        help="How many samples the policy is checked on (the first ones of --data, or "
             "synthetic ones).")] = 1000,
    locate_samples: Annotated[int, typer.Option(
        help="How many of them locate ranks the nodes on.")] = 64,
    shape: ShapeOption = None,
    seed: SeedOption = 0,
    value_range: ValueRangeOption = "-1,1",
    batch_size: Annotated[int, typer.Option(help="Samples per inference call.")] \
        = Settings.batch_size,
    task: TaskOption = "binary",
    output: OutputOption = None,
    threshold: ThresholdOption = "0.5",
    logits: LogitsOption = False,
    k: KOption = 5,
    custom: CustomOption = None,
    timeout: TimeoutOption = Settings.timeout,
    out: Annotated[str | None, typer.Option(
        help="Folder for the mixed-precision model (fp16), keep.json and the audits' "
             "files.")] = None,
    allow_pickle: AllowPickleOption = False,
    debug: DebugOption = False,
) -> None:
    """Find a small set of nodes to keep in FP32 so MODEL meets --policy in --precision.

    Guided by locate: the nodes that amplify error most (with the producers
    of what they read) are kept first, 1, 2, 4, ... at a time, then the
    set is bisected and pruned; every try is an audit of the emulated mixed
    model against the FP32 reference. Writes the FP16 ONNX model with
    those nodes in FP32 (--out), and the same choice for OpenVINO,
    coremltools and TensorRT in keep.json. Exit 0 when the policy is met,
    1 when no set meets it, 2 on an error.
    """
    from modelparity.inputs import parse_shape
    from modelparity.locate.keep import keep_fp32
    from modelparity.report.locate import render_keep

    try:
        shapes = dict(parse_shape(text) for text in shape or [])
        config = task_config(task, output, threshold, logits, k, custom)
        with console.status("searching", spinner="dots"):
            result = keep_fp32(model, precision, data, policy=policy, task=config,
                               reference=reference, samples=samples,
                               locate_samples=locate_samples, batch_size=batch_size,
                               shapes=shapes, seed=seed, value_range=parse_range(value_range),
                               timeout=timeout, out=out, allow_pickle=allow_pickle)
    except ModelParityError as exc:
        raise fail(str(exc), debug) from None
    render_keep(result, console)
    if not result.met:
        raise typer.Exit(EXIT_POLICY)


@app.command()
def report(
    path: Annotated[str, typer.Argument(
        help="A report.json written by 'run --out' (or audit(out=...)).")],
    show_flips: Annotated[int, typer.Option(help="How many flipped samples to list per "
                                                 "backend in the terminal.")] = 10,
    fail_on: Annotated[list[str] | None, typer.Option(
        "--fail-on", metavar="EXPR",
        help="A policy, as for 'run' (flips>0, max_abs>1e-4, precision!=fp32, ...); "
             "repeat, or separate with commas.")] = None,
    junit: JunitOption = None,
    markdown: MarkdownOption = None,
    html: HtmlOption = None,
    debug: DebugOption = False,
) -> None:
    """Render and gate a saved audit without running anything again.

    Reads PATH (report.json; the per-sample decisions saved beside it
    in backends/ come back too, for the HTML score scatter), shows it
    as 'run' did, writes --html/--markdown/--junit, and applies
    --fail-on. Exit code 0 when every backend had run and every policy
    holds, 1 when a policy fails, 2 on an error (an unreadable report,
    or a backend that had failed).
    """
    from modelparity.policy import parse_policies
    from modelparity.result import AuditResult

    try:
        report_files(html=html, junit=junit, markdown=markdown)
        policies = parse_policies(fail_on)
        try:
            result = AuditResult.load(path)
        except OSError as exc:
            raise ModelParityError(f"{path}: cannot read the report: {exc.strerror}") from None
        except (ValueError, KeyError, TypeError) as exc:
            raise ModelParityError(f"{path}: not a modelparity report.json ({exc})") from None
    except ModelParityError as exc:
        raise fail(str(exc), debug) from None
    finish(result, policies, show_flips=show_flips, junit=junit, markdown=markdown, html=html,
           debug=debug)


@app.command()
def lint(
    backend: Annotated[list[str], typer.Option(
        "--backend", "-b",
        help="A backend spec to check, as for 'run' (ort:coreml, ort:cuda?use_tf32=0, "
             "openvino:cpu, torch:cuda, coreml:all, ...); repeat for several. Options named "
             "env.NAME=value stand for environment variables.")],
    debug: DebugOption = False,
) -> None:
    """Explain the silent precision defaults a backend runs into, and the fix.

    Runs nothing and needs no model. The configuration (options as
    given and as defaulted, runtime version, OS, CPU features, NVIDIA
    GPU) is matched against a knowledge base of runtimes that compute
    FP32 models in FP16, BF16, TF32 or INT8 unless told otherwise. A
    rule that depends on hardware this machine lacks is shown as
    conditional. 'run' does the same check, and measures. Exit code 0
    when no rule applies, 1 when one does, 2 on a bad spec.
    """
    from modelparity.backends import parse_spec
    from modelparity.knowledge import lint as lint_spec
    from modelparity.report.findings import render_findings

    try:
        specs = [parse_spec(text) for text in backend]
        matched = [(spec, lint_spec(spec)) for spec in specs]  # reads the files a spec names
    except ModelParityError as exc:
        raise fail(str(exc), debug) from None
    found = 0
    for spec, findings in matched:
        found += len(findings)
        if not findings:
            console.print(f"{spec.text}: no known silent precision default applies here",
                          style="green", highlight=False)
        render_findings(findings, console, verbose=True)
    raise typer.Exit(EXIT_POLICY if found else EXIT_OK)


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Folder for the demo's models, data and reports.")]
        = Path("modelparity-demo"),
    capture_dir: Annotated[str | None, typer.Option(
        "--capture-dir", metavar="DIR",
        help="Captures taken on a Mac (modelparity capture ... -b 'ort:coreml' -o "
             "DIR/x.mpc): they replace the Core ML rows this machine can only predict.")]
        = None,
    debug: DebugOption = False,
) -> None:
    """Show silent downcasts flipping decisions, on two small models built here.

    Runs them on ONNX Runtime (reference), PyTorch, OpenVINO with
    default settings and OpenVINO pinned to FP32, and the 4->3 MLP also
    on Core ML (ONNX Runtime's provider by default and with
    ModelFormat=MLProgram, Core ML itself in FP32 and FP16; predicted
    rows off macOS), and shows which decisions flip, the known default
    behind it, and what the fix costs. Downloads nothing.
    """
    from modelparity.demo import run_demo

    try:
        code = run_demo(str(out), console, capture_dir)
    except ModelParityError as exc:
        raise fail(str(exc), debug) from None
    raise typer.Exit(code)


@app.command()
def version() -> None:
    """Print the versions of modelparity and of the runtimes installed here."""
    from modelparity.backends import runtimes
    from modelparity.knowledge.configuration import runtime_version

    console.print(f"modelparity {__version__}")
    packages = [r.distribution for r in runtimes().values() if r.distribution]
    for package in dict.fromkeys([*packages, "onnx", "numpy"]):
        found = runtime_version(package)
        console.print(f"{package} {found}" if found else f"{package} not installed",
                      highlight=False)


@app.command(context_settings={"ignore_unknown_options": True})
def fp(
    value: Annotated[str, typer.Argument(
        help="The number to look at, usually a decision threshold such as 0.5 (negative "
             "numbers and hex floats such as 0x1.8p-1 work too).")],
    formats: Annotated[str, typer.Option(
        help="Comma-separated float formats: fp32, fp16, bf16, tf32, fp8_e5m2 (aliases "
             "float32, float16, half, bfloat16, tfloat32).")] = "fp32,fp16,bf16,tf32",
    debug: DebugOption = False,
) -> None:
    """Show how VALUE is stored in FP32, FP16, BF16 and TF32, and which scores flip.

    Per format: the nearest representable number, its neighbours, the gaps
    to them, the numbers that round onto it, and the flip band: the scores
    whose decision 'score > VALUE' changes when a runtime silently returns
    the score in that format. Needs no model. Exit code 2 on a bad value.
    """
    from modelparity.numerics.floats import describe_value
    from modelparity.report.floats import render_float_views

    try:
        try:
            number = float.fromhex(value) if "0x" in value.lower() else float(value)
        except ValueError:
            raise ModelParityError(f"VALUE {value}: expected a number such as 0.5") from None
        views = describe_value(number, [name for name in formats.split(",") if name.strip()])
    except ModelParityError as exc:
        raise fail(str(exc), debug) from None
    render_float_views(views, console)


def _interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM ends the run as Ctrl-C does: workers stopped, files kept


def main() -> None:
    # `timeout` and CI cancellation send SIGTERM, whose default ends the process at once and
    # leaves its workers behind (a hanging one runs on); the workers also die with the parent
    signal.signal(signal.SIGTERM, _interrupted)
    try:
        sys.exit(app())
    except Exception as exc:  # a bug of ours: still one line, and the results already written
        if "--debug" in sys.argv:
            raise
        err_console.print(Text.assemble(
            ("error:", "bold red"), " ", plain(f"internal error ({type(exc).__name__}: "
                                              f"{' '.join(str(exc).split())[:300]}); this is "
                                              f"a bug in modelparity: run again with --debug "
                                              f"for the traceback and report it")),
            highlight=False, soft_wrap=True)
        sys.exit(EXIT_ERROR)


if __name__ == "__main__":
    main()
