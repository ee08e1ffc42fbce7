"""Several Ray nodes on one machine: trials spread over GPU workers, and a trial whose node is
removed mid-run resumes from its checkpoint on another node, in the same MLflow run."""

from __future__ import annotations

import pytest
import ray
from mlflow.tracking import MlflowClient
from ray import tune
from ray.cluster_utils import Cluster

from study.driver import run_study
from tests.study.conftest import ray_runtime_env, tiny_study, tiny_trial

pytestmark = pytest.mark.slow

EPOCHS = 3
_CLUSTERS: dict[str, Cluster] = {}  # the callback is pickled with the Tuner: it keeps only a key


class RemoveNodeAfterFirstCheckpoint(tune.Callback):
    """Remove the node of the first trial that checkpoints, right after its first checkpoint."""

    def __init__(self, cluster_key: str):
        self.cluster_key = cluster_key
        self.victim: dict[str, str] = {}

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
        if self.victim:
            return
        node_id = trial.last_result["node_id"]
        cluster = _CLUSTERS[self.cluster_key]
        (node,) = [n for n in cluster.worker_nodes if n.node_id == node_id]
        self.victim.update(trial_id=trial.trial_id, node_id=node_id)
        cluster.remove_node(node)


@pytest.fixture(scope="module")
def cluster():
    # Fast node-death detection so the lost trial is rescheduled within seconds.
    c = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 1,
            "num_gpus": 0,
            "include_dashboard": False,
            "object_store_memory": 150 * 1024**2,
            "_system_config": {
                "health_check_initial_delay_ms": 0,
                "health_check_period_ms": 1000,
                "health_check_failure_threshold": 3,
            },
        },
    )
    workers = [
        c.add_node(num_cpus=1, num_gpus=1, object_store_memory=150 * 1024**2) for _ in range(2)
    ]
    ray.init(address=c.address, runtime_env=ray_runtime_env())
    _CLUSTERS["test"] = c
    yield c, [w.node_id for w in workers]
    ray.shutdown()
    c.shutdown()
    _CLUSTERS.pop("test", None)


def test_trials_spread_and_a_lost_node_resumes_from_checkpoint(
    cluster, tiny_data, data_config, tmp_path
):
    _c, worker_ids = cluster
    callback = RemoveNodeAfterFirstCheckpoint("test")
    cfg = tiny_study(
        tmp_path,
        data_config,
        arms=("no-seg",),
        trials_per_arm=2,
        max_concurrent=2,
        cpus_per_trial=1.0,
        gpus_per_trial=1.0,
        grace_period=EPOCHS,
        max_failures=2,
        trial=tiny_trial(epochs=EPOCHS),
    )
    summary = run_study(cfg, callbacks=[callback])
    assert not summary.interrupted
    # The callback object in the driver is the one Tune used (not a copy): it saw the removal.
    victim = callback.victim
    assert victim and victim["node_id"] in worker_ids

    (outcome,) = summary.outcomes.values()
    assert outcome.results.num_errors == 0 and len(outcome.results) == 2
    first_nodes, lost_history = set(), None
    for result in outcome.results:
        df = result.metrics_dataframe.sort_values("training_iteration")
        # GPU trials never land on the GPU-less head.
        assert set(df["node_id"]) <= set(worker_ids)
        first_nodes.add(df["node_id"].iloc[0])
        assert df["epoch"].tolist() == list(
            range(1, EPOCHS + 1)
        )  # each epoch once: resumed, not restarted
        if result.metrics["trial_id"] == victim["trial_id"]:
            lost_history = df
    assert first_nodes == set(worker_ids)  # the two trials started on different workers
    assert lost_history is not None
    assert lost_history["node_id"].iloc[0] == victim["node_id"]
    assert set(lost_history["node_id"].iloc[1:]) == set(worker_ids) - {victim["node_id"]}

    client = MlflowClient(summary.tracking.tracking_uri)
    runs = client.search_runs(
        [summary.tracking.experiment_id],
        f"tags.`mlflow.parentRunId` = '{summary.tracking.parent_run_id}'",
    )
    assert len(runs) == 2  # still one MLflow run per trial
    for run in runs:
        assert run.data.tags["status"] == "ok"
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "val/auc_mean")]
        assert steps == list(range(1, EPOCHS + 1))
        assert "test/auc_mean" in run.data.metrics
