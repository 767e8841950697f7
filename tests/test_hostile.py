"""Hostile text, from a model file or the user, is shown, never obeyed (issue 12, item 7):
ANSI/OSC escapes in a tensor name reach the terminal as visible escapes, brackets are not
rich markup, and `name:factory:` is no emoji."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from typer.testing import CliRunner

from modelparity.cli import app

OUTPUT = "\x1b[31mprob\x1b]0;pwned\x07"  # recolours the terminal and sets its title
INPUT = "[bold red]x"  # rich markup, if anyone prints it as markup


@pytest.fixture
def hostile_model(tmp_path):
    graph = helper.make_graph(
        [helper.make_node("Sigmoid", [INPUT], [OUTPUT])], "hostile",
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["batch", 3])],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["batch", 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "hostile.onnx"
    onnx.save(model, str(path))
    return str(path)


def run(*args: str):
    return CliRunner().invoke(app, ["run", *args], terminal_width=200)


def test_escapes_in_a_tensor_name_are_shown_not_obeyed(hostile_model):
    outcome = run(hostile_model, "-b", "emulate:fp16", "--task", "multilabel", "--samples",
                  "20", "--no-fingerprint", "--warmup", "0")
    assert outcome.exit_code == 0, outcome.output
    assert "\x1b" not in outcome.output and "\x07" not in outcome.output
    assert "\\x1b[31mprob\\x1b]0;pwned\\x07" in outcome.stdout


@pytest.mark.parametrize(("args", "expected"), [
    (["-d", "[/x].npz"], "error: [/x].npz: file not found"),  # was rich.errors.MarkupError
    (["-d", "inputs [v2].npz"], "error: inputs [v2].npz: file not found"),  # was "inputs .npz"
])
def test_brackets_in_user_text_are_not_markup(hostile_model, args, expected):
    outcome = run(hostile_model, "-b", "emulate:fp16", *args)
    assert outcome.exit_code == 2, outcome.output
    assert outcome.stderr.strip() == expected


def test_a_model_input_named_like_markup_prints_as_named(hostile_model, tmp_path):

    data = tmp_path / "other.npz"
    np.savez(data, y=np.zeros((4, 3), np.float32))
    outcome = run(hostile_model, "-b", "emulate:fp16", "-d", str(data))
    assert outcome.exit_code == 2, outcome.output
    assert INPUT in outcome.stderr and len(outcome.stderr.strip().splitlines()) == 1


def test_a_factory_is_no_emoji():
    outcome = run("nosuchmodule:factory", "-b", "emulate:fp16")
    assert outcome.exit_code == 2, outcome.output
    assert outcome.stderr.startswith("error: nosuchmodule:factory: cannot import module")
    assert "\U0001f3ed" not in outcome.output  # the factory emoji


@pytest.mark.parametrize(("feed", "first"), [
    # seeded per process: the same on every call in the audit's process (which checks
    # that), other data in every worker
    ("    rng = np.random.default_rng(os.getpid())\n"
     "    for _ in range(3):\n"
     "        yield {'x': rng.random((64, FEATURES), np.float32)}\n", 0),
    # the same first batch on every call (the run key reads that one), then unseeded
    ("    yield {'x': np.random.default_rng(0).random((64, FEATURES), np.float32)}\n"
     "    yield {'x': np.random.rand(64, FEATURES).astype(np.float32)}\n", 64),
])
def test_backends_fed_other_inputs_are_refused(models, tmp_path, monkeypatch, feed, first):
    """Issue 12, item 3: each worker calls a module:function feed itself. The audit's process
    calls it twice and compares, but a feed can agree with itself there and still give each
    worker other data; every worker's per-sample input digests are compared with the
    reference's, whatever the batch size."""
    features = models["binary"]["x"].shape[1]
    (tmp_path / "mp_worker_feed.py").write_text(
        f"import os\nimport numpy as np\nFEATURES = {features}\ndef items():\n{feed}")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    outcome = run(models["binary"]["path"], "-b", "emulate:fp16", "-d", "mp_worker_feed:items",
                  "--batch-size", "64", "--no-fingerprint", "--warmup", "0")
    assert outcome.exit_code == 2, outcome.output
    message = outcome.stderr.strip()
    assert len(message.splitlines()) == 1 and "Traceback" not in outcome.output
    assert message.startswith(f"error: entry point mp_worker_feed:items: fed emulate:fp16 other "
                              f"inputs than the reference (first at sample {first})"), message


