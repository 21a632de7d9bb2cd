"""`llamacontroller estimate`: a LlamaModel and a GGUF file in, the memory per GPU out (a table, or
JSON bytes); what a person gets wrong ends in one `error:` line and exit 2. Run as a process from an
empty folder, as a user would."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from llamacontroller.demo_model import DemoShape, write_demo_model, write_demo_projector
from tests.cli.test_errors import VALID, assert_user_error, llamacontroller, write

pytestmark = pytest.mark.timeout(120)
MiB = 1 << 20


def lm(folder: Path, name: str = "lm.yaml", **spec: object) -> str:
    body = {**VALID, "spec": {**VALID["spec"], **spec}}
    return write(folder, name, yaml.safe_dump(body))


@pytest.fixture
def model(folder: Path) -> str:
    write_demo_model(folder / "tiny.gguf", shape=DemoShape(block_count=4))
    return "tiny.gguf"


def test_the_table_names_each_gpu_of_the_slot_and_the_host(folder: Path, model: str):
    run = llamacontroller(folder, "estimate", "-f", lm(folder, gpu={"mode": "both"}), "--model", model)
    assert run.code == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0] == f"default/tiny: slot both on node-a, model {model}"
    assert "ctx 512 for 1 sequence" in lines[1] and "5/5 layers on GPUs" in lines[1]
    assert lines[2].split() == ["DEVICE", "WEIGHTS", "KV", "CACHE", "COMPUTE", "OVERHEAD", "TOTAL"]
    assert [line.split()[:2] for line in lines[3:5]] == [["GPU", "0"], ["GPU", "1"]]
    assert lines[5].startswith("GPUs") and lines[6].startswith("host")


def test_json_gives_bytes_per_gpu_and_their_total(folder: Path, model: str):
    file = lm(folder, gpu={"mode": "single", "gpuId": 1}, parameters={"ctxSize": 1024, "parallel": 2})
    run = llamacontroller(
        folder, "estimate", "-f", file, "--model", model, "-o", "json", "--overhead-mib", "300"
    )
    assert run.code == 0, run.stderr
    estimate = json.loads(run.stdout)
    assert (estimate["slot"], estimate["ctxSize"], estimate["ctxPerSequence"], estimate["parallel"]) == (
        "gpu1",
        1024,
        512,
        2,
    )
    (gpu,) = estimate["gpus"]
    assert gpu["gpu"] == 1 and gpu["overhead"] == 300 * MiB
    # 4 layers x 1024 cells x (64 keys + 64 values) x 2 bytes (f16)
    assert gpu["kvCache"] == 4 * 1024 * 128 * 2
    assert gpu["total"] == gpu["weights"] + gpu["kvCache"] + gpu["compute"] + gpu["overhead"]
    assert estimate["total"] == gpu["total"]


def test_with_every_gpu_visible_the_idle_gpu_still_pays_the_overhead(folder: Path, model: str):
    write(folder, "all-visible.yaml", "gpuStrategy: allVisible\n")
    file = lm(folder, gpu={"mode": "single", "gpuId": 1})
    run = llamacontroller(
        folder, "estimate", "-f", file, "--model", model, "--config", "all-visible.yaml", "-o", "json"
    )
    assert run.code == 0, run.stderr
    idle, used = json.loads(run.stdout)["gpus"]
    assert (idle["gpu"], idle["weights"], idle["overhead"]) == (0, 0, 512 * MiB)
    assert used["gpu"] == 1 and used["weights"] > 0


def test_the_overhead_is_the_configs_unless_the_option_says_otherwise(folder: Path, model: str):
    write(folder, "light.yaml", "fit:\n  gpuOverheadMiB: 100\n")
    file = lm(folder, gpu={"mode": "single", "gpuId": 0})

    def overhead(*more: str) -> int:
        run = llamacontroller(folder, "estimate", "-f", file, "--model", model, "-o", "json", *more)
        assert run.code == 0, run.stderr
        return int(json.loads(run.stdout)["gpus"][0]["overhead"])

    assert overhead() == 512 * MiB  # the built-in fit.gpuOverheadMiB
    assert overhead("--config", "light.yaml") == 100 * MiB
    assert overhead("--config", "light.yaml", "--overhead-mib", "0") == 0
    assert_user_error(
        llamacontroller(folder, "estimate", "-f", file, "--model", model, "--overhead-mib", "-1"),
        "--overhead-mib -1: not a size",
    )


def test_a_missing_model_file(folder: Path):
    assert_user_error(
        llamacontroller(folder, "estimate", "-f", lm(folder), "--model", "nope.gguf"),
        "--model nope.gguf: No such file or directory",
    )


def test_a_file_that_is_not_gguf(folder: Path):
    write(folder, "notes.gguf", "hello")
    assert_user_error(
        llamacontroller(folder, "estimate", "-f", lm(folder), "--model", "notes.gguf"), "not a GGUF file"
    )


def test_a_gguf_file_that_is_not_a_model(folder: Path):
    write_demo_projector(folder / "mmproj.gguf")
    assert_user_error(
        llamacontroller(folder, "estimate", "-f", lm(folder), "--model", "mmproj.gguf"),
        "LlamaModel default/tiny: ",
        "mmproj.gguf: clip.block_count is missing",
    )


def test_an_invalid_llamamodel_and_a_missing_llamamodel_file(folder: Path, model: str):
    bad = lm(folder, "bad.yaml", gpu={"mode": "triple"})
    assert_user_error(llamacontroller(folder, "estimate", "-f", bad, "--model", model), "spec.gpu.mode")
    assert_user_error(
        llamacontroller(folder, "estimate", "-f", "nope.yaml", "--model", model), "nope.yaml: No such file"
    )


def test_two_llamamodels_in_one_file(folder: Path, model: str):
    write(folder, "two.yaml", yaml.safe_dump_all([VALID, {**VALID, "metadata": {"name": "other"}}]))
    assert_user_error(
        llamacontroller(folder, "estimate", "-f", "two.yaml", "--model", model), "2 LlamaModels in it"
    )


def test_a_quantized_v_cache_without_flash_attention_is_refused(folder: Path, model: str):
    file = lm(folder, parameters={"flashAttn": "off", "extraArgs": ["-ctv", "q8_0"]})
    assert_user_error(
        llamacontroller(folder, "estimate", "-f", file, "--model", model),
        "--cache-type-v q8_0 needs flash attention",
    )
