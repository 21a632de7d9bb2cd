"""Server-side printing: ``meta.k8s.io/v1 Table`` responses for ``kubectl get``.

kubectl asks for tables (``Accept: application/json;as=Table;v=v1;g=meta.k8s.io``) and prints the
columns the server chooses: a CRD's additionalPrinterColumns (or Name + Age by default), or the
usual columns of built-in kinds. Columns with priority > 0 are shown by ``-o wide`` only.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from .resources import ResourceDef

_NAME_DESC = (
    "Name must be unique within a namespace. Is required when creating resources, although some resources "
    "may allow a client to request the generation of an appropriate name automatically."
)
_AGE_DESC = (
    "CreationTimestamp is a timestamp representing the server time when this object was created. It is "
    "represented in RFC3339 form and is in UTC."
)


def human_duration(seconds: float) -> str:
    """kubectl's duration.HumanDuration: 5s, 3m20s, 45m, 5h10m, 3d4h, 400d, 3y20d."""
    if seconds < -1:
        return "<invalid>"
    seconds = max(seconds, 0)
    secs = int(seconds)
    minutes, hours, days = secs // 60, secs // 3600, secs // 86400
    if secs < 120:
        return f"{secs}s"
    if minutes < 10:
        rest = secs % 60
        return f"{minutes}m{rest}s" if rest else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    if hours < 8:
        rest = minutes % 60
        return f"{hours}h{rest}m" if rest else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 192:
        rest = hours % 24
        return f"{days}d{rest}h" if rest else f"{days}d"
    if days < 365 * 2:
        return f"{days}d"
    years = days // 365
    if days < 365 * 8:
        rest = days % 365
        return f"{years}y{rest}d" if rest else f"{years}y"
    return f"{years}y"


