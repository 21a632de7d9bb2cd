"""The web console in a real browser (Debian's headless Chromium driven by Playwright) on the test
cluster: the real operator, and the real gateway with its ServiceAccount bound by deploy/'s RBAC and
the console components' roles. Sign in (a wrong key refused), see two slots Ready, load a third
model into a free slot and watch it go Pending, Loading, Ready, read its Events and its server's log
(through the API server and the test kubelet's API), unload it;
a write without its CSRF token refused. The audit log then shows that RBAC refused the gateway
nothing and that every verb the console components grant was used.

``--update-golden`` also saves the screenshots of docs/console/ (light, dark, a phone's width)."""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from llamacontroller.console.view import ARGO_ANNOTATION
from tests.cluster.cluster import LocalCluster
from tests.deploy.test_rbac import grant_of, granted
from tests.support.builders import TINY_MODEL, lm
from tests.support.components import GATEWAY_ACCOUNT, GATEWAY_USER, GatewayProcess, OperatorProcess
from tests.support.components import service_account_kubeconfig as account_kubeconfig
from tests.support.kube import Kube, refused_by_rbac, requests_of
from tests.support.manifests import DEPLOY, kustomize_build
from tests.support.paths import REPO
from tests.support.polling import eventually

pytestmark = pytest.mark.timeout(300)

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
KEY = "console-key-of-the-test-0123456789"
CONSOLE_ROLES = ("llamacontroller-console", "llamacontroller-console-writes")
READY_MS = 90_000
SCREENSHOTS = REPO / "docs" / "console"


@pytest.fixture(scope="module")
def console_rbac() -> list[dict[str, Any]]:
    """The ClusterRoles and bindings of deploy/components/console and console-writes, as an overlay
    of deploy/ builds them."""
    root = Path(tempfile.mkdtemp(prefix="console-overlay-"))
    shutil.copytree(DEPLOY, root / "deploy")
    (root / "overlay").mkdir()
    (root / "overlay" / "kustomization.yaml").write_text(
        "resources: [../deploy]\n"
        "components: [../deploy/components/console, ../deploy/components/console-writes]\n"
    )
    built = kustomize_build(root / "overlay")
    shutil.rmtree(root)
    return [
        d
        for d in built
        if d["kind"] in ("ClusterRole", "ClusterRoleBinding") and d["metadata"]["name"] in CONSOLE_ROLES
    ]


@pytest.fixture
def console(
    cluster: LocalCluster,
    namespace: str,
    operator_config: Path,
    tmp_path: Path,
    console_rbac: list[dict[str, Any]],
) -> Iterator[GatewayProcess]:
    """The gateway with the console on (a key, writes on), as the two components set it up."""
    assert cluster.control_plane is not None
    cluster.kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(console_rbac))
    key_file = tmp_path / "console-key"
    key_file.write_text(KEY + "\n")
    mark = cluster.control_plane.audit_mark()
    kubeconfig = account_kubeconfig(cluster, GATEWAY_ACCOUNT, tmp_path / "gateway.kubeconfig")
    extra = ["--config", str(operator_config), "--console-key-file", str(key_file), "--console-writes"]
    process = GatewayProcess(cluster, kubeconfig, tmp_path / "gateway.log", extra=extra)
    process.audit_mark = mark
    try:
        process.start_listening()
        yield process
    finally:
        process.stop()
        for doc in console_rbac:
            cluster.kubectl("delete", doc["kind"].lower(), doc["metadata"]["name"], "--ignore-not-found")
    assert "Traceback" not in process.log(), process.log()[-10000:]


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    """A fresh Chromium profile, driven by Playwright (Debian's Chromium: no browser download)."""
    if not CHROMIUM.exists():
        pytest.fail("no /usr/bin/chromium: bash .ci/setup tests installs it")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=str(CHROMIUM),
            args=CHROMIUM_ARGS,
            headless=True,
            viewport={"width": 1280, "height": 860},
        )
        try:
            yield context
        finally:
            context.close()


def phase_in(page: Any, slot: str) -> str | None:
    found = page.locator(f'[data-slot="{slot}"] .holder > [data-phase]')
    return found.first.get_attribute("data-phase") if found.count() else None


