"""API discovery documents: /version, /api, /apis, per-group and per-group-version resource lists.

Both the legacy documents (what kopf and older clients read) and the aggregated discovery of
``apidiscovery.k8s.io/v2`` (what kubectl 1.32 asks for first, saving it a request per group-version)
are served from the same registry.
"""

from __future__ import annotations

import hashlib
from typing import Any

from .resources import SUBRESOURCE_VERBS, Registry, ResourceDef

SERVER_VERSION: dict[str, str] = {
    "major": "1",
    "minor": "32",
    "gitVersion": "v1.32.0-kube-emulator",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2024-12-11T00:00:00Z",
    "goVersion": "go1.23.3",
    "compiler": "gc",
    "platform": "linux/amd64",
}
AGGREGATED_V2 = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
AGGREGATED_V2BETA1 = "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList"


def wants_aggregated(accept: str) -> str | None:
    """Which aggregated discovery version the Accept header asks for (in its order), if any."""
    for part in accept.split(","):
        params = {
            kv.split("=", 1)[0].strip(): kv.split("=", 1)[1].strip()
            for kv in part.split(";")[1:]
            if "=" in kv
        }
        if params.get("g") == "apidiscovery.k8s.io" and params.get("as") == "APIGroupDiscoveryList":
            if params.get("v") in ("v2", "v2beta1"):
                return params["v"]
        elif part.split(";")[0].strip() in ("application/json", "*/*"):
            return None
    return None


def _storage_hash(rd: ResourceDef) -> str:
    digest = hashlib.sha256(f"{rd.group}/{rd.version}/{rd.kind}".encode()).digest()
    import base64

    return base64.b64encode(digest[:8]).decode()


def _group_version(group: str, version: str) -> str:
    return f"{group}/{version}" if group else version


def api_versions(server_address: str) -> dict[str, Any]:
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    }


def _group_entry(group: str, versions: list[str]) -> dict[str, Any]:
    return {
        "name": group,
        "versions": [{"groupVersion": _group_version(group, v), "version": v} for v in versions],
        "preferredVersion": {"groupVersion": _group_version(group, versions[0]), "version": versions[0]},
    }


def api_group_list(registry: Registry) -> dict[str, Any]:
    return {
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": [_group_entry(group, versions) for group, versions in registry.groups()],
    }


def api_group(registry: Registry, group: str) -> dict[str, Any] | None:
    for name, versions in registry.groups():
        if name == group:
            return dict(_group_entry(group, versions), kind="APIGroup", apiVersion="v1")
    return None


def _subresource_kind(rd: ResourceDef, subresource: str) -> tuple[str, str, str]:
    if subresource == "scale":
        return ("autoscaling", "v1", "Scale")
    return (rd.group, rd.version, rd.kind)


def _subresource_verbs(subresource: str) -> list[str]:
    return ["update"] if subresource == "finalize" else list(SUBRESOURCE_VERBS)


def api_resource_list(registry: Registry, group: str, version: str) -> dict[str, Any] | None:
    defs = sorted(registry.in_group_version(group, version), key=lambda rd: rd.plural)
    if not defs and group:
        return None
    resources: list[dict[str, Any]] = []
    for rd in defs:
        resources.append(
            {
                "name": rd.plural,
                "singularName": rd.singular,
                "namespaced": rd.namespaced,
                "kind": rd.kind,
                "verbs": list(rd.verbs),
                "shortNames": list(rd.short_names),
                "categories": list(rd.categories),
                "storageVersionHash": _storage_hash(rd),
            }
        )
        for sub in rd.subresources:
            sub_group, sub_version, sub_kind = _subresource_kind(rd, sub)
            entry: dict[str, Any] = {
                "name": f"{rd.plural}/{sub}",
                "singularName": "",
                "namespaced": rd.namespaced,
                "kind": sub_kind,
                "verbs": _subresource_verbs(sub),
            }
            if sub == "scale":
                entry.update(group=sub_group, version=sub_version)
            resources.append(entry)
    result: dict[str, Any] = {
        "kind": "APIResourceList",
        "groupVersion": _group_version(group, version),
        "resources": resources,
    }
    if group:
        result["apiVersion"] = "v1"
    return result


def _aggregated_resource(rd: ResourceDef) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "resource": rd.plural,
        "responseKind": {"group": rd.group, "version": rd.version, "kind": rd.kind},
        "scope": "Namespaced" if rd.namespaced else "Cluster",
        "singularResource": rd.singular,
        "verbs": list(rd.verbs),
    }
    if rd.short_names:
        entry["shortNames"] = list(rd.short_names)
    if rd.categories:
        entry["categories"] = list(rd.categories)
    if rd.subresources:
        entry["subresources"] = []
        for sub in rd.subresources:
            sub_group, sub_version, sub_kind = _subresource_kind(rd, sub)
            entry["subresources"].append(
                {
                    "subresource": sub,
                    "responseKind": {"group": sub_group, "version": sub_version, "kind": sub_kind},
                    "verbs": _subresource_verbs(sub),
                }
            )
    return entry


def aggregated(registry: Registry, *, core: bool, version: str = "v2") -> dict[str, Any]:
    """The APIGroupDiscoveryList for /api (core=True) or /apis."""
    groups = [("", ["v1"])] if core else registry.groups()
    items = []
    for group, versions in groups:
        items.append(
            {
                "metadata": {"name": group, "creationTimestamp": None},
                "versions": [
                    {
                        "version": v,
                        "resources": [
                            _aggregated_resource(rd)
                            for rd in sorted(registry.in_group_version(group, v), key=lambda rd: rd.plural)
                        ],
                        "freshness": "Current",
                    }
                    for v in versions
                ],
            }
        )
    return {
        "kind": "APIGroupDiscoveryList",
        "apiVersion": f"apidiscovery.k8s.io/{version}",
        "metadata": {},
        "items": items,
    }
