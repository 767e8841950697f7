"""Routing on a Ray cluster (issue 14): a backend runs on the nodes that declare its runtime as a
Ray resource, as a Mac declares `coreml` (`ray start --resources '{"coreml": 1}'`). Two real Ray
nodes on this machine (Ray's own `cluster_utils.Cluster`), one of them declaring `openvino`."""

from __future__ import annotations

import importlib.util

import pytest

import modelparity

pytestmark = pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                                reason="Ray is not installed (pip install 'modelparity[ray]')")


@pytest.fixture(scope="module")
def cluster():
    import ray
    from ray.cluster_utils import Cluster

    ray.shutdown()
    made = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    declared = made.add_node(num_cpus=1, resources={"openvino": 1})
    made.wait_for_nodes()
    yield made, declared.node_id
    ray.shutdown()
    made.shutdown()


def test_a_backend_runs_on_the_nodes_that_declare_it(models, data_files, cluster, monkeypatch):
    from modelparity.execute import ray_engine

    monkeypatch.setattr(ray_engine, "SHARD_BATCHES", 2)  # shards enough for two actors each
    made, declared = cluster
    result = modelparity.audit(models["binary"]["path"], ["openvino:cpu", "emulate:fp16"],
                               data_files["binary"]["data"], engine="ray", workers=2,
                               ray_address=made.address, fingerprint=False)
    openvino, emulated = result.candidates
    assert openvino.ok and emulated.ok
    assert openvino.description["ray"]["nodes"] == [declared]  # both actors, on that node
    assert openvino.description["ray"]["actors"] == 2
