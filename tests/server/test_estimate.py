"""The memory estimate against llama-server itself: for the tiny model, wider generated models in
several layer counts and weight types, and the real small model, with context sizes, parallel
sequences and KV cache types, the estimate of the weights, the KV cache and the compute buffer is
each within 5 % of what the real server reports when it loads (tests/support/llama_memory.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.llama_memory import CASES, Case, deviation, measure

TOLERANCE = 0.05


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_the_estimate_is_within_5_percent_of_llama_server(
    case: Case, models: Path, llama_server_binary: Path
) -> None:
    ours, theirs = measure(case, llama_server_binary, models)
    for what in ("weights", "kv_cache", "compute"):
        estimate, reported = getattr(ours, what), getattr(theirs, what)
        assert reported > 0, what
        assert abs(deviation(estimate, reported)) <= TOLERANCE, (what, estimate, reported)
