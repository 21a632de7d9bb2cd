"""What a cluster admin installs: the image (Dockerfile) and the kustomize base (deploy/), checked offline.

The end-to-end fixtures (`cluster`: the API emulator with kubectl; `operator`: the real operator
process) come from tests/e2e, for the RBAC proof.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.conftest import (  # noqa: F401  (fixtures and the hook that reports the operator's log)
    cluster,
    operator,
    operator_config,
    pytest_runtest_makereport,
)
from tests.support.paths import REPO

DEPLOY = REPO / "deploy"
NAMESPACE = "llamacontroller"


def kustomize_build(path: Path = DEPLOY) -> list[dict[str, Any]]:
    """`kubectl kustomize`, the same build `kubectl apply -k` makes (kubectl comes with .ci/setup)."""
    if shutil.which("kubectl") is None:
        pytest.fail("kubectl is needed to build deploy/ (bash .ci/setup installs it)")
    result = subprocess.run(
        ["kubectl", "kustomize", str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="session")
def manifests() -> list[dict[str, Any]]:
    return kustomize_build()


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
    return configmap["data"][path.name]