def age(timestamp: Any) -> str:
    if not isinstance(timestamp, str) or not timestamp:
        return "<unknown>"
    try:
        moment = datetime.strptime(timestamp.replace(".000000", ""), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        try:
            moment = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
        except ValueError:
            return "<invalid>"
    return human_duration((datetime.now(UTC) - moment).total_seconds())


# --- a small JSONPath, as much as printer columns use -----------------------------------------------

_TOKEN_RE = re.compile(r'\.([^.\[\]]+)|\[(\d+|\*)\]|\[\?\(@\.([\w.]+)\s*==\s*["\']([^"\']*)["\']\)\]')


def jsonpath(obj: Any, path: str) -> list[Any]:
    """Evaluate ``.a.b[0].c``, ``.a[*].b`` and ``.a[?(@.type=="Ready")].status``; returns all matches."""
    path = path.strip()
    if path.startswith("{") and path.endswith("}"):
        path = path[1:-1]
    if path.startswith("$"):
        path = path[1:]
    current = [obj]
    position = 0
    while position < len(path):
        match = _TOKEN_RE.match(path, position)
        if match is None:
            return []
        position = match.end()
        field, index, filter_key, filter_value = match.groups()
        nxt: list[Any] = []
        for value in current:
            if field is not None and isinstance(value, Mapping) and field in value:
                nxt.append(value[field])
            elif index == "*" and isinstance(value, list):
                nxt.extend(value)
            elif index is not None and index != "*" and isinstance(value, list) and int(index) < len(value):
                nxt.append(value[int(index)])
            elif filter_key is not None and isinstance(value, list):
                for item in value:
                    if (
                        str(jsonpath(item, "." + filter_key)[:1] and jsonpath(item, "." + filter_key)[0])
                        == filter_value
                    ):
                        nxt.append(item)
        current = nxt
    return current


def _print_value(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def _cell(column_type: str, values: list[Any]) -> Any:
    if not values:
        return None
    value = values[0]
    match column_type:
        case "integer":
            return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
        case "number":
            return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None
        case "boolean":
            return value if isinstance(value, bool) else None
        case "date":
            return age(value) if isinstance(value, str) else None
        case _:
            return (
                " ".join(_print_value(v) for v in values if v is not None)
                if len(values) > 1
                else _print_value(value)
            )


# --- columns ---------------------------------------------------------------------------------------

Column = tuple[str, str, str, int, Any]  # name, type, format, priority, extractor(obj) -> cell


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return obj.get("metadata") or {}


def _name_column() -> Column:
    return ("Name", "string", "name", 0, lambda o: _meta(o).get("name", ""))


def _age_column() -> Column:
    return ("Age", "string", "", 0, lambda o: age(_meta(o).get("creationTimestamp")))


def _pod_ready(obj: Mapping[str, Any]) -> str:
    containers = (obj.get("spec") or {}).get("containers") or []
    statuses = (obj.get("status") or {}).get("containerStatuses") or []
    return f"{sum(1 for s in statuses if s.get('ready'))}/{len(containers)}"


def _pod_status(obj: Mapping[str, Any]) -> str:
    status = obj.get("status") or {}
    reason = status.get("reason") or status.get("phase") or "Unknown"
    for container in status.get("containerStatuses") or []:
        state = container.get("state") or {}
        if (state.get("waiting") or {}).get("reason"):
            reason = state["waiting"]["reason"]
        elif (state.get("terminated") or {}).get("reason"):
            reason = state["terminated"]["reason"]
    if _meta(obj).get("deletionTimestamp"):
        reason = "Terminating"
    return reason


def _pod_restarts(obj: Mapping[str, Any]) -> int:
    return sum(
        int(s.get("restartCount") or 0) for s in (obj.get("status") or {}).get("containerStatuses") or []
    )


def _node_status(obj: Mapping[str, Any]) -> str:
    conditions = (obj.get("status") or {}).get("conditions") or []
    ready = next((c for c in conditions if c.get("type") == "Ready"), None)
    text = "Unknown" if ready is None else ("Ready" if ready.get("status") == "True" else "NotReady")
    if (obj.get("spec") or {}).get("unschedulable"):
        text += ",SchedulingDisabled"
    return text


def _node_roles(obj: Mapping[str, Any]) -> str:
    labels = _meta(obj).get("labels") or {}
    roles = sorted(key.split("/", 1)[1] for key in labels if key.startswith("node-role.kubernetes.io/"))
    return ",".join(roles) or "<none>"


def _node_address(kind: str) -> Any:
    def extract(obj: Mapping[str, Any]) -> str:
        for address in (obj.get("status") or {}).get("addresses") or []:
            if address.get("type") == kind:
                return str(address.get("address"))
        return "<none>"

    return extract


def _service_ports(obj: Mapping[str, Any]) -> str:
    ports = (obj.get("spec") or {}).get("ports") or []
    parts = []
    for port in ports:
        text = f"{port.get('port')}"
        if port.get("nodePort"):
            text += f":{port['nodePort']}"
        parts.append(f"{text}/{port.get('protocol', 'TCP')}")
    return ",".join(parts) or "<none>"


def _selector(obj: Mapping[str, Any]) -> str:
    selector = (obj.get("spec") or {}).get("selector") or {}
    return ",".join(f"{k}={v}" for k, v in sorted(selector.items())) or "<none>"


def _event_object(obj: Mapping[str, Any]) -> str:
    ref = obj.get("involvedObject") or obj.get("regarding") or {}
    return f"{str(ref.get('kind', '')).lower()}/{ref.get('name', '')}"


def _event_last_seen(obj: Mapping[str, Any]) -> str:
    stamp = (
        obj.get("lastTimestamp")
        or obj.get("deprecatedLastTimestamp")
        or obj.get("eventTime")
        or _meta(obj).get("creationTimestamp")
    )
    return age(stamp)


def _get(path: str, default: Any = "<none>") -> Any:
    def extract(obj: Mapping[str, Any]) -> Any:
        values = jsonpath(obj, path)
        return _print_value(values[0]) if values and values[0] not in (None, "") else default

    return extract


_EVENT_COLUMNS: list[Column] = [
    ("Last Seen", "string", "", 0, _event_last_seen),
    ("Type", "string", "", 0, lambda o: o.get("type", "")),
    ("Reason", "string", "", 0, lambda o: o.get("reason", "")),
    ("Object", "string", "", 0, _event_object),
    ("Message", "string", "", 0, lambda o: o.get("message") or o.get("note") or ""),
    ("Name", "string", "name", 1, lambda o: _meta(o).get("name", "")),
]

_BUILTIN_COLUMNS: dict[str, list[Column]] = {
    "pods": [
        _name_column(),
        ("Ready", "string", "", 0, _pod_ready),
        ("Status", "string", "", 0, _pod_status),
        ("Restarts", "string", "", 0, _pod_restarts),
        _age_column(),
        ("IP", "string", "", 1, _get(".status.podIP")),
        ("Node", "string", "", 1, _get(".spec.nodeName")),
        ("Nominated Node", "string", "", 1, _get(".status.nominatedNodeName")),
        ("Readiness Gates", "string", "", 1, lambda o: "<none>"),
    ],
    "namespaces": [_name_column(), ("Status", "string", "", 0, _get(".status.phase", "")), _age_column()],
    "nodes": [
        _name_column(),
        ("Status", "string", "", 0, _node_status),
        ("Roles", "string", "", 0, _node_roles),
        _age_column(),
        ("Version", "string", "", 0, _get(".status.nodeInfo.kubeletVersion", "")),
        ("Internal-IP", "string", "", 1, _node_address("InternalIP")),
        ("External-IP", "string", "", 1, _node_address("ExternalIP")),
        ("OS-Image", "string", "", 1, _get(".status.nodeInfo.osImage", "<unknown>")),
        ("Kernel-Version", "string", "", 1, _get(".status.nodeInfo.kernelVersion", "<unknown>")),
        ("Container-Runtime", "string", "", 1, _get(".status.nodeInfo.containerRuntimeVersion", "<unknown>")),
    ],
    "services": [
        _name_column(),
        ("Type", "string", "", 0, _get(".spec.type", "")),
        ("Cluster-IP", "string", "", 0, _get(".spec.clusterIP")),
        ("External-IP", "string", "", 0, lambda o: "<none>"),
        ("Port(s)", "string", "", 0, _service_ports),
        _age_column(),
        ("Selector", "string", "", 1, _selector),
    ],
    "configmaps": [
        _name_column(),
        ("Data", "integer", "", 0, lambda o: len(o.get("data") or {}) + len(o.get("binaryData") or {})),
        _age_column(),
    ],
    "secrets": [
        _name_column(),
        ("Type", "string", "", 0, _get(".type", "")),
        ("Data", "integer", "", 0, lambda o: len(o.get("data") or {})),
        _age_column(),
    ],
    "serviceaccounts": [
        _name_column(),
        ("Secrets", "integer", "", 0, lambda o: len(o.get("secrets") or [])),
        _age_column(),
    ],
    "events": _EVENT_COLUMNS,
    "events.events.k8s.io": _EVENT_COLUMNS,
    "leases.coordination.k8s.io": [
        _name_column(),
        ("Holder", "string", "", 0, _get(".spec.holderIdentity", "")),
        _age_column(),
    ],
    "customresourcedefinitions.apiextensions.k8s.io": [
        _name_column(),
        ("Created At", "date", "", 0, lambda o: _meta(o).get("creationTimestamp")),
    ],
}


def _crd_columns(rd: ResourceDef) -> list[Column]:
    if rd.printer_columns is None:
        return [_name_column(), _age_column()]
    columns = [_name_column()]
    for spec in rd.printer_columns:
        column_type = spec.get("type", "string")
        path = spec.get("jsonPath", "")
        columns.append(
            (
                spec.get("name", ""),
                column_type,
                spec.get("format", ""),
                int(spec.get("priority", 0)),
                lambda o, t=column_type, p=path: _cell(t, jsonpath(o, p)),
            )
        )
    return columns


def columns_for(rd: ResourceDef) -> list[Column]:
    if rd.crd_name is not None:
        return _crd_columns(rd)
    return _BUILTIN_COLUMNS.get(rd.storage_key, [_name_column(), _age_column()])


def column_definitions(rd: ResourceDef) -> list[dict[str, Any]]:
    result = []
    descriptions = {spec.get("name"): spec.get("description", "") for spec in rd.printer_columns or ()}
    for name, column_type, fmt, priority, _ in columns_for(rd):
        description = (
            _NAME_DESC if fmt == "name" else _AGE_DESC if name == "Age" else descriptions.get(name, name)
        )
        result.append(
            {
                "name": name,
                "type": column_type,
                "format": fmt,
                "description": description,
                "priority": priority,
            }
        )
    return result


def partial_metadata(obj: Mapping[str, Any]) -> dict[str, Any]:
    return {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": dict(_meta(obj))}


def row(rd: ResourceDef, obj: Mapping[str, Any], include_object: str) -> dict[str, Any]:
    result: dict[str, Any] = {"cells": [extract(obj) for *_, extract in columns_for(rd)]}
    if include_object == "Object":
        result["object"] = obj
    elif include_object != "None":
        result["object"] = partial_metadata(obj)
    return result


def table(
    rd: ResourceDef,
    objects: list[Mapping[str, Any]],
    resource_version: str,
    *,
    include_object: str = "Metadata",
    with_columns: bool = True,
) -> dict[str, Any]:
    result: dict[str, Any] = {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version},
    }
    result["columnDefinitions"] = column_definitions(rd) if with_columns else []
    result["rows"] = [row(rd, obj, include_object) for obj in objects]
    return result
