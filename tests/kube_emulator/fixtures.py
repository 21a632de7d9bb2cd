"""pytest fixtures; a conftest imports them: ``from tests.kube_emulator.fixtures import kube, kube_options``.

``kube`` is a fresh emulator per test, with KUBECONFIG (and kubectl's cache directory) exported to
the test's environment via monkeypatch. Override ``kube_options`` to pass constructor arguments.
Mind that the ``kubernetes`` client reads KUBECONFIG when ``kubernetes.config.load_kube_config()``
is called, so call it (or pass ``config_file=``) inside the test, after the fixture has run.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .runner import EmulatorThread


@pytest.fixture()
def kube_options() -> dict[str, Any]:
    """Keyword arguments for EmulatorThread; override this fixture to change them."""
    return {}


@pytest.fixture()
def kube(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kube_options: dict[str, Any]
) -> Iterator[EmulatorThread]:
    """A running Kubernetes API emulator; KUBECONFIG points to it for the duration of the test."""
    with EmulatorThread(**kube_options) as emulator:
        kubeconfig = emulator.write_kubeconfig(tmp_path / "kubeconfig")
        monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
        monkeypatch.setenv("KUBECACHEDIR", str(tmp_path / "kube-cache"))
        yield emulator
