"""`llamacontroller up`: the LlamaModel files of a folder, served by llama-server processes on this
machine, converged on start, on a second `up` (SIGHUP) and, with --watch, whenever the files change.

A switch stops the old server before it starts the new one; a removed file unloads its server;
Ctrl-C or `llamacontroller down` stops everything, and no server outlives the runtime.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from llamacontroller.config import OperatorConfig
from llamacontroller.errors import UserError
from llamacontroller.fetch.layout import model_path
from llamacontroller.local import state as state_file
from llamacontroller.local.gateway import GatewayThread
from llamacontroller.local.machine import Machine
from llamacontroller.local.plan import LOCAL_HOST, LocalPlan, as_local, plan
from llamacontroller.local.supervisor import Supervisor
from llamacontroller.resource import KIND, InvalidSpec, parse_llamamodel
from llamacontroller.serving.catalog.routing import Route

log = logging.getLogger(__name__)

TICK_SECONDS = 0.25
# How often a LlamaModel that waits for other processes to free GPU memory is checked again.
FIT_RECHECK_SECONDS = 5.0


def yaml_files(paths: Iterable[Path]) -> list[Path]:
    """The files given, and the .yaml/.yml files of the folders given, in a stable order."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found += sorted(p for p in path.iterdir() if p.suffix in {".yaml", ".yml"})
        else:
            found.append(path)
    return found


def read_llamamodels(paths: Iterable[Path]) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """The LlamaModel documents of the files, and the files that could not be read (with why)."""
    bodies: list[dict[str, Any]] = []
    problems: dict[str, str] = {}
    for path in yaml_files(paths):
        try:
            docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
        except (OSError, yaml.YAMLError) as exc:
            problems[str(path)] = f"cannot read: {exc}"
            continue
        bodies += [d for d in docs if isinstance(d, dict) and d.get("kind") == KIND]
    return bodies, problems


def model_paths(bodies: Iterable[dict[str, Any]]) -> list[str]:
    """The model files of the valid LlamaModels, relative to --models-dir (spec.model.path, or where
    its source lands)."""
    paths = []
    for body in bodies:
        try:
            paths.append(model_path(parse_llamamodel(as_local(body)).spec.model))
        except InvalidSpec:
            continue  # the plan reports it
    return paths


def preflight(
    paths: list[Path],
    config: OperatorConfig,
    models_dir: Path,
    check_ports: bool = True,
    machine: Machine | None = None,
) -> None:
    """Before anything starts: every file readable, every LlamaModel valid, the model files there,
    (``check_ports``) the granted slots' ports free and (``machine``) no model too large for its
    GPUs. Raises UserError, one line per problem.

    Once running, the runtime serves the valid files and reports the others in its state."""
    bodies, problems = read_llamamodels(paths)
    if not bodies and not problems:
        raise UserError(f"no LlamaModel in {', '.join(map(str, paths))}")
    now = datetime.now(UTC)
    here = machine.read(model_paths(bodies), {}, now) if machine is not None else None
    wanted = plan(bodies, config, models_dir, running={}, machine=here, now=now)
    problems.update(wanted.invalid)
    for server in wanted.servers.values():
        for file in server.files:
            if not Path(file).is_file():
                problems[server.who] = f"no model file {file} (model paths are relative to --models-dir)"
        if check_ports and not port_is_free(LOCAL_HOST, server.port):
            problems[server.who] = (
                f"port {server.port} of slot {server.slot} is in use by another process: "
                f"stop it, or set ports.{server.slot} in a --config file"
            )
    if problems:
        raise UserError("\n".join(f"{who}: {why}" for who, why in problems.items()))


def port_is_free(host: str, port: int) -> bool:
    try:
        with socket.create_server((host, port)):
            return True
    except OSError:
        return False


def _fingerprint(paths: Iterable[Path]) -> tuple[tuple[str, float, int], ...]:
    """Changes of the watched files: names, modification times, sizes."""
    result = []
    for path in yaml_files(p for p in paths if p.exists()):
        try:
            stat = path.stat()
        except OSError:
            continue
        result.append((str(path), stat.st_mtime, stat.st_size))
    return tuple(result)


