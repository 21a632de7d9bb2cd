"""Keeps local llama-server processes alive: restarts crashed ones with backoff, up to a limit, and
says at every moment what each slot is doing."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from llamacontroller.local.plan import LOCAL_HOST, LocalServer
from llamacontroller.local.probe import probe_passes
from llamacontroller.local.server import LlamaServerProcess

log = logging.getLogger(__name__)

BACKOFF_BASE_SECONDS = 1.0
BACKOFF_MAX_SECONDS = 30.0
PROBE_EVERY_SECONDS = 2.0


@dataclass
class Supervised:
    """One slot's server and what is known of it."""

    server: LocalServer
    process: LlamaServerProcess
    phase: str = "Starting"
    message: str = ""
    restarts: int = 0
    started_at: float = field(default_factory=time.time)
    restart_at: float | None = None
    probed_at: float = 0.0


def backoff(restarts: int) -> float:
    """1 s, 2 s, 4 s, ... up to 30 s between restarts of a crashing server."""
    return min(BACKOFF_BASE_SECONDS * float(2 ** max(restarts - 1, 0)), BACKOFF_MAX_SECONDS)


class Supervisor:
    def __init__(self, binary: Path, log_dir: Path, restart_on_crash: bool, max_restarts: int) -> None:
        self.binary = binary
        self.log_dir = log_dir
        self.restart_on_crash = restart_on_crash
        self.max_restarts = max_restarts
        self.slots: dict[str, Supervised] = {}

    def log_path(self, slot: str) -> Path:
        return self.log_dir / f"{slot}.log"

    def start(self, server: LocalServer) -> Supervised:
        process = LlamaServerProcess(
            self.binary,
            server.args,
            LOCAL_HOST,
            server.port,
            self.log_path(server.slot),
            env=dict(server.env),
        )
        process.start()
        log.info(
            "Started llama-server for %s on %s (port %d, pid %s)",
            server.who,
            server.slot,
            server.port,
            process.pid,
        )
        self.slots[server.slot] = Supervised(server=server, process=process, message="starting")
        return self.slots[server.slot]

    def stop(self, slot: str) -> None:
        """Unload: the process is gone (waited for) before this returns."""
        supervised = self.slots.pop(slot, None)
        if supervised is not None:
            supervised.process.stop()
            log.info("Stopped llama-server of %s on %s", supervised.server.who, slot)

    def terminate_all(self) -> None:
        """SIGTERM to every server, without waiting: ``stop_all`` then waits for them."""
        for supervised in self.slots.values():
            supervised.process.terminate()

    def stop_all(self) -> None:
        """Every server at once: each gets SIGTERM now, so stopping N servers takes as long as one."""
        self.terminate_all()
        for slot in list(self.slots):
            self.stop(slot)

    def tick(self, now: float) -> bool:
        """Look at every server once; True if anything a person would see has changed."""
        return any([self._tick(s, now) for s in list(self.slots.values())])

    def _tick(self, s: Supervised, now: float) -> bool:
        before = (s.phase, s.message, s.restarts)
        code = s.process.exited()
        if s.restart_at is not None:
            if now >= s.restart_at:
                self._restart(s, now)
        elif code is not None:
            self._crashed(s, code, now)
        elif s.phase != "Ready" or now - s.probed_at >= PROBE_EVERY_SECONDS:
            s.probed_at = now
            ready, seen = probe_passes(s.server.readiness_probe, LOCAL_HOST, {"http": s.server.port})
            s.phase, s.message = ("Ready", "serving") if ready else ("Loading", f"loading the model ({seen})")
        return before != (s.phase, s.message, s.restarts)

    def _crashed(self, s: Supervised, code: int, now: float) -> None:
        last_words = s.process.log_tail(3).replace("\n", " | ")
        if not self.restart_on_crash or s.restarts >= self.max_restarts:
            s.phase = "Failed"
            s.message = f"exited with code {code} after {s.restarts} restarts: {last_words}"
            return
        delay = backoff(s.restarts + 1)
        s.phase, s.restart_at = "Restarting", now + delay
        s.message = f"exited with code {code}; restarting in {delay:.0f} s: {last_words}"
        log.warning("llama-server on %s %s", s.server.slot, s.message)

    def _restart(self, s: Supervised, now: float) -> None:
        s.process.start()
        s.restarts += 1
        s.restart_at, s.started_at = None, time.time()
        s.phase, s.message = "Starting", f"restarted ({s.restarts})"
