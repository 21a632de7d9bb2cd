"""What the real API server does to built-in kinds on write: defaulting, status reset, light validation.

Only the parts that an operator under test can observe are emulated: pod/service/namespace/secret
defaults, pod status Pending + QoS class, service cluster IPs, pod spec immutability, CRD defaults,
and the top-level field sets used for ``fieldValidation``. Anything deeper is accepted as sent.
"""

from __future__ import annotations

import base64
import copy
import ipaddress
import re
from collections.abc import Callable, Mapping
from typing import Any

from .errors import FieldError, bad_request
from .resources import ResourceDef

# Known top-level fields per built-in kind (for strict/warn field validation).
_COMMON = ("apiVersion", "kind", "metadata")
TOP_LEVEL_FIELDS: dict[str, frozenset[str]] = {
    kind: frozenset(_COMMON + extra)
    for kind, extra in {
        "Pod": ("spec", "status"),
        "Service": ("spec", "status"),
        "Node": ("spec", "status"),
        "Namespace": ("spec", "status"),
        "ConfigMap": ("data", "binaryData", "immutable"),
        "Secret": ("data", "stringData", "type", "immutable"),
        "ServiceAccount": ("secrets", "imagePullSecrets", "automountServiceAccountToken"),
        "Lease": ("spec",),
        "CustomResourceDefinition": ("spec", "status"),
    }.items()
}
CORE_EVENT_FIELDS = frozenset(
    (
        *_COMMON,
        "involvedObject",
        "reason",
        "message",
        "source",
        "firstTimestamp",
        "lastTimestamp",
        "count",
        "type",
        "eventTime",
        "series",
        "action",
        "related",
        "reportingComponent",
        "reportingInstance",
    )
)
EVENTS_V1_FIELDS = frozenset(
    (
        *_COMMON,
        "eventTime",
        "series",
        "reportingController",
        "reportingInstance",
        "action",
        "reason",
        "regarding",
        "related",
        "note",
        "type",
        "deprecatedSource",
        "deprecatedFirstTimestamp",
        "deprecatedLastTimestamp",
        "deprecatedCount",
    )
)

_SUBDOMAIN_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1035_RE = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', "
    "and must start and end with an alphanumeric character (e.g. 'example.com', regex used for "
    "validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)
_LABEL_MSG = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must "
    "start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for "
    "validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
)
_DNS1035_MSG = (
    "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an "
    "alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', "
    "regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')"
)


def unknown_fields(rd: ResourceDef, obj: Mapping[str, Any]) -> list[str]:
    """Top-level fields that the built-in kind does not have (custom resources use their schema)."""
    if rd.group == "events.k8s.io":
        known = EVENTS_V1_FIELDS
    elif rd.kind == "Event":
        known = CORE_EVENT_FIELDS
    else:
        known = TOP_LEVEL_FIELDS.get(rd.kind)
    if known is None:
        return []
    return sorted(key for key in obj if key not in known)


def validate_name(rd: ResourceDef, name: str) -> list[FieldError]:
    """Name validation per kind: DNS-1123 label (namespaces), DNS-1035 label (services), else subdomain."""
    if rd.kind == "Namespace" and not rd.group:
        regex, message, limit = _LABEL_RE, _LABEL_MSG, 63
    elif rd.kind == "Service" and not rd.group:
        regex, message, limit = _DNS1035_RE, _DNS1035_MSG, 63
    else:
        regex, message, limit = _SUBDOMAIN_RE, _SUBDOMAIN_MSG, 253
    errors = []
    if len(name) > limit:
        errors.append(
            FieldError("Invalid", "metadata.name", name, f"must be no more than {limit} characters")
        )
    if not regex.match(name):
        errors.append(FieldError("Invalid", "metadata.name", name, message))
    return errors


