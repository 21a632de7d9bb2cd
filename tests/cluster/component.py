"""One program of the control plane (etcd, kube-apiserver, ...): a process group and its log file."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

# setpriv makes the kernel send SIGKILL to the program when the thread that started it dies, so a
# test run killed with SIGKILL leaves no control plane behind.
DIE_WITH_PARENT = ("setpriv", "--pdeathsig", "KILL", "--")


def log_tail(path: Path, lines: int = 30, max_bytes: int = 64 * 1024) -> str:
    """The last ``lines`` lines of a log file (read from its last ``max_bytes``)."""
    try:
        with path.open("rb") as log:
            log.seek(0, os.SEEK_END)
            size = log.tell()
            log.seek(max(0, size - max_bytes))
            text = log.read().decode(errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


class ComponentFailed(RuntimeError):
    """A program exited or never became healthy; the message ends with its last log lines."""


class Component:
    """A program started in its own process group, its output appended to ``log_path``."""

    def __init__(
        self, name: str, argv: Sequence[str], log_path: Path, env: Mapping[str, str] | None = None
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.env = dict(env) if env is not None else None
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [*DIE_WITH_PARENT, *self.argv],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,
            )

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def check_running(self) -> None:
        """Raises ComponentFailed with the log's tail if the program has exited."""
        if self.process is not None and self.process.poll() is not None:
            raise self.failure(f"exited with code {self.process.returncode}")

    def failure(self, what: str) -> ComponentFailed:
        return ComponentFailed(f"{self.name} {what}; the end of {self.log_path}:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        return log_tail(self.log_path, lines)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM to the process group, SIGKILL to what is left after ``timeout``; always reaped."""
        process = self.process
        if process is None:
            return
        if process.poll() is None:
            self._signal_group(process.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout)
        self._signal_group(process.pid, signal.SIGKILL)
        process.wait()

    @staticmethod
    def _signal_group(pgid: int, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signum)


def wait_until(
    check: Callable[[], object], timeout: float, what: str, component: Component | None = None
) -> None:
    """Polls ``check()`` until it returns truthy or ``timeout`` passes; a component that exits
    meanwhile fails at once with its log."""
    deadline = time.monotonic() + timeout
    while True:
        if component is not None:
            component.check_running()
        if check():
            return
        if time.monotonic() > deadline:
            if component is not None:
                raise component.failure(f"not {what} after {timeout:.0f} s")
            raise TimeoutError(f"not {what} after {timeout:.0f} s")
        time.sleep(0.05)
