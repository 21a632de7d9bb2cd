"""Fixtures of the local runtime's suite: a workspace, its `up` stopped afterwards."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.local_runtime import Local


@pytest.fixture
def local(tmp_path: Path) -> Iterator[Local]:
    workspace = Local(tmp_path)
    yield workspace
    if workspace.process is not None and workspace.process.poll() is None:
        workspace.process.send_signal(signal.SIGTERM)
        workspace.process.wait(30)
