"""`llamacontroller demo`: the whole local path once, end to end, on a fresh machine.

It writes the tiny demo model, starts `up` with examples/local, asks the model through the Ollama
API of the gateway (as `curl` or any Ollama client would), prints the answer and stops everything.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx

from llamacontroller.demo_model import write_demo_model
from llamacontroller.local import state as state_file


def _wait_ready(state_dir: Path, process: subprocess.Popen[bytes], timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"llamacontroller up exited with code {process.returncode}")
        state = state_file.running_state(state_dir)
        if state and state["servers"] and all(s["phase"] == "Ready" for s in state["servers"]):
            return state
        time.sleep(0.2)
    raise TimeoutError(f"the demo model was not ready within {timeout:.0f} s")


def run_demo(files: Path, config: str, state_dir: Path, gateway: str, prompt: str) -> int:
    models = state_dir / "models"
    print(f"writing the demo model: {write_demo_model(models / 'demo.gguf')}")
    command = [
        sys.executable, "-m", "llamacontroller.cli", "up", "-f", str(files), "--config", config,
        "--models-dir", str(models), "--state-dir", str(state_dir), "--gateway-listen", gateway,
    ]  # fmt: skip
    print("$ llamacontroller up -f", files)
    log = state_dir / "up.log"
    with log.open("ab") as output:
        up = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
    try:
        try:
            state = _wait_ready(state_dir, up, timeout=120)
        except (RuntimeError, TimeoutError) as exc:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-10:])
            print(f"error: {exc}\n{tail}", file=sys.stderr)
            return 1
        print(state_file.status_table(state))
        model = state["servers"][0]["model"]
        print(f'$ curl http://{gateway}/api/generate -d \'{{"model": "{model}", "prompt": "{prompt}"}}\'')
        answer = httpx.post(
            f"http://{gateway}/api/generate",
            json={"model": model, "prompt": prompt, "stream": False, "options": {"num_predict": 24}},
            timeout=120,
        )
        answer.raise_for_status()
        body = answer.json()
        print(f"{model} answers: {body['response']!r} ({body['eval_count']} tokens)")
        return 0
    finally:
        up.terminate()
        up.wait(60)
        print("stopped: no llama-server left running")
