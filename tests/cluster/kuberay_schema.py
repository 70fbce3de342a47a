"""The fields KubeRay's `ray.io/v1` CRDs define for RayCluster and RayJob, as JSON Schema.

Written from KubeRay v1.7.0: the Go types the CRDs are generated from
(ray-operator/apis/ray/v1/raycluster_types.go, rayjob_types.go: a field without `omitempty`
or `+optional` is required; `+kubebuilder:validation:Enum` gives the enums) and the generated
reference docs/reference/api.md at tag v1.7.0 (ray-operator/config/crd/bases/ray.io_rayclusters.yaml
and ray.io_rayjobs.yaml are generated from the same types). The CRDs cannot be fetched at test
time, so only the fields ParetoRL's manifests touch are spelled out; Kubernetes core objects
(pod templates, services, resource lists) are checked as objects. Ray-specific objects refuse
unknown keys: the API server would prune a misspelt field silently.
"""

from __future__ import annotations

STR_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
K8S_OBJECT = {"type": "object"}
INT32 = {"type": "integer", "minimum": -(2**31), "maximum": 2**31 - 1}

AUTH_OPTIONS = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "enableK8sTokenAuth": {"type": "boolean"},
        "secretName": {"type": "string"},
        "mode": {"enum": ["disabled", "token"]},
    },
}

AUTOSCALER_OPTIONS = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "resources": K8S_OBJECT,
        "image": {"type": "string"},
        "imagePullPolicy": {"type": "string"},
        "securityContext": K8S_OBJECT,
        "idleTimeoutSeconds": INT32,
        "upscalingMode": {"enum": ["Default", "Aggressive", "Conservative"]},
        "version": {"enum": ["v1", "v2"]},
        "env": {"type": "array"},
        "envFrom": {"type": "array"},
        "volumeMounts": {"type": "array"},
        "command": {"type": "array", "items": {"type": "string"}},
        "args": {"type": "array", "items": {"type": "string"}},
    },
}

HEAD_GROUP_SPEC = {
    "type": "object",
    "additionalProperties": False,
    "required": ["template"],
    "properties": {
        "template": K8S_OBJECT,
        "headService": K8S_OBJECT,
        "enableIngress": {"type": "boolean"},
        "ingressOptions": K8S_OBJECT,
        "resources": STR_MAP,
        "labels": STR_MAP,
        "rayStartParams": STR_MAP,
        "serviceType": {"type": "string"},
    },
}

WORKER_GROUP_SPEC = {
    "type": "object",
    "additionalProperties": False,
    "required": ["groupName", "minReplicas", "maxReplicas", "template"],
    "properties": {
        "suspend": {"type": "boolean"},
        "groupName": {"type": "string"},
        "replicas": INT32,
        "minReplicas": INT32,
        "maxReplicas": INT32,
        "idleTimeoutSeconds": INT32,
        "priority": INT32,
        "resources": STR_MAP,
        "labels": STR_MAP,
        "rayStartParams": STR_MAP,
        "template": K8S_OBJECT,
        "scaleStrategy": K8S_OBJECT,
        "numOfHosts": INT32,
    },
}

RAY_CLUSTER_SPEC = {
    "type": "object",
    "additionalProperties": False,
    "required": ["headGroupSpec"],
    "properties": {
        "upgradeStrategy": K8S_OBJECT,
        "authOptions": AUTH_OPTIONS,
        "suspend": {"type": "boolean"},
        "managedBy": {"type": "string"},
        "autoscalerOptions": AUTOSCALER_OPTIONS,
        "headServiceAnnotations": STR_MAP,
        "enableInTreeAutoscaling": {"type": "boolean"},
        "gcsFaultToleranceOptions": K8S_OBJECT,
        "historyServerOptions": K8S_OBJECT,
        "networkPolicy": K8S_OBJECT,
        "tlsOptions": K8S_OBJECT,
        "headGroupSpec": HEAD_GROUP_SPEC,
        "rayVersion": {"type": "string"},
        "workerGroupSpecs": {"type": "array", "items": WORKER_GROUP_SPEC},
    },
}

RAY_JOB_SPEC = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "activeDeadlineSeconds": INT32,
        "backoffLimit": INT32,
        "rayClusterSpec": RAY_CLUSTER_SPEC,
        "submitterPodTemplate": K8S_OBJECT,
        "metadata": STR_MAP,
        "clusterSelector": STR_MAP,
        "submitterConfig": K8S_OBJECT,
        "managedBy": {"type": "string"},
        "deletionStrategy": K8S_OBJECT,
        "entrypoint": {"type": "string"},
        "runtimeEnvYAML": {"type": "string"},
        "jobId": {"type": "string"},
        "submissionMode": {"enum": ["K8sJobMode", "HTTPMode", "InteractiveMode", "SidecarMode"]},
        "entrypointResources": {"type": "string"},
        "entrypointNumCpus": {"type": "number"},
        "entrypointNumGpus": {"type": "number"},
        "ttlSecondsAfterFinished": INT32,
        "preRunningDeadlineSeconds": {"type": "integer", "minimum": 1},
        "shutdownAfterJobFinishes": {"type": "boolean"},
        "suspend": {"type": "boolean"},
    },
}


def resource(kind: str, spec: dict) -> dict:
    return {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "ray.io/v1"},
            "kind": {"const": kind},
            "metadata": {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}},
            "spec": spec,
        },
    }


RAY_CLUSTER = resource("RayCluster", RAY_CLUSTER_SPEC)
RAY_JOB = resource("RayJob", RAY_JOB_SPEC)
