"""What the local runtime should run: the same validation, slot ledger and rendering as the cluster,
with this machine as the only node. Pure functions.

The servers are the rendered Pods' llama-server servers with only host, port and model files
made local, so a LlamaModel tried here moves to the cluster unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from llamacontroller.config import OperatorConfig
from llamacontroller.fetch.layout import model_path
from llamacontroller.fit.check import TOO_LARGE, check_fit
from llamacontroller.ledger import server_hash
from llamacontroller.llamanode import LlamaNode
from llamacontroller.render.args import on_this_machine, server_args
from llamacontroller.render.children import render_children
from llamacontroller.render.gpus import process_env
from llamacontroller.resource import InvalidSpec, LlamaModel, parse_llamamodel
from llamacontroller.slots import (
    Claim,
    Placement,
    PlacementError,
    QueueKey,
    Waiter,
    describe_verdict,
    judge,
)

LOCAL_NODE = "local"
LOCAL_HOST = "127.0.0.1"


@dataclass(frozen=True)
class LocalServer:
    """One llama-server process: a slot held by a LlamaModel."""

    who: str  # namespace/name of the LlamaModel
    model: str  # the name clients use
    slot: str
    gpus: frozenset[int]
    port: int
    args: tuple[str, ...]
    env: tuple[tuple[str, str], ...]  # the GPUs it sees, as the Pod's container would
    server_hash: str  # identifies the rendered server: a change means a switch
    files: tuple[str, ...] = field(default=(), compare=False)  # the model (and projector) it reads
    readiness_probe: dict[str, Any] = field(default_factory=dict, compare=False)
    llamamodel: LlamaModel | None = field(default=None, compare=False, repr=False)  # for the fit check
    placement: Placement | None = field(default=None, compare=False, repr=False)


@dataclass
class LocalPlan:
    """Who holds which slot, who waits (and why), and which files are invalid (and why)."""

    servers: dict[str, LocalServer] = field(default_factory=dict)  # by slot
    waiting: dict[str, str] = field(default_factory=dict)  # who -> message
    invalid: dict[str, str] = field(default_factory=dict)  # who (or file) -> message
    fit: dict[str, str] = field(default_factory=dict)  # who -> the fit check's verdict on a new server
    waiting_for_memory: bool = False  # someone waits for other processes to leave a GPU


def as_local(body: dict[str, Any]) -> dict[str, Any]:
    """A LlamaModel for this machine: its node is this machine, its namespace `default` if none."""
    local = {**body, "metadata": dict(body.get("metadata") or {}), "spec": dict(body.get("spec") or {})}
    local["metadata"].setdefault("namespace", "default")
    local["spec"].pop("nodeName", None)
    return local


def local_server(lm: LlamaModel, config: OperatorConfig, models_dir: Path) -> LocalServer:
    """Raises PlacementError; the model file is resolved against the models directory."""
    children = render_children(lm, config.model_copy(update={"default_node": LOCAL_NODE}))
    container = children.pod["spec"]["containers"][0]
    placement = children.placement
    field = "spec.model.source" if lm.spec.model.source else "spec.model.path"
    model_file = inside(models_dir, model_path(lm.spec.model), field)
    projector = lm.spec.model.projector
    projector_file = inside(models_dir, projector, "spec.model.projector") if projector else None
    here = on_this_machine(children.server, LOCAL_HOST, placement.port, model_file, projector_file)
    args = server_args(here)
    return LocalServer(
        who=f"{lm.metadata.namespace}/{lm.metadata.name}",
        model=lm.model_name,
        slot=placement.slot,
        gpus=placement.gpus,
        port=placement.port,
        args=tuple(args),
        env=tuple(process_env(children.server.gpus).items()),
        server_hash=server_hash(children.pod) or "",
        files=tuple(f for f in (model_file, projector_file) if f),
        readiness_probe=container["readinessProbe"],
        llamamodel=lm,
        placement=placement,
    )


def inside(models_dir: Path, relative: str, field: str) -> str:
    """``models_dir / relative``, refused (InvalidSpec) when it leads out of the folder: through a
    symlink, as ``..`` is refused by the resource's own validation."""
    path = models_dir / relative
    if not path.resolve().is_relative_to(models_dir.resolve()):
        raise InvalidSpec(f"{field}: {relative} leads out of --models-dir (to {path.resolve()})")
    return str(path)


def plan(
    bodies: list[dict[str, Any]],
    config: OperatorConfig,
    models_dir: Path,
    running: dict[str, LocalServer],
    machine: LlamaNode | None = None,
    now: datetime | None = None,
) -> LocalPlan:
    """Assign slots: running servers that are still wanted unchanged keep theirs; the others are
    served in file order, and a later one never overtakes an earlier waiter with overlapping GPUs.

    ``machine``: this machine's GPUs as the node agent would publish them (local/machine.py); a new
    server is then checked as the operator checks a Pod (fit/check.py): one that can never fit is
    invalid, one that fits once other processes leave waits (and keeps its GPUs from later ones)."""
    result = LocalPlan()
    wanted: list[LocalServer] = []
    for body in bodies:
        local = as_local(body)
        who = f"{local['metadata']['namespace']}/{local['metadata'].get('name', '?')}"
        try:
            wanted.append(local_server(parse_llamamodel(local), config, models_dir))
        except (InvalidSpec, PlacementError) as exc:
            result.invalid[who] = str(exc)

    kept = {s.slot: s for s in running.values() if s in wanted}
    # here a LlamaModel's name is its identity: the files name each once
    claims = [Claim(LOCAL_NODE, s.slot, s.gpus, s.who, owner_uid=s.who) for s in kept.values()]
    waiters: list[Waiter] = []
    for order, server in enumerate(wanted):
        if server in kept.values():
            continue
        key = QueueKey(created=f"{order:08d}", waiting_since="", who=server.who)
        placement = _placement(server)
        verdict = judge(placement, server.who, key, claims, waiters)
        fit = None
        if verdict.granted and machine is not None and server.llamamodel and server.placement and now:
            fit = check_fit(server.llamamodel, server.placement, config, machine, config.gpus_per_node, now)
            result.fit[server.who] = fit.message
        if fit is not None and fit.reason == TOO_LARGE:
            result.invalid[server.who] = fit.message
        elif fit is not None and not fit.places:
            result.waiting[server.who] = fit.message
            result.waiting_for_memory = True
            waiters.append(
                Waiter(LOCAL_NODE, server.slot, server.gpus, server.who, key, owner_uid=server.who)
            )
        elif verdict.granted:
            kept[server.slot] = server
            claims.append(Claim(LOCAL_NODE, server.slot, server.gpus, server.who, owner_uid=server.who))
        else:
            result.waiting[server.who] = describe_verdict(placement, verdict)
            waiters.append(
                Waiter(LOCAL_NODE, server.slot, server.gpus, server.who, key, owner_uid=server.who)
            )
    result.servers = kept
    return result


def _placement(server: LocalServer) -> Placement:
    return Placement(node=LOCAL_NODE, slot=server.slot, gpus=server.gpus, port=server.port, tensor_split="")
