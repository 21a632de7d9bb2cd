"""The console's pure parts: the board built from LlamaModels (holders, queues in the ledger's
order, GPUs, GitOps marks), the signed sessions and CSRF tokens, and the load form."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from llamacontroller.config import OperatorConfig
from llamacontroller.console.forms import FormError, LoadForm, llamamodel_of, preview, switch_patch
from llamacontroller.console.pages import board
from llamacontroller.console.session import (
    SESSION_SECONDS,
    Access,
    csrf_matches,
    load_console_key,
    parse_cookies,
    set_cookie,
)
from llamacontroller.console.view import age, build_view, gitops_owner, strip_for_console
from llamacontroller.errors import UserError
from llamacontroller.llamanode import parse_llamanode
from tests.support.builders import llamamodel

NOW = datetime(2026, 12, 7, 6, 0, 0, tzinfo=UTC)
CONFIG = OperatorConfig()


def condition(kind: str, status: str, reason: str, when: str = "2026-12-07T05:50:00Z") -> dict[str, Any]:
    return {"type": kind, "status": status, "reason": reason, "message": "", "lastTransitionTime": when}


def holding(name: str, node: str, slot: str, phase: str = "Ready", **spec: Any) -> dict[str, Any]:
    body = llamamodel(name, uid=f"uid-{name}", nodeName=node, **spec)
    body["metadata"]["creationTimestamp"] = "2026-12-07T05:00:00Z"
    body["status"] = {
        "phase": phase,
        "node": node,
        "slot": slot,
        "model": f"{name}:latest",
        "loadedAt": "2026-12-07T05:55:00Z" if phase == "Ready" else None,
        "conditions": [
            condition("SlotAvailable", "True", "SlotGranted"),
            condition("Ready", "True", "ServerReady"),
        ],
    }
    return body


def waiting(name: str, node: str, slot: str, created: str, since: str, **spec: Any) -> dict[str, Any]:
    body = llamamodel(name, uid=f"uid-{name}", nodeName=node, **spec)
    body["metadata"]["creationTimestamp"] = created
    body["status"] = {
        "phase": "Waiting",
        "node": node,
        "slot": slot,
        "waitingSince": since,
        "message": f"{slot} on {node} is held",
        "conditions": [condition("SlotAvailable", "False", "SlotTaken")],
    }
    return body


def test_the_board_shows_holders_free_slots_and_the_queue_in_the_ledgers_order() -> None:
    objects = [
        holding("phi", "gpu-node-1", "gpu0"),
        waiting("later", "gpu-node-1", "gpu0", "2026-12-07T05:10:00Z", "2026-12-07T05:10:00.000001Z"),
        waiting("first", "gpu-node-1", "gpu0", "2026-12-07T05:05:00Z", "2026-12-07T05:20:00.000001Z"),
        waiting("big", "gpu-node-1", "both", "2026-12-07T05:07:00Z", "2026-12-07T05:07:00.000001Z"),
    ]
    view = build_view(objects, [], CONFIG)
    (node,) = view.nodes
    slots = {s.name: s for s in node.slots}
    assert node.name == "gpu-node-1" and node.gpu_count == 2 and not node.agent
    assert slots["gpu0"].holder is not None and slots["gpu0"].holder.ref == "default/phi"
    # Creation time first, then when it started waiting: "first" was created before "later".
    assert [w.name for w in slots["gpu0"].queue] == ["first", "later"]
    assert slots["gpu1"].holder is None and slots["gpu1"].blocked_by is None
    assert slots["both"].holder is None and slots["both"].blocked_by == "gpu0"
    assert [w.name for w in slots["both"].queue] == ["big"]
    assert [(g.index, g.held_by, g.model) for g in node.gpus] == [(0, "gpu0", "phi:latest"), (1, None, None)]
    assert view.unplaced == ()
    html = board(view, NOW, writes=True, csrf="token")
    assert 'data-slot="gpu-node-1/gpu1"' in html and 'data-phase="Free"' in html
    assert "no node agent" in html and 'data-unload="default/phi"' in html


def test_a_node_with_four_gpus_by_its_label_and_an_unjudged_llamamodel() -> None:
    node = {"metadata": {"name": "big-node", "labels": {"nvidia.com/gpu.count": "4"}}}
    fresh = llamamodel("fresh", nodeName="big-node", gpu={"mode": "single", "gpuId": 3})
    view = build_view([fresh], [node], CONFIG)
    assert [s.name for s in view.nodes[0].slots] == ["gpu0", "gpu1", "gpu2", "gpu3", "all"]
    assert [(m.name, m.phase, m.slot) for m in view.unplaced] == [("fresh", "New", "gpu3")]


def test_phases_say_since_when() -> None:
    ready = build_view([holding("phi", "n", "gpu1")], [], CONFIG).nodes[0].slots[1].holder
    assert ready is not None and ready.since == "2026-12-07T05:55:00Z" and age(ready.since, NOW) == "5m"
    assert age("2026-12-05T03:00:00Z", NOW) == "2d3h" and age(None, NOW) == "" and age("junk", NOW) == ""


def test_gitops_marks() -> None:
    assert gitops_owner({}, {"argocd.argoproj.io/tracking-id": "llms:llamacontroller.io/LlamaModel:a/b"}) == (
        "Argo CD (llms)"
    )
    assert (
        gitops_owner(
            {
                "kustomize.toolkit.fluxcd.io/name": "models",
                "kustomize.toolkit.fluxcd.io/namespace": "flux-system",
            },
            {},
        )
        == "Flux (flux-system/models)"
    )
    assert gitops_owner({"app.kubernetes.io/instance": "llms"}, {}) == "Argo CD (llms)"  # label tracking
    helm = {"app.kubernetes.io/instance": "release", "app.kubernetes.io/managed-by": "Helm"}
    assert gitops_owner(helm, {}) is None and gitops_owner({}, {}) is None
    body = holding("phi", "n", "gpu0")
    body["metadata"]["annotations"] = {"argocd.argoproj.io/tracking-id": "llms:x", "big": "x" * 10000}
    stripped = strip_for_console(body)
    assert stripped["metadata"]["annotations"] == {"argocd.argoproj.io/tracking-id": "llms:x"}
    view = build_view([stripped], [], CONFIG)
    html = board(view, NOW, writes=True, csrf="token")
    assert "Git owns it: Argo CD (llms)" in html and "data-unload" not in html


def test_node_agent_facts_when_published_and_why_not_without_them() -> None:
    # A LlamaNode as the node agent writes it (llamanode.py), parsed as the console's source does.
    agent = parse_llamanode(
        {
            "metadata": {"name": "n"},
            "status": {
                "nvml": "ok",
                "gpus": [
                    {
                        "index": 1,
                        "name": "NVIDIA L4",
                        "memoryTotal": 24 << 30,
                        "memoryUsed": 6 << 30,
                        "utilization": 40,
                        "summary": "held by default/phi",
                    },
                    {
                        "index": 0,
                        "memoryTotal": 24 << 30,
                        "memoryUsed": 3 << 30,
                        "foreignMemory": 3 << 30,
                        "summary": "occupied: 3.0 GiB by others",
                    },
                ],
            },
        }
    )
    view = build_view([holding("phi", "n", "gpu1")], [], CONFIG, {"n": agent})
    html = board(view, NOW, writes=False, csrf="token")
    assert view.nodes[0].agent and "6.0 GiB of 24.0 GiB" in html and "no node agent" not in html
    assert "40% busy" in html and "3.0 GiB by others" in html
    assert "occupied: 3.0 GiB by others" in html  # GPU 0: free in the ledger, used by another process
    blind = agent.model_copy(
        update={"status": agent.status.model_copy(update={"nvml": "no NVML: x", "gpus": []})}
    )
    html = board(
        build_view([holding("phi", "n", "gpu1")], [], CONFIG, {"n": blind}), NOW, writes=False, csrf="t"
    )
    assert "node agent: no NVML: x" in html
    assert "data-unload" not in html  # read-only: no buttons


def test_values_are_escaped() -> None:
    body = holding("phi", "n", "gpu0")
    body["status"]["phase"] = "Loading"
    body["status"]["message"] = "<script>alert(1)</script>"
    html = board(build_view([body], [], CONFIG), NOW, writes=False, csrf="x")
    assert "<script>" not in html and "&lt;script&gt;" in html


def test_sessions_are_signed_expire_and_die_with_a_new_key() -> None:
    access = Access(key="k" * 20)
    sid, cookie = access.new_session(now=1000.0)
    assert access.session_of(cookie, now=1001.0) == sid
    assert access.session_of(cookie, now=1000.0 + SESSION_SECONDS + 1) is None
    assert Access(key="j" * 20).session_of(cookie, now=1001.0) is None
    forged = cookie.replace(cookie.split(".")[2], str(10**12))
    assert access.session_of(forged, now=1001.0) is None
    assert access.session_of("v1.x.y", now=1001.0) is None and access.session_of(None) is None
    assert access.key_matches("k" * 20) and not access.key_matches("k" * 19)


def test_viewers_by_cookie_or_by_a_trusted_header() -> None:
    access = Access(key="k" * 20, user_header="x-auth-request-user")
    _, cookie = access.new_session()
    assert access.viewer({"lc_session": cookie}, {}) is not None
    assert access.viewer({}, {"x-auth-request-user": "ada@example.org"}) is not None
    assert access.viewer({}, {"x-auth-request-user": " "}) is None
    assert not Access().enabled and Access(user_header="x").enabled


def test_csrf_and_cookies() -> None:
    assert csrf_matches("abc", "abc") and not csrf_matches("abc", "abd")
    assert not csrf_matches(None, "abc") and not csrf_matches("abc", None) and not csrf_matches("", "")
    assert parse_cookies("a=1; lc_session=v1.x; b") == {"a": "1", "lc_session": "v1.x"}
    cookie = set_cookie("lc_session", "v", secure=True)
    assert (
        "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Secure" in cookie and "Path=/ui" in cookie
    )


def test_the_console_key_file(tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_text("# the console\n" + "s" * 24 + "\n")
    assert load_console_key(str(key)) == "s" * 24
    assert load_console_key(None) is None
    key.write_text("short\n")
    with pytest.raises(UserError, match="at least 16"):
        load_console_key(str(key))
    key.write_text("a" * 20)
    with pytest.raises(UserError, match="also an API key"):
        load_console_key(str(key), frozenset({"a" * 20}))
    with pytest.raises(UserError, match="console key file"):
        load_console_key(str(tmp_path / "none"))


def test_the_load_form_makes_a_llamamodel_and_shows_what_it_runs() -> None:
    form = LoadForm.from_fields(
        {"name": "qwen", "path": "qwen.gguf", "node": "n1", "slot": "both", "ctx_size": "8192"}
    )
    body = llamamodel_of(form, 2)
    assert body["spec"] == {
        "model": {"path": "qwen.gguf"},
        "nodeName": "n1",
        "gpu": {"mode": "both"},
        "parameters": {"ctxSize": 8192},
    }
    shown = preview(body, CONFIG, 2, None)
    assert shown.slot == "both" and shown.port == 8081
    assert "--ctx-size 8192" in shown.command and "--tensor-split 0.5,0.5" in shown.command
    assert shown.estimate is None and "no node agent publishes" in shown.estimate_note
    with pytest.raises(FormError, match="no slot 'gpu2'"):
        llamamodel_of(LoadForm.from_fields({"name": "q", "path": "q.gguf", "node": "n", "slot": "gpu2"}), 2)
    with pytest.raises(FormError, match="context size"):
        llamamodel_of(
            LoadForm.from_fields({"name": "q", "path": "q.gguf", "node": "n", "ctx_size": "lots"}), 2
        )
    with pytest.raises(FormError, match=r"spec\.model\.path"):
        llamamodel_of(LoadForm.from_fields({"name": "q", "path": "../../etc/x.gguf", "node": "n"}), 2)
    assert switch_patch("gpu1", "", 2) == {"gpu": {"mode": "single", "gpuId": 1, "tensorSplit": None}}
    assert switch_patch("both", "512", 2) == {
        "gpu": {"mode": "both", "gpuId": None},
        "parameters": {"ctxSize": 512},
    }


def test_the_fit_estimate_from_the_model_file(tmp_path: Path) -> None:
    from llamacontroller.demo_model import write_demo_model

    model = write_demo_model(tmp_path / "tiny.gguf")
    body = llamamodel_of(
        LoadForm.from_fields({"name": "t", "path": model.name, "node": "n", "slot": "gpu1"}), 2
    )
    shown = preview(body, CONFIG, 2, tmp_path)
    assert shown.estimate is not None and "GPU" in shown.estimate and "KV" in shown.estimate
    assert f"--model {tmp_path / model.name}" in shown.command and "--host 127.0.0.1" in shown.command
    missing = preview(body | {"spec": body["spec"] | {"model": {"path": "none.gguf"}}}, CONFIG, 2, tmp_path)
    assert missing.estimate is None and "none.gguf" in missing.estimate_note


def test_the_local_source_reads_files_and_state_and_writes_files(tmp_path: Path) -> None:
    import asyncio
    import json

    import yaml

    from llamacontroller.console.local import LocalSource
    from llamacontroller.console.source import WriteError

    folder, state = tmp_path / "lms", tmp_path / "state"
    folder.mkdir()
    state.mkdir()
    (folder / "one.yaml").write_text(yaml.safe_dump(llamamodel("one", nodeName="ignored")))
    (folder / "pair.yaml").write_text(
        yaml.safe_dump_all([llamamodel("two", gpu={"mode": "both"}), llamamodel("three", path="x")])
    )
    server = {
        "llamamodel": "default/one",
        "slot": "gpu0",
        "port": 8081,
        "model": "one:latest",
        "phase": "Ready",
        "startedAt": 1.0e9,
    }
    (state / "state.json").write_text(json.dumps({"servers": [server], "waiting": {"default/two": "held"}}))
    reloads: list[int] = []
    source = LocalSource([folder], tmp_path, state, CONFIG, converge=lambda: reloads.append(1))
    view = build_view(source.llamamodels(), asyncio.run(source.nodes()), CONFIG)
    (node,) = view.nodes
    slots = {s.name: s for s in node.slots}
    assert node.name == "local" and slots["gpu0"].holder is not None and slots["gpu0"].holder.name == "one"
    assert [w.name for w in slots["both"].queue] == ["two"]

    body = llamamodel_of(
        LoadForm.from_fields({"name": "four", "path": "f.gguf", "node": "local", "slot": "gpu1"}), 2
    )
    asyncio.run(source.create(body, "console session s1 (from 127.0.0.1)"))
    written = yaml.safe_load((folder / "four.yaml").read_text())
    assert written["spec"] == {"model": {"path": "f.gguf"}, "gpu": {"mode": "single", "gpuId": 1}}
    with pytest.raises(WriteError, match="exists already"):
        asyncio.run(source.create(body, "s1"))
    four = next(lm for lm in source.llamamodels() if lm["metadata"]["name"] == "four")
    asyncio.run(source.patch(four, switch_patch("both", "4096", 2), "s1"))
    assert yaml.safe_load((folder / "four.yaml").read_text())["spec"]["gpu"] == {"mode": "both"}
    assert yaml.safe_load((folder / "four.yaml").read_text())["spec"]["parameters"] == {"ctxSize": 4096}
    events = asyncio.run(source.events(four))
    assert [e.reason for e in events] == ["ConsoleSwitch", "ConsoleLoad"] and "s1" in events[1].message
    asyncio.run(source.delete(four, "s1"))
    assert not (folder / "four.yaml").exists() and len(reloads) == 3
    two = next(lm for lm in source.llamamodels() if lm["metadata"]["name"] == "two")
    with pytest.raises(WriteError, match="holds 2 documents"):
        asyncio.run(source.delete(two, "s1"))


def test_requests_and_tokens_per_second_from_the_gateways_own_counters() -> None:
    from llamacontroller.console.traffic import TrafficMeter, counts
    from llamacontroller.serving.metrics import ServingMetrics

    metrics, meter = ServingMetrics(), TrafficMeter(window=30.0)
    metrics.child(metrics.requests, "phi:latest", "/api/chat", "200").inc(3)
    metrics.child(metrics.generated_tokens, "phi:latest", "/api/chat").inc(100)
    assert counts(metrics.registry) == {"phi:latest": (3.0, 100.0)}
    assert meter.observe(metrics.registry, 100.0) == {}  # one reading: no rate yet
    metrics.child(metrics.requests, "phi:latest", "/api/chat", "200").inc(10)
    metrics.child(metrics.requests, "phi:latest", "/v1/chat/completions", "500").inc(10)
    metrics.child(metrics.generated_tokens, "phi:latest", "/api/chat").inc(400)
    seen = meter.observe(metrics.registry, 110.0)
    assert seen["phi:latest"].requests_per_second == 2.0 and seen["phi:latest"].tokens_per_second == 40.0
    meter.observe(metrics.registry, 120.0)
    later = meter.observe(metrics.registry, 160.0)  # nothing for 40 s: the burst has left the window
    assert later["phi:latest"].requests_per_second == 0.0 and later["phi:latest"].tokens_per_second == 0.0
    view = build_view([holding("phi", "n", "gpu0")], [], CONFIG)
    assert "2.00 req/s · 40.0 tokens/s" in board(view, NOW, writes=False, csrf="x", traffic=seen)


def test_on_a_cluster_the_estimate_and_the_fit_verdict_come_from_the_node_agents_facts(
    tmp_path: Path,
) -> None:
    from llamacontroller.demo_model import write_demo_model
    from llamacontroller.fit.model import model_facts
    from llamacontroller.gguf_header import read_header
    from llamacontroller.llamanode import Gpu, LlamaNode, LlamaNodeStatus, ModelFile, NodeMeta
    from llamacontroller.status import rfc3339

    facts = model_facts(read_header(write_demo_model(tmp_path / "tiny.gguf")))
    agent = LlamaNode(
        metadata=NodeMeta(name="n"),
        status=LlamaNodeStatus(
            nvml="ok",
            gpus=[Gpu(index=i, memory_total=24 << 30, memory_used=0) for i in (0, 1)],
            models=[ModelFile(path="tiny.gguf", size=1, modified="2026-12-07T00:00:00Z", facts=facts)],
            heartbeat_at=rfc3339(datetime.now(UTC)),
        ),
    )
    form = LoadForm.from_fields({"name": "t", "path": "tiny.gguf", "node": "n", "slot": "gpu1"})
    shown = preview(llamamodel_of(form, 2), CONFIG, 2, None, agent)
    assert shown.estimate is not None and "KV" in shown.estimate
    assert (
        "the fit check: Fits: needs " in shown.estimate_note and "GPU 1 has 24.0 GiB" in shown.estimate_note
    )
    other = LoadForm.from_fields({"name": "t", "path": "other.gguf", "node": "n", "slot": "gpu1"})
    unlisted = preview(llamamodel_of(other, 2), CONFIG, 2, None, agent)
    assert unlisted.estimate is None and "lists other.gguf: not among its models" in unlisted.estimate_note
