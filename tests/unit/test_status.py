from datetime import UTC, datetime

from llamacontroller.fetch.progress import progress_line
from llamacontroller.resource import Condition, Phase
from llamacontroller.status import (
    NodeHealth,
    Report,
    SlotCondition,
    conditions,
    fetch_progress_line,
    node_health,
    transition_event,
)
from llamacontroller.status import observe_pod as observe_at

NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


def observe_pod(pod, budget=300):
    return observe_at(pod, NOW, budget)


def _pod(phase="Pending", conditions=(), state=None, deleting=False):
    pod = {"metadata": {"name": "p"}, "status": {"phase": phase, "conditions": list(conditions)}}
    if state is not None:
        pod["status"]["containerStatuses"] = [{"state": state}]
    if deleting:
        pod["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return pod


def test_new_pod_is_pending():
    assert observe_pod(_pod()).phase is Phase.PENDING


def test_unschedulable_pod_says_why():
    report = observe_pod(
        _pod(
            conditions=[
                {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/3 nodes"}
            ]
        )
    )
    assert (report.phase, report.reason) == (Phase.PENDING, "Unschedulable")
    assert "0/3 nodes" in report.message


def test_running_not_ready_is_loading_and_ready_is_ready():
    running = {"running": {"startedAt": "x"}}
    assert observe_pod(_pod("Running", state=running)).phase is Phase.LOADING
    ready = _pod("Running", conditions=[{"type": "Ready", "status": "True"}], state=running)
    assert observe_pod(ready).phase is Phase.READY


def test_crash_loop_and_image_pull_are_failures():
    crash = observe_pod(
        _pod("Running", state={"waiting": {"reason": "CrashLoopBackOff", "message": "back-off"}})
    )
    assert (crash.phase, crash.reason) == (Phase.FAILED, "CrashLoopBackOff")
    pull = observe_pod(_pod(state={"waiting": {"reason": "ImagePullBackOff"}}))
    assert pull.phase is Phase.FAILED


def test_terminating_pod_is_pending():
    assert observe_pod(_pod("Running", deleting=True)).reason == "Terminating"


def test_transition_time_moves_only_when_status_changes():
    before = [Condition(type="Ready", status="False", reason="Loading", last_transition_time="t0")]
    still = conditions(Report(phase=Phase.LOADING, reason="Loading", message="m"), 2, before, "t1")
    assert still[0].last_transition_time == "t0" and still[0].observed_generation == 2
    flipped = conditions(Report(phase=Phase.READY, reason="ServerReady", message="m"), 2, before, "t2")
    assert (flipped[0].status, flipped[0].last_transition_time) == ("True", "t2")


def test_slot_condition_only_once_judged():
    assert [
        c.type for c in conditions(Report(phase=Phase.FAILED, reason="InvalidSpec", message="m"), 1, [], "t")
    ] == ["Ready"]
    taken = SlotCondition(available=False, reason="SlotTaken", message="held")
    judged = conditions(Report(phase=Phase.WAITING, reason="SlotTaken", message="m", slot=taken), 1, [], "t")
    assert [(c.type, c.status) for c in judged] == [("SlotAvailable", "False"), ("Ready", "False")]


def _crashed(reason="OOMKilled", code=137, message="ggml_cuda_init: out of memory\nabort"):
    return {
        "restartCount": 3,
        "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s restarting"}},
        "lastState": {
            "terminated": {"exitCode": code, "reason": reason, "message": message, "finishedAt": "t"}
        },
    }


def test_crash_loop_tells_restarts_exit_code_reason_and_last_words():
    pod = _pod("Running")
    pod["status"]["containerStatuses"] = [_crashed()]
    report = observe_pod(pod)
    assert (report.phase, report.reason) == (Phase.FAILED, "CrashLoopBackOff")
    assert "last exit 137 (OOMKilled): ggml_cuda_init: out of memory" in report.message
    assert report.fields["restarts"] == 3
    assert report.fields["lastTermination"] == {
        "exitCode": 137,
        "reason": "OOMKilled",
        "message": "ggml_cuda_init: out of memory\nabort",
        "finishedAt": "t",
    }


def test_recovered_server_is_ready_and_keeps_its_history():
    pod = _pod("Running", conditions=[{"type": "Ready", "status": "True", "lastTransitionTime": "t-ready"}])
    pod["status"]["containerStatuses"] = [
        {**_crashed(), "state": {"running": {"startedAt": "2026-01-01T11:59:00Z"}}}
    ]
    report = observe_pod(pod)
    assert report.phase is Phase.READY and report.fields["loadedAt"] == "t-ready"
    assert report.fields["restarts"] == 3


