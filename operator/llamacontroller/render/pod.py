"""The llama-server Pod of a LlamaModel: placed on its node, the slot's port, health-checked."""

from __future__ import annotations

import json
from typing import Any

from llamacontroller.config import GpuStrategy, OperatorConfig
from llamacontroller.fetch.layout import fetch_args
from llamacontroller.render import names
from llamacontroller.render.args import ServerPlan, plan_server, server_args
from llamacontroller.render.gpus import container_env
from llamacontroller.resource import API_VERSION, KIND, LlamaModel, ModelSource
from llamacontroller.slots import Placement

MODELS_VOLUME = "models"
API_KEYS_VOLUME = "api-keys"
API_KEYS_DIR = "/etc/llamacontroller/api-keys"
PORT_NAME = "http"
ADAPTER_PORT_NAME = "ollama"
ADAPTER_NAME = "adapter"
FETCH_NAME = "fetch"
TERMINATION_LOG = "/dev/termination-log"
HUB_TOKEN_VARIABLE = "HF_TOKEN"
GPU_RESOURCE = "nvidia.com/gpu"
STARTUP_PERIOD_SECONDS = 5


def startup_budget(lm: LlamaModel, config: OperatorConfig) -> int:
    """Seconds a load may take before the kubelet gives up on it."""
    return lm.spec.startup_timeout_seconds or config.startup_timeout_seconds


def owner_reference(lm: LlamaModel) -> dict[str, Any]:
    """Makes the API server's garbage collector delete the children with the LlamaModel."""
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": lm.metadata.name,
        "uid": lm.metadata.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def child_labels(lm: LlamaModel, placement: Placement) -> dict[str, str]:
    """Labels that say model, slot and node, so people and selectors find the children."""
    labels = {
        names.LABEL_NAME: names.SERVER_NAME,
        names.LABEL_INSTANCE: names.label_value(lm.metadata.name),
        names.LABEL_MANAGED_BY: names.MANAGER,
        names.LABEL_MODEL: names.label_value(lm.metadata.name),
        names.LABEL_NODE: names.label_value(placement.node),
        names.LABEL_SLOT: placement.slot,
    }
    if lm.metadata.uid:
        labels[names.LABEL_OWNER_UID] = lm.metadata.uid
    return labels


def child_metadata(lm: LlamaModel, placement: Placement, name: str) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "name": name,
        "namespace": lm.metadata.namespace,
        "labels": child_labels(lm, placement),
        "annotations": {
            names.ANNOTATION_MODEL_NAME: lm.model_name,
            names.ANNOTATION_HOLDER: f"{lm.metadata.namespace}/{lm.metadata.name}",
            names.ANNOTATION_NODE: placement.node,
        },
    }
    if lm.metadata.uid:
        metadata["ownerReferences"] = [owner_reference(lm)]
    return metadata


def _env(lm: LlamaModel, server: ServerPlan, config: OperatorConfig) -> list[dict[str, Any]]:
    """The GPU environment (not with the device plugin, which sets the container's GPUs itself)
    with the server's visible GPUs, then the LlamaModel's own variables (which win)."""
    own = [var.model_dump(by_alias=True, exclude_none=True) for var in lm.spec.env or []]
    own_names = {var["name"] for var in own}
    plugin = config.gpu_strategy is GpuStrategy.DEVICE_PLUGIN
    gpu_env = {} if plugin else container_env(server.gpus, config.gpu_env)
    base = [{"name": k, "value": v} for k, v in gpu_env.items() if k not in own_names]
    return base + own


def _resources(lm: LlamaModel, placement: Placement, config: OperatorConfig) -> dict[str, Any]:
    """The LlamaModel's resources (or the config's); the device plugin also gets the slot's GPUs."""
    chosen = lm.spec.resources.model_dump(exclude_none=True) if lm.spec.resources else config.resources
    resources = {kind: dict(values) for kind, values in (chosen or {}).items()}
    if config.gpu_strategy is GpuStrategy.DEVICE_PLUGIN:
        resources.setdefault("limits", {})[GPU_RESOURCE] = len(placement.gpus)
        # a request of another count would be refused with the Pod; left out, it defaults to the limit
        resources.get("requests", {}).pop(GPU_RESOURCE, None)
    return {kind: values for kind, values in resources.items() if values}


def _node_affinity(node: str) -> dict[str, Any]:
    """Bind to the node by its object name (matchFields), as DaemonSets do: labels can differ."""
    term = {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [term]}}}