def test_spec_text_never_runs_inside_a_repro_script(models, data_files, tmp_path):
    """A spec option with three quotes ended the repro's docstring, and running the repro ran
    what followed (issue 12, item 6). The header is comments now; values are literals."""
    import subprocess
    import sys
    from pathlib import Path

    import modelparity

    hostile = 'x"""\nopen("pwned", "w").write("ran")\n"""'
    spec = modelparity.parse_spec("ort:coreml").with_options(**{"session.note": hostile})
    assert modelparity.parse_spec(spec.text) == spec  # the text round-trips
    result = modelparity.audit(models["binary"]["path"], [spec], data_files["binary"]["data"],
                               task="binary", fingerprint=False, warmup=0,
                               out=str(tmp_path / "out"))
    script = Path(result.candidates[0].repro)
    text = script.read_text()
    compile(text, str(script), "exec")
    assert all(line.startswith("# ") for line in text.split("import json")[0].splitlines()
               if line.strip())
    subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                   timeout=120)
    assert not (tmp_path / "pwned").exists()


def test_a_module_in_the_working_directory_never_shadows_a_runtime(models, data_files,
                                                                   tmp_path, monkeypatch):
    """With an onnxruntime.py in the current directory, the workers imported it (and said the
    package "is not installed"). Workers start with `python -P`: no cwd on their path."""
    (tmp_path / "onnxruntime.py").write_text(
        "open(__file__ + '.ran', 'w').write('imported')\nraise ImportError('planted')\n")
    monkeypatch.chdir(tmp_path)
    outcome = run(models["binary"]["path"], "-b", "emulate:fp16", "-d",
                  data_files["binary"]["data"], "--no-fingerprint", "--warmup", "0")
    assert outcome.exit_code == 0, outcome.output
    assert not (tmp_path / "onnxruntime.py.ran").exists()


def test_a_symbolic_link_planted_at_a_log_is_refused_not_followed(models, data_files,
                                                                 tmp_path):
    """A symlink at OUT/logs/ort_cpu.log truncated its target (issue 12, item 5)."""
    import os

    target = tmp_path / "precious.txt"
    target.write_text("keep me")
    logs = tmp_path / "out" / "logs"
    logs.mkdir(parents=True)
    os.symlink(target, logs / "ort_cpu.log")
    outcome = run(models["binary"]["path"], "-b", "emulate:fp16", "-d",
                  data_files["binary"]["data"], "--no-fingerprint", "--warmup", "0",
                  "--out", str(tmp_path / "out"))
    assert outcome.exit_code == 2, outcome.output
    message = outcome.stderr.strip()
    assert len(message.splitlines()) == 1 and "ort_cpu.log: is a symbolic link" in message
    assert target.read_text() == "keep me"


@pytest.mark.parametrize("container", ["npy", "npz"])
def test_a_header_that_claims_more_rows_than_the_file_holds(models, tmp_path, container):
    """A .npy whose header claims 10**12 rows in a 19 KB file made the audit allocate 931 GiB
    (issue 12, item 9). The header is checked against the bytes that follow it."""
    import io
    import zipfile


    features = models["binary"]["x"].shape[1]
    body = io.BytesIO()
    np.lib.format.write_array_header_1_0(body, {"descr": "<f4", "fortran_order": False,
                                                "shape": (10**12, features)})
    body.write(np.zeros((160, features), np.float32).tobytes())
    if container == "npy":
        path = tmp_path / "forged.npy"
        path.write_bytes(body.getvalue())
    else:
        path = tmp_path / "forged.npz"
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("x.npy", body.getvalue())
    outcome = run(models["binary"]["path"], "-b", "emulate:fp16", "-d", str(path),
                  "--no-fingerprint")
    assert outcome.exit_code == 2, outcome.output
    message = outcome.stderr.strip()
    assert len(message.splitlines()) == 1 and "Traceback" not in outcome.output
    assert "forged" in message and "its header claims shape (1000000000000, 30)" in message


