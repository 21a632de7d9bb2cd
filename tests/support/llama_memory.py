"""The memory estimate next to what llama-server itself reports when it loads a model.

llama-server logs, at verbosity 4 (``-lv 4``), the buffers it allocates: ``load_tensors: <buffer>
model buffer size = X MiB`` (weights), ``llama_kv_cache: size = X MiB`` and ``sched_reserve: <buffer>
compute buffer size = X MiB``. With ``--fit`` (the default) it loads the model twice, first without
memory to project its fit; the figures of the second load are the ones it keeps. On this project's
CPU build every buffer is the host's, so they are compared with the estimate for a server without
GPUs (everything on the host). ``CPU_REPACK`` buffers (Q4_0 and IQ4_NL weights copied into the CPU's
interleaved layout, besides the mapped file) exist on CPUs only and are left out.

``python -m tests.support.llama_memory`` prints the table of docs/decisions/fit-estimate.md.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llamacontroller.demo_model import DemoShape, write_demo_model
from llamacontroller.fit.estimate import Estimate, estimate, server_settings
from llamacontroller.fit.model import model_facts
from llamacontroller.gguf_header import read_header
from llamacontroller.local.binary import find_llama_server
from llamacontroller.local.real_model import real_model_path
from llamacontroller.local.server import LlamaServerProcess
from llamacontroller.render.args import merged_parameters
from llamacontroller.resource import parse_llamamodel
from tests.ports import free_port
from tests.support.builders import llamamodel, repo_config
from tests.support.servers import HOST, local_args, local_env

MiB = 1 << 20
REAL = "SmolLM2-135M"
# wider than the tiny model, so that its quantized weights are megabytes (the log rounds to 0.01 MiB)
WIDE = DemoShape(embedding_length=256, feed_forward_length=768, head_count=8, head_count_kv=2, block_count=8)


@dataclass(frozen=True)
class Case:
    name: str
    model: DemoShape | str  # a shape of the demo model, or REAL
    parameters: dict[str, Any] = field(default_factory=dict)


CASES = [
    Case("tiny", DemoShape(), {"ctxSize": 1024}),
    Case("tiny, ctx 4096", DemoShape(), {"ctxSize": 4096}),
    Case("tiny, parallel 3", DemoShape(), {"ctxSize": 2048, "parallel": 3}),
    Case("tiny, parallel auto (unified)", DemoShape(), {"ctxSize": 2048, "extraArgs": ["-np", "-1"]}),
    Case("tiny, flash attention off", DemoShape(), {"ctxSize": 1024, "flashAttn": "off"}),
    Case("tiny, 1 layer", DemoShape(block_count=1), {"ctxSize": 1024}),
    Case("wide, 8 layers f32", WIDE, {"ctxSize": 2048}),
    Case("wide, 1 layer", DemoShape(**{**WIDE.__dict__, "block_count": 1}), {"ctxSize": 2048}),
    Case("wide, 4 layers", DemoShape(**{**WIDE.__dict__, "block_count": 4}), {"ctxSize": 2048}),
    Case("wide, 16 layers", DemoShape(**{**WIDE.__dict__, "block_count": 16}), {"ctxSize": 2048}),
    Case("wide, f16", DemoShape(**{**WIDE.__dict__, "weight_type": "F16"}), {"ctxSize": 2048}),
    Case("wide, q8_0", DemoShape(**{**WIDE.__dict__, "weight_type": "Q8_0"}), {"ctxSize": 2048}),
    Case("wide, q4_1", DemoShape(**{**WIDE.__dict__, "weight_type": "Q4_1"}), {"ctxSize": 2048}),
    Case("wide, K cache q8_0", WIDE, {"ctxSize": 2048, "cacheTypeK": "q8_0"}),
    Case("wide, K and V q4_0", WIDE, {"ctxSize": 2048, "cacheTypeK": "q4_0", "cacheTypeV": "q4_0"}),
    Case("wide, parallel 2, ubatch 256", WIDE, {"ctxSize": 4096, "parallel": 2, "extraArgs": ["-ub", "256"]}),
    Case(REAL, REAL, {"ctxSize": 4096}),
    Case(f"{REAL}, parallel 4", REAL, {"ctxSize": 8192, "parallel": 4}),
    Case(f"{REAL}, parallel auto (unified)", REAL, {"ctxSize": 4096, "extraArgs": ["-np", "-1"]}),
    Case(f"{REAL}, K cache q8_0", REAL, {"ctxSize": 4096, "cacheTypeK": "q8_0"}),
]

# Measured and reported in the decision, not asserted: the tiny model's width with 3 layers or more,
# where the allocator replay misses one activation tensor of the real layout's fragmentation.
MISSES = [
    Case("tiny, 3 layers", DemoShape(block_count=3), {"ctxSize": 1024}),
    Case("tiny, 8 layers", DemoShape(block_count=8), {"ctxSize": 1024}),
    Case("tiny, 8 layers, ctx 8192", DemoShape(block_count=8), {"ctxSize": 8192}),
]


@dataclass(frozen=True)
class Figures:
    """Bytes of weights, KV cache and compute buffer."""

    weights: int
    kv_cache: int
    compute: int


def _mib(text: str) -> int:
    return round(float(text) * MiB)


def reported(log: str) -> Figures:
    """What llama-server's log says it allocated for the model it serves (the last load's lines)."""
    load = log[log.rindex("load_tensors: loading model tensors") :]
    weights = sum(
        _mib(size)
        for buffer, size in re.findall(r"load_tensors:\s+(\S+) model buffer size =\s+([\d.]+) MiB", load)
        if buffer != "CPU_REPACK"
    )
    kv = re.findall(r"llama_kv_cache: size =\s+([\d.]+) MiB", load)
    reserve = load[load.rindex("sched_reserve: reserving") :]
    compute = sum(
        _mib(size)
        for size in re.findall(r"sched_reserve:\s+\S+ compute buffer size =\s+([\d.]+) MiB", reserve)
    )
    return Figures(weights, _mib(kv[-1]), compute)


def estimated(result: Estimate) -> Figures:
    return Figures(result.host.weights, result.host.kv_cache, result.host.compute)


def model_file(case: Case, folder: Path) -> Path:
    if case.model == REAL:
        return real_model_path()
    assert isinstance(case.model, DemoShape)
    path = folder / f"demo-{abs(hash(case.model))}.gguf"
    return path if path.exists() else write_demo_model(path, shape=case.model)


def measure(case: Case, binary: Path, folder: Path) -> tuple[Figures, Figures]:
    """(the estimate, what llama-server reports) for the case's LlamaModel, rendered as for a Pod."""
    model = model_file(case, folder)
    extra = [*case.parameters.get("extraArgs", []), "-lv", "4"]
    body = llamamodel(parameters={**case.parameters, "threads": 1, "extraArgs": extra})
    config = repo_config()
    port = free_port()
    server = LlamaServerProcess(
        binary, local_args(body, port, model), HOST, port, folder / f"server-{port}.log", env=local_env(body)
    )
    try:
        server.start()
        server.wait_healthy()
    finally:
        server.stop()
    settings = server_settings(merged_parameters(parse_llamamodel(body), config))
    result = estimate(model_facts(read_header(model)), settings, ())
    return estimated(result), reported(server.log_path.read_text(errors="replace"))


def deviation(estimate_: int, reported_: int) -> float:
    return (estimate_ - reported_) / reported_


def _row(case: Case, ours: Figures, theirs: Figures) -> str:
    cells = [case.name]
    for what in ("weights", "kv_cache", "compute"):
        a, b = getattr(ours, what), getattr(theirs, what)
        cells.append(f"{a / MiB:.2f} / {b / MiB:.2f} ({100 * deviation(a, b):+.1f} %)")
    return "| " + " | ".join(cells) + " |"


def main() -> None:
    binary = find_llama_server()
    print("| case | weights MiB (estimate / llama-server) | KV cache MiB | compute buffer MiB |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        for case in CASES:
            print(_row(case, *measure(case, binary, Path(folder))), flush=True)
        print("\nNot asserted (the misses):\n")
        for case in MISSES:
            print(_row(case, *measure(case, binary, Path(folder))), flush=True)


if __name__ == "__main__":
    main()
