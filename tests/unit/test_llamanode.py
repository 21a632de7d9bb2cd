"""The LlamaNode resource: a node agent's reading survives the trip through JSON in camelCase."""

from __future__ import annotations

import pytest

from llamacontroller.demo_model import write_demo_model
from llamacontroller.fit.model import ModelFacts, model_facts
from llamacontroller.gguf_header import read_header
from llamacontroller.llamanode import Gpu, GpuProcess, LlamaNodeStatus, ModelFile, parse_llamanode
from llamacontroller.resource import InvalidSpec

GiB = 1 << 30


def test_a_reading_with_model_facts_round_trips_through_json(tmp_path):
    facts = model_facts(read_header(write_demo_model(tmp_path / "tiny.gguf")))
    status = LlamaNodeStatus(
        nvml="ok",
        gpus=[
            Gpu(
                index=1,
                uuid="GPU-1",
                name="NVIDIA GeForce RTX 3090",
                memory_total=24 * GiB,
                memory_used=5 * GiB,
                foreign_memory=3 * GiB,
                processes=[
                    GpuProcess(pid=7, name="python", used_memory=3 * GiB),
                    GpuProcess(pid=9, name="llama-server", used_memory=2 * GiB, llama_model="ns/phi"),
                ],
                holders=["ns/phi"],
                summary="held by ns/phi; 3.0 GiB by others",
            )
        ],
        models=[ModelFile(path="tiny.gguf", size=10, modified="2026-12-07T00:00:00Z", facts=facts)],
    )
    body = {"metadata": {"name": "gpu-node-1"}, "status": status.model_dump(by_alias=True, mode="json")}
    assert body["status"]["gpus"][0]["foreignMemory"] == 3 * GiB
    assert body["status"]["models"][0]["facts"]["layerBytes"] == list(facts.layer_bytes)
    node = parse_llamanode(body)
    assert node.status == status
    assert node.status.model_file("tiny.gguf").facts == facts
    assert isinstance(node.status.model_file("tiny.gguf").facts, ModelFacts)
    gpu = node.status.gpu(1)
    assert gpu is not None and gpu.memory_free == 19 * GiB and node.status.gpu(0) is None
    assert [p.foreign for p in gpu.processes] == [True, False]


def test_fields_of_a_newer_agent_are_ignored_and_a_broken_reading_is_refused():
    node = parse_llamanode({"metadata": {"name": "n"}, "status": {"nvml": "ok", "powerDraw": 300}})
    assert node.status.nvml == "ok"
    with pytest.raises(InvalidSpec, match=r"status\.gpus\[0\]\.memoryTotal"):
        parse_llamanode({"metadata": {"name": "n"}, "status": {"gpus": [{"index": 0, "memoryUsed": 1}]}})
