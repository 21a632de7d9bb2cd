"""Fixtures of the serving suite: stacks shared by many tests are session-scoped; tests that kill or
starve a server get their own."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from llamacontroller.demo_model import write_demo_model, write_demo_projector
from llamacontroller.local.binary import find_llama_server
from tests.support.stacks import CHAT_PARAMETERS, EMBED_PARAMETERS, Stack, Stacks


@pytest.fixture(scope="session")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_demo_model(tmp_path_factory.mktemp("models") / "demo.gguf")


@pytest.fixture(scope="session")
def session_stacks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stacks]:
    stacks = Stacks(find_llama_server(), tmp_path_factory.mktemp("serving"))
    yield stacks
    stacks.stop()


@pytest.fixture
def stacks(tmp_path: Path) -> Iterator[Stacks]:
    """For tests that kill or change what they start."""
    stacks = Stacks(find_llama_server(), tmp_path)
    yield stacks
    stacks.stop()


@pytest.fixture(scope="session")
def chat_stack(session_stacks: Stacks, model_file: Path) -> Stack:
    return session_stacks.stack(CHAT_PARAMETERS, model_file)


@pytest.fixture(scope="session")
def vision_stack(session_stacks: Stacks, model_file: Path) -> Stack:
    """The demo model with its vision projector: it takes images."""
    projector = write_demo_projector(model_file.with_name("demo-mmproj.gguf"))
    return session_stacks.stack(CHAT_PARAMETERS, model_file, projector)


@pytest.fixture(scope="session")
def embed_stack(session_stacks: Stacks, model_file: Path) -> Stack:
    return session_stacks.stack(EMBED_PARAMETERS, model_file)
