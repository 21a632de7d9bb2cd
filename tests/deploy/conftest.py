"""What a cluster admin installs: the image (Dockerfile) and the kustomize base (deploy/). Most of it is
checked offline; the RBAC proof and the manifests' apply run on the project's test cluster
(tests/conftest.py: the cluster, LlamaController installed, a namespace per test, the operator)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.manifests import kustomize_build


@pytest.fixture(scope="session")
def manifests() -> list[dict[str, Any]]:
    """deploy/, as `kubectl apply -k deploy/` builds it."""
    return kustomize_build()
