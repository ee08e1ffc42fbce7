"""cluster.yaml and cluster-local.yaml pass Ray's own cluster-config validator (offline)."""

from __future__ import annotations

import copy
from pathlib import Path

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

ROOT = Path(__file__).resolve().parents[1]
FILES = ["cluster.yaml", "cluster-local.yaml"]


def _load(name: str) -> dict:
    return yaml.safe_load((ROOT / name).read_text())


@pytest.mark.parametrize("name", FILES)
def test_cluster_config_is_valid(name):
    validate_config(prepare_config(_load(name)))


@pytest.mark.parametrize("name", FILES)
def test_validator_rejects_a_broken_copy(name):
    # The validator is not a rubber stamp: an unknown top-level key fails the schema.
    broken = copy.deepcopy(_load(name))
    broken["head_start_ray_comands"] = ["typo"]
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(broken))


def test_aws_cluster_runs_the_study_setup():
    cfg = _load("cluster.yaml")
    assert cfg["provider"]["type"] == "aws"
    head = cfg["available_node_types"][cfg["head_node_type"]]
    assert "GPU" not in head["resources"]
    workers = [t for n, t in cfg["available_node_types"].items() if n != cfg["head_node_type"]]
    assert workers and all(t["resources"]["GPU"] >= 1 and t["min_workers"] == 0 for t in workers)
    # Same pyproject on every node, the project synced, MLflow served from the head.
    assert any("pip install -e" in c for c in cfg["setup_commands"])
    assert "." in cfg["file_mounts"].values()
    start = " ".join(cfg["head_start_ray_commands"])
    assert "mlflow server" in start and "--serve-artifacts" in start
    assert "sqlite:////home/ubuntu/mlflow/mlflow.db" in start
    assert "--preset paper --address auto" in start and "--storage-path s3://" in start


def test_local_cluster_lists_its_machines():
    cfg = _load("cluster-local.yaml")
    assert cfg["provider"]["type"] == "local"
    assert cfg["provider"]["head_ip"] and cfg["provider"]["worker_ips"]
    prepared = prepare_config(cfg)
    node = prepared["available_node_types"][prepared["head_node_type"]]
    assert node["max_workers"] == len(cfg["provider"]["worker_ips"])
