"""cluster/kuberay/*.yaml against the fields KubeRay's CRDs define (tests/cluster/kuberay_schema.py)
and the checks its operator makes before it creates pods (ray-operator/controllers/ray/utils/
validation.go, KubeRay v1.7.0: ValidateRayClusterSpec, ValidateRayJobSpec), offline."""

from __future__ import annotations

import copy
import re
import shlex
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml

from tests.cluster.kuberay_schema import RAY_CLUSTER, RAY_JOB

ROOT = Path(__file__).resolve().parents[2]
KUBERAY = ROOT / "cluster" / "kuberay"
IMAGE_ROOT = "/home/ray/paretorl"  # where cluster/Dockerfile puts the repository
DNS1035 = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")


def load(name: str) -> dict:
    docs = [d for d in yaml.safe_load_all((KUBERAY / name).read_text()) if d]
    assert len(docs) == 1, f"{name}: expected one manifest"
    return docs[0]


@pytest.fixture(scope="module")
def cluster() -> dict:
    return load("raycluster.yaml")


@pytest.fixture(scope="module")
def job() -> dict:
    return load("rayjob.yaml")


def operator_errors(spec: dict) -> list[str]:
    """The RayCluster checks of KubeRay's validation.go that these manifests can trip."""
    errors = []
    head = spec["headGroupSpec"]
    groups = spec.get("workerGroupSpecs", [])
    for name, group in [("head", head), *((g["groupName"], g) for g in groups)]:
        if not group["template"].get("spec", {}).get("containers"):
            errors.append(f"{name}: the pod template needs at least one container")
        params = group.get("rayStartParams", {})
        if group.get("resources") and any(params.get(k) for k in ("num-cpus", "num-gpus", "memory", "resources")):
            errors.append(f"{name}: resources set both in rayStartParams and resources")
        if "labels" in params:
            errors.append(f"{name}: rayStartParams['labels'] is not supported")
    autoscaling = spec.get("enableInTreeAutoscaling", False)
    if autoscaling and spec.get("autoscalerOptions", {}).get("version", "v2") == "v2":
        for name, group in [("head", head), *((g["groupName"], g) for g in groups)]:
            if group["template"].get("spec", {}).get("restartPolicy", "Never") != "Never":
                errors.append(f"{name}: restartPolicy must be Never or unset with autoscaler v2")
    if spec.get("authOptions", {}).get("mode", "token" if "authOptions" in spec else "disabled") == "token":
        version = spec.get("rayVersion", "")
        if not re.fullmatch(r"\d+\.\d+\.\d+", version) or tuple(map(int, version.split("."))) < (2, 52, 0):
            errors.append(f"authOptions.mode token needs rayVersion >= 2.52.0, got {version!r}")
    for g in groups:  # the autoscaling bounds a worker group must keep
        lo, hi, n = g["minReplicas"], g["maxReplicas"], g.get("replicas", 0)
        if not 0 <= lo <= hi:
            errors.append(f"{g['groupName']}: minReplicas {lo} > maxReplicas {hi} (or negative)")
        elif not lo <= n <= hi:
            errors.append(f"{g['groupName']}: replicas {n} outside [{lo}, {hi}]")
    return errors


def container(group: dict) -> dict:
    return group["template"]["spec"]["containers"][0]


def env_of(group: dict) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in container(group).get("env", [])}


def gpus(group: dict) -> int:
    return int(container(group).get("resources", {}).get("limits", {}).get("nvidia.com/gpu", 0))


# --- the CRD fields ---------------------------------------------------------------------------
def test_raycluster_matches_the_crd_fields(cluster):
    jsonschema.validate(cluster, RAY_CLUSTER)
    assert DNS1035.fullmatch(cluster["metadata"]["name"])


def test_rayjob_matches_the_crd_fields(job):
    jsonschema.validate(job, RAY_JOB)
    assert DNS1035.fullmatch(job["metadata"]["name"])


@pytest.mark.parametrize(
    "path, value",
    [
        (("spec", "workerGroupSpecs", 0, "minReplica"), 0),            # misspelt: pruned silently by the API server
        (("spec", "headGroupSpec", "rayStartParams", "num-cpus"), 0),  # map[string]string: must be "0"
        (("spec", "autoscalerOptions", "version"), "v3"),
        (("spec", "authOptions", "mode"), "password"),
        (("spec", "workerGroupSpecs", 0, "maxReplicas"), "4"),
    ],
)
def test_the_crd_schema_has_teeth(cluster, path, value):
    bad = copy.deepcopy(cluster)
    node = bad
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, RAY_CLUSTER)