DAMAGES = {
    "a 0-byte saved .npz": lambda out: (out / "backends" / "emulate_fp16.npz").write_bytes(b""),
    "a truncated spool": lambda out: (out / "reference" / "output_0.bin").write_bytes(
        (out / "reference" / "output_0.bin").read_bytes()[:100]),
    "a garbage manifest.json": lambda out: (out / "reference" / "manifest.json").write_text(
        "garbage{"),
    "a garbage saved .json": lambda out: (out / "backends" / "emulate_fp16.json").write_text(
        "{garbage"),
}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_a_damaged_out_folder_is_run_again_on_resume(models, data_files, tmp_path, damage):
    """A 0-byte saved .npz printed only "Aborted." (exit 1); a truncated spool and a garbage
    manifest.json gave tracebacks (issue 12, item 9). What is damaged runs again; what is
    intact is reused; the flips are those of an uninterrupted run."""
    import modelparity

    out = tmp_path / "out"
    kwargs = dict(task="binary", fingerprint=False, warmup=0, out=str(out))
    model, data = models["binary"]["path"], data_files["binary"]["data"]
    first = modelparity.audit(model, ["emulate:fp16"], data, **kwargs)
    DAMAGES[damage](out)
    again = modelparity.audit(model, ["emulate:fp16", "emulate:bf16"], data, resume=True,
                              **kwargs)
    assert again.ok
    assert again.candidates[0].flips.index.tolist() == first.candidates[0].flips.index.tolist()
    assert again.candidates[0].errors["prob"].max_abs == first.candidates[0].errors["prob"].max_abs
    rerun = {"a truncated spool", "a garbage manifest.json"}
    assert again.reference.resumed == (damage not in rerun)
    assert not again.candidates[1].resumed


