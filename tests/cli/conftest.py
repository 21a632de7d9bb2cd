"""What the command-line tests share."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """An empty working folder: nothing of the checkout is found by accident."""
    (tmp_path / "work").mkdir()
    return tmp_path / "work"
