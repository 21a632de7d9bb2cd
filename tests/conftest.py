"""Shared test options and fixtures."""

from __future__ import annotations

import pytest

# Real llama-server fixtures (start_server, demo_model, llama_server_binary) for every suite.
pytest_plugins = ("tests.server.fixtures",)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--update-golden", action="store_true", help="rewrite golden files from the code")


@pytest.fixture
def update_golden(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--update-golden"))