def test_required_worker_group_fields_are_enforced(cluster):
    bad = copy.deepcopy(cluster)
    del bad["spec"]["workerGroupSpecs"][0]["maxReplicas"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, RAY_CLUSTER)


# --- the operator's own checks ----------------------------------------------------------------
def test_operator_accepts_both_clusters(cluster, job):
    assert operator_errors(cluster["spec"]) == []
    assert operator_errors(job["spec"]["rayClusterSpec"]) == []


def test_operator_checks_catch_bad_bounds_and_old_ray(cluster):
    bad = copy.deepcopy(cluster["spec"])
    bad["workerGroupSpecs"][0].update(minReplicas=3, maxReplicas=2)
    bad["rayVersion"] = "2.51.0"
    errors = operator_errors(bad)
    assert any("minReplicas 3 > maxReplicas 2" in e for e in errors)
    assert any("2.52.0" in e for e in errors)


# --- what ParetoRL needs from them ------------------------------------------------------------
@pytest.mark.parametrize("which", ["cluster", "job"])
def test_gpu_group_autoscales_from_zero_with_autoscaler_v2(cluster, job, which):
    spec = cluster["spec"] if which == "cluster" else job["spec"]["rayClusterSpec"]
    assert spec["enableInTreeAutoscaling"] is True
    assert spec["autoscalerOptions"]["version"] == "v2"
    gpu_groups = [g for g in spec["workerGroupSpecs"] if gpus(g) > 0]
    assert gpu_groups, "no GPU worker group"
    for g in gpu_groups:
        assert g["minReplicas"] == 0 and g.get("replicas", 0) == 0 and g["maxReplicas"] >= 1
    assert gpus(spec["headGroupSpec"]) == 0
    assert spec["headGroupSpec"]["rayStartParams"].get("num-cpus") == "0"  # the head schedules no trial work
    # budget.max_concurrent auto counts on the GPUs the cluster can scale to
    assert int(env_of(spec["headGroupSpec"])["PARETORL_CLUSTER_GPUS"]) == sum(g["maxReplicas"] * gpus(g) for g in gpu_groups)


@pytest.mark.parametrize("which", ["cluster", "job"])
def test_token_auth_on_and_dashboard_not_exposed(cluster, job, which):
    spec = cluster["spec"] if which == "cluster" else job["spec"]["rayClusterSpec"]
    assert spec["authOptions"]["mode"] == "token"
    assert spec["rayVersion"] == ray.__version__
    head = spec["headGroupSpec"]
    assert head.get("serviceType", "ClusterIP") == "ClusterIP" and not head.get("enableIngress", False)


def test_job_runs_on_the_same_cluster_as_the_raycluster(cluster, job):
    assert job["spec"]["rayClusterSpec"] == cluster["spec"]


def test_job_runs_the_sweep_with_a_space_and_profile_that_load(job, monkeypatch):
    from jobs import sweep
    from paretorl.sweep.profiles import load_profile
    from paretorl.search.space import load_space

    spec = job["spec"]
    assert spec["shutdownAfterJobFinishes"] is True
    argv = shlex.split(spec["entrypoint"])
    assert argv[:2] == ["python", f"{IMAGE_ROOT}/jobs/sweep.py"]
    args = sweep.parse_args(argv[2:])
    space_file = ROOT / Path(args.space).relative_to(IMAGE_ROOT)
    space = load_space(space_file, load_profile(args.profile))
    assert space.trial_config({}).resources.learner_gpus > 0
    assert args.output_dir.startswith("/mnt/shared")  # on the volume every pod mounts
    head = spec["rayClusterSpec"]["headGroupSpec"]
    mounts = {m["mountPath"] for m in container(head)["volumeMounts"]}
    assert "/mnt/shared" in mounts and env_of(head)["PARETORL_CACHE"].startswith("/mnt/shared")


def test_images_are_the_paretorl_build_of_this_ray(cluster):
    spec = cluster["spec"]
    for group in [spec["headGroupSpec"], *spec["workerGroupSpecs"]]:
        assert container(group)["image"].endswith(f":ray{ray.__version__}-py311-gpu")


def test_shared_volume_is_read_write_many():
    pvc = load("shared-storage.yaml")
    assert pvc["kind"] == "PersistentVolumeClaim" and pvc["spec"]["accessModes"] == ["ReadWriteMany"]