def test_terminated_container_is_a_failure_with_its_reason():
    pod = _pod(
        "Running", state={"terminated": {"exitCode": 1, "reason": "Error", "message": "invalid argument"}}
    )
    report = observe_pod(pod)
    assert (report.phase, report.reason) == (Phase.FAILED, "Error")
    assert "last exit 1 (Error): invalid argument" in report.message


def test_evicted_pod_says_why():
    pod = _pod("Failed")
    pod["status"].update(reason="Evicted", message="The node was low on resource: memory.")
    report = observe_pod(pod)
    assert (report.phase, report.reason) == (Phase.FAILED, "Evicted")
    assert "low on resource" in report.message


def test_slow_load_is_loading_within_budget_and_failed_past_it():
    pod = _pod("Running", state={"running": {"startedAt": "2026-01-01T11:58:00Z"}})  # 120 s ago
    assert observe_pod(pod, budget=300).phase is Phase.LOADING
    late = observe_pod(pod, budget=60)
    assert (late.phase, late.reason) == (Phase.FAILED, "StartupTimeout")
    assert "loading since 2026-01-01T11:58:00Z, longer than its startup budget of 60 s" in late.message


def test_a_load_past_its_budget_says_the_same_at_every_look():
    """No elapsed time in the message: each resync would write the status and post an Event."""
    pod = _pod("Running", state={"running": {"startedAt": "2026-01-01T11:58:00Z"}})
    later = datetime(2026, 1, 1, 12, 5, 0, tzinfo=UTC)
    assert observe_at(pod, NOW, 60).message == observe_at(pod, later, 60).message


def _with_adapter(state: dict, restarts: int = 0) -> dict:
    pod = _pod("Running", state={"running": {"startedAt": "2026-01-01T11:59:00Z"}})
    pod["status"]["containerStatuses"] = [
        {"name": "llama-server", "state": {"running": {}}, "ready": True},
        {
            "name": "adapter",
            "state": state,
            "restartCount": restarts,
            "lastState": {"terminated": {"exitCode": 2, "reason": "Error", "message": "error: bad --listen"}},
        },
    ]
    return pod


def test_a_crash_looping_adapter_beside_a_healthy_server_is_named():
    report = observe_pod(
        _with_adapter({"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 20s"}}, 3)
    )
    assert (report.phase, report.reason) == (Phase.FAILED, "CrashLoopBackOff")
    assert report.message.startswith("the adapter container of pod p: CrashLoopBackOff: back-off 20s")
    assert "last exit 2 (Error): error: bad --listen" in report.message
    assert report.fields["restarts"] == 0  # the server's restarts, not the adapter's


def test_an_adapter_starting_normally_changes_nothing():
    assert observe_pod(_with_adapter({"running": {}})).phase is Phase.LOADING


def _on(node: str, **pod_kwargs) -> dict:
    pod = _pod("Running", state={"running": {"startedAt": "2026-01-01T11:59:00Z"}}, **pod_kwargs)
    pod["spec"] = {"nodeName": node}
    return pod


def _node(name: str, ready: str) -> NodeHealth | None:
    body = {"metadata": {"name": name}, "status": {"conditions": [
        {"type": "Ready", "status": ready, "lastTransitionTime": "2026-01-01T11:50:00Z"}
    ]}}  # fmt: skip
    return node_health(body)


def test_a_pod_on_a_node_that_does_not_respond_says_so():
    lost = _node("gpu-node-1", "Unknown")
    running = observe_at(_on("gpu-node-1"), NOW, 300, lost)
    assert (running.phase, running.reason) == (Phase.FAILED, "NodeNotResponding")
    assert running.message.startswith("node gpu-node-1 does not respond since 2026-01-01T11:50:00Z")
    stopping = observe_at(_on("gpu-node-1", deleting=True), NOW, 300, lost)
    assert (stopping.phase, stopping.reason) == (Phase.PENDING, "Terminating")
    assert "the slot stays held until the Pod is gone" in stopping.message
    assert "kubectl delete pod p --force --grace-period=0" in stopping.message


def test_a_responding_node_or_another_nodes_pod_is_read_as_usual():
    assert observe_at(_on("gpu-node-1"), NOW, 300, _node("gpu-node-1", "True")).phase is Phase.LOADING
    assert observe_at(_on("gpu-node-2"), NOW, 300, _node("gpu-node-1", "Unknown")).phase is Phase.LOADING


def test_long_termination_messages_keep_their_end():
    message = "\n".join(f"line {i}" for i in range(100))
    pod = _pod("Running", state={"terminated": {"exitCode": 1, "reason": "Error", "message": message}})
    kept = observe_pod(pod).fields["lastTermination"]["message"]
    assert kept.endswith("line 99") and "line 10\n" not in kept


