"""Task-aware decisions, flips and metrics (pure NumPy + scikit-learn metrics; no runtime)."""

from modelparity.decisions.flips import Flips, find_flips
from modelparity.decisions.metrics import Metrics, compute_metrics, metric_deltas
from modelparity.decisions.tasks import (
    KINDS,
    BinaryHead,
    CustomHead,
    Decided,
    DecisionAccumulator,
    DecisionHead,
    MulticlassHead,
    MultilabelHead,
    RegressionHead,
    TaskConfig,
    TopKHead,
    load_entry_point,
    make_head,
)

__all__ = [
    "KINDS",
    "BinaryHead",
    "CustomHead",
    "Decided",
    "DecisionAccumulator",
    "DecisionHead",
    "Flips",
    "Metrics",
    "MulticlassHead",
    "MultilabelHead",
    "RegressionHead",
    "TaskConfig",
    "TopKHead",
    "compute_metrics",
    "find_flips",
    "load_entry_point",
    "make_head",
    "metric_deltas",
]