RECORD_PHASES = """slot => {
  window.__phases = [];
  const look = () => {
    const found = document.querySelector(`[data-slot="${slot}"] .holder > [data-phase]`);
    const phase = found ? found.dataset.phase : null;
    const last = window.__phases[window.__phases.length - 1];
    if (phase && phase !== "Free" && last !== phase) window.__phases.push(phase);
  };
  new MutationObserver(look).observe(document.getElementById("board"), {childList: true, subtree: true});
  look();
}"""


def test_sign_in_look_load_watch_and_unload(
    cluster: LocalCluster,
    kube: Kube,
    operator: OperatorProcess,
    console: GatewayProcess,
    browser: Any,
    console_rbac: list[dict[str, Any]],
    tmp_path: Path,
    update_golden: bool,
) -> None:
    from playwright.sync_api import expect

    phi = lm("phi-4", node="gpu-node-2", gpu={"mode": "single", "gpuId": 1})
    phi["metadata"]["annotations"] = {
        ARGO_ANNOTATION: f"llms:llamacontroller.io/LlamaModel:{kube.namespace}/phi-4"
    }
    kube.apply(lm("qwen-coder", node="gpu-node-1", gpu={"mode": "single", "gpuId": 0}), phi)
    page = browser.new_page()
    shots = tmp_path / "screenshots"

    # Nobody signed in: the login page; a wrong key is refused.
    page.goto(f"{console.url}/ui")
    assert page.url.endswith("/ui/login")
    page.fill("#key", "not-the-console-key-at-all")
    with page.expect_response(lambda r: r.url.endswith("/ui/login") and r.request.method == "POST") as answer:
        page.click("button[type=submit]")
    assert answer.value.status == 401
    expect(page.locator("#login-error")).to_have_text("That is not the console key.")
    page.screenshot(path=str(shots / "console-login.png"))
    assert KEY not in page.content()

    # The right key: the board, where both LlamaModels become Ready without a reload.
    page.fill("#key", KEY)
    page.click("button[type=submit]")
    page.wait_for_url(f"{console.url}/ui")
    cookies = {c["name"]: c for c in browser.cookies()}
    assert cookies["lc_session"]["httpOnly"] and cookies["lc_session"]["sameSite"] == "Strict"
    for slot in ("gpu-node-1/gpu0", "gpu-node-2/gpu1"):
        expect(page.locator(f'[data-slot="{slot}"] .holder > [data-phase]')).to_have_attribute(
            "data-phase", "Ready", timeout=READY_MS
        )
    expect(page.locator('[data-slot="gpu-node-1/gpu1"] [data-phase]')).to_have_attribute("data-phase", "Free")
    assert KEY not in page.content()
    # Argo CD applies phi-4: no unload button, but one that says Git owns it.
    owned = page.locator('[data-slot="gpu-node-2/gpu1"] .actions button')
    expect(owned).to_have_text("Git owns it: Argo CD (llms)")
    expect(owned).to_be_disabled()
    page.screenshot(path=str(shots / "console-board.png"), full_page=True)

    # Load a third model into the free slot: the preview shows its server, then Apply.
    page.click("#load-link")
    page.fill("input[name=name]", "smol")
    expect(page.locator("input[name=namespace]")).to_have_value(kube.namespace)  # where the others are
    page.fill("input[name=path]", TINY_MODEL)
    page.fill("input[name=node]", "gpu-node-1")
    page.select_option("select[name=slot]", "gpu1")
    page.fill("input[name=ctx_size]", "2048")
    page.click("#preview-button")
    page.wait_for_selector("#preview, #form-error, #refused")
    assert page.locator("#preview").count(), page.locator("main").inner_text()
    command = page.locator("#preview .command").inner_text()
    assert "--port 8088" in command and "--ctx-size 2048" in command and f"/models/{TINY_MODEL}" in command
    page.screenshot(path=str(shots / "console-load.png"), full_page=True)
    assert kube.llamamodel("smol") is None  # a preview writes nothing
    # The node's kubelet holds the new Pod back for a moment (it stops talking to the API server, as
    # a slow image pull would keep it waiting), so that its Pending outlasts the page's 1 s poll.
    cluster.lose_node("gpu-node-1")
    try:
        page.click("#apply")
        page.wait_for_url(f"{console.url}/ui")
        page.evaluate(RECORD_PHASES, "gpu-node-1/gpu1")
        expect(page.locator('[data-slot="gpu-node-1/gpu1"] .holder > [data-phase]')).to_have_attribute(
            "data-phase", "Pending", timeout=20_000
        )
    finally:
        cluster.recover_node("gpu-node-1")
    expect(page.locator('[data-slot="gpu-node-1/gpu1"] .holder > [data-phase]')).to_have_attribute(
        "data-phase", "Ready", timeout=READY_MS
    )
    # The page saw it go from Pending (through Loading, unless that lasted less than a poll) to
    # Ready, in that order, without a reload...
    seen = page.evaluate("window.__phases")
    order = ["Pending", "Loading", "Ready"]
    assert seen[0] == "Pending" and seen[-1] == "Ready" and [p for p in order if p in seen] == seen, seen
    # ... and the operator's Events record each transition: Pending (PodCreated), Loading, Ready.
    reasons = eventually(lambda: (r := kube.reasons("smol")) and r[-1] == "ServerReady" and r, what="events")
    assert "ConsoleLoad" in reasons, reasons
    transitions = [r for r in reasons if r in ("PodCreated", "Loading", "ServerReady")]
    assert transitions[0] == "PodCreated" and transitions[-1] == "ServerReady" and "Loading" in transitions
    print(f"phases seen in the browser: {seen}; events: {reasons}")
    assert kube.llamamodel("smol")["spec"] == {  # type: ignore[index]
        "model": {"path": TINY_MODEL},
        "nodeName": "gpu-node-1",
        "gpu": {"mode": "single", "gpuId": 1},
        "parameters": {"ctxSize": 2048},
    }

    # A request through the gateway shows on the board as smol's traffic.
    answer = httpx.post(
        f"{console.url}/api/generate",
        json={"model": "smol", "prompt": "hi", "stream": False, "options": {"num_predict": 4}},
        timeout=60,
    )
    assert answer.status_code == 200, answer.text
    rate = page.locator('[data-slot="gpu-node-1/gpu1"] .holder').get_by_text(re.compile(r"req/s"))
    expect(rate).to_have_text(re.compile(r"^(0\.0[1-9]|0\.[1-9]\d|[1-9][\d.]*) req/s"), timeout=10_000)

    # A fourth asks for a held slot: no Pod, it waits in that slot's queue, and the board says so.
    page.click("#load-link")
    page.fill("input[name=name]", "late")
    page.fill("input[name=path]", TINY_MODEL)
    page.fill("input[name=node]", "gpu-node-1")
    page.select_option("select[name=slot]", "gpu0")
    page.click("#preview-button")
    page.click("#apply")
    page.wait_for_url(f"{console.url}/ui")
    queue = page.locator('[data-slot="gpu-node-1/gpu0"] .queue')
    expect(queue.locator("[data-phase]")).to_have_attribute("data-phase", "Waiting", timeout=30_000)
    expect(queue.locator("a[data-model]")).to_have_attribute("data-model", f"{kube.namespace}/late")
    assert kube.status("late")["phase"] == "Waiting" and not kube.server_pods("late")
    page.screenshot(path=str(shots / "console-board-three.png"), full_page=True)

    # Its page: conditions, the Event naming the session, the server's log read through the API.
    page.click('[data-slot="gpu-node-1/gpu1"] a[data-model]')
    page.wait_for_url(f"{console.url}/ui/lm/{kube.namespace}/smol")
    expect(page.locator("#detail")).to_contain_text("ConsoleLoad")
    expect(page.locator("#detail")).to_contain_text("created by console session")
    # The log is llama-server's own: the API server reads it from the test kubelet's API, and
    # every line shown is one the server wrote into its container's log.
    server_log = page.locator("#detail pre.log")
    expect(server_log).to_contain_text(re.compile(r"\bsrv\b"), timeout=30_000)
    shown = [line.strip() for line in server_log.inner_text().splitlines() if line.strip()]
    written = cluster.container_log(kube.namespace, kube.one_pod("smol")["metadata"]["name"], "llama-server")
    assert shown and all(line in written for line in shown), shown[-5:]
    page.screenshot(path=str(shots / "console-model.png"), full_page=True)

    # Switch its context size from its page: a patch of its spec, recorded as an Event.
    page.fill("form[action='/ui/switch'] input[name=ctx_size]", "3072")
    page.click("form[action='/ui/switch'] button[type=submit]")
    page.wait_for_url(f"{console.url}/ui/lm/{kube.namespace}/smol")
    assert kube.llamamodel("smol")["spec"]["parameters"] == {"ctxSize": 3072}  # type: ignore[index]
    expect(page.locator("#detail")).to_contain_text("ConsoleSwitch")
    # A switch from a page built before that change (its spec's generation 1) is refused.
    csrf = next(c["value"] for c in browser.cookies() if c["name"] == "lc_csrf")
    stale = browser.request.post(
        f"{console.url}/ui/switch",
        form={
            "ref": f"{kube.namespace}/smol",
            "slot": "gpu1",
            "ctx_size": "1024",
            "generation": "1",
            "csrf": csrf,
        },
    )
    assert stale.status == 409 and "changed meanwhile" in stale.text()
    assert kube.llamamodel("smol")["spec"]["parameters"] == {"ctxSize": 3072}  # type: ignore[index]

    # A write without its CSRF token, with the session cookie: refused, nothing deleted.
    refused = browser.request.post(f"{console.url}/ui/unload", form={"ref": f"{kube.namespace}/smol"})
    assert refused.status == 403 and "CSRF" in refused.text()
    wrong = browser.request.post(
        f"{console.url}/ui/unload", form={"ref": f"{kube.namespace}/smol", "csrf": "guessed"}
    )
    assert wrong.status == 403
    assert kube.llamamodel("smol") is not None
    # Nor does a well-formed write to a LlamaModel that Git owns go through.
    owned_write = browser.request.post(
        f"{console.url}/ui/unload", form={"ref": f"{kube.namespace}/phi-4", "csrf": csrf}
    )
    assert owned_write.status == 409 and "Argo CD (llms)" in owned_write.text()
    assert kube.llamamodel("phi-4") is not None

    # Unload from the board (the page asks first): the LlamaModel is deleted, the slot is free.
    page.goto(f"{console.url}/ui")
    page.on("dialog", lambda dialog: dialog.accept())
    page.click(f'[data-unload="{kube.namespace}/smol"]')
    page.wait_for_url(f"{console.url}/ui")
    eventually(lambda: kube.llamamodel("smol") is None, what="smol deleted")
    page.click(f'[data-unload="{kube.namespace}/late"]')
    page.wait_for_url(f"{console.url}/ui")
    eventually(lambda: kube.llamamodel("late") is None, what="late deleted")
    expect(page.locator('[data-slot="gpu-node-1/gpu0"] .queue')).to_have_count(0)
    expect(page.locator('[data-slot="gpu-node-1/gpu1"] [data-phase]')).to_have_attribute(
        "data-phase", "Free", timeout=30_000
    )

    # Dark, and a phone's width.
    page.emulate_media(color_scheme="dark")
    page.screenshot(path=str(shots / "console-board-dark.png"), full_page=True)
    phone = browser.new_page()
    phone.set_viewport_size({"width": 390, "height": 844})
    phone.goto(f"{console.url}/ui")
    expect(phone.locator('[data-slot="gpu-node-1/gpu0"] .holder > [data-phase]')).to_have_attribute(
        "data-phase", "Ready"
    )
    width = phone.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"the board is {width} px wide on a 390 px phone"
    phone.screenshot(path=str(shots / "console-phone.png"), full_page=True)

    # RBAC: nothing refused, and every verb the console components grant was used.
    assert cluster.control_plane is not None
    calls = requests_of(cluster.control_plane.audit_events(console.audit_mark), GATEWAY_USER)
    assert not refused_by_rbac(calls), refused_by_rbac(calls)
    used = {grant_of(e) for e in calls if e.get("objectRef")}
    for role in (d for d in console_rbac if d["kind"] == "ClusterRole"):
        unused = granted(role) - used
        assert not unused, f"{role['metadata']['name']} grants what the console never used: {unused}"

    if update_golden:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        for shot in shots.iterdir():
            shutil.copy(shot, SCREENSHOTS / shot.name)
