"""The fit check before placement: a LlamaModel's estimate on its slot against what the node's
LlamaNode says of its GPUs (memory in all, memory of other processes) and of the model file. The
LlamaNodes are hand-built readings, as a node agent would write them; the model facts are the tiny
model's, read from a real file."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from llamacontroller.demo_model import write_demo_model
from llamacontroller.fit.check import (
    FITS,
    IN_USE,
    NOT_CHECKED,
    OCCUPIED,
    TOO_LARGE,
    FitVerdict,
    check_fit,
)
from llamacontroller.fit.estimate import slot_estimate
from llamacontroller.fit.model import ModelFacts, model_facts
from llamacontroller.gguf_header import read_header
from llamacontroller.llamanode import Gpu, GpuProcess, LlamaNode, LlamaNodeStatus, ModelFile, NodeMeta
from llamacontroller.resource import parse_llamamodel
from llamacontroller.slots import place
from tests.support.builders import llamamodel, repo_config

MiB, GiB = 1 << 20, 1 << 30
NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
CONFIG = repo_config()


@pytest.fixture(scope="module")
def facts(tmp_path_factory: pytest.TempPathFactory) -> ModelFacts:
    return model_facts(read_header(write_demo_model(tmp_path_factory.mktemp("fit") / "phi-4.gguf")))


def reading(
    facts: ModelFacts | None,
    total: int = 24 * GiB,
    foreign: int = 0,
    processes: tuple[GpuProcess, ...] = (),
    **status: Any,
) -> LlamaNode:
    """node-a's LlamaNode: two GPUs alike, the model file phi-4.gguf with ``facts``."""
    gpus = [
        Gpu(
            index=i,
            memory_total=total,
            memory_used=foreign,
            foreign_memory=foreign,
            processes=list(processes),
        )
        for i in (0, 1)
    ]
    model = ModelFile(path="phi-4.gguf", size=1, modified="2026-01-01T00:00:00Z", facts=facts)
    fields: dict[str, Any] = {
        "nvml": "ok",
        "heartbeat_at": "2026-01-01T11:59:40Z",
        "gpus": gpus,
        "models": [model],
    }
    return LlamaNode(metadata=NodeMeta(name="node-a"), status=LlamaNodeStatus(**(fields | status)))


def verdict(node: LlamaNode | None, config: Any = CONFIG, **spec: Any) -> FitVerdict:
    lm = parse_llamamodel(llamamodel(**spec))
    return check_fit(lm, place(lm, config), config, node, 2, NOW)


def need(facts: ModelFacts, **spec: Any) -> int:
    """What the estimate says the server needs on its first GPU."""
    lm = parse_llamamodel(llamamodel(**spec))
    return slot_estimate(lm, place(lm, CONFIG), CONFIG, facts, 2).estimate.gpus[0].total


def test_a_fit_says_the_numbers(facts: ModelFacts):
    found = verdict(reading(facts))
    assert (found.status, found.reason, found.places) == ("True", FITS, True)
    assert found.message == (
        "needs 519.5 MiB on GPU 0: weights 0.4, KV cache 2.0 at ctx 4096, compute 5.1, overhead 512.0; "
        "GPU 0 has 24.0 GiB, none of it used by other processes"
    )


PYTHON = GpuProcess(pid=4242, name="python", used_memory=3 * GiB + 200 * MiB)


def test_foreign_use_above_the_limit_keeps_a_new_model_off_the_gpu(facts: ModelFacts):
    found = verdict(reading(facts, foreign=PYTHON.used_memory or 0, processes=(PYTHON,)))
    assert (found.status, found.reason, found.places) == ("False", OCCUPIED, False)
    assert found.message == (
        "needs 519.5 MiB on GPU 0: weights 0.4, KV cache 2.0 at ctx 4096, compute 5.1, overhead 512.0; "
        "GPU 0 has 24.0 GiB, 3.2 GiB used by other processes: python (pid 4242) 3.2 GiB; more than "
        "fit.foreignMemoryLimitMiB (1024 MiB): GPU 0 is not given to a new model while they use it"
    )
    unlimited = repo_config(fit={"foreignMemoryLimitMiB": None})
    assert verdict(reading(facts, foreign=3 * GiB), unlimited).reason == FITS


def _table() -> list[tuple[str, Any, str]]:
    """(case, GPU memory in all and of other processes as functions of the model's need, verdict)"""
    return [
        ("plenty of room", lambda n: (24 * GiB, 0), FITS),
        ("exactly its need", lambda n: (n, 0), FITS),
        ("a byte short in all", lambda n: (n - 1, 0), TOO_LARGE),
        ("too small, others on it too", lambda n: (n - 1, 2 * GiB), TOO_LARGE),
        ("fits beside others", lambda n: (n + 100 * MiB, 100 * MiB), FITS),
        ("fits once others leave", lambda n: (n + 100 * MiB, 101 * MiB), IN_USE),
        ("others just at the limit", lambda n: (24 * GiB, 1024 * MiB), FITS),
        ("others a byte over the limit", lambda n: (24 * GiB, 1024 * MiB + 1), OCCUPIED),
    ]


