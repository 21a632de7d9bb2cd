"""Stopping the processes the tests start, the way a person would: Ctrl-C, then force."""

from __future__ import annotations

import signal
import subprocess

from llamacontroller.local.server import stop_process


def interrupt(process: subprocess.Popen | None, timeout: float = 20.0) -> None:
    """SIGINT and wait; SIGKILL if it lingers. Always reaped, never left running."""
    stop_process(process, signal.SIGINT, timeout)