class LocalRuntime:
    def __init__(
        self,
        paths: list[Path],
        config: OperatorConfig,
        models_dir: Path,
        binary: Path,
        state_dir: Path,
        watch: bool = False,
        gateway: GatewayThread | None = None,
        machine: Machine | None = None,
    ) -> None:
        self.paths = paths
        self.machine = machine
        self.config = config
        self.models_dir = models_dir
        self.state_dir = state_dir
        self.watch = watch
        self.gateway = gateway
        self.supervisor = Supervisor(
            binary,
            state_dir / "logs",
            config.local.restart_on_crash,
            config.local.max_restart_attempts,
        )
        self.current = LocalPlan()
        self.generation = 0
        self._reload = False
        self._stop = False

    # Signals only set flags; the loop acts on them.
    def _on_reload(self, *_: Any) -> None:
        self._reload = True

    def _on_stop(self, *_: Any) -> None:
        self._stop = True

    def converge(self) -> None:
        """Stop what is no longer wanted (or changed) first, then start what is newly granted."""
        request = state_file.read_json(self.state_dir / state_file.REQUEST_FILE)
        if request and request.get("paths"):
            self.paths = [Path(p) for p in request["paths"]]
        bodies, problems = read_llamamodels(self.paths)
        running = {slot: s.server for slot, s in self.supervisor.slots.items()}
        now = datetime.now(UTC)
        here = self.machine.read(model_paths(bodies), self.snapshot(), now) if self.machine else None
        wanted = plan(bodies, self.config, self.models_dir, running, machine=here, now=now)
        wanted.invalid.update(problems)
        for slot, server in running.items():
            if wanted.servers.get(slot) != server:
                self.supervisor.stop(slot)
        for slot, server in wanted.servers.items():
            if slot not in self.supervisor.slots:
                self.supervisor.start(server)
        told = {**self.current.fit, **self.current.waiting, **self.current.invalid}
        self.current = wanted
        self.generation += 1
        for who, message in {**wanted.fit, **wanted.waiting, **wanted.invalid}.items():
            if told.get(who) != message:  # a recheck tells only what changed
                log.info("%s: %s", who, message)

    def snapshot(self) -> dict[str, Any]:
        servers = [
            {
                "slot": slot,
                "port": s.server.port,
                "model": s.server.model,
                "llamamodel": s.server.who,
                "phase": s.phase,
                "message": s.message,
                "pid": s.process.pid if s.process.exited() is None else None,
                "startedAt": s.started_at,
                "restarts": s.restarts,
                "log": str(self.supervisor.log_path(slot)),
            }
            for slot, s in sorted(self.supervisor.slots.items())
        ]
        return {
            "pid": os.getpid(),
            "generation": self.generation,
            "paths": [str(p) for p in self.paths],
            "servers": servers,
            "waiting": self.current.waiting,
            "invalid": self.current.invalid,
            "gateway": self.gateway.url if self.gateway else None,
        }

    def routes(self) -> dict[str, list[Route]]:
        """The gateway serves the servers that are up (a loading one answers 503 until ready); the
        servers of one model name are its replicas."""
        routes: dict[str, list[Route]] = {}
        for s in self.supervisor.slots.values():
            if s.phase in {"Loading", "Ready"}:
                routes.setdefault(s.server.model, []).append(Route(f"http://127.0.0.1:{s.server.port}"))
        return routes

    def _write_state(self) -> None:
        if self.gateway is not None:
            self.gateway.set_routes(self.routes())
        state_file.write_json(self.state_dir / state_file.STATE_FILE, self.snapshot())

    def run(self) -> None:
        signal.signal(signal.SIGHUP, self._on_reload)
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        (self.state_dir / state_file.REQUEST_FILE).unlink(missing_ok=True)  # a leftover of an earlier run
        try:
            if self.gateway is not None:
                self.gateway.start()
            self.converge()
            self._write_state()
            seen = _fingerprint(self.paths)
            checked = time.monotonic()
            while not self._stop:
                time.sleep(TICK_SECONDS)
                changed = self.supervisor.tick(time.time())
                if self.watch and _fingerprint(self.paths) != seen:
                    self._reload = True
                if self.current.waiting_for_memory and time.monotonic() - checked >= FIT_RECHECK_SECONDS:
                    self._reload = True
                if self._reload:
                    self._reload = False
                    self.converge()
                    checked = time.monotonic()
                    seen = _fingerprint(self.paths)
                    changed = True
                if changed:
                    self._write_state()
        finally:
            # The servers stop while the gateway gives its requests time to end: a stream then ends
            # with its server, and the two waits overlap instead of adding up.
            self.supervisor.terminate_all()
            if self.gateway is not None:
                self.gateway.stop()
            self.supervisor.stop_all()
            if self.machine is not None:
                self.machine.close()
            state = self.snapshot()
            state.update(pid=None, servers=[])
            state_file.write_json(self.state_dir / state_file.STATE_FILE, state)


def request_reload(state_dir: Path, paths: list[Path], timeout: float = 30.0) -> dict[str, Any]:
    """A second `up`: hand the files to the running one and wait until it has converged on them."""
    running = state_file.running_state(state_dir)
    if running is None:
        raise RuntimeError("no llamacontroller up is running")
    state_file.write_json(state_dir / state_file.REQUEST_FILE, {"paths": [str(p) for p in paths]})
    os.kill(running["pid"], signal.SIGHUP)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = state_file.running_state(state_dir)
        if now and now["generation"] > running["generation"]:
            return now
        time.sleep(0.1)
    raise TimeoutError(f"llamacontroller up (pid {running['pid']}) did not reload within {timeout:.0f} s")


def stop_running(state_dir: Path, timeout: float = 30.0) -> bool:
    """`llamacontroller down`: stop the running `up`, which stops its servers; False if none ran."""
    running = state_file.running_state(state_dir)
    if running is None:
        return False
    os.kill(running["pid"], signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and state_file.alive(running["pid"]):
        time.sleep(0.1)
    if state_file.alive(running["pid"]):
        raise TimeoutError(f"llamacontroller up (pid {running['pid']}) did not stop within {timeout:.0f} s")
    return True
