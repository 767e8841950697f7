"""Class names (`--class-names FILE`, `audit(class_names=...)`): loaded from text or JSON with
one-line errors, saved in report.json, and shown as `name (index)` wherever a class decision is
shown, escaped for each format."""

from __future__ import annotations

import dataclasses
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import jsonschema
import pytest
from rich.console import Console
from typer.testing import CliRunner

from modelparity import audit
from modelparity.cli import app
from modelparity.errors import InputError
from modelparity.inputs import as_class_names, load_class_names
from modelparity.report.html import render_html
from modelparity.report.junit import build_junit
from modelparity.report.markdown import render_markdown
from modelparity.report.names import class_label, decision_text
from modelparity.report.terminal import render
from modelparity.result import AuditResult

SCHEMA = Path(__file__).parents[1] / "src" / "modelparity" / "report" / "schema.json"
DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
# rows 0, 1, 2 of load_digits are the digits 0, 1, 2: a push of +2 on class 7 flips each to 7
PLANTED = "py:planted_backends:make?rows=0,1,2&nudge=2.0&column=7"


# ---------------------------------------------------------------------------- loading


def write(path: Path, text: str | bytes) -> str:
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return str(path)


def test_text_file_one_name_per_line(tmp_path):
    path = write(tmp_path / "names.txt", "\ufeffcat\n  dog  \r\nbird\n\n\n")
    assert load_class_names(path) == ["cat", "dog", "bird"]


def test_json_list_and_both_mapping_directions(tmp_path):
    assert load_class_names(write(tmp_path / "a.json", '["cat", "dog"]')) == ["cat", "dog"]
    assert load_class_names(write(tmp_path / "b.json", '{"1": "dog", "0": "cat"}')) \
        == ["cat", "dog"]
    assert load_class_names(write(tmp_path / "c.json", '{"dog": 1, "cat": 0}')) \
        == ["cat", "dog"]
    # an index the mapping leaves out stays unnamed, and is shown as the bare index
    names = load_class_names(write(tmp_path / "d.json", '{"0": "cat", "2": "bird"}'))
    assert names == ["cat", "", "bird"]
    assert class_label(1, names) == "1" and class_label(2, names) == "bird (2)"


@pytest.mark.parametrize(("name", "content", "needle"), [
    ("missing.txt", None, "not found"),
    ("latin1.txt", "caf\xe9\n".encode("latin-1"), "not UTF-8"),
    ("empty.txt", "\n\n", "no class names"),
    ("hole.txt", "cat\n\ndog\n", "line 2 is blank"),
    ("bad.json", "[\"cat\",", "not valid JSON"),
    ("number.json", "42", "expected a JSON list of class names or a mapping"),
    ("mixed.json", '["cat", 3]', "entry 1 is 3"),
    ("dup.json", '{"cat": 0, "dog": 0}', "duplicate class index 0"),
    ("dupkeys.json", '{"0": "cat", "00": "dog"}', "duplicate class index 0"),
    ("key.json", '{"cat": "dog"}', "not a class index"),
    ("values.json", '{"cat": 0, "dog": "one"}', "all class indices"),
    ("negative.json", '{"cat": -1}', "out of range"),
    ("emptylist.json", "[]", "no class names"),
])
def test_bad_files_are_one_line_errors_naming_the_file(tmp_path, name, content, needle):
    path = tmp_path / name
    if content is not None:
        write(path, content)
    with pytest.raises(InputError) as caught:
        load_class_names(str(path))
    message = str(caught.value)
    assert str(path) in message and needle in message, message
    assert "\n" not in message


def test_a_sequence_of_names_is_checked():
    assert as_class_names(("cat", "dog")) == ["cat", "dog"]
    assert as_class_names(None) is None
    with pytest.raises(InputError, match="entry 1 is int"):
        as_class_names(["cat", 1])  # type: ignore[list-item]


def test_decision_text_maps_ints_in_range_only():
    names = ["cat", "dog", "bird"]
    assert decision_text(1, names) == "dog (1)"
    assert decision_text(7, names) == "7"  # out of range: unchanged
    assert decision_text(1, None) == "1"
    assert decision_text(True, names) == "True"  # a bool is not a class index
    assert decision_text(0.5, names, "regression") == "0.5"
    assert decision_text([2, 0], names, "topk") == "[bird (2), cat (0)]"
    assert decision_text([1, 0, 1], names, "multilabel") == "{cat (0), bird (2)}"
    assert decision_text(list(range(30)), None, "topk", limit=3) == "[0, 1, 2, ... 27 more]"
    assert decision_text([1, 2], names, "custom") == "[1, 2]"  # a tuple of its own
    assert decision_text(2, names, "custom") == "bird (2)"