@pytest.mark.parametrize(("case", "gpu", "expected"), _table(), ids=[row[0] for row in _table()])
def test_each_gpu_memory_gives_its_verdict(facts: ModelFacts, case: str, gpu: Any, expected: str):
    total, foreign = gpu(need(facts))
    assert verdict(reading(facts, total=total, foreign=foreign)).reason == expected, case


def test_too_large_says_it_never_fits_and_in_use_how_much_must_be_freed(facts: ModelFacts):
    needed = need(facts)
    too_small = verdict(reading(facts, total=400 * MiB))
    assert too_small.message.endswith(
        "GPU 0 has 400.0 MiB, none of it used by other processes; more than GPU 0 has in all: it never "
        "fits there"
    )
    crowded = verdict(reading(facts, total=needed + 10 * MiB, foreign=110 * MiB))
    assert crowded.message.endswith("110.0 MiB used by other processes; it fits once they free 100.0 MiB")


def test_a_whole_node_slot_is_judged_by_its_worst_gpu_and_names_it(facts: ModelFacts):
    node = reading(facts)
    node.status.gpus[1] = Gpu(index=1, memory_total=1 * GiB, memory_used=0, foreign_memory=900 * MiB)
    found = verdict(node, gpu={"mode": "both"})
    assert found.reason == IN_USE
    assert found.message.startswith("needs 512.1 MiB on GPU 1: ") and "GPU 0" not in found.message
    assert verdict(reading(facts), gpu={"mode": "both"}).message.count(" | ") == 1  # a fit shows both


def test_the_overhead_of_the_config_is_counted(facts: ModelFacts):
    needed = need(facts)
    tight = reading(facts, total=needed - 100 * MiB)
    assert verdict(tight).reason == TOO_LARGE
    lighter = repo_config(fit={"gpuOverheadMiB": 400})
    assert verdict(tight, lighter).reason == FITS


NOT_CHECKED_CASES = {
    "no LlamaNode": (None, "node node-a has no LlamaNode (no node agent reports its GPUs)"),
    "a stale heartbeat": (
        {"heartbeat_at": "2026-01-01T11:58:00Z"},
        "the node agent of node-a last wrote at 2026-01-01T11:58:00Z, longer ago than "
        "fit.nodeStaleSeconds (90 s)",
    ),
    "no heartbeat": (
        {"heartbeat_at": None},
        "the node agent of node-a never wrote a heartbeat, longer ago than fit.nodeStaleSeconds (90 s)",
    ),
    "no NVML": (
        {"nvml": "NVML Shared Library Not Found"},
        "the node agent of node-a reads no GPU: NVML Shared Library Not Found",
    ),
    "no such GPU": ({"gpus": []}, "LlamaNode node-a lists no GPU 0"),
    "no such model file": (
        {"models": []},
        "LlamaNode node-a lists no model file phi-4.gguf in its models volume",
    ),
    "an unreadable header": (
        {"models": [ModelFile(path="phi-4.gguf", size=3, modified="x", error="not a GGUF file")]},
        "the node agent of node-a could not read the header of phi-4.gguf: not a GGUF file",
    ),
}


@pytest.mark.parametrize(("status", "why"), list(NOT_CHECKED_CASES.values()), ids=list(NOT_CHECKED_CASES))
def test_without_a_trusted_reading_the_fit_is_not_checked_and_says_why(
    facts: ModelFacts, status: dict[str, Any] | None, why: str
):
    node = None if status is None else reading(facts, **status)
    found = verdict(node)
    assert (found.status, found.reason, found.places) == ("Unknown", NOT_CHECKED, True)
    assert found.message == f"fit not checked: {why}"


def test_settings_llama_server_refuses_leave_the_fit_unchecked(facts: ModelFacts):
    found = verdict(reading(facts), parameters={"cacheTypeV": "q8_0"})  # blocks of 32, heads of 16
    assert found.reason == NOT_CHECKED
    assert found.message.startswith("fit not checked: the estimate failed: --cache-type-v q8_0")


def test_a_heartbeat_within_the_staleness_is_trusted(facts: ModelFacts):
    edge = reading(facts, heartbeat_at="2026-01-01T11:58:30Z")  # 90 s before NOW
    assert verdict(edge).reason == FITS
    stricter = repo_config(fit={"nodeStaleSeconds": 60})
    assert verdict(edge, stricter).reason == NOT_CHECKED
