"""One llama-server process: started with rendered arguments, healthy or explained, stopped by pid."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import httpx

PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Linux: the kernel sends SIGTERM to the server when its supervisor dies, even by SIGKILL, so a
    crashed supervisor never leaves orphan servers holding GPUs."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class ServerFailed(RuntimeError):
    """llama-server exited or never became healthy; the message carries its last log lines."""


class LlamaServerProcess:
    def __init__(
        self,
        binary: Path,
        args: Sequence[str],
        host: str,
        port: int,
        log_path: Path,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.binary = binary
        self.args = list(args)
        self.env = dict(env or {})  # over this process's own environment
        self.url = f"http://{host}:{port}"
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self._terminated = False  # SIGTERM sent: a second one would make llama-server quit at once

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def start(self) -> None:
        self._terminated = False
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [str(self.binary), *self.args],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **self.env},
                start_new_session=True,  # Ctrl-C of a terminal reaches us, not the servers directly
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def health(self) -> int | None:
        """The status code of /health (503 while loading, 200 when ready), None if unreachable."""
        try:
            return httpx.get(f"{self.url}/health", timeout=2.0).status_code
        except httpx.HTTPError:
            return None

    def exited(self) -> int | None:
        """The exit code once the process has ended, else None."""
        return None if self.process is None else self.process.poll()

    def wait_healthy(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                code = None if self.process is None else self.process.returncode
                raise ServerFailed(f"llama-server exited with code {code}:\n{self.log_tail()}")
            if self.health() == 200:
                return
            time.sleep(0.05)
        raise ServerFailed(f"llama-server not healthy after {timeout:.0f} s:\n{self.log_tail()}")

    def terminate(self) -> None:
        """SIGTERM without waiting: ``stop`` then waits for it (and kills what lingers)."""
        if self.process is not None and self.process.poll() is None and not self._terminated:
            self.process.terminate()
            self._terminated = True

    def stop(self, timeout: float = 10.0) -> None:
        stop_process(self.process, timeout=timeout, signalled=self._terminated)


def stop_process(
    process: subprocess.Popen[bytes] | None,
    first: int = signal.SIGTERM,
    timeout: float = 10.0,
    signalled: bool = False,
) -> None:
    """`first` (SIGTERM; not again when `signalled`), then SIGKILL if it lingers; waits, so no
    zombie or orphan is left."""
    if process is None or process.poll() is not None:
        return
    if not signalled:
        process.send_signal(first)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout)
