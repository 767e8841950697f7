"""Known-value tests for decision heads, flips and metrics."""

from __future__ import annotations

import json
import math
import sys

import numpy as np
import pytest
from sklearn import metrics as skm

from modelparity.decisions import (
    Decided,
    DecisionAccumulator,
    TaskConfig,
    compute_metrics,
    find_flips,
    make_head,
    metric_deltas,
)
from modelparity.errors import InputError

# every test here runs on the local engine and on Ray (conftest.engine)
pytestmark = pytest.mark.usefixtures("engine")

# --- TaskConfig -------------------------------------------------------------------------------


def test_unknown_kind_lists_valid_kinds():
    with pytest.raises(InputError, match="binary, multiclass, topk"):
        TaskConfig("ranking")


def test_config_validation():
    with pytest.raises(InputError):
        TaskConfig("binary", threshold=(0.5, 0.6))
    with pytest.raises(InputError):
        TaskConfig("binary", logits=True, threshold=1.0)
    with pytest.raises(InputError):
        TaskConfig("custom")
    assert TaskConfig("multilabel", threshold=[0.2, 0.7]).threshold == (0.2, 0.7)
    hash(TaskConfig("multilabel", threshold=[0.2, 0.7]))


# --- binary -----------------------------------------------------------------------------------


def test_binary_strict_threshold_score_margin():
    head = make_head(TaskConfig("binary"))
    d = head.decide(np.array([0.2, 0.5, 0.5000001, 0.9], dtype=np.float32))
    assert d.decision.tolist() == [0, 0, 1, 1]
    assert d.score.dtype == np.float64
    assert d.margin == pytest.approx([0.3, 0.0, 1e-7, 0.4], abs=1e-7)
    assert len(d) == 4


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        (np.array([[0.1], [0.7]]), [0, 1]),
        (np.array([[0.9, 0.1], [0.3, 0.7]]), [0, 1]),
    ],
)
def test_binary_output_shapes(output, expected):
    assert make_head(TaskConfig("binary")).decide(output).decision.tolist() == expected


def test_binary_bad_shape():
    with pytest.raises(InputError, match=r"\(n, 2\).*\(4, 3\)"):
        make_head(TaskConfig("binary")).decide(np.zeros((4, 3)))


def test_binary_logits():
    head = make_head(TaskConfig("binary", logits=True, threshold=0.5))
    d = head.decide(np.array([-1.0, 0.0, 2.0]))
    assert d.decision.tolist() == [0, 0, 1]
    assert d.score == pytest.approx([1 / (1 + math.e), 0.5, 1 / (1 + math.exp(-2))])
    assert d.margin[1] == 0.0
    # threshold 0.8 -> logit(0.8) = ln 4 ~ 1.386
    head = make_head(TaskConfig("binary", logits=True, threshold=0.8))
    assert head.decide(np.array([1.3, 1.4])).decision.tolist() == [0, 1]
    # two-column logits are softmax: p1 = sigmoid(z1 - z0)
    head = make_head(TaskConfig("binary", logits=True))
    d = head.decide(np.array([[2.0, 1.0], [0.0, 3.0]]))
    assert d.decision.tolist() == [0, 1]
    assert d.score[1] == pytest.approx(1 / (1 + math.exp(-3)))


def test_binary_flip():
    head = make_head(TaskConfig("binary"))
    ref = head.decide(np.array([0.49, 0.51, 0.9, 0.1]))
    cand = head.decide(np.array([0.51, 0.51, 0.4, 0.1]))
    assert head.flipped(ref, cand).tolist() == [True, False, True, False]


# --- multiclass / topk ------------------------------------------------------------------------


def test_multiclass_decide_margin():
    head = make_head(TaskConfig("multiclass"))
    d = head.decide(np.array([[0.1, 0.7, 0.2], [0.5, 0.1, 0.4], [0.3, 0.3, 0.4]]))
    assert d.decision.tolist() == [1, 0, 2]
    assert d.score == pytest.approx([0.7, 0.5, 0.4])
    assert d.margin == pytest.approx([0.5, 0.1, 0.1])
    assert d.num_classes == 3
    with pytest.raises(InputError):
        head.decide(np.zeros((3, 1)))
    with pytest.raises(InputError):
        head.decide(np.zeros(3))


