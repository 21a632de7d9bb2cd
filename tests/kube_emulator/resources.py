"""The resource registry: which group/version/plural exists, with its discovery facts.

Built-in resources are declared here; custom resources come and go with their CRDs. Discovery,
OpenAPI, tables, validation and the store all read resource facts from this single registry.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

ALL_VERBS: tuple[str, ...] = (
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
)
SUBRESOURCE_VERBS: tuple[str, ...] = ("get", "patch", "update")

ResourceKey = tuple[str, str, str]  # (group, version, plural), e.g. ("", "v1", "pods")


@dataclass(frozen=True)
class ResourceDef:
    """Everything the emulator knows about one served group/version/resource."""

    group: str
    version: str
    plural: str
    singular: str
    kind: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    has_status: bool = False
    verbs: tuple[str, ...] = ALL_VERBS
    extra_subresources: tuple[str, ...] = ()
    printer_columns: tuple[dict[str, Any], ...] | None = None  # CRD additionalPrinterColumns
    schema: dict[str, Any] | None = field(default=None, hash=False, compare=False)  # openAPIV3Schema
    crd_name: str | None = None
    list_kind_override: str | None = None
    description: str = ""

    @property
    def key(self) -> ResourceKey:
        return (self.group, self.version, self.plural)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def list_kind(self) -> str:
        return self.list_kind_override or f"{self.kind}List"

    @property
    def storage_key(self) -> str:
        """Objects are stored per group-resource: all versions of a CRD share the same objects."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def subresources(self) -> tuple[str, ...]:
        return (("status",) if self.has_status else ()) + self.extra_subresources

    @property
    def path_prefix(self) -> str:
        return f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"

    def collection_path(self, namespace: str | None = None) -> str:
        if self.namespaced and namespace:
            return f"{self.path_prefix}/namespaces/{namespace}/{self.plural}"
        return f"{self.path_prefix}/{self.plural}"

    def object_path(self, namespace: str | None, name: str) -> str:
        return f"{self.collection_path(namespace)}/{name}"


def _core(
    plural: str,
    kind: str,
    *,
    namespaced: bool = True,
    short: tuple[str, ...] = (),
    categories: tuple[str, ...] = (),
    status: bool = False,
    extra: tuple[str, ...] = (),
    verbs: tuple[str, ...] = ALL_VERBS,
) -> ResourceDef:
    return ResourceDef(
        "", "v1", plural, kind.lower(), kind, namespaced, short, categories, status, verbs, extra
    )


BUILTINS: tuple[ResourceDef, ...] = (
    _core(
        "namespaces",
        "Namespace",
        namespaced=False,
        short=("ns",),
        status=True,
        extra=("finalize",),
        verbs=tuple(v for v in ALL_VERBS if v != "deletecollection"),
    ),
    _core("pods", "Pod", short=("po",), categories=("all",), status=True),
    _core(
        "services",
        "Service",
        short=("svc",),
        categories=("all",),
        status=True,
        verbs=tuple(v for v in ALL_VERBS if v != "deletecollection"),
    ),
    _core("events", "Event", short=("ev",)),
    _core("nodes", "Node", namespaced=False, short=("no",), status=True),
    _core("configmaps", "ConfigMap", short=("cm",)),
    _core("secrets", "Secret"),
    _core("serviceaccounts", "ServiceAccount", short=("sa",)),
    ResourceDef(
        "apiextensions.k8s.io",
        "v1",
        "customresourcedefinitions",
        "customresourcedefinition",
        "CustomResourceDefinition",
        False,
        ("crd", "crds"),
        ("api-extensions",),
        True,
    ),
    ResourceDef("events.k8s.io", "v1", "events", "event", "Event", True, ("ev",)),
    ResourceDef("coordination.k8s.io", "v1", "leases", "lease", "Lease", True),
)
BUILTIN_GROUP_ORDER = ("", "events.k8s.io", "coordination.k8s.io", "apiextensions.k8s.io")

_VERSION_RE = re.compile(r"^v(\d+)(?:(alpha|beta)(\d+))?$")


def version_priority(version: str) -> tuple[int, int, int, str]:
    """Sort key of kube-aware version ordering: v2 > v1 > v1beta2 > v1beta1 > v1alpha1 > others."""
    match = _VERSION_RE.match(version)
    if not match:
        return (3, 0, 0, version)
    major = int(match.group(1))
    stage = {None: 0, "beta": 1, "alpha": 2}[match.group(2)]
    minor = int(match.group(3) or 0)
    return (stage, -major, -minor, version)


