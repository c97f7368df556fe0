"""Ape-X on a Ray cluster simulated on this machine (ray.cluster_utils.Cluster): two nodes,
the actors placed on both, one node removed mid-run; the run completes."""

import json
import os
import pathlib
import threading
import time

import pytest

ray = pytest.importorskip("ray", reason="Ape-X needs ray (pip install '.[distributed]')")
pytest.importorskip("gymnasium", reason="the trainer needs gymnasium (pip install .[atari])")

REPO = pathlib.Path(__file__).resolve().parent.parent

from tfdqn_trainer.commands import apex  # noqa: E402
from apex_helpers import TEST_RUNTIME_ENV  # noqa: E402

pytestmark = pytest.mark.slow


def test_two_nodes_one_removed_mid_run(tmp_path):
    from ray.cluster_utils import Cluster
    cluster = Cluster(initialize_head=True, head_node_args=dict(num_cpus=1))
    worker_node = cluster.add_node(num_cpus=1)
    try:
        ray.init(address=cluster.address, log_to_driver=False,
                 runtime_env=TEST_RUNTIME_ENV)
        run_dir = str(tmp_path / "cluster")
        result = {}

        def target():
            try:
                result["code"] = apex.main([
                    "--preset", "classic", "--actors", "2", "--num-envs", "2",
                    "--steps", "20000", "--learn-start", "500", "--eval-freq", "0",
                    "--save-freq", "0", "--prog-freq", "1000", "--run-dir", run_dir])
            except BaseException as e:  # noqa: BLE001
                result["error"] = e
        thread = threading.Thread(target=target, daemon=True)
        thread.start()
        from apex_helpers import actor_places
        nodes = {node for _, node in actor_places(timeout=180).values()}
        assert len(nodes) == 2, "the two actors did not land on the two nodes"
        time.sleep(5)
        cluster.remove_node(worker_node)
        thread.join(timeout=300)
        assert not thread.is_alive() and result.get("code") == 0, result
        with open(os.path.join(run_dir, "metrics.jsonl")) as f:
            train = [r for r in map(json.loads, f) if r["type"] == "train"]
        assert train[-1]["step"] >= 20000
        assert max(t["actor_restarts"] for t in train) >= 1
    finally:
        ray.shutdown()
        cluster.shutdown()