# ---------------------------------------------------------------------------- a real audit


@pytest.fixture(scope="module")
def named_audit(models, data_files, tmp_path_factory):
    """digits (10 classes) on ONNX Runtime against a planted candidate that flips 3 samples,
    through the CLI with --class-names, every rendering written."""
    folder = tmp_path_factory.mktemp("named")
    names = write(folder / "digits.txt", "\n".join(DIGITS) + "\n")
    out = folder / "out"
    result = CliRunner().invoke(app, [
        "run", models["multiclass"]["path"], "--backend", PLANTED,
        "--data", data_files["multiclass"]["data"], "--labels", data_files["multiclass"]["labels"],
        "--task", "multiclass", "--class-names", names, "--no-fingerprint", "--warmup", "0",
        "--out", str(out), "--html", str(folder / "r.html"), "--markdown", str(folder / "r.md"),
        "--junit", str(folder / "r.xml"),
    ], env={"COLUMNS": "200"})
    return result, folder, out


def test_cli_audit_shows_class_names_everywhere(named_audit):
    cli, folder, out = named_audit
    assert cli.exit_code == 0, cli.output
    report = json.loads((out / "report.json").read_text())
    jsonschema.validate(report, json.loads(SCHEMA.read_text()))
    assert report["schema_version"] == "1.7"
    assert report["class_names"] == DIGITS
    listed = report["candidates"][0]["flips"]["listed"]
    assert sorted(r["index"] for r in listed) == [0, 1, 2]
    assert {r["candidate_decision"] for r in listed} == {7}
    # the terminal's flips table
    assert "zero (0) -> seven (7)" in cli.output and "two (2) -> seven (7)" in cli.output
    html = (folder / "r.html").read_text()
    assert "one (1) \u2192 seven (7)" in html
    assert "<th>seven (7)</th>" in html  # confusion matrix axis
    assert "zero (0) → seven (7)" in (folder / "r.md").read_text()
    junit = (folder / "r.xml").read_text()
    assert "one (1) -&gt; seven (7)" in junit or "one (1) -> seven (7)" in junit
    loaded = AuditResult.load(str(out / "report.json"))
    assert loaded.class_names == DIGITS


def test_audit_takes_a_list_and_a_bad_file_fails_before_anything_runs(models, data_files,
                                                                     tmp_path):
    bad = write(tmp_path / "names.json", '{"cat": 0, "dog": 0}')
    out = tmp_path / "never"
    with pytest.raises(InputError, match="duplicate class index"):
        audit(models["multiclass"]["path"], [PLANTED], data_files["multiclass"]["data"],
              task="multiclass", class_names=bad, out=str(out))
    assert not out.exists()  # nothing was prepared, nothing ran
    cli = CliRunner().invoke(app, ["run", models["multiclass"]["path"], "--backend", PLANTED,
                                   "--task", "multiclass", "--class-names", bad])
    assert cli.exit_code == 2 and "duplicate class index 0" in cli.stderr


# ---------------------------------------------------------------------------- hostile names


HOSTILE = ["<script>alert(1)</script>", "[bold red]loud[/bold red]", "a|b", *DIGITS[3:]]


def test_hostile_names_are_escaped_in_every_rendering(named_audit):
    _, _, out = named_audit
    result = dataclasses.replace(AuditResult.load(str(out / "report.json")),
                                 class_names=HOSTILE)
    html = render_html(result)
    assert "<script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt; (0) \u2192 seven (7)" in html

    console = Console(record=True, width=200)
    render(result, console)
    text = console.export_text()
    # printed as written: rich did not read it as markup (which would drop the brackets)
    assert "[bold red]loud[/bold red] (1) -> seven (7)" in text

    markdown = render_markdown(result)
    assert "a\\|b (2) → seven (7)" in markdown
    assert "<script>" not in markdown and "&lt;script&gt;" in markdown

    root = build_junit(result)
    failure = next(c for c in root.iter("testcase") if c.get("name", "").endswith("/ flips"))
    assert "<script>alert(1)</script> (0) -> seven (7)" in failure.find("failure").text
    assert "<script>" not in ET.tostring(root, encoding="unicode")