def render_container(lm: LlamaModel, placement: Placement, config: OperatorConfig) -> dict[str, Any]:
    resources = _resources(lm, placement, config)
    server = plan_server(lm, placement, config)
    container: dict[str, Any] = {
        "name": names.SERVER_NAME,
        "image": lm.spec.image or config.image,
        "imagePullPolicy": config.image_pull_policy,
        "args": server_args(server),
        "ports": [{"name": PORT_NAME, "containerPort": placement.port, "protocol": "TCP"}],
        "env": _env(lm, server, config),
        "volumeMounts": [
            {"name": MODELS_VOLUME, "mountPath": config.models_volume.mount_path, "readOnly": True}
        ],
        # llama-server answers /health with 503 while it loads the model and 200 once it serves.
        "startupProbe": {
            "httpGet": {"path": "/health", "port": PORT_NAME},
            "periodSeconds": STARTUP_PERIOD_SECONDS,
            "failureThreshold": -(-startup_budget(lm, config) // STARTUP_PERIOD_SECONDS),
        },
        "readinessProbe": {
            "httpGet": {"path": "/health", "port": PORT_NAME},
            "periodSeconds": config.readiness_period_seconds,
            "failureThreshold": 3,
        },
        "livenessProbe": {
            "httpGet": {"path": "/health", "port": PORT_NAME},
            "periodSeconds": 10,
            "failureThreshold": 6,
        },
        # A crash's last log lines reach the Pod's status, and from there the LlamaModel's.
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if resources:
        container["resources"] = resources
    return container


def render_adapter(placement: Placement, config: OperatorConfig) -> dict[str, Any]:
    """The sidecar that speaks Ollama and OpenAI for this slot's server. It shares the models volume
    at the same path, so it reads the GGUF header and digest of the file llama-server reports."""
    args = [
        "adapter",
        "--upstream",
        f"http://127.0.0.1:{placement.port}",
        "--listen",
        f"0.0.0.0:{config.adapter.port}",
    ]
    mounts = [{"name": MODELS_VOLUME, "mountPath": config.models_volume.mount_path, "readOnly": True}]
    if config.api_keys.secret_name:
        args += ["--api-keys-file", f"{API_KEYS_DIR}/{config.api_keys.secret_key}"]
        mounts.append({"name": API_KEYS_VOLUME, "mountPath": API_KEYS_DIR, "readOnly": True})
    container: dict[str, Any] = {
        "name": ADAPTER_NAME,
        "image": config.adapter.image,
        "imagePullPolicy": config.image_pull_policy,
        "args": args,
        "ports": [{"name": ADAPTER_PORT_NAME, "containerPort": config.adapter.port, "protocol": "TCP"}],
        "volumeMounts": mounts,
        "readinessProbe": {"httpGet": {"path": "/", "port": ADAPTER_PORT_NAME}, "periodSeconds": 10},
        "securityContext": {
            "runAsNonRoot": True,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    if config.adapter.resources:
        container["resources"] = config.adapter.resources
    return container


def render_fetch(source: ModelSource, config: OperatorConfig) -> dict[str, Any]:
    """The init container that fetches the model's source into the models volume before llama-server
    starts: the only container that mounts it read-write. A failure's one line is its termination
    message, which the operator puts in the status."""
    mount = config.models_volume.mount_path
    env: list[dict[str, Any]] = []
    if config.sources.hub_endpoint:
        env.append({"name": "HF_ENDPOINT", "value": config.sources.hub_endpoint})
    hub = source.hugging_face
    if hub is not None and hub.token_secret is not None:
        ref = {"name": hub.token_secret.name, "key": hub.token_secret.key}
        env.append({"name": HUB_TOKEN_VARIABLE, "valueFrom": {"secretKeyRef": ref}})
    container: dict[str, Any] = {
        "name": FETCH_NAME,
        "image": config.adapter.image,
        "imagePullPolicy": config.image_pull_policy,
        "args": [*fetch_args(source, mount), "--termination-log", TERMINATION_LOG],
        "volumeMounts": [{"name": MODELS_VOLUME, "mountPath": mount}],
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": config.sources.security_context,
    }
    if env:
        container["env"] = env
    if config.sources.resources:
        container["resources"] = config.sources.resources
    return container


def render_pod_spec(lm: LlamaModel, placement: Placement, config: OperatorConfig) -> dict[str, Any]:
    containers = [render_container(lm, placement, config)]
    source = lm.spec.model.source
    volumes = [{"name": MODELS_VOLUME, **config.models_volume.volume_source(writable=source is not None)}]
    if config.adapter.enabled:
        containers.append(render_adapter(placement, config))
        if config.api_keys.secret_name:
            volumes.append({"name": API_KEYS_VOLUME, "secret": {"secretName": config.api_keys.secret_name}})
    spec: dict[str, Any] = {
        "restartPolicy": "Always",
        "affinity": _node_affinity(placement.node),
        **({"initContainers": [render_fetch(source, config)]} if source is not None else {}),
        "containers": containers,
        "volumes": volumes,
    }
    if config.runtime_class_name:
        spec["runtimeClassName"] = config.runtime_class_name
    if config.tolerations:
        spec["tolerations"] = config.tolerations
    return spec


def spec_hash(spec: dict[str, Any]) -> str:
    """Identifies the rendered server: a change of it (and only of it) switches the Pod."""
    return names.short_hash(json.dumps(spec, sort_keys=True, separators=(",", ":")))


def render_pod(lm: LlamaModel, placement: Placement, config: OperatorConfig) -> dict[str, Any]:
    spec = render_pod_spec(lm, placement, config)
    pod_hash = spec_hash(spec)
    metadata = child_metadata(lm, placement, names.pod_name(lm.metadata.name, pod_hash))
    metadata["annotations"][names.ANNOTATION_POD_HASH] = pod_hash
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}