def _image_pull_policy(image: str) -> str:
    last = image.rsplit("/", 1)[-1]
    if "@" in last:
        return "IfNotPresent"
    tag = last.split(":", 1)[1] if ":" in last else "latest"
    return "Always" if tag == "latest" else "IfNotPresent"


def _qos_class(spec: Mapping[str, Any]) -> str:
    containers = list(spec.get("containers") or []) + list(spec.get("initContainers") or [])
    requests_any = limits_any = False
    guaranteed = bool(containers)
    for container in containers:
        resources = container.get("resources") or {}
        requests = resources.get("requests") or {}
        limits = resources.get("limits") or {}
        requests_any |= bool(requests)
        limits_any |= bool(limits)
        for resource in ("cpu", "memory"):
            if resource not in limits or requests.get(resource, limits[resource]) != limits[resource]:
                guaranteed = False
    if guaranteed:
        return "Guaranteed"
    return "Burstable" if (requests_any or limits_any) else "BestEffort"


def _default_containers(containers: Any) -> None:
    for container in containers if isinstance(containers, list) else []:
        if not isinstance(container, dict):
            continue
        container.setdefault("imagePullPolicy", _image_pull_policy(str(container.get("image", ""))))
        container.setdefault("terminationMessagePath", "/dev/termination-log")
        container.setdefault("terminationMessagePolicy", "File")
        container.setdefault("resources", {})
        for port in container.get("ports") or []:
            if isinstance(port, dict):
                port.setdefault("protocol", "TCP")


def _default_pod_spec(spec: dict[str, Any]) -> None:
    _default_containers(spec.get("containers"))
    _default_containers(spec.get("initContainers"))
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("securityContext", {})
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("enableServiceLinks", True)
    spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
    spec.setdefault("priority", 0)
    spec.setdefault("serviceAccountName", spec.get("serviceAccount", "default"))
    spec.setdefault("serviceAccount", spec["serviceAccountName"])


def _prepare_pod(obj: dict[str, Any], _: Callable[[], str]) -> None:
    spec = obj.setdefault("spec", {})
    if isinstance(spec, dict):
        _default_pod_spec(spec)
        obj["status"] = {"phase": "Pending", "qosClass": _qos_class(spec)}


def _prepare_service(obj: dict[str, Any], allocate_ip: Callable[[], str]) -> None:
    spec = obj.setdefault("spec", {})
    if not isinstance(spec, dict):
        return
    spec.setdefault("type", "ClusterIP")
    if spec["type"] != "ExternalName":
        if not spec.get("clusterIP"):
            spec["clusterIP"] = allocate_ip()
        spec.setdefault("clusterIPs", [spec["clusterIP"]])
        spec.setdefault("ipFamilies", ["IPv4"])
        spec.setdefault("ipFamilyPolicy", "SingleStack")
        spec.setdefault("internalTrafficPolicy", "Cluster")
    spec.setdefault("sessionAffinity", "None")
    for port in spec.get("ports") or []:
        if isinstance(port, dict):
            port.setdefault("protocol", "TCP")
            if "port" in port:
                port.setdefault("targetPort", port["port"])
    obj["status"] = {"loadBalancer": {}}


def _prepare_namespace(obj: dict[str, Any], _: Callable[[], str]) -> None:
    name = obj["metadata"].get("name", "")
    obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = name
    spec = obj.setdefault("spec", {})
    spec.setdefault("finalizers", ["kubernetes"])
    obj["status"] = {"phase": "Active"}


def _prepare_secret(obj: dict[str, Any], _: Callable[[], str]) -> None:
    obj.setdefault("type", "Opaque")
    string_data = obj.pop("stringData", None) or {}
    if string_data:
        data = obj.setdefault("data", {})
        for key, value in string_data.items():
            data[key] = base64.b64encode(str(value).encode()).decode()


