"""The local runtime's state file: what `up` is doing, for `status`, `down`, `logs` and a second `up`."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

STATE_FILE = "state.json"
REQUEST_FILE = "request.json"
DEFAULT_STATE_DIR = Path(".llamacontroller")


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Atomically, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(data, indent=2))
    temporary.replace(path)


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def alive(pid: int | None) -> bool:
    """Whether the process runs; a zombie (ended, not yet reaped by its parent) does not."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return True  # no /proc: trust the signal


def running_state(state_dir: Path) -> dict[str, Any] | None:
    """The state of a live `up`, or None when none runs."""
    state = read_json(state_dir / STATE_FILE)
    return state if state and alive(state.get("pid")) else None


def uptime(since: float | None, now: float | None = None) -> str:
    """`42s`, `3m05s`, `1h02m`, `2d03h`: two units are enough for a person."""
    if not since:
        return "-"
    seconds = max(int((now or time.time()) - since), 0)
    days, hours, minutes = seconds // 86400, seconds % 86400 // 3600, seconds % 3600 // 60
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{seconds % 60:02d}s" if minutes else f"{seconds}s"


def status_table(state: dict[str, Any], now: float | None = None) -> str:
    """The per-GPU view of `status`: slot, port, model, phase, pid, uptime, restarts, then who waits."""
    rows = [("SLOT", "PORT", "MODEL", "PHASE", "PID", "UPTIME", "RESTARTS")]
    for s in state.get("servers", []):
        rows.append(
            (
                s["slot"],
                str(s["port"]),
                s["model"],
                s["phase"],
                str(s.get("pid") or "-"),
                uptime(s.get("startedAt"), now) if s.get("pid") else "-",
                str(s.get("restarts", 0)),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines += [f"waiting  {who}: {message}" for who, message in sorted(state.get("waiting", {}).items())]
    lines += [f"invalid  {who}: {message}" for who, message in sorted(state.get("invalid", {}).items())]
    gateway = state.get("gateway")
    if gateway:
        lines.append(f"gateway  {gateway}")
    return "\n".join(lines)