def test_topk_decide_and_set_flip():
    head = make_head(TaskConfig("topk", k=2))
    out = np.array([[0.1, 0.4, 0.3, 0.2], [0.9, 0.05, 0.02, 0.03]])
    d = head.decide(out)
    assert d.decision.tolist() == [[1, 2], [0, 1]]
    assert d.score == pytest.approx([0.3, 0.05])
    assert d.margin == pytest.approx([0.1, 0.02])
    swapped = Decided(d.decision[:, ::-1].copy(), d.score, d.margin)
    assert head.flipped(d, swapped).tolist() == [False, False]  # order ignored
    other = head.decide(np.array([[0.1, 0.3, 0.4, 0.2], [0.9, 0.01, 0.04, 0.03]]))
    assert head.flipped(d, other).tolist() == [False, True]


def test_topk_k_must_be_below_c():
    with pytest.raises(InputError, match="k=4 and C=4"):
        make_head(TaskConfig("topk", k=4)).decide(np.zeros((2, 4)))


# --- multilabel -------------------------------------------------------------------------------


def test_multilabel_thresholds_per_class():
    head = make_head(TaskConfig("multilabel", threshold=(0.5, 0.2, 0.9)))
    d = head.decide(np.array([[0.6, 0.1, 0.95], [0.4, 0.3, 0.5]]))
    assert d.decision.tolist() == [[1, 0, 1], [0, 1, 0]]
    assert d.margin == pytest.approx([0.05, 0.1])
    assert d.score == pytest.approx([0.95, 0.4])
    with pytest.raises(InputError, match="1 or 2 thresholds"):
        head.decide(np.zeros((2, 2)))
    flipped = head.flipped(d, head.decide(np.array([[0.6, 0.1, 0.85], [0.4, 0.3, 0.5]])))
    assert flipped.tolist() == [True, False]


def test_multilabel_logits():
    head = make_head(TaskConfig("multilabel", logits=True, threshold=0.5))
    d = head.decide(np.array([[-1.0, 1.0]]))
    assert d.decision.tolist() == [[0, 1]]
    assert d.margin[0] == pytest.approx(0.5 - 1 / (1 + math.e))


# --- regression -------------------------------------------------------------------------------


def test_regression_tolerance_edge():
    head = make_head(TaskConfig("regression", atol=0.5, rtol=0.25))
    ref = head.decide(np.array([2.0, 2.0, 0.0, np.nan, np.inf]))
    # tolerance at r=2 is 0.5 + 0.25*2 = 1.0: exactly 1.0 is not a flip, above is.
    cand = head.decide(np.array([3.0, 3.0001, 0.5, np.nan, np.inf]))
    assert head.flipped(ref, cand).tolist() == [False, True, False, False, False]
    assert head.flipped(ref, head.decide(np.array([2.0, 2.0, 0.0, 1.0, 1.0]))).tolist() == [
        False,
        False,
        False,
        True,
        True,
    ]
    assert ref.score[0] == 2.0
    assert np.isnan(ref.margin).all()


def test_regression_multi_output_any_element():
    head = make_head(TaskConfig("regression", atol=0.1, rtol=0.0))
    ref = head.decide(np.zeros((2, 3)))
    cand = head.decide(np.array([[0.0, 0.05, -0.1], [0.0, 0.0, 0.2]]))
    assert head.flipped(ref, cand).tolist() == [False, True]
    assert np.isnan(ref.score).all()


# --- custom -----------------------------------------------------------------------------------


def test_custom_entry_point(tmp_path, monkeypatch):
    (tmp_path / "mp_custom_rule.py").write_text(
        "import numpy as np\n"
        "def rule(out):\n"
        "    return (out.sum(axis=1) > 1).astype(int)\n"
        "def rule_scored(out):\n"
        "    s = out.sum(axis=1)\n"
        "    return (s > 1).astype(int), s\n"
        "def bad(out):\n"
        "    return np.zeros(len(out) + 1)\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    out = np.array([[0.5, 0.7], [0.1, 0.2]])
    d = make_head(TaskConfig("custom", custom="mp_custom_rule:rule")).decide(out)
    assert d.decision.tolist() == [1, 0]
    assert np.isnan(d.score).all() and np.isnan(d.margin).all()
    d = make_head(TaskConfig("custom", custom="mp_custom_rule:rule_scored")).decide(out)
    assert d.score == pytest.approx([1.2, 0.3])
    with pytest.raises(InputError, match="for 2 samples"):
        make_head(TaskConfig("custom", custom="mp_custom_rule:bad")).decide(out)
    with pytest.raises(InputError, match="mp_custom_rule:nope"):
        make_head(TaskConfig("custom", custom="mp_custom_rule:nope"))
    with pytest.raises(InputError, match="no_such_module_xyz:f"):
        make_head(TaskConfig("custom", custom="no_such_module_xyz:f"))



def test_custom_boxes_are_text_in_every_batch(tmp_path, monkeypatch):
    """A detector's decoded boxes, one tuple per image: with no box in a whole batch (or one
    box per image) they must stay one text per sample, as in the other batches."""
    (tmp_path / "mp_custom_boxes.py").write_text(
        "def boxes(out):\n"
        "    return [tuple((int(i), 1, 2) for i in range(int(row[0]))) for row in out]\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    head = make_head(TaskConfig("custom", custom="mp_custom_boxes:boxes"))
    acc = DecisionAccumulator()
    for batch in ([[2.0], [1.0]], [[0.0], [0.0]], [[1.0], [1.0]]):
        acc.update(head.decide(np.array(batch)))
    decided = acc.result()
    assert decided.decision.dtype.kind == "U" and len(decided) == 6
    assert decided.decision[2] == decided.decision[3] != decided.decision[1]

# --- accumulation and flips -------------------------------------------------------------------


def test_accumulator_concatenates_batches():
    head = make_head(TaskConfig("multiclass"))
    acc = DecisionAccumulator()
    acc.update(head.decide(np.array([[0.0, 1.0]])))
    acc.update(head.decide(np.array([[2.0, 1.0], [0.0, 3.0]])))
    d = acc.result()
    assert d.decision.tolist() == [1, 0, 1]
    assert len(d) == 3 and d.num_classes == 2
    assert len(DecisionAccumulator().result()) == 0


def test_find_flips_records_sorted_by_margin():
    head = make_head(TaskConfig("binary"))
    ref = head.decide(np.array([0.45, 0.9, 0.499, 0.2, 0.7]))
    cand = head.decide(np.array([0.55, 0.9, 0.501, 0.2, 0.3]))
    flips = find_flips(head, ref, cand)
    assert (flips.count, flips.total) == (3, 5)
    assert flips.index.tolist() == [0, 2, 4]
    recs = flips.records()
    assert [r["index"] for r in recs] == [2, 0, 4]
    assert recs[0] == {
        "index": 2,
        "reference_decision": 0,
        "candidate_decision": 1,
        "reference_score": pytest.approx(0.499),
        "candidate_score": pytest.approx(0.501),
        "reference_margin": pytest.approx(0.001),
    }
    assert [r["index"] for r in flips.records(limit=1)] == [2]
    json.dumps(flips.to_dict(), allow_nan=False)


def test_find_flips_topk_decisions_are_lists():
    head = make_head(TaskConfig("topk", k=2))
    ref = head.decide(np.array([[3.0, 2.0, 1.0]]))
    cand = head.decide(np.array([[3.0, 1.0, 2.0]]))
    recs = find_flips(head, ref, cand).records()
    assert recs[0]["reference_decision"] == [0, 1]
    assert recs[0]["candidate_decision"] == [0, 2]
    json.dumps(recs)


def test_find_flips_regression_nan_margin_json():
    head = make_head(TaskConfig("regression"))
    flips = find_flips(head, head.decide(np.array([1.0])), head.decide(np.array([2.0])))
    rec = flips.records()[0]
    assert rec["reference_margin"] is None
    json.dumps(rec, allow_nan=False)


# --- metrics ----------------------------------------------------------------------------------


def test_binary_metrics_match_sklearn():
    y = np.array([0, 1, 1, 0, 1, 0, 1, 1])
    p = np.array([0.2, 0.8, 0.4, 0.6, 0.9, 0.1, 0.7, 0.3])
    head = make_head(TaskConfig("binary"))
    m = compute_metrics(head, y, head.decide(p))
    pred = (p > 0.5).astype(int)
    assert m.values["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert m.values["precision"] == pytest.approx(skm.precision_score(y, pred))
    assert m.values["recall"] == pytest.approx(skm.recall_score(y, pred))
    assert m.values["f1"] == pytest.approx(skm.f1_score(y, pred))
    assert m.confusion.tolist() == [[2, 1], [2, 3]]
    assert m.classes == [0, 1]
    json.dumps(m.to_dict(), allow_nan=False)


def test_multiclass_labels_outside_the_models_classes_are_refused():
    """A 4-class model scored on labels 0..8 gave a 9x9 confusion matrix and no word."""
    head = make_head(TaskConfig("multiclass"))
    d = head.decide(np.eye(4)[[0, 1, 2, 3, 1]])
    with pytest.raises(InputError, match=r"has 4 classes \(0..3\), but the labels hold 8"):
        compute_metrics(head, np.array([0, 1, 2, 8, 1]), d)
    with pytest.raises(InputError, match="the labels hold -1"):
        compute_metrics(head, np.array([0, 1, -1, 3, 1]), d)
    assert compute_metrics(head, np.array([0, 1, 2, 3, 3]), d).confusion.shape == (4, 4)


def test_binary_label_errors():
    head = make_head(TaskConfig("binary"))
    d = head.decide(np.array([0.2, 0.8, 0.6]))
    with pytest.raises(InputError, match="labels: expected 3 labels, got 2"):
        compute_metrics(head, np.array([0, 1]), d)
    with pytest.raises(InputError, match="0/1"):
        compute_metrics(head, np.array([0, 1, 2]), d)
    with pytest.raises(InputError, match="shape"):
        compute_metrics(head, np.zeros((3, 2)), d)


def test_multiclass_metrics_and_confusion_classes():
    task = TaskConfig("multiclass")
    head = make_head(task)
    out = np.eye(4)[[0, 1, 2, 2, 1]]  # predictions 0 1 2 2 1 of 4 classes (3 never predicted)
    y = np.array([0, 1, 1, 2, 3])
    m = compute_metrics(task, y, head.decide(out))
    pred = np.array([0, 1, 2, 2, 1])
    assert m.classes == [0, 1, 2, 3]
    assert m.confusion.shape == (4, 4)
    assert m.confusion[1].tolist() == [0, 1, 1, 0]
    assert m.confusion[3].tolist() == [0, 1, 0, 0]
    kw = {"average": "macro", "zero_division": 0}
    assert m.values["accuracy"] == pytest.approx(0.6)
    assert m.values["precision_macro"] == pytest.approx(skm.precision_score(y, pred, **kw))
    assert m.values["recall_macro"] == pytest.approx(skm.recall_score(y, pred, **kw))
    assert m.values["f1_macro"] == pytest.approx(skm.f1_score(y, pred, **kw))


def test_topk_metrics():
    head = make_head(TaskConfig("topk", k=2))
    d = head.decide(np.array([[0.5, 0.3, 0.2], [0.1, 0.3, 0.6], [0.2, 0.3, 0.5]]))
    m = compute_metrics(head, np.array([0, 1, 0]), d)
    assert m.values == pytest.approx({"top1_accuracy": 1 / 3, "topk_accuracy": 2 / 3})
    assert m.confusion is None


def test_multilabel_metrics():
    head = make_head(TaskConfig("multilabel"))
    out = np.array([[0.9, 0.1, 0.6], [0.2, 0.8, 0.3], [0.7, 0.7, 0.7]])
    y = np.array([[1, 0, 1], [0, 1, 1], [1, 0, 1]])
    m = compute_metrics(head, y, head.decide(out))
    pred = (out > 0.5).astype(int)
    assert m.values["subset_accuracy"] == pytest.approx(1 / 3)
    assert m.values["hamming_loss"] == pytest.approx(skm.hamming_loss(y, pred))
    assert m.values["f1_macro"] == pytest.approx(skm.f1_score(y, pred, average="macro"))
    assert m.confusion.shape == (3, 2, 2)
    assert m.confusion[2].tolist() == [[0, 0], [1, 2]]
    with pytest.raises(InputError, match=r"\(3, 3\)"):
        compute_metrics(head, np.array([1, 0, 1]), head.decide(out))


def test_regression_metrics_and_deltas():
    head = make_head(TaskConfig("regression"))
    y = np.array([1.0, 2.0, 3.0, 4.0])
    ref = compute_metrics(head, y, head.decide(y + np.array([0.1, -0.1, 0.1, -0.1])))
    cand = compute_metrics(head, y, head.decide(y + np.array([0.5, -0.5, 0.5, -0.5])))
    assert ref.values["mae"] == pytest.approx(0.1)
    assert ref.values["rmse"] == pytest.approx(0.1)
    assert ref.values["r2"] == pytest.approx(1 - 0.04 / 5)
    deltas = metric_deltas(ref, cand)
    assert deltas["mae"] == pytest.approx(0.4)
    assert deltas["r2"] == pytest.approx(-(0.96 / 5))
    nan_m = compute_metrics(head, y, head.decide(np.array([1.0, np.nan, 3.0, 4.0])))
    assert math.isnan(nan_m.values["mae"])
    assert nan_m.to_dict()["values"]["mae"] is None


def test_binary_metric_deltas_from_a_flip():
    head = make_head(TaskConfig("binary"))
    y = np.array([0, 1, 1, 0])
    ref = compute_metrics(head, y, head.decide(np.array([0.1, 0.9, 0.501, 0.2])))
    cand = compute_metrics(head, y, head.decide(np.array([0.1, 0.9, 0.499, 0.2])))
    deltas = metric_deltas(ref, cand)
    assert deltas["accuracy"] == pytest.approx(-0.25)
    assert deltas["recall"] == pytest.approx(-0.5)
    assert deltas["precision"] == pytest.approx(0.0)