def _restarted_after(seconds: int, state: dict) -> dict:
    pod = _pod("Running", state=state)
    pod["status"]["containerStatuses"][0].update(
        restartCount=1,
        lastState={
            "terminated": {
                "exitCode": 137,
                "reason": "Error",
                "startedAt": "2026-01-01T11:50:00Z",
                "finishedAt": f"2026-01-01T11:5{seconds // 60}:{seconds % 60:02d}Z",
            }
        },
    )
    return pod


def test_a_load_ended_by_the_startup_probe_is_a_startup_timeout_after_the_restart():
    """The probe's failureThreshold spans the budget, so the kubelet ends a slow load right when its
    budget runs out: the restart that follows, running or backing off, says so."""
    running_again = _restarted_after(62, {"running": {"startedAt": "2026-01-01T11:59:50Z"}})
    backing_off = _restarted_after(62, {"waiting": {"reason": "CrashLoopBackOff"}})
    for pod in (running_again, backing_off):
        report = observe_pod(pod, budget=60)
        assert (report.phase, report.reason) == (Phase.FAILED, "StartupTimeout")
        assert report.message.endswith(
            "was restarted by the kubelet: its start at 2026-01-01T11:50:00Z was not ready by "
            "2026-01-01T11:51:02Z, past its startup budget of 60 s (spec.startupTimeoutSeconds)"
        )


def test_a_crash_within_the_budget_is_a_crash_not_a_slow_load():
    backing_off = _restarted_after(20, {"waiting": {"reason": "CrashLoopBackOff"}})
    assert observe_pod(backing_off, budget=60).reason == "CrashLoopBackOff"
    running_again = _restarted_after(20, {"running": {"startedAt": "2026-01-01T11:59:50Z"}})
    assert observe_pod(running_again, budget=60).phase is Phase.LOADING


def _fetching_pod(fetch_state, last_state=None):
    pod = _pod(state={"waiting": {"reason": "PodInitializing"}})
    fetch = {"name": "fetch", "state": fetch_state, "lastState": last_state or {}}
    pod["status"]["initContainerStatuses"] = [fetch]
    return pod


def test_a_running_fetch_is_downloading_with_its_progress_when_known():
    pod = _fetching_pod({"running": {"startedAt": "x"}})
    report = observe_at(pod, NOW, 300, None, "43 % of 4.9 GiB")
    assert (report.phase, report.reason) == (Phase.DOWNLOADING, "Downloading")
    assert report.message == "pod p is fetching the model into the models volume: 43 % of 4.9 GiB"
    assert observe_pod(pod).message == "pod p is fetching the model into the models volume"


def test_a_failed_fetch_is_failed_with_its_own_last_words():
    words = "43 % of 533.5 KiB\nerror: checksum mismatch for http://h/m.gguf: expected sha256 aa, got bb\n"
    failed = {"terminated": {"exitCode": 2, "reason": "Error", "message": words}}
    report = observe_pod(_fetching_pod(failed))
    assert (report.phase, report.reason) == (Phase.FAILED, "FetchFailed")
    assert report.message == (
        "fetching the model in pod p failed: "
        "checksum mismatch for http://h/m.gguf: expected sha256 aa, got bb"
    )
    backing_off = observe_pod(_fetching_pod({"waiting": {"reason": "CrashLoopBackOff"}}, failed))
    assert backing_off.reason == "FetchFailed" and backing_off.message.endswith("; the kubelet tries again")
    again = observe_pod(_fetching_pod({"running": {"startedAt": "x"}}, failed))
    assert again.reason == "FetchFailed"  # no flapping to Downloading at each retry


def test_a_finished_fetch_hands_over_to_the_server():
    pod = _fetching_pod({"terminated": {"exitCode": 0, "reason": "Completed"}})
    pod["status"]["containerStatuses"] = [{"state": {"running": {"startedAt": "x"}}}]
    assert observe_pod(pod).phase is Phase.LOADING


def test_only_the_fetchs_own_progress_lines_reach_the_status():
    assert fetch_progress_line("resuming at 1.0 MiB\n43 % of 4.9 GiB\n") == "43 % of 4.9 GiB"
    assert fetch_progress_line("43 % of 4.9 GiB\nthe connection failed: trying again\n") is None
    assert fetch_progress_line("") is None
    for done, total in ((0, 10), (5 << 30, 10 << 30), (999, 1000), (7, 7)):
        assert fetch_progress_line(progress_line(done, total)) == progress_line(done, total)


def test_progress_moves_the_status_without_an_event_per_step():
    step = Report(phase=Phase.DOWNLOADING, reason="Downloading", message="... 44 % of 4.9 GiB")
    assert transition_event({"phase": "Downloading", "message": "... 43 % of 4.9 GiB"}, step) is None
    assert transition_event({"phase": "Pending", "message": "x"}, step) == (
        "Normal",
        "Downloading",
        step.message,
    )
