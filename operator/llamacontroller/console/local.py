"""The console of ``llamacontroller up``: the LlamaModel files of its ``-f`` folders, with the status
the runtime writes (state.json) in the shape the operator writes it, and writes that change those
files (then ask the runtime to converge, as a second ``up`` does). The fit estimate reads the models
folder; the servers' logs are the runtime's log files; each write goes to a journal that the
LlamaModel's page shows as its Events."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from llamacontroller.config import OperatorConfig
from llamacontroller.console.source import LOG_LINES, EventLine, WriteError, event_lines
from llamacontroller.llamanode import LlamaNode
from llamacontroller.local import state as state_file
from llamacontroller.local.machine import Machine
from llamacontroller.local.plan import LOCAL_NODE
from llamacontroller.local.runtime import model_paths, yaml_files
from llamacontroller.resource import KIND, InvalidSpec, parse_llamamodel
from llamacontroller.slots import slot_name
from llamacontroller.status import rfc3339

JOURNAL = "console-events.jsonl"
MAX_FILES = 500  # model files listed in the load form's suggestions


def _when(epoch: float | None) -> str | None:
    return rfc3339(datetime.fromtimestamp(epoch, UTC)) if epoch else None


def _granted(now: str) -> list[dict[str, Any]]:
    return [{"type": "SlotAvailable", "status": "True", "reason": "SlotGranted", "lastTransitionTime": now}]


class LocalSource:
    where = "this machine"

    def __init__(
        self,
        paths: list[Path],
        models_dir: Path,
        state_dir: Path,
        config: OperatorConfig,
        converge: Callable[[], None] | None = None,
    ) -> None:
        """``converge``: asks the runtime to read its files again (by default a SIGHUP to this
        process, which `up` is: its handler only sets a flag for its loop)."""
        self.paths = paths
        self.models_dir: Path | None = models_dir
        self.state_dir = state_dir
        self.config = config
        self._converge = converge or _reload_this_process
        self._machine = Machine(models_dir)  # its own: the console serves from the gateway's thread

    def _files(self) -> dict[str, tuple[Path, dict[str, Any], int]]:
        """Each LlamaModel of the files, by namespace/name: its file, its document and how many
        LlamaModels that file holds."""
        found: dict[str, tuple[Path, dict[str, Any], int]] = {}
        for path in yaml_files(self.paths):
            try:
                docs = [d for d in yaml.safe_load_all(path.read_text()) if isinstance(d, dict)]
            except (OSError, yaml.YAMLError):
                continue
            models = [d for d in docs if d.get("kind") == KIND]
            for doc in models:
                meta = doc.setdefault("metadata", {})
                meta.setdefault("namespace", "default")
                meta["uid"] = f"{meta['namespace']}/{meta.get('name', '?')}"
                doc.get("spec", {}).pop("nodeName", None)
                found.setdefault(meta["uid"], (path, doc, len(docs)))
        return found

    def llamamodels(self) -> list[dict[str, Any]]:
        state = state_file.read_json(self.state_dir / state_file.STATE_FILE) or {}
        servers = {s["llamamodel"]: s for s in state.get("servers", [])}
        waiting, invalid = state.get("waiting", {}), state.get("invalid", {})
        bodies = []
        for who, (_, doc, _) in self._files().items():
            body = {**doc, "status": self._status(doc, servers.get(who), waiting.get(who), invalid.get(who))}
            bodies.append(body)
        return bodies

    def _status(
        self, doc: dict[str, Any], server: dict[str, Any] | None, waits: str | None, invalid: str | None
    ) -> dict[str, Any]:
        now = rfc3339(datetime.now(UTC))
        if server is not None:
            started = _when(server.get("startedAt"))
            return {
                "phase": server["phase"],
                "message": server.get("message") or "",
                "model": server["model"],
                "node": LOCAL_NODE,
                "slot": server["slot"],
                "port": server["port"],
                "restarts": server.get("restarts", 0),
                "loadedAt": started if server["phase"] == "Ready" else None,
                "conditions": _granted(started or now),
            }
        if invalid:
            return {"phase": "Failed", "message": invalid}
        if waits:
            try:
                slot = slot_name(parse_llamamodel(doc).spec.gpu, self.config.gpus_per_node)
            except InvalidSpec:
                slot = None
            return {"phase": "Waiting", "message": waits, "node": LOCAL_NODE, "slot": slot}
        return {}

    async def nodes(self) -> list[dict[str, Any]]:
        count = str(self.config.gpus_per_node)  # this machine: a GPU node, shown even when idle
        return [{"metadata": {"name": LOCAL_NODE, "labels": {self.config.gpu_count_label: count}}}]

    async def agents(self) -> dict[str, LlamaNode]:
        """This machine's GPUs as a node agent would publish them (no NVML: none listed)."""
        state = state_file.running_state(self.state_dir) or {}
        files = model_paths(doc for _, doc, _ in self._files().values())
        return {LOCAL_NODE: self._machine.read(files, state, datetime.now(UTC))}

    async def events(self, lm: dict[str, Any]) -> list[EventLine]:
        try:
            lines = (self.state_dir / JOURNAL).read_text().splitlines()
        except FileNotFoundError:
            return []
        events = [json.loads(line) for line in lines if line.strip()]
        return event_lines([e for e in events if e.get("involved") == lm["metadata"]["uid"]])

    async def log_tail(self, lm: dict[str, Any], lines: int = LOG_LINES) -> str | None:
        slot = (lm.get("status") or {}).get("slot")
        if not slot or (lm.get("status") or {}).get("phase") == "Waiting":
            return None
        try:
            text = (self.state_dir / "logs" / f"{slot}.log").read_text(errors="replace")
        except FileNotFoundError:
            return None
        return "\n".join(text.splitlines()[-lines:])

    def model_files(self) -> list[str]:
        assert self.models_dir is not None
        found = sorted(str(p.relative_to(self.models_dir)) for p in self.models_dir.rglob("*.gguf"))
        return found[:MAX_FILES]

    def _record(self, who: str, reason: str, message: str) -> None:
        event = {
            "involved": who,
            "lastTimestamp": rfc3339(datetime.now(UTC)),
            "type": "Normal",
            "reason": reason,
            "message": message,
        }
        with (self.state_dir / JOURNAL).open("a") as journal:
            journal.write(json.dumps(event) + "\n")

    def _folder(self) -> Path:
        folders = [p for p in self.paths if p.is_dir()]
        if not folders:
            raise WriteError(
                "`up` was given files, not a folder: there is no folder to write a new file into"
            )
        return folders[0]

    def _own_file(self, who: str) -> Path:
        found = self._files().get(who)
        if found is None:
            raise WriteError(f"no LlamaModel {who} in the files")
        path, _, count = found
        if count != 1:
            raise WriteError(f"{path} holds {count} documents: edit it by hand")
        return path

    async def create(self, body: dict[str, Any], actor: str) -> None:
        meta = body["metadata"]
        who = f"{meta['namespace']}/{meta['name']}"
        if who in self._files():
            raise WriteError(f"a LlamaModel {who} exists already")
        path = self._folder() / f"{meta['name']}.yaml"
        if path.exists():
            raise WriteError(f"{path} exists already")
        local = {**body, "spec": {k: v for k, v in body["spec"].items() if k != "nodeName"}}
        path.write_text(yaml.safe_dump(local, sort_keys=False))
        self._record(who, "ConsoleLoad", f"created by {actor}: {path}")
        self._converge()

    async def delete(self, lm: dict[str, Any], actor: str) -> None:
        who = lm["metadata"]["uid"]
        path = self._own_file(who)
        path.unlink()
        self._record(who, "ConsoleUnload", f"deleted by {actor}: {path}")
        self._converge()

    async def patch(self, lm: dict[str, Any], spec: dict[str, Any], actor: str) -> None:
        who = lm["metadata"]["uid"]
        path = self._own_file(who)
        doc = yaml.safe_load(path.read_text())
        doc["spec"] = _merge(doc.get("spec") or {}, spec)
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        self._record(who, "ConsoleSwitch", f"changed by {actor}: {spec}")
        self._converge()


def _reload_this_process() -> None:
    os.kill(os.getpid(), signal.SIGHUP)


def _merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """A JSON merge patch (RFC 7386), as the API server applies the cluster's."""
    merged = dict(base)
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged
