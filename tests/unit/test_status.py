from llamacontroller.resource import Condition, Phase
from llamacontroller.status import Report, conditions, observe_pod


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
    still = conditions(Report(Phase.LOADING, "Loading", "m"), 2, before, "t1")
    assert still[0].last_transition_time == "t0" and still[0].observed_generation == 2
    flipped = conditions(Report(Phase.READY, "ServerReady", "m"), 2, before, "t2")
    assert (flipped[0].status, flipped[0].last_transition_time) == ("True", "t2")


def test_slot_condition_only_once_judged():
    assert [c.type for c in conditions(Report(Phase.FAILED, "InvalidSpec", "m"), 1, [], "t")] == ["Ready"]
    judged = conditions(Report(Phase.WAITING, "SlotTaken", "m", False, "SlotTaken", "held"), 1, [], "t")
    assert [(c.type, c.status) for c in judged] == [("SlotAvailable", "False"), ("Ready", "False")]