def test_resume_works_for_a_factory_model(tmp_path, monkeypatch):
    """`--resume` never worked for a module:factory model: the export into --out got a new
    mtime every run, and the mtime was in the run key (issue 12, item 10). The key holds the
    model file's content now; an unseeded factory (new weights each time) still runs again."""
    pytest.importorskip("torch")
    import modelparity

    (tmp_path / "mp_seeded_factory.py").write_text(
        "import numpy as np\nimport torch\n\n"
        "def make(seed=0):\n"
        "    torch.manual_seed(seed)\n"
        "    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(),\n"
        "                                torch.nn.Linear(8, 1), torch.nn.Sigmoid())\n"
        "    return model, {'x': np.zeros((2, 4), np.float32)}\n\n"
        "def unseeded():\n"
        "    return make(seed=int(np.random.randint(1 << 30)))\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    kwargs = dict(task="binary", samples=200, fingerprint=False, warmup=0)
    for entry, resumed in (("mp_seeded_factory:make", True),
                           ("mp_seeded_factory:unseeded", False)):
        out = str(tmp_path / entry.replace(":", "_"))
        modelparity.audit(entry, ["emulate:fp16"], None, out=out, **kwargs)
        again = modelparity.audit(entry, ["emulate:fp16"], None, out=out, resume=True, **kwargs)
        assert again.reference.resumed is resumed and again.candidates[0].resumed is resumed


@pytest.mark.parametrize("spec", ["ort:cpu?nosuch=1", "ort:cuda?nosuch=1",
                                  "openvino:cpu?NOSUCH_HINT=1"])
def test_options_a_runtime_would_ignore_are_refused(models, data_files, spec):
    """`ort:cpu?nosuch=1` must not run with exit 0 as if configured (issue 12, item 14)."""
    outcome = run(models["binary"]["path"], "-b", spec, "-d", data_files["binary"]["data"])
    assert outcome.exit_code == 2, outcome.output
    message = outcome.stderr.strip()
    assert len(message.splitlines()) == 1 and f"{spec}: unknown" in message


@pytest.mark.parametrize("option", ["--html", "--junit", "--markdown"])
def test_a_report_path_that_is_a_folder_is_refused_before_the_audit(models, data_files,
                                                                    tmp_path, option):
    """`--html DIR` ran the whole audit, then failed and left DIR.tmp (issue 12, item 13)."""
    folder = tmp_path / "reports"
    folder.mkdir()
    outcome = run(models["binary"]["path"], "-b", "emulate:fp16", "-d",
                  data_files["binary"]["data"], option, str(folder))
    assert outcome.exit_code == 2, outcome.output
    assert outcome.stderr.strip().startswith(f"error: {option} {folder}: is a folder")
    assert list(tmp_path.iterdir()) == [folder] and not list(folder.iterdir())


def test_float64_values_that_overflow_float32_are_refused(models, tmp_path):
    """float64 inputs beyond float32's range became inf with only a numpy warning; integer
    narrowing was already refused (issue 12, item 13)."""

    x = models["binary"]["x"].astype(np.float64)
    x[3, 2] = 1e300
    np.savez(tmp_path / "big.npz", x=x)
    outcome = run(models["binary"]["path"], "-b", "emulate:fp16", "-d",
                  str(tmp_path / "big.npz"))
    assert outcome.exit_code == 2, outcome.output
    message = outcome.stderr.strip()
    assert "big.npz" in message and "values such as 1e+300, which overflow float32" in message
    assert len(message.splitlines()) == 1


def test_no_repro_for_a_backend_that_did_not_run(models, data_files, tmp_path):
    """A repro was written for a failed backend, claiming "0 of 569 decisions flipped"."""
    import onnxruntime

    import modelparity

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("needs a machine where ort:cuda fails (no CUDA provider)")
    result = modelparity.audit(models["binary"]["path"], ["ort:coreml", "ort:cuda"],
                               data_files["binary"]["data"], task="binary", fingerprint=False,
                               warmup=0, out=str(tmp_path / "out"))
    ran, broken = result.candidates
    assert ran.ok and ran.repro is not None  # predicted (Core ML off macOS), with a fix: ORT-1
    assert not broken.ok and [f.rule.id for f in broken.findings] == ["ORT-4"]  # fixable
    assert broken.repro is None and not (tmp_path / "out" / "repro" / "ort_cuda").exists()


@pytest.mark.parametrize(("body", "expected"), [
    ("", "has a header but no data rows"),  # was "column 'f0' is not numeric"
    ("1,2,3\n4,5\n", "row 2 has 2 of the header's 3 values"),  # was padded with NaN
])
def test_a_csv_that_is_short_of_values_is_refused(tmp_path, body, expected):
    from modelparity.errors import InputError
    from modelparity.inputs import open_inputs
    from modelparity.model.signature import Signature, TensorInfo

    path = tmp_path / "t.csv"
    path.write_text("f0,f1,f2\n" + body)
    signature = Signature((TensorInfo("x", "float32", ("batch", 3)),),
                          (TensorInfo("y", "float32", ("batch", 1)),))
    with pytest.raises(InputError) as caught:
        open_inputs(str(path), signature)
    assert str(caught.value).endswith(f"t.csv: {expected}")


def test_a_model_without_inputs_is_named_as_such(tmp_path):
    """It got "0 inputs, 1000 samples: no samples" (issue 12, item 13)."""
    from onnx import numpy_helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["c"], ["y"])], "constant", [],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
        [numpy_helper.from_array(np.ones((1, 3), np.float32), "c")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "constant.onnx"))
    outcome = run(str(tmp_path / "constant.onnx"), "-b", "emulate:fp16")
    assert outcome.exit_code == 2, outcome.output
    assert outcome.stderr.strip().endswith("constant.onnx: the model takes no inputs; an audit "
                                           "compares what backends compute from inputs")


