from datetime import UTC, datetime

from llamacontroller.resource import Condition, Phase
from llamacontroller.status import Report, SlotCondition, conditions
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
    assert "loading for 120 s, past its startup budget of 60 s" in late.message


def test_long_termination_messages_keep_their_end():
    message = "\n".join(f"line {i}" for i in range(100))
    pod = _pod("Running", state={"terminated": {"exitCode": 1, "reason": "Error", "message": message}})
    kept = observe_pod(pod).fields["lastTermination"]["message"]
    assert kept.endswith("line 99") and "line 10\n" not in kept