def crd_resource_defs(crd: dict[str, Any]) -> list[ResourceDef]:
    """Build the served resource definitions of a CustomResourceDefinition object."""
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    group = spec.get("group", "")
    kind = names.get("kind", "")
    result: list[ResourceDef] = []
    for version in spec.get("versions") or []:
        if not version.get("served", True):
            continue
        subresources = version.get("subresources") or {}
        columns = version.get("additionalPrinterColumns")
        result.append(
            ResourceDef(
                group=group,
                version=version.get("name", ""),
                plural=names.get("plural", ""),
                singular=names.get("singular") or kind.lower(),
                kind=kind,
                namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                short_names=tuple(names.get("shortNames") or ()),
                categories=tuple(names.get("categories") or ()),
                has_status="status" in subresources,
                extra_subresources=("scale",) if "scale" in subresources else (),
                printer_columns=tuple(columns) if columns is not None else None,
                schema=(version.get("schema") or {}).get("openAPIV3Schema"),
                crd_name=(crd.get("metadata") or {}).get("name"),
                list_kind_override=names.get("listKind"),
            )
        )
    return result


class Registry:
    """All served resources, built-in and custom; looked up by group/version/plural."""

    def __init__(self, builtins: Iterable[ResourceDef] = BUILTINS) -> None:
        self._defs: dict[ResourceKey, ResourceDef] = {}
        self._crds: dict[str, list[ResourceDef]] = {}
        self.generation = 0  # bumped on every change, for caches (discovery, OpenAPI)
        for rd in builtins:
            self._defs[rd.key] = rd

    def __iter__(self) -> Iterator[ResourceDef]:
        return iter(list(self._defs.values()))

    def get(self, group: str, version: str, plural: str) -> ResourceDef | None:
        return self._defs.get((group, version, plural))

    def register_crd(self, crd: dict[str, Any]) -> list[ResourceDef]:
        name = (crd.get("metadata") or {}).get("name", "")
        self.unregister_crd(name)
        defs = crd_resource_defs(crd)
        for rd in defs:
            if rd.key in self._defs and self._defs[rd.key].crd_name is None:
                continue  # never shadow a built-in
            self._defs[rd.key] = rd
        self._crds[name] = defs
        self.generation += 1
        return defs

    def unregister_crd(self, name: str) -> None:
        for rd in self._crds.pop(name, []):
            if self._defs.get(rd.key) is rd:
                del self._defs[rd.key]
        self.generation += 1

    def crd_defs(self, name: str) -> list[ResourceDef]:
        return list(self._crds.get(name, []))

    def groups(self) -> list[tuple[str, list[str]]]:
        """(group, versions by priority) for all named groups, built-in groups first (as /apis lists them)."""
        versions: dict[str, set[str]] = {}
        for group, version, _ in self._defs:
            if group:
                versions.setdefault(group, set()).add(version)
        order = [g for g in BUILTIN_GROUP_ORDER if g in versions]
        order += sorted(g for g in versions if g not in BUILTIN_GROUP_ORDER)
        return [(group, sorted(versions[group], key=version_priority)) for group in order]

    def group_versions(self) -> list[tuple[str, str]]:
        result = [("", "v1")]
        for group, versions in self.groups():
            result.extend((group, version) for version in versions)
        return result

    def in_group_version(self, group: str, version: str) -> list[ResourceDef]:
        return [rd for rd in self._defs.values() if rd.group == group and rd.version == version]

    def preferred(self, storage_key: str) -> ResourceDef | None:
        """The preferred-version definition of a group-resource (``pods``, ``widgets.example.test``)."""
        candidates = [rd for rd in self._defs.values() if rd.storage_key == storage_key]
        if not candidates:
            return None
        return sorted(candidates, key=lambda rd: version_priority(rd.version))[0]

    def for_api_version(self, api_version: str, kind: str) -> ResourceDef | None:
        """Find a resource by an object's apiVersion and kind (as in ownerReferences)."""
        group, _, version = api_version.rpartition("/")
        for rd in self._defs.values():
            if rd.group == group and rd.version == version and rd.kind == kind:
                return rd
        return None

    def resolve(self, name: str) -> ResourceDef | None:
        """Resolve ``pods``, ``po``, ``Pod``, ``widgets.example.test`` or ``v1/pods`` (as kubectl does)."""
        if "/" in name:
            api_version, _, plural = name.rpartition("/")
            group, _, version = api_version.rpartition("/")
            return self.get(group, version, plural)
        base, _, group = name.partition(".")
        matches = [
            rd
            for rd in self._defs.values()
            if (not group or rd.group == group)
            and (
                base in (rd.plural, rd.singular, rd.kind.lower()) or base in rd.short_names or base == rd.kind
            )
        ]
        if not matches:
            return None
        # Prefer the core group (like kubectl does for "events"), then the preferred version.
        matches.sort(key=lambda rd: (rd.group != "", rd.group, version_priority(rd.version)))
        return matches[0]