@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
def test_a_terminated_run_leaves_no_worker_behind(models, data_files, tmp_path, how):
    """SIGTERM to the parent (what `timeout` and CI cancellation send) orphaned a hanging
    worker (issue 12, item 12). SIGTERM now ends the run as Ctrl-C does, and on Linux each
    worker dies with its parent, even one killed with SIGKILL."""
    import os
    import signal
    import subprocess
    import sys
    import time

    if not sys.platform.startswith("linux"):
        pytest.skip("the parent-death signal is Linux's")
    marker = tmp_path / "activated.txt"
    system, out = tmp_path / "system-tmp", tmp_path / "out"
    system.mkdir()
    hang = f"py:planted_backends:make?fail=hang&at=0&mkdtemp=1&activations={marker}"
    parent = subprocess.Popen(
        [sys.executable, "-m", "modelparity.cli", "run", models["binary"]["path"], "-b", hang,
         "-d", data_files["binary"]["data"], "--no-fingerprint", "--warmup", "0",
         "--out", str(out)], cwd=os.path.dirname(__file__), stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, env={**os.environ, "TMPDIR": str(system)})
    deadline = time.monotonic() + 60
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert marker.exists(), "the hanging backend never started"
    children = subprocess.run(["pgrep", "-P", str(parent.pid)], capture_output=True,
                              text=True).stdout.split()
    assert children
    parent.send_signal(getattr(signal, how))
    parent.wait(timeout=30)
    time.sleep(1.0)
    alive = []
    for pid in map(int, children):
        try:
            with open(f"/proc/{pid}/stat") as handle:
                if handle.read().split()[2] != "Z":
                    alive.append(pid)
        except FileNotFoundError:
            continue
    assert not alive, f"workers left running after {how}: {alive}"
    # the worker's temporary copy is never in the system's temp folder: in OUT/tmp, removed
    # by a parent that could clean up, left there (in the user's folder) by a killed one
    assert not [p for p in system.iterdir() if p.name.startswith("modelparity-emulate")]
    if how == "SIGTERM":
        assert parent.returncode == 130, parent.stdout.read().decode()
        assert not (out / "tmp").exists()
    else:
        assert list((out / "tmp").glob("*/modelparity-emulate-planted-*"))


def test_workers_keep_their_temporary_files_in_the_run_folder(models, data_files, tmp_path,
                                                              monkeypatch):
    """Killed emulation workers left `modelparity-emulate-*` model copies in the system's temp
    folder (issue 12, item 12). Workers' temporary files go to OUT/tmp, removed at the end."""
    import tempfile

    import modelparity

    system = tmp_path / "system-tmp"
    system.mkdir()
    monkeypatch.setenv("TMPDIR", str(system))
    monkeypatch.setattr(tempfile, "tempdir", None)  # read TMPDIR again
    out = tmp_path / "out"
    result = modelparity.audit(models["binary"]["path"], ["emulate:fp16", "emulate:int8"],
                               data_files["binary"]["data"], task="binary", fingerprint=False,
                               warmup=0, out=str(out))
    assert result.ok
    assert not (out / "tmp").exists()
    assert not [p.name for p in system.iterdir() if p.name.startswith("modelparity-emulate")]


def _corrupt(path):
    path.write_bytes(b"\x08\x07garbage" * 40)
    return path


def _truncated(models, path):
    from pathlib import Path

    path.write_bytes(Path(models["binary"]["path"]).read_bytes()[:200])
    return path


