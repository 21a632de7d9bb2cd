"""The console's HTML, written from the view model (view.py). Every value from an object or a
person is escaped; no page holds a secret (the CSRF token is the one value a form repeats, and it
opens nothing by itself). The pages work without JavaScript; ``console.js`` only refreshes the parts
marked ``data-poll``."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from html import escape

from llamacontroller.console.forms import LoadForm, Preview
from llamacontroller.console.session import CSRF_FIELD, Viewer
from llamacontroller.console.source import EventLine
from llamacontroller.console.traffic import WINDOW, Traffic
from llamacontroller.console.view import ConsoleView, ModelView, NodeView, SlotView, age

POLL_MS = 1000  # the board: read from memory, cheap
DETAIL_POLL_MS = 3000  # a LlamaModel's page: two API reads (Events, log) each time


def e(value: object) -> str:
    return escape(str(value), quote=True)


def document(title: str, body: str) -> str:
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width, initial-scale=1">'
        '<meta name=color-scheme content="light dark">'
        f"<title>{e(title)}</title>"
        '<link rel=stylesheet href="/ui/static/console.css">'
        '<script src="/ui/static/console.js" defer></script>'
        f"</head><body>{body}</body></html>"
    )


def off_page() -> str:
    return document(
        "LlamaController console: off",
        "<main class=narrow><h1>The console is off</h1><p>This gateway has neither a console key nor "
        "a trusted proxy header: start it with <code>--console-key-file</code> (on a cluster, the "
        "<code>deploy/components/console</code> component) or <code>--console-user-header</code>.</p></main>",
    )


def login_page(error: str | None = None) -> str:
    problem = f"<p class=error role=alert id=login-error>{e(error)}</p>" if error else ""
    return document(
        "LlamaController console: sign in",
        "<main class=narrow><h1>LlamaController</h1>"
        f"{problem}"
        '<form method=post action="/ui/login" class=card>'
        "<label for=key>Console key</label>"
        "<input id=key name=key type=password autocomplete=current-password required autofocus>"
        "<button type=submit>Sign in</button></form>"
        "<p class=muted>The console key, not an API key: its Secret on the cluster, or "
        "<code>up --console-key-file</code> on this machine.</p></main>",
    )


def _hidden(csrf: str) -> str:
    return f'<input type=hidden name={CSRF_FIELD} value="{e(csrf)}">'


def shell(title: str, viewer: Viewer, csrf: str, where: str, writes: bool, main: str) -> str:
    who = e(viewer.session if viewer.via == "proxy" else f"session {viewer.session}")
    load = '<a href="/ui/load" class=button id=load-link>Load a model</a>' if writes else ""
    mode = "" if writes else '<span class=badge title="writes are off in the settings">read-only</span>'
    logout = (
        f'<form method=post action="/ui/logout" class=inline>{_hidden(csrf)}'
        "<button type=submit class=link>Sign out</button></form>"
        if viewer.via == "key"
        else ""
    )
    header = (
        '<header><a href="/ui" class=brand>LlamaController</a>'
        f"<span class=muted>{e(where)}</span>{mode}<span class=spacer></span>{load}"
        f"<span class=muted>{who}</span>{logout}</header>"
    )
    return document(title, f"{header}<main>{main}</main>")


def _phase(model: ModelView, now: datetime) -> str:
    since = age(model.since, now)
    deleting = " deleting" if model.deleting else ""
    return (
        f'<span class="phase {e(model.phase.lower())}{deleting}" data-phase="{e(model.phase)}">'
        f"{e('Deleting' if model.deleting else model.phase)}</span>"
        + (f' <span class=muted title="{e(model.since or "")}">{e(since)}</span>' if since else "")
    )


def _unload(model: ModelView, writes: bool, csrf: str) -> str:
    if not writes:
        return ""
    if model.gitops:
        return (
            f'<button type=button disabled title="change it in Git">Git owns it: {e(model.gitops)}</button>'
        )
    return (
        f'<form method=post action="/ui/unload" class=inline data-confirm="Unload {e(model.ref)}?">'
        f'{_hidden(csrf)}<input type=hidden name=ref value="{e(model.ref)}">'
        f'<button type=submit class=danger data-unload="{e(model.ref)}">Unload</button></form>'
    )


def _model_link(model: ModelView) -> str:
    return f'<a href="/ui/lm/{e(model.ref)}" data-model="{e(model.ref)}">{e(model.model)}</a>'


def _traffic(model: ModelView, traffic: Mapping[str, Traffic]) -> str:
    seen = traffic.get(model.model)
    if seen is None or model.phase != "Ready":
        return ""
    return (
        f'<div class="muted small" title="answered by this gateway over the last {WINDOW:.0f} s">'
        f"{seen.requests_per_second:.2f} req/s · {seen.tokens_per_second:.1f} tokens/s</div>"
    )


def _slot_row(
    node: NodeView, slot: SlotView, now: datetime, writes: bool, csrf: str, traffic: Mapping[str, Traffic]
) -> str:
    gpus = ", ".join(str(g) for g in slot.gpus)
    if slot.holder is not None:
        holder = slot.holder
        gitops = (
            f' <span class=badge title="applied from Git">{e(holder.gitops)}</span>' if holder.gitops else ""
        )
        what = (
            f"{_model_link(holder)}{gitops} {_phase(holder, now)}"
            f"<div class=muted>{e(holder.ref)} · {e(holder.path)}</div>{_traffic(holder, traffic)}"
        )
        if holder.message and holder.phase != "Ready":
            what += f"<div class=message>{e(holder.message)}</div>"
        action = _unload(holder, writes, csrf)
    elif slot.blocked_by:
        what, action = f"<span class=muted>taken by {e(slot.blocked_by)}</span>", ""
    else:
        what, action = '<span class="phase free" data-phase="Free">free</span>', ""
    queue = ""
    if slot.queue:
        items = "".join(
            f"<li>{_model_link(w)} {_phase(w, now)} {_unload(w, writes, csrf)}</li>" for w in slot.queue
        )
        queue = f"<div class=queue>waiting, in order:<ol>{items}</ol></div>"
    return (
        f'<div class=slot data-slot="{e(node.name)}/{e(slot.name)}">'
        f"<div class=slotname>{e(slot.name)}<div class=muted>GPU {e(gpus)} · :{slot.port}</div></div>"
        f"<div class=holder>{what}{queue}</div><div class=actions>{action}</div></div>"
    )


def _size(value: int | None) -> str:
    return "?" if value is None else f"{value / 2**30:.1f} GiB"


def _gpu(node: NodeView) -> str:
    cells = []
    for gpu in node.gpus:
        facts = gpu.facts
        used = ""
        if facts is not None and facts.memory_total:
            share = 100 * facts.memory_used / facts.memory_total
            used = (
                f'<progress max=100 value="{share:.0f}"></progress>'
                f"<div class=muted>{_size(facts.memory_used)} of {_size(facts.memory_total)}"
                + (f" · {facts.utilization}% busy" if facts.utilization is not None else "")
                + (f" · {_size(facts.foreign_memory)} by others" if facts.foreign_memory else "")
                + "</div>"
            )
        held = f"{e(gpu.model)} <span class=muted>({e(gpu.held_by)})</span>" if gpu.held_by else "idle"
        if facts is not None and facts.summary and facts.summary != "idle" and not gpu.held_by:
            held = e(facts.summary)  # the agent sees what the ledger does not: another process
        cells.append(
            f'<div class=gpu data-gpu="{e(node.name)}/{gpu.index}"><b>GPU {gpu.index}</b> {held}{used}</div>'
        )
    agent = f'<div class="muted small">{e(node.agent_note)}</div>' if node.agent_note else ""
    return f"<div class=gpus>{''.join(cells)}</div>{agent}"


def board(
    view: ConsoleView, now: datetime, writes: bool, csrf: str, traffic: Mapping[str, Traffic] | None = None
) -> str:
    """The nodes and their slots; the part the page refreshes. ``traffic``: each model's rates, as
    this gateway answered them (console/traffic.py)."""
    cards = []
    for node in view.nodes:
        slots = "".join(_slot_row(node, s, now, writes, csrf, traffic or {}) for s in node.slots)
        cards.append(
            f'<section class=card data-node="{e(node.name)}"><h2>{e(node.name)}'
            f" <span class=muted>{node.gpu_count} GPU(s)</span></h2>{_gpu(node)}{slots}</section>"
        )
    if not cards:
        cards.append("<p class=muted>No node yet: no LlamaModel names one.</p>")
    others = ""
    if view.unplaced:
        rows = "".join(
            f"<li>{_model_link(m)} {_phase(m, now)} "
            f"<span class=muted>{e(m.node or '')} {e(m.slot or '')}</span>"
            + (f"<div class=message>{e(m.message)}</div>" if m.message else "")
            + f"{_unload(m, writes, csrf)}</li>"
            for m in view.unplaced
        )
        others = f"<section class=card><h2>Not on a slot</h2><ul class=plain>{rows}</ul></section>"
    return f"<div class=grid>{''.join(cards)}{others}</div>"


def board_page(
    view: ConsoleView,
    now: datetime,
    viewer: Viewer,
    csrf: str,
    where: str,
    writes: bool,
    traffic: Mapping[str, Traffic] | None = None,
) -> str:
    part = board(view, now, writes, csrf, traffic)
    main = f'<div id=board data-poll="/ui/part/board" data-every={POLL_MS}>{part}</div>'
    return shell("LlamaController console", viewer, csrf, where, writes, main)


def _switch(model: ModelView, slots: Iterable[str], writes: bool, csrf: str) -> str:
    if not writes:
        return ""
    if model.gitops:
        return f"<p class=muted>Git owns this LlamaModel ({e(model.gitops)}): change it there.</p>"
    options = "".join(
        f'<option value="{e(s)}"{" selected" if s == model.slot else ""}>{e(s)}</option>' for s in slots
    )
    return (
        '<form method=post action="/ui/switch" class="card row">'
        f'{_hidden(csrf)}<input type=hidden name=ref value="{e(model.ref)}">'
        f'<input type=hidden name=generation value="{e(model.generation)}">'
        f"<label>GPU <select name=slot>{options}</select></label>"
        "<label>context <input name=ctx_size inputmode=numeric size=7"
        f' value="{e(model.ctx_size or "")}"></label>'
        "<button type=submit>Switch</button></form>"
    )


def detail(
    model: ModelView, events: list[EventLine], log: str | None, now: datetime, log_problem: str | None = None
) -> str:
    """One LlamaModel's conditions, Events and log: the part the page refreshes."""
    conditions = (
        "".join(
            f"<tr><td>{e(c.type)}</td><td>{e(c.status)}</td><td>{e(c.reason)}</td>"
            f"<td>{e(c.message)}</td><td>{e(age(c.since, now))}</td></tr>"
            for c in model.conditions
        )
        or "<tr><td colspan=5 class=muted>none yet</td></tr>"
    )
    event_rows = (
        "".join(
            f"<tr><td>{e(age(ev.when, now))}</td><td>{e(ev.type)}</td><td>{e(ev.reason)}</td>"
            f"<td>{e(ev.message)}{f' (x{ev.count})' if ev.count > 1 else ''}</td></tr>"
            for ev in events
        )
        or "<tr><td colspan=4 class=muted>none</td></tr>"
    )
    logs = e(log) if log else e(log_problem or "no log: no server runs")
    return (
        f"<p>{_phase(model, now)} <span class=muted>{e(model.reason)}</span></p>"
        + (f"<p class=message>{e(model.message)}</p>" if model.message else "")
        + f"<dl class=facts><dt>model</dt><dd>{e(model.model)}</dd><dt>file</dt><dd>{e(model.path)}</dd>"
        f"<dt>node</dt><dd>{e(model.node or '-')}</dd><dt>slot</dt><dd>{e(model.slot or '-')}</dd>"
        f"<dt>pod</dt><dd>{e(model.pod or '-')}</dd><dt>restarts</dt><dd>{e(model.restarts or 0)}</dd></dl>"
        "<h3>Conditions</h3><div class=scroll><table><tr><th>type</th><th>status</th><th>reason</th>"
        f"<th>message</th><th>since</th></tr>{conditions}</table></div>"
        "<h3>Events</h3><div class=scroll><table>"
        "<tr><th>age</th><th>type</th><th>reason</th><th>message</th></tr>"
        f"{event_rows}</table></div>"
        f"<h3>Server log</h3><pre class=log>{logs}</pre>"
    )