def _prepare_crd(obj: dict[str, Any], _: Callable[[], str]) -> None:
    spec = obj.setdefault("spec", {})
    names = spec.setdefault("names", {})
    kind = names.get("kind", "")
    names.setdefault("singular", kind.lower())
    names.setdefault("listKind", f"{kind}List")
    spec.setdefault("scope", "Namespaced")
    spec.setdefault("conversion", {"strategy": "None"})
    for version in spec.get("versions") or []:
        version.setdefault("served", True)
        version.setdefault("storage", len(spec["versions"]) == 1)
    stored = [v.get("name") for v in spec.get("versions") or [] if v.get("storage")]
    obj["status"] = {"acceptedNames": {"kind": "", "plural": ""}, "storedVersions": stored}
    finalizers = obj["metadata"].setdefault("finalizers", [])
    if "customresourcecleanup.apiextensions.k8s.io" not in finalizers:
        finalizers.append("customresourcecleanup.apiextensions.k8s.io")


_PREPARERS: dict[str, Callable[[dict[str, Any], Callable[[], str]], None]] = {
    "pods": _prepare_pod,
    "services": _prepare_service,
    "namespaces": _prepare_namespace,
    "secrets": _prepare_secret,
    "customresourcedefinitions.apiextensions.k8s.io": _prepare_crd,
}


def prepare_create(rd: ResourceDef, obj: dict[str, Any], allocate_ip: Callable[[], str]) -> None:
    """Defaults and status reset that the real server applies on create (in place)."""
    if rd.storage_key == "configmaps":
        for key, value in (obj.get("data") or {}).items():
            if not isinstance(value, str):
                raise bad_request(
                    f'ConfigMap in version "v1" cannot be handled as a ConfigMap: json: cannot '
                    f"unmarshal {_go_type(value)} into Go struct field ConfigMap.data of type string"
                    f" (key {key!r})"
                )
    preparer = _PREPARERS.get(rd.storage_key)
    if preparer is not None:
        preparer(obj, allocate_ip)


def _go_type(value: Any) -> str:
    return {bool: "bool", int: "number", float: "number", list: "array", dict: "object"}.get(
        type(value), "value"
    )


def prepare_update(rd: ResourceDef, new: dict[str, Any], old: Mapping[str, Any]) -> None:
    """Carry over server-allocated values that an update may omit (service cluster IPs, secret data)."""
    if rd.storage_key == "services":
        spec, old_spec = new.setdefault("spec", {}), old.get("spec") or {}
        for key in ("clusterIP", "clusterIPs"):
            if not spec.get(key) and old_spec.get(key):
                spec[key] = copy.deepcopy(old_spec[key])
    elif rd.storage_key == "secrets":
        _prepare_secret(new, lambda: "")
    elif rd.storage_key == "pods":
        spec = new.get("spec")
        if isinstance(spec, dict):
            _default_pod_spec(spec)


def validate_create(rd: ResourceDef, obj: Mapping[str, Any]) -> list[FieldError]:
    errors: list[FieldError] = []
    if rd.storage_key == "pods":
        containers = (obj.get("spec") or {}).get("containers")
        if not containers:
            errors.append(FieldError("Required", "spec.containers"))
        for i, container in enumerate(containers or []):
            for key in ("name", "image"):
                if not (isinstance(container, dict) and container.get(key)):
                    errors.append(FieldError("Required", f"spec.containers[{i}].{key}"))
    elif rd.storage_key == "services":
        spec = obj.get("spec") or {}
        if spec.get("type") != "ExternalName" and spec.get("clusterIP") != "None" and not spec.get("ports"):
            errors.append(FieldError("Required", "spec.ports"))
    elif rd.storage_key == "customresourcedefinitions.apiextensions.k8s.io":
        errors.extend(_validate_crd(obj))
    return errors