def _pickled(path):

    np.save(path, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    return path


@pytest.mark.parametrize("case", ["corrupt model", "truncated model", "pickle as data",
                                  "pickle in npz", "pickle as labels", "crashing backend",
                                  "hanging backend"])
def test_cases_that_already_held_stay_one_line_and_exit_2(models, data_files, tmp_path, case):
    """A sample of the hostile cases that were handled well, so they stay so."""
    model, data = models["binary"]["path"], data_files["binary"]["data"]
    backend, extra, needle = "emulate:fp16", [], None
    if case == "corrupt model":
        model, needle = str(_corrupt(tmp_path / "bad.onnx")), "bad.onnx"
    elif case == "truncated model":
        model, needle = str(_truncated(models, tmp_path / "cut.onnx")), "cut.onnx"
    elif case == "pickle as data":
        data, needle = str(_pickled(tmp_path / "obj.npy")), "obj.npy: holds an object array"
    elif case == "pickle in npz":
        data = str(tmp_path / "obj.npz")
        np.savez(data, x=np.array([{"a": 1}, None], dtype=object))
        needle = "obj.npz"
    elif case == "pickle as labels":
        extra, needle = ["--labels", str(_pickled(tmp_path / "y.npy"))], "y.npy"
    elif case == "crashing backend":
        backend = "py:planted_backends:make?fail=crash&at=0"
    else:
        backend, extra = "py:planted_backends:make?fail=hang&at=0", ["--timeout", "3"]
    outcome = run(model, "-b", backend, "-d", data, "--no-fingerprint", "--warmup", "0",
                  *extra)
    assert outcome.exit_code == 2, outcome.output
    assert "Traceback" not in outcome.output
    if needle is not None:
        message = outcome.stderr.strip()
        assert len(message.splitlines()) == 1 and needle in message, message
    else:  # the backend is reported failed; the audit itself finished
        assert "failed" in outcome.stdout and "No decision flipped" not in outcome.stdout


@pytest.mark.parametrize("case", ["crash", "hang"])
def test_an_export_that_crashes_or_hangs_says_what_it_printed(tmp_path, monkeypatch, case):
    """An export crash pointed at a log in a temporary folder already deleted, and --timeout
    did not bound the export (a fixed 600 s) (issue 12, item 13)."""
    pytest.importorskip("torch")
    (tmp_path / "mp_bad_factory.py").write_text(
        "import os, sys, time\n"
        "def crash():\n"
        "    print('loading the weights from the bucket', file=sys.stderr, flush=True)\n"
        "    os._exit(3)\n"
        "def hang():\n"
        "    print('waiting for the GPU', file=sys.stderr, flush=True)\n"
        "    time.sleep(60)\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    outcome = run(f"mp_bad_factory:{case}", "-b", "emulate:fp16", "--timeout", "5")
    assert outcome.exit_code == 2, outcome.output
    message = outcome.stderr.strip()
    assert len(message.splitlines()) == 1 and "export.log" not in message
    if case == "crash":
        assert ("export to ONNX failed (the export process died with exit code 3; its last "
                "output: loading the weights from the bucket)") in message
    else:
        assert ("export to ONNX did not finish within 5 s (--timeout; its last output: "
                "waiting for the GPU)") in message


def test_a_bug_of_ours_is_one_line_too(models, data_files):
    """An unexpected exception (a bug, like the nudenet crash of issue 11) reached the user as
    a traceback with exit 1, which means "a policy failed". One line, exit 2; --debug shows
    the traceback."""
    import subprocess
    import sys

    planted = ("import modelparity.api as api\n"
               "def broken(*args, **kwargs):\n"
               "    raise RuntimeError('planted bug')\n"
               "api.analyse = broken\n"
               "import sys\n"
               "from modelparity.cli import main\n"
               "sys.argv = ['modelparity', *sys.argv[1:]]\n"
               "main()\n")
    args = ["run", models["binary"]["path"], "-b", "emulate:fp16", "-d",
            data_files["binary"]["data"], "--no-fingerprint", "--warmup", "0"]
    done = subprocess.run([sys.executable, "-c", planted, *args], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    message = done.stderr.strip().splitlines()
    assert message == ["error: internal error (RuntimeError: planted bug); this is a bug in "
                       "modelparity: run again with --debug for the traceback and report it"]
    debug = subprocess.run([sys.executable, "-c", planted, *args, "--debug"],
                           capture_output=True, text=True, timeout=120)
    assert "Traceback" in debug.stderr and "planted bug" in debug.stderr


@pytest.mark.parametrize("how", ["SIGINT", "SIGKILL"])
def test_an_interrupted_run_resumes_to_the_same_report(models, data_files, tmp_path, how,
                                                       monkeypatch):
    """Interrupted while a candidate runs (Ctrl-C, or killed outright), then run again with
    --resume: what had finished comes from disk, the rest runs, and the report is the one an
    uninterrupted run gives."""
    import json
    import os
    import signal
    import subprocess
    import sys
    import time

    import onnxruntime as ort

    session = ort.InferenceSession(models["binary"]["path"], providers=["CPUExecutionProvider"])
    negative = np.flatnonzero(session.run(None, {"x": models["binary"]["x"]})[0][:, 0] < 0.5)
    rows = ",".join(str(r) for r in negative[[0, 40, -1]])  # in batch 0, batch 1 or later
    once = tmp_path / "hung-once"  # the planted backend hangs in batch 1 the first time only
    nudged = f"py:planted_backends:make?nudge=0.6&rows={rows}&fail=hang&at=1&once={once}"
    args = [models["binary"]["path"], "-b", "emulate:fp16", "-b", nudged, "-d",
            data_files["binary"]["data"], "--batch-size", "64", "--warmup", "0"]
    out, fresh = tmp_path / "out", tmp_path / "fresh"
    parent = subprocess.Popen([sys.executable, "-m", "modelparity.cli", "run", *args,
                               "--out", str(out)], cwd=os.path.dirname(__file__),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while not once.exists() and time.monotonic() < deadline and parent.poll() is None:
        time.sleep(0.2)
    assert once.exists(), parent.communicate()[0].decode()
    parent.send_signal(getattr(signal, how))
    parent.wait(timeout=30)
    assert not (out / "report.json").exists()
    saved = sorted(p.name for p in (out / "backends").glob("*.json"))
    assert len(saved) == 2, saved  # the reference and the FP16 emulation had finished

    monkeypatch.chdir(os.path.dirname(__file__))  # where planted_backends is importable
    resumed = CliRunner().invoke(app, ["run", *args, "--out", str(out), "--resume"],
                                 terminal_width=200)
    assert resumed.exit_code == 0, resumed.output
    assert "from the earlier run in this folder (--resume), same data and settings: ort:cpu, " \
           "emulate:fp16" in resumed.stdout
    whole = CliRunner().invoke(app, ["run", *args, "--out", str(fresh)], terminal_width=200)
    assert whole.exit_code == 0, whole.output

    def findings(folder):
        report = json.loads((folder / "report.json").read_text())
        keep = ("spec", "role", "status", "errors", "flips", "metrics", "fingerprint",
                "findings", "at_risk_flips")
        backends = [report["reference"], *report["candidates"], *report["profiles"].values()]
        return [{k: b.get(k) for k in keep} for b in backends], report["at_risk"]

    again, uninterrupted = findings(out), findings(fresh)
    assert [b["spec"] for b in again[0]] == [b["spec"] for b in uninterrupted[0]]
    assert len(again[0]) > 3  # the reference, both candidates and the FP32 yardsticks
    flipped = next(b for b in again[0] if b["spec"].startswith("py:"))["flips"]
    assert flipped["count"] == 3
    differ = [(b["spec"], k) for b, w in zip(again[0], uninterrupted[0], strict=True)
              for k in b if b[k] != w[k]]
    assert differ == [], [(s, k, next(b[k] for b in again[0] if b["spec"] == s),
                           next(b[k] for b in uninterrupted[0] if b["spec"] == s))
                          for s, k in differ]
    assert again[1] == uninterrupted[1]
