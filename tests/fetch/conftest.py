"""The tiny model's bytes, and the loopback file server and hub that serve them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from llamacontroller.demo_model import write_demo_model
from tests.support.model_server import ModelServers, model_servers


@pytest.fixture(scope="session")
def model_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return write_demo_model(tmp_path_factory.mktemp("model") / "tiny.gguf").read_bytes()


@pytest.fixture
def servers() -> Iterator[ModelServers]:
    with model_servers() as running:
        yield running


@pytest.fixture
def models_dir(tmp_path: Path) -> Path:
    path = tmp_path / "models"
    path.mkdir()
    return path
