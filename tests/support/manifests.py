"""What a cluster admin installs: deploy/ built as `kubectl apply -k deploy/` builds it, and lookups in
the built objects."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.cluster.binaries import bin_dir
from tests.support.paths import REPO

DEPLOY = REPO / "deploy"
NAMESPACE = "llamacontroller"
NODE_AGENT_NAMESPACE = "llamacontroller-node-agent"  # the node agent's: hostPID needs the privileged level


def kustomize_build(path: Path = DEPLOY) -> list[dict[str, Any]]:
    """`kubectl kustomize`, the build `kubectl apply -k` makes, by the tests' kubectl (tests/cluster's
    build: the version the test cluster runs)."""
    result = subprocess.run(
        [str(bin_dir() / "kubectl"), "kustomize", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def one(manifests: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    """The one object of a kind (and name, or name prefix for generated ConfigMaps)."""
    found = [
        doc
        for doc in manifests
        if doc["kind"] == kind and (name is None or doc["metadata"]["name"].startswith(name))
    ]
    assert len(found) == 1, f"{kind} {name or ''}: {[d['metadata']['name'] for d in found]}"
    return found[0]


def flag(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def mounted_config(manifests: list[dict[str, Any]]) -> str:
    """The file the operator's Pod reads as --config, followed from the args through the volume
    mount to the (generated, hash-named) ConfigMap and its key."""
    pod = one(manifests, "Deployment", "llamacontroller-operator")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    path = Path(flag(container["args"], "--config"))
    mount = next(m for m in container["volumeMounts"] if Path(m["mountPath"]) == path.parent)
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    configmap = one(manifests, "ConfigMap", volume["configMap"]["name"])
    data: str = configmap["data"][path.name]
    return data
