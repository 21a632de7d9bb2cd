"""The same LlamaModel files on one machine: real llama-server processes, the same slots and args."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest

from llamacontroller.local.state import alive as pid_alive
from tests.support.fake_nvml import process_environment, recording_with
from tests.support.local_runtime import Local, llamamodel_file
from tests.support.polling import eventually

REAL_NVML = os.environ.get("LLAMACONTROLLER_REAL_NVML") == "1"  # a machine with an NVIDIA GPU

pytestmark = pytest.mark.timeout(180)


def answers(port: int, model: str) -> bool:
    response = httpx.post(
        f"http://127.0.0.1:{port}/v1/chat/completions",
        json={"messages": [{"role": "user", "content": "hello"}], "max_tokens": 4},
        timeout=60,
    )
    return response.status_code == 200 and response.json()["model"] == model


def test_two_slots_serve_side_by_side_and_both_waits(local: Local):
    llamamodel_file(local.files, "a", gpu={"mode": "single", "gpuId": 0})
    llamamodel_file(local.files, "b", gpu={"mode": "single", "gpuId": 1})
    llamamodel_file(local.files, "c", gpu={"mode": "both"})
    local.start()
    eventually(lambda: local.phase_of("gpu0") == local.phase_of("gpu1") == "Ready", timeout=60)
    assert answers(local.ports["gpu0"], "a:latest") and answers(local.ports["gpu1"], "b:latest")
    state = local.state()
    assert state["waiting"] == {"default/c": "both on local is held by default/a (gpu0), default/b (gpu1)"}
    cmdline = Path(f"/proc/{local.servers()['gpu1']['pid']}/cmdline").read_text()
    args = " ".join(cmdline.split("\0"))
    assert "--split-mode none --main-gpu 0" in args and f"--port {local.ports['gpu1']}" in args
    environ = Path(f"/proc/{local.servers()['gpu1']['pid']}/environ").read_bytes().split(b"\0")
    assert b"CUDA_VISIBLE_DEVICES=1" in environ  # it sees GPU 1 only, as the Pod's container would

    table = local.cli("status").stdout
    assert table.splitlines()[0].split() == ["SLOT", "PORT", "MODEL", "PHASE", "PID", "UPTIME", "RESTARTS"]
    assert "waiting  default/c: both on local is held by" in table
    assert "gpus     no NVML: libnvidia-ml.so.1 not found" in table or REAL_NVML  # this machine
    # The same per-GPU view with the fake of NVML, whose recording names the servers' real PIDs
    # beside a foreign process: each GPU held by its server's LlamaModel, or occupied by the other.
    pids = {slot: server["pid"] for slot, server in local.servers().items()}
    recording = local.root / "nvidia-smi.xml"
    recording.write_text(
        recording_with(
            {
                0: [(pids["gpu0"], "llama-server", 900)],
                1: [(pids["gpu1"], "llama-server", 900), (1, "Xorg", 64)],
            }
        )
    )
    gpus = local.cli("status", env=process_environment(recording)).stdout.splitlines()[-2:]
    assert gpus[0].startswith("gpu 0    NVIDIA GeForce RTX 3090  0.9/24.0 GiB  held by default/a"), gpus
    assert gpus[1].endswith("held by default/b; occupied: 0.1 GiB by others"), gpus
    assert "main: model loaded" in local.cli("logs", "gpu0").stdout or local.cli("logs", "gpu0").stdout


def test_up_checks_that_a_model_fits_on_this_machines_gpus(local: Local):
    """With the fake of NVML: a model too large for its GPU is refused before anything starts; one
    whose GPU another process occupies waits, named so, and starts once the process is gone."""
    llamamodel_file(local.files, "a", gpu={"gpuId": 0})
    recording = local.root / "nvidia-smi.xml"
    recording.write_text(recording_with({}).replace("<total>24576 MiB</total>", "<total>256 MiB</total>", 1))
    refused = local.cli(*local.up_args(), check=False, env=process_environment(recording))
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert refused.stderr.startswith("error: default/a: needs "), refused.stderr
    assert "GPU 0 has 256.0 MiB" in refused.stderr and "it never fits there" in refused.stderr

    recording.write_text(recording_with({0: [(os.getpid(), "python", 2048)]}))
    local.start(env=process_environment(recording))
    eventually(lambda: "default/a" in (local.state() or {}).get("waiting", {}), what="a to wait")
    assert "2.0 GiB used by other processes" in local.state()["waiting"]["default/a"]
    assert local.servers() == {}
    recording.write_text(recording_with({}))  # the other process has gone
    eventually(lambda: local.phase_of("gpu0") == "Ready", timeout=60, what="a on gpu0")
    assert local.state()["waiting"] == {}


def test_removing_files_unloads_and_frees_the_slot_for_the_waiter(local: Local):
    llamamodel_file(local.files, "a", gpu={"gpuId": 0})
    b = llamamodel_file(local.files, "b", gpu={"gpuId": 1})
    llamamodel_file(local.files, "c", gpu={"mode": "both"})
    local.start()
    eventually(lambda: local.phase_of("gpu1") == "Ready", timeout=60)
    pids = {slot: s["pid"] for slot, s in local.servers().items()}

    (local.files / "a.yaml").unlink()
    local.cli(*local.up_args())  # a second `up` hands the files to the running one
    assert not pid_alive(pids["gpu0"])
    assert local.state()["waiting"] == {"default/c": "both on local is held by default/b (gpu1)"}

    b.unlink()
    local.cli(*local.up_args())
    assert not pid_alive(pids["gpu1"])
    eventually(lambda: local.phase_of("both") == "Ready", timeout=60, what="c on both")
    assert answers(local.ports["both"], "c:latest")


def test_a_killed_server_is_restarted_and_reported(local: Local):
    llamamodel_file(local.files, "a")
    local.start()
    eventually(lambda: local.phase_of("gpu0") == "Ready", timeout=60)
    first = local.servers()["gpu0"]["pid"]
    os.kill(first, signal.SIGKILL)
    eventually(
        lambda: local.servers()["gpu0"]["restarts"] == 1 and local.phase_of("gpu0") == "Ready", timeout=60
    )
    assert local.servers()["gpu0"]["pid"] != first


def test_watch_switches_a_changed_model_unload_then_load(local: Local):
    llamamodel_file(local.files, "a")
    local.start("--watch")
    eventually(lambda: local.phase_of("gpu0") == "Ready", timeout=60)
    old = local.servers()["gpu0"]["pid"]
    llamamodel_file(local.files, "a", parameters={"threads": 1, "ctxSize": 1024})
    eventually(
        lambda: local.servers().get("gpu0", {}).get("pid") not in (None, old), timeout=60, what="switch"
    )
    assert not pid_alive(old)
    eventually(lambda: local.phase_of("gpu0") == "Ready", timeout=60)


def test_down_leaves_no_process_behind(local: Local):
    llamamodel_file(local.files, "a", gpu={"gpuId": 0})
    llamamodel_file(local.files, "b", gpu={"gpuId": 1})
    local.start()
    eventually(lambda: len([s for s in local.servers().values() if s["pid"]]) == 2, timeout=60)
    pids = [s["pid"] for s in local.servers().values()] + [local.process.pid]
    assert local.cli("down").stdout.strip() == "stopped"
    local.process.wait(30)
    assert [pid for pid in pids if pid_alive(pid)] == []
    assert local.cli("status", check=False).returncode == 1


def test_servers_do_not_outlive_a_killed_runtime(local: Local):
    llamamodel_file(local.files, "a")
    local.start()
    eventually(lambda: local.servers().get("gpu0", {}).get("pid"), timeout=60)
    server = local.servers()["gpu0"]["pid"]
    local.process.kill()
    local.process.wait(10)
    eventually(lambda: not pid_alive(server), timeout=30, what="the orphaned server to die")


def test_invalid_files_seen_while_running_are_reported_and_others_served(local: Local):
    """At start `up` refuses invalid files (tests/cli); once running, it reports them and serves on."""
    llamamodel_file(local.files, "good")
    local.start("--watch")
    eventually(lambda: local.phase_of("gpu0") == "Ready", timeout=60)
    llamamodel_file(local.files, "bad", gpu={"mode": "triple"})
    (local.files / "broken.yaml").write_text("kind: LlamaModel\nspec: [unclosed")
    invalid = eventually(lambda: len(local.state()["invalid"]) == 2 and local.state()["invalid"], timeout=30)
    assert "spec.gpu.mode: Input should be 'single' or 'both'" in invalid["default/bad"]
    assert any(key.endswith("broken.yaml") and "cannot read" in message for key, message in invalid.items())
    assert local.phase_of("gpu0") == "Ready"


def test_the_gateway_answers_the_official_ollama_client_for_both_models(local: Local):
    import ollama

    llamamodel_file(local.files, "a", gpu={"gpuId": 0})
    llamamodel_file(local.files, "b", gpu={"gpuId": 1}, model={"name": "bee:q4", "path": "demo.gguf"})
    local.start()
    eventually(lambda: local.phase_of("gpu0") == local.phase_of("gpu1") == "Ready", timeout=60)
    assert local.state()["gateway"] == f"http://{local.gateway}"
    client = ollama.Client(host=f"http://{local.gateway}")
    eventually(lambda: {m.model for m in client.list().models} == {"a:latest", "bee:q4"}, what="both listed")
    for model in ("a", "bee:q4"):
        answer = client.chat(
            model=model, messages=[{"role": "user", "content": "hi"}], options={"num_predict": 4}
        )
        assert answer.message.role == "assistant" and answer.message.content
        assert answer.eval_count == 4
    with pytest.raises(ollama.ResponseError) as missing:
        client.chat(model="nope", messages=[{"role": "user", "content": "hi"}])
    assert missing.value.status_code == 404


def test_ctrl_c_stops_everything_within_seconds_whatever_is_in_flight(local: Local):
    """A client polling /api/ps every 50 ms and a stream that never ends by itself (context shift)
    do not hold Ctrl-C up: the runtime, its gateway and its servers are gone within seconds."""
    llamamodel_file(
        local.files, "a", parameters={"threads": 1, "ctxSize": 512, "extraArgs": ["--context-shift"]}
    )
    local.start()
    eventually(lambda: local.phase_of("gpu0") == "Ready", timeout=60)
    server = local.servers()["gpu0"]["pid"]
    url, done, streamed = f"http://{local.gateway}", threading.Event(), threading.Event()

    def poll() -> None:
        while not done.is_set():
            with contextlib.suppress(httpx.HTTPError):
                httpx.get(f"{url}/api/ps", timeout=5)
            time.sleep(0.05)

    def stream() -> None:
        body = {"model": "a", "prompt": "hello", "options": {"num_predict": -1}}
        with (
            contextlib.suppress(httpx.HTTPError),
            httpx.stream("POST", f"{url}/api/generate", json=body) as answer,
        ):
            for _ in answer.iter_lines():
                streamed.set()

    clients = [threading.Thread(target=poll), threading.Thread(target=stream)]
    for client in clients:
        client.start()
    try:
        assert streamed.wait(30), "the stream did not start"
        local.process.send_signal(signal.SIGINT)
        local.process.wait(15)  # raises if Ctrl-C is held up
        assert not pid_alive(server)
    finally:
        done.set()
        for client in clients:
            client.join(30)
