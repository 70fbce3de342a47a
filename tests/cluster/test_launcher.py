"""cluster/aws.yaml through Ray's own launcher checks, offline (no cloud, no boto3).

`prepare_config` merges the AWS provider's defaults.yaml and fills node-type bounds;
`validate_config` checks the result against ray/autoscaler/ray-schema.json. Neither
bootstraps the provider (that step calls EC2), so both run here.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

ROOT = Path(__file__).resolve().parents[2]
AWS = ROOT / "cluster" / "aws.yaml"


@pytest.fixture(scope="module")
def raw() -> dict:
    return yaml.safe_load(AWS.read_text())


@pytest.fixture(scope="module")
def prepared(raw) -> dict:
    config = prepare_config(copy.deepcopy(raw))
    validate_config(config)
    return config


def docker_env(config: dict) -> dict[str, str]:
    env = {}
    for opt in config["docker"].get("run_options", []):
        m = re.fullmatch(r"--env (\w+)=(\S+)(\s+#.*)?", opt.strip())
        if m:
            env[m.group(1)] = m.group(2)
    return env


def test_launcher_config_passes_rays_schema_and_preparation(prepared):
    assert prepared["provider"]["type"] == "aws"
    assert prepared["head_node_type"] in prepared["available_node_types"]


def test_the_schema_check_has_teeth(raw):
    bad = copy.deepcopy(raw)
    bad["available_node_types"]["gpu_worker"]["min_worker"] = 0  # a typo Ray must refuse
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(bad))


def test_cpu_head_and_gpu_workers_that_autoscale_from_zero(prepared):
    types = prepared["available_node_types"]
    head = types[prepared["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0 and head["resources"]["CPU"] == 0  # no trial work on the head
    gpu_types = [t for name, t in types.items() if t["resources"].get("GPU", 0) > 0]
    assert gpu_types, "no GPU worker type"
    for t in gpu_types:
        assert t["min_workers"] == 0 and t["max_workers"] >= 1


def test_ray_gpu_image_of_this_ray_version(prepared):
    assert prepared["docker"]["image"] == f"rayproject/ray:{ray.__version__}-py311-gpu"
    dockerfile = (ROOT / "cluster" / "Dockerfile").read_text()
    assert f"FROM rayproject/ray:{ray.__version__}-py311-gpu" in dockerfile


def test_paretorl_with_cuda_vllm_is_installed_on_every_node(prepared):
    setup = " ".join(prepared["setup_commands"])
    assert re.search(r"pip install .*-e .*/home/ray/paretorl\[vllm-gpu,s3\]", setup)  # s3: MLflow artifacts on object storage
    assert prepared["file_mounts"]["/home/ray/paretorl"] == "."


def test_head_runs_the_autoscaler_and_keeps_the_dashboard_private(prepared):
    start = " ".join(prepared["head_start_ray_commands"])
    assert "--autoscaling-config=~/ray_bootstrap_config.yaml" in start
    assert "--dashboard-host=127.0.0.1" in start and "0.0.0.0" not in start


def test_token_auth_on_every_node(prepared):
    assert docker_env(prepared)["RAY_AUTH_MODE"] == "token"  # docker run options apply to head and workers
    assert prepared["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"


def test_declared_cluster_gpus_match_the_worker_types(prepared):
    types = prepared["available_node_types"]
    most = sum(t["max_workers"] * t["resources"].get("GPU", 0) for name, t in types.items() if name != prepared["head_node_type"])
    assert float(docker_env(prepared)["PARETORL_CLUSTER_GPUS"]) == most
    assert prepared["max_workers"] >= sum(t["max_workers"] for name, t in types.items() if name != prepared["head_node_type"])