def detail_page(
    model: ModelView, part: str, slots: Iterable[str], viewer: Viewer, csrf: str, where: str, writes: bool
) -> str:
    gitops = f" <span class=badge>{e(model.gitops)}</span>" if model.gitops else ""
    main = (
        f"<h1>{e(model.ref)}{gitops}</h1><div class=row>{_unload(model, writes, csrf)}</div>"
        f"{_switch(model, slots, writes, csrf)}"
        f'<div id=detail data-poll="/ui/part/lm/{e(model.ref)}" data-every={DETAIL_POLL_MS}>{part}</div>'
    )
    return shell(f"{model.ref}: LlamaModel", viewer, csrf, where, writes, main)


def load_page(
    form: LoadForm,
    nodes: list[str],
    slots: list[str],
    files: list[str],
    viewer: Viewer,
    csrf: str,
    where: str,
    preview: Preview | None = None,
    error: str | None = None,
) -> str:
    def field(label: str, name: str, value: str, extra: str = "") -> str:
        return f'<label>{label}<input name={name} value="{e(value)}" {extra}></label>'

    node_list = "".join(f'<option value="{e(n)}">' for n in nodes)
    file_list = "".join(f'<option value="{e(f)}">' for f in files)
    slot_options = "".join(
        f'<option value="{e(s)}"{" selected" if s == form.slot else ""}>{e(s)}</option>' for s in slots
    )
    problem = f"<p class=error role=alert id=form-error>{e(error)}</p>" if error else ""
    shown = ""
    if preview is not None:
        estimate = f"<pre>{e(preview.estimate)}</pre>" if preview.estimate else ""
        shown = (
            "<section class=card id=preview><h2>What it runs</h2>"
            f"<p>slot {e(preview.slot)}, port {preview.port}</p>"
            f"<pre class=command>{e(preview.command)}</pre><h3>Fit</h3>{estimate}"
            f"<p class=muted>{e(preview.estimate_note)}</p>"
            "<button type=submit name=action value=apply form=load id=apply>Apply</button></section>"
        )
    main = (
        f"<h1>Load a model</h1>{problem}"
        '<form method=post action="/ui/load" id=load class="card form">'
        f"{_hidden(csrf)}"
        + field("Name", "name", form.name, "required pattern='[a-z0-9]([-a-z0-9.]*[a-z0-9])?'")
        + field("Namespace", "namespace", form.namespace)
        + field("Model file", "path", form.path, "list=files required placeholder='models/x.gguf'")
        + f"<datalist id=files>{file_list}</datalist>"
        + field("Node", "node", form.node, "list=nodes required")
        + f"<datalist id=nodes>{node_list}</datalist>"
        + f"<label>GPU<select name=slot>{slot_options}</select></label>"
        + field("Context size", "ctx_size", form.ctx_size, "inputmode=numeric placeholder='default'")
        + "<button type=submit name=action value=preview id=preview-button>Preview</button></form>"
        + shown
    )
    return shell("Load a model", viewer, csrf, where, True, main)
