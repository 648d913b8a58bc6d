"""`--executor ray` on a two-node Ray cluster (ray.cluster_utils, both nodes on this machine),
each node with one CPU and one fake GPU: runs spread over the nodes, and each task is given the
GPU it asked for (Ray assigns the id; torch finds no CUDA here, so it trains on the CPU)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import synthetic_interactions

from matrrec_cli.cli import main
from matrrec_cli.experiments.jobs import ExecutorOptions
from matrrec_cli.experiments.runner import RunSpec, Seeds, run_all
from matrrec_cli.train import runs
from matrrec_cli.train.config import RunOptions

ray = pytest.importorskip("ray")
cluster_utils = pytest.importorskip("ray.cluster_utils")


@pytest.fixture(scope="module")
def cluster():
    c = cluster_utils.Cluster(initialize_head=True, head_node_args={"num_cpus": 1,
                                                                    "num_gpus": 1})
    c.add_node(num_cpus=1, num_gpus=1)
    ray.init(address=c.address, log_to_driver=False, logging_level="ERROR")
    yield c
    ray.shutdown()
    c.shutdown()


def test_runs_spread_over_nodes_with_their_gpu(cluster, tmp_path: Path) -> None:
    csv = tmp_path / "i.csv"
    synthetic_interactions(n_users=40, n_items=30, max_len=25).to_csv(csv, index=False)
    with pytest.raises(SystemExit) as e:
        main(["import", "cyc", "--from-file", str(csv), "--format", "table", "--kcore", "0",
              "--data-dir", str(tmp_path / "data")])
    assert e.value.code in (0, None)
    opts = RunOptions("cyc", "gru4rec", epochs=2, device="auto", data_dir=str(tmp_path / "data"),
                      results_dir=str(tmp_path / "results"), sets=("batch_size=64",))
    # --gpus-per-run not given: the cluster has GPUs, so each run asks for one
    results = run_all([RunSpec(opts)], Seeds((1, 2, 3, 4)),
                      executor=ExecutorOptions(kind="ray", address=cluster.address), quiet=True)
    assert len(results) == 4
    nodes = set()
    for r in results:
        env = json.loads((r.run_dir / runs.ENV).read_text())
        assert env["executor"]["gpu_ids"] == ["0"]  # each node's one GPU, assigned by Ray
        nodes.add(env["executor"]["node_id"])
    assert len(nodes) == 2  # one CPU per node: the runs had to use both
