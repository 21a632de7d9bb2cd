"""`llamacontroller up` as a user runs it: a process, LlamaModel files in a folder, a models folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from llamacontroller.demo_model import write_demo_model
from llamacontroller.local import state as state_file
from tests.ports import free_port
from tests.support.paths import REPO
from tests.support.polling import eventually


def llamamodel_file(folder: Path, name: str, **spec: Any) -> Path:
    body = {
        "apiVersion": "llamacontroller.io/v1alpha1",
        "kind": "LlamaModel",
        "metadata": {"name": name},
        "spec": {"model": {"path": "demo.gguf"}, "parameters": {"threads": 1, "ctxSize": 512}, **spec},
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(body))
    return path


class Local:
    """A workspace: files, models, config with free ports, and the `up` process."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.files = root / "llamamodels"
        self.models = root / "models"
        self.state_dir = root / "state"
        self.files.mkdir()
        write_demo_model(self.models / "demo.gguf")
        config = yaml.safe_load((REPO / "config" / "operator.yaml").read_text())
        ports = {slot: free_port() for slot in ("gpu0", "gpu1", "gpu2", "gpu3")}
        ports["both"] = ports["all"] = ports["gpu0"]
        config["ports"] = ports
        config["local"] = {"restartOnCrash": True, "maxRestartAttempts": 3}
        self.config = root / "operator.yaml"
        self.config.write_text(yaml.safe_dump(config))
        self.ports = ports
        self.gateway = f"127.0.0.1:{free_port()}"
        self.process: subprocess.Popen | None = None

    def cli(
        self, *args: str, check: bool = True, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess:
        result = subprocess.run(
            [sys.executable, "-m", "llamacontroller.cli", *args, "--state-dir", str(self.state_dir)],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=self.root,
            env={**os.environ, **env} if env is not None else None,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"llamacontroller {' '.join(args)}: {result.stdout}{result.stderr}")
        return result

    def up_args(self, *extra: str) -> list[str]:
        return [
            "up",
            "-f",
            str(self.files),
            "--config",
            str(self.config),
            "--models-dir",
            str(self.models),
            "--gateway-listen",
            self.gateway,
            *extra,
        ]

    def start(self, *extra: str, env: dict[str, str] | None = None) -> None:
        log = (self.root / "up.log").open("ab")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "llamacontroller.cli",
                *self.up_args(*extra),
                "--state-dir",
                str(self.state_dir),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.root,
            env={**os.environ, **env} if env is not None else None,
        )
        eventually(lambda: self.state() is not None, what="up to write its state")

    def state(self) -> dict[str, Any] | None:
        return state_file.running_state(self.state_dir)

    def servers(self) -> dict[str, dict[str, Any]]:
        return {s["slot"]: s for s in (self.state() or {}).get("servers", [])}

    def phase_of(self, slot: str) -> str | None:
        return self.servers().get(slot, {}).get("phase")

    def log(self) -> str:
        path = self.root / "up.log"
        return path.read_text(errors="replace") if path.exists() else ""