def _validate_crd(obj: Mapping[str, Any]) -> list[FieldError]:
    errors: list[FieldError] = []
    spec = obj.get("spec") or {}
    names = spec.get("names") or {}
    group = spec.get("group", "")
    if not group:
        errors.append(FieldError("Required", "spec.group"))
    elif "." not in group:
        errors.append(FieldError("Invalid", "spec.group", group, "should be a domain with at least one dot"))
    for key in ("plural", "kind"):
        if not names.get(key):
            errors.append(FieldError("Required", f"spec.names.{key}"))
    name = (obj.get("metadata") or {}).get("name", "")
    if names.get("plural") and group and name != f"{names['plural']}.{group}":
        errors.append(
            FieldError("Invalid", "metadata.name", name, 'must be spec.names.plural+"."+spec.group')
        )
    if spec.get("scope") not in ("Namespaced", "Cluster"):
        errors.append(
            FieldError(
                "NotSupported", "spec.scope", spec.get("scope"), 'supported values: "Cluster", "Namespaced"'
            )
        )
    versions = spec.get("versions") or []
    if not versions:
        errors.append(
            FieldError(
                "Invalid",
                "spec.versions",
                versions,
                "must have exactly one version marked as storage version",
            )
        )
    elif sum(1 for v in versions if v.get("storage")) != 1:
        errors.append(
            FieldError(
                "Invalid", "spec.versions", None, "must have exactly one version marked as storage version"
            )
        )
    return errors


# Pod spec fields that an update may change (the rest is immutable, as the real validation enforces).
_POD_MUTABLE = ("activeDeadlineSeconds", "tolerations", "terminationGracePeriodSeconds", "schedulingGates")
_POD_FORBIDDEN_MSG = (
    "pod updates may not change fields other than `spec.containers[*].image`,"
    "`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` "
    "(only additions to existing tolerations),`spec.terminationGracePeriodSeconds` "
    "(allow it to be set to 1 if it was previously negative)"
)


def _pod_spec_mask(spec: Any, old_node: str | None) -> Any:
    if not isinstance(spec, dict):
        return spec
    masked = {key: val for key, val in spec.items() if key not in _POD_MUTABLE}
    if not old_node:
        masked.pop("nodeName", None)  # binding an unscheduled pod (what pods/binding does)
    for key in ("containers", "initContainers"):
        if isinstance(masked.get(key), list):
            masked[key] = [
                {k: v for k, v in c.items() if k != "image"} if isinstance(c, dict) else c
                for c in masked[key]
            ]
    return masked


def validate_update(rd: ResourceDef, new: Mapping[str, Any], old: Mapping[str, Any]) -> list[FieldError]:
    errors: list[FieldError] = []
    if rd.storage_key == "pods":
        old_spec = old.get("spec") or {}
        old_node = old_spec.get("nodeName") if isinstance(old_spec, dict) else None
        if _pod_spec_mask(new.get("spec"), old_node) != _pod_spec_mask(old_spec, old_node):
            errors.append(FieldError("Forbidden", "spec", detail=_POD_FORBIDDEN_MSG))
    elif rd.storage_key == "services":
        new_ip = (new.get("spec") or {}).get("clusterIP")
        old_ip = (old.get("spec") or {}).get("clusterIP")
        if old_ip and new_ip != old_ip:
            errors.append(FieldError("Invalid", "spec.clusterIP", new_ip, "field is immutable"))
    elif rd.storage_key == "customresourcedefinitions.apiextensions.k8s.io":
        errors.extend(_validate_crd(new))
        for key in ("group", "scope"):
            if (new.get("spec") or {}).get(key) != (old.get("spec") or {}).get(key):
                errors.append(
                    FieldError(
                        "Invalid", f"spec.{key}", (new.get("spec") or {}).get(key), "field is immutable"
                    )
                )
    return errors


class ClusterIPAllocator:
    """Hands out service IPs from 10.96.0.0/12 like the real allocator (sequentially, never reused)."""

    def __init__(self, cidr: str = "10.96.0.0/12") -> None:
        self._hosts = ipaddress.ip_network(cidr).hosts()
        next(self._hosts)  # 10.96.0.1 is the kubernetes service

    def __call__(self) -> str:
        return str(next(self._hosts))
