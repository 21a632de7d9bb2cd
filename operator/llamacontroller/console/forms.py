"""A person's form turned into a LlamaModel, and what it would run: the rendered server arguments
(render/) and, where the model file is at hand, the fit estimate (fit/). Pure but for reading the
GGUF header the estimate needs."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from llamacontroller.config import OperatorConfig
from llamacontroller.errors import UserError
from llamacontroller.fetch.layout import model_path
from llamacontroller.llamanode import LlamaNode
from llamacontroller.local.plan import local_server
from llamacontroller.render.children import render_children
from llamacontroller.resource import GROUP, KIND, VERSION, InvalidSpec, parse_llamamodel
from llamacontroller.slot_table import whole_node_slot
from llamacontroller.slots import PlacementError


class FormError(ValueError):
    """What is wrong with the form, for people."""


@dataclass(frozen=True)
class LoadForm:
    """The load form's fields, as typed (strings): what the page shows again after a preview."""

    namespace: str = "default"
    name: str = ""
    path: str = ""
    node: str = ""
    slot: str = "gpu0"  # gpu<N>, or the whole node's slot (both / all)
    ctx_size: str = ""

    @classmethod
    def from_fields(cls, fields: dict[str, str]) -> LoadForm:
        return cls(
            namespace=fields.get("namespace", "").strip() or "default",
            name=fields.get("name", "").strip(),
            path=fields.get("path", "").strip(),
            node=fields.get("node", "").strip(),
            slot=fields.get("slot", "gpu0").strip(),
            ctx_size=fields.get("ctx_size", "").strip(),
        )


def gpu_spec(slot: str, gpu_count: int) -> dict[str, Any]:
    """The spec.gpu that asks for ``slot``: ``gpu1`` -> single GPU 1, ``both``/``all`` -> both."""
    if slot == whole_node_slot(gpu_count):
        return {"mode": "both"}
    if slot.startswith("gpu") and slot[3:].isdigit() and int(slot[3:]) < gpu_count:
        return {"mode": "single", "gpuId": int(slot[3:])}
    raise FormError(f"GPU: no slot {slot!r} on a node with {gpu_count} GPU(s)")


def _ctx_size(text: str) -> int | None:
    if not text:
        return None
    if not text.isdigit():
        raise FormError(f"context size: {text!r} is not a whole number")
    return int(text)


def llamamodel_of(form: LoadForm, gpu_count: int) -> dict[str, Any]:
    """The LlamaModel the form asks for, checked as the operator would check it."""
    if not form.name:
        raise FormError("name: give the LlamaModel a name")
    if not form.path:
        raise FormError("model file: give its path in the models volume")
    if not form.node:
        raise FormError("node: choose the node")
    spec: dict[str, Any] = {
        "model": {"path": form.path},
        "nodeName": form.node,
        "gpu": gpu_spec(form.slot, gpu_count),
    }
    ctx = _ctx_size(form.ctx_size)
    if ctx is not None:
        spec["parameters"] = {"ctxSize": ctx}
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": {"name": form.name, "namespace": form.namespace},
        "spec": spec,
    }
    try:
        parse_llamamodel(body)
    except InvalidSpec as exc:
        raise FormError(str(exc)) from exc
    return body


@dataclass(frozen=True)
class Preview:
    """What the LlamaModel would run: its slot and port, llama-server's command line, and the
    fit estimate per GPU (or why there is none)."""

    slot: str
    port: int
    command: str
    estimate: str | None
    estimate_note: str


def preview(
    body: dict[str, Any],
    config: OperatorConfig,
    gpu_count: int,
    models_dir: Path | None,
    agent: LlamaNode | None = None,
) -> Preview:
    """``models_dir``: this machine's models folder (the local runtime): the command line as it runs
    here, and the fit estimate from the file; None on a cluster: the Pod's command line, and the fit
    estimate from the header facts that the node's agent (``agent``, its LlamaNode) publishes, with
    the operator's fit verdict on its GPUs."""
    try:
        lm = parse_llamamodel(body)
        children = render_children(lm, config, gpu_count)
        if models_dir is not None:
            args = list(local_server(lm, config, models_dir).args)
        else:
            args = children.pod["spec"]["containers"][0]["args"]
    except (InvalidSpec, PlacementError) as exc:
        raise FormError(str(exc)) from exc
    command = shlex.join(["llama-server", *args])
    estimate, note = None, "no estimate: no node agent publishes this node's model files"
    if models_dir is not None:
        estimate, note = _estimate(children, config, gpu_count, models_dir / body["spec"]["model"]["path"])
    elif agent is not None:
        estimate, note = _estimate_from_agent(children, config, gpu_count, agent)
    return Preview(children.placement.slot, children.placement.port, command, estimate, note)


def _estimate_from_agent(
    children: Any, config: OperatorConfig, gpu_count: int, agent: LlamaNode
) -> tuple[str | None, str]:
    """The estimate from the facts the node agent read of the file, and the fit check's verdict
    as the operator will make it before it creates the Pod."""
    from llamacontroller.fit.check import check_fit
    from llamacontroller.fit.estimate import slot_estimate
    from llamacontroller.fit.report import as_table

    path = model_path(children.lm.spec.model)
    listed = agent.status.model_file(path)
    if listed is None or listed.facts is None:
        why = listed.error if listed is not None and listed.error else "not among its models"
        return None, f"no estimate: the node agent of {agent.metadata.name} lists {path}: {why}"
    try:
        slot = slot_estimate(children.lm, children.placement, config, listed.facts, gpu_count)
    except UserError as exc:
        return None, f"no estimate: {exc}"
    who = f"{children.lm.metadata.namespace}/{children.lm.metadata.name}"
    verdict = check_fit(children.lm, children.placement, config, agent, gpu_count, datetime.now(UTC))
    table = as_table(who, path, slot, listed.facts.n_layer)
    return (
        table,
        f"from the header facts of the node agent; the fit check: {verdict.reason}: {verdict.message}",
    )


def _estimate(children: Any, config: OperatorConfig, gpu_count: int, file: Path) -> tuple[str | None, str]:
    from llamacontroller.fit.estimate import slot_estimate
    from llamacontroller.fit.model import model_facts
    from llamacontroller.fit.report import as_table
    from llamacontroller.gguf_header import GGUFError, read_header

    try:
        facts = model_facts(read_header(file))
        slot = slot_estimate(children.lm, children.placement, config, facts, gpu_count)
    except OSError as exc:
        return None, f"no estimate: {file.name}: {exc.strerror or exc}"
    except (GGUFError, UserError) as exc:
        return None, f"no estimate: {exc}"
    who = f"{children.lm.metadata.namespace}/{children.lm.metadata.name}"
    return as_table(who, file.name, slot, facts.n_layer), "from the GGUF header, as llama.cpp sizes it"


def switch_patch(slot: str, ctx_size: str, gpu_count: int) -> dict[str, Any]:
    """The spec patch that moves a LlamaModel to another slot of its node (and context size)."""
    patch: dict[str, Any] = {"gpu": gpu_spec(slot, gpu_count)}
    # A merge patch keeps what it does not name: drop what the other mode alone may have.
    if slot == whole_node_slot(gpu_count):
        patch["gpu"]["gpuId"] = None
    else:
        patch["gpu"]["tensorSplit"] = None
    ctx = _ctx_size(ctx_size)
    if ctx is not None:
        patch["parameters"] = {"ctxSize": ctx}
    return patch
