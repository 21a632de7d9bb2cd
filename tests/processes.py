"""Stopping the processes the tests start, the way a person would: Ctrl-C, then force."""

from __future__ import annotations

import signal
import subprocess


def interrupt(process: subprocess.Popen | None, timeout: float = 20.0) -> None:
    """SIGINT and wait; SIGKILL if it lingers. Always reaped, never left running."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)
