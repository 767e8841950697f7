"""The Ray engine (issue 14, part 4): each backend on a pool of Ray actors, the data sharded
across them, on a local Ray; the audit must equal the local engine's, number for number."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from typer.testing import CliRunner

import modelparity
from modelparity.cli import app

pytestmark = [pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                                 reason="Ray is not installed (pip install 'modelparity[ray]')"),
              pytest.mark.usefixtures("ray_running")]  # one local Ray for all (conftest)

PLANTED = "py:planted_backends:make"


def _equal(ray_result, local_result) -> None:
    assert [b.spec for b in ray_result.backends] == [b.spec for b in local_result.backends]
    assert sorted(ray_result.profiles) == sorted(local_result.profiles)
    pairs = [*zip(ray_result.backends, local_result.backends, strict=True),
             *((ray_result.profiles[k], local_result.profiles[k]) for k in local_result.profiles)]
    for ours, theirs in pairs:
        assert ours.status == theirs.status, (ours.spec, ours.error)
        assert ours.errors.keys() == theirs.errors.keys()
        for name, stats in theirs.errors.items():
            mine = ours.errors[name]
            assert (mine.count, mine.max_abs, mine.max_ulp) == \
                (stats.count, stats.max_abs, stats.max_ulp)
            # sums over the rows are float64, added block by block: a shard is not the local
            # worker's block (which closes on size or time), so the last bits may differ
            assert (mine.mean_abs, mine.norm_error) == pytest.approx(
                (stats.mean_abs, stats.norm_error), rel=1e-12)
            assert np.array_equal(mine.log2_rel_hist.counts, stats.log2_rel_hist.counts)
        if theirs.flips is not None:
            assert np.array_equal(ours.flips.index, theirs.flips.index)
        if theirs.fingerprint is not None:
            assert ours.fingerprint.verdict == theirs.fingerprint.verdict
            assert ours.fingerprint.distances == theirs.fingerprint.distances
        if theirs.metrics is not None:
            assert ours.metrics.values == theirs.metrics.values
    assert [a.count for a in ray_result.at_risk] == [a.count for a in local_result.at_risk]


@pytest.mark.parametrize("name", ["binary", "multiclass"])
def test_the_ray_engine_gives_the_local_engines_audit(models, data_files, name):
    """The fingerprint's yardsticks, the candidates and the metrics. The breast-cancer set is
    one shard, so each backend runs on one actor (a second would get nothing and is not
    started); the digits are two shards, the second a short one, on two actors."""
    task = "binary" if name == "binary" else "multiclass"
    common = {"task": task, "labels": data_files[name]["labels"], "batch_size": 24}
    backends = ["emulate:fp16", "emulate:bf16", "openvino:cpu"]
    local = modelparity.audit(models[name]["path"], backends, data_files[name]["data"],
                              **common)
    sharded = modelparity.audit(models[name]["path"], backends, data_files[name]["data"],
                                engine="ray", workers=2, **common)
    _equal(sharded, local)
    assert all(b.latency is not None and b.latency.batches > 0 for b in sharded.backends)
    batches = -(-len(np.load(data_files[name]["data"])["x"]) // 24)
    actors = min(2, -(-batches // 64))
    assert actors == (1 if name == "binary" else 2)
    assert all(b.description["ray"]["actors"] == actors for b in sharded.candidates)


def test_many_shards_on_two_actors_give_the_local_engines_audit(models, data_files,
                                                                monkeypatch):
    """Shards of 2 batches: both actors of each backend compute part of the data, and static
    INT8 (calibrated on the first batch it sees) calibrates on the audit's first batch in both
    actors, as in the local worker."""
    from modelparity.execute import ray_engine

    monkeypatch.setattr(ray_engine, "SHARD_BATCHES", 2)
    common = {"task": "binary", "batch_size": 16, "fingerprint": False}
    backends = ["emulate:int8?mode=static", "openvino:cpu"]
    local = modelparity.audit(models["binary"]["path"], backends, data_files["binary"]["data"],
                              **common)
    sharded = modelparity.audit(models["binary"]["path"], backends,
                                data_files["binary"]["data"], engine="ray", workers=2, **common)
    _equal(sharded, local)
    for backend in sharded.candidates:
        peaks = backend.description["ray"]["peak_rss_mb"]
        assert len(peaks) == 2, backend.description["ray"]  # two actors, both given shards
    static = sharded.candidates[0]
    assert static.errors["prob"].max_abs > 0  # INT8 really differs, and the same way


def test_a_backend_that_fails_on_ray_is_reported_not_hung(models, data_files):
    result = modelparity.audit(models["binary"]["path"],
                               ["emulate:fp16", f"{PLANTED}?fail=raise&at=2"],
                               data_files["binary"]["data"], engine="ray", batch_size=32,
                               fingerprint=False, warmup=0)
    good, bad = result.candidates
    assert good.ok and not bad.ok
    assert "planted failure in batch" in bad.error


def test_what_the_ray_engine_cannot_shard_is_one_line(models):
    outcome = CliRunner().invoke(app, ["run", models["binary"]["path"], "-b", "emulate:fp16",
                                       "--engine", "ray", "--per-item"], terminal_width=300)
    assert outcome.exit_code == 2, outcome.output
    assert "--engine ray: shards the data by batch" in outcome.output
    assert len(outcome.output.strip().splitlines()) == 1


def test_a_backend_goes_to_the_nodes_declaring_its_target_or_else_its_runtime():
    from modelparity.backends import parse_spec
    from modelparity.execute.ray_engine import route

    declared = {"CPU": 16.0, "coreml": 1.0, "openvino": 1.0, "cuda": 2.0}
    assert route(parse_spec("ort:coreml?ModelFormat=MLProgram"), declared) == "coreml"
    assert route(parse_spec("coreml:all"), declared) == "coreml"  # by its runtime
    assert route(parse_spec("torch:cuda"), declared) == "cuda"
    assert route(parse_spec("openvino:cpu"), declared) == "openvino"
    assert route(parse_spec("ort:cpu"), declared) is None  # any node
    assert route(parse_spec("openvino:cpu"), {"CPU": 16.0}) is None
