"""`llamacontroller demo`: the whole local path once, end to end, on a fresh machine.

It fetches the real small model on first use (SmolLM2-135M-Instruct, see real_model.py), starts
`up` with the demo's LlamaModel, asks the model through the Ollama API of the gateway (as `curl` or
any Ollama client would), prints the answer and stops everything.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from llamacontroller.errors import UserError
from llamacontroller.local import state as state_file
from llamacontroller.local.binary import find_llama_server
from llamacontroller.local.real_model import SMOLLM2, models_dir, real_model_path

READY_TIMEOUT = 120.0
ANSWER_TOKENS = 64


def demo_llamamodel() -> dict[str, Any]:
    """The demo's LlamaModel: the real small model on GPU 0's slot (CPU where there is no GPU)."""
    return {
        "apiVersion": "llamacontroller.io/v1alpha1",
        "kind": "LlamaModel",
        "metadata": {"name": "smollm2"},
        "spec": {
            "model": {"name": SMOLLM2.name, "path": SMOLLM2.file_name},
            "gpu": {"mode": "single", "gpuId": 0},
            "parameters": {"ctxSize": 2048},
        },
    }


def _wait_ready(state_dir: Path, process: subprocess.Popen[bytes], log: Path) -> dict[str, Any]:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            errors = [line for line in _tail(log, 20) if line.startswith("error: ")]
            raise UserError(
                "\n".join(line.removeprefix("error: ") for line in errors) or _stopped(process, log)
            )
        state = state_file.running_state(state_dir)
        if state and state["servers"] and all(s["phase"] == "Ready" for s in state["servers"]):
            return state
        time.sleep(0.2)
    raise UserError(f"the demo model was not ready within {READY_TIMEOUT:.0f} s; its log: {log}")


def _stopped(process: subprocess.Popen[bytes], log: Path) -> str:
    return f"llamacontroller up exited with code {process.returncode}: " + " | ".join(_tail(log, 3))


def _tail(log: Path, lines: int) -> list[str]:
    return log.read_text(errors="replace").splitlines()[-lines:] if log.exists() else []


def run_demo(
    config: str | None, state_dir: Path, gateway: str, prompt: str, llama_server: str | None = None
) -> int:
    binary = find_llama_server(llama_server)  # before a download, so a missing server fails at once
    model = real_model_path(progress=print)
    files = state_dir / "llamamodels"
    files.mkdir(parents=True, exist_ok=True)
    (files / "smollm2.yaml").write_text(yaml.safe_dump(demo_llamamodel(), sort_keys=False))
    command = [
        sys.executable, "-m", "llamacontroller.cli", "up", "-f", str(files),
        "--models-dir", str(models_dir()), "--state-dir", str(state_dir),
        "--gateway-listen", gateway, "--llama-server", str(binary),
        *(["--config", config] if config else []),
    ]  # fmt: skip
    print(f"$ llamacontroller up -f {files} --models-dir {model.parent}")
    log = state_dir / "up.log"
    log.unlink(missing_ok=True)
    with log.open("ab") as output:
        up = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
    try:
        state = _wait_ready(state_dir, up, log)
        print(state_file.status_table(state))
        name = state["servers"][0]["model"]
        ask = {"model": name, "messages": [{"role": "user", "content": prompt}], "stream": False}
        print(f"$ curl http://{gateway}/api/chat -d '{json.dumps(ask)}'")
        options = {"num_predict": ANSWER_TOKENS, "temperature": 0}
        answer = httpx.post(f"http://{gateway}/api/chat", json={**ask, "options": options}, timeout=120)
        if answer.status_code != 200:
            raise UserError(f"the gateway answered {answer.status_code}: {answer.text[:200]}")
        body = answer.json()
        print(f"{name} answers: {body['message']['content'].strip()}")
        print(f"({body['eval_count']} tokens in {body['eval_duration'] / 1e9:.2f} s)")
        return 0
    finally:
        up.terminate()
        up.wait(60)
        print("stopped: no llama-server left running")
