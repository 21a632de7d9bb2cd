"""The test kubelet's rules that need no cluster: command lines, backoff, phase, the hosts file,
the address plan, the kubelet API's log options."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cluster.cluster import ClusterOptions, LocalCluster
from tests.cluster.images import Image, ImageNotFound, ImageTable, command_line, expand
from tests.cluster.kubelet import TestNode
from tests.cluster.kubeletapi import (
    LogOptions,
    LogRequestError,
    certificate_user,
    log_run,
    parse_log_options,
    tail_lines,
)
from tests.cluster.network import MAX_NODES, MAX_PASSIVE_NODES, ClusterNetwork, NetworkError
from tests.cluster.pods import backoff_delay, exit_code, termination_message
from tests.cluster.podstatus import ContainerRecord, pod_phase
from tests.cluster.services import hosts_text


def test_expand_replaces_defined_variables_only() -> None:
    env = {"A": "1", "B": "two"}
    assert expand("$(A)-$(B)-$(C)-$$(A)-$", env) == "1-two-$(C)-$(A)-$"


def test_command_line_follows_the_image_rules() -> None:
    image = Image(["/bin/server"], ["--help"])
    assert command_line({}, image, {}) == ["/bin/server", "--help"]
    assert command_line({"args": ["--port", "$(PORT)"]}, image, {"PORT": "80"}) == [
        "/bin/server",
        "--port",
        "80",
    ]
    assert command_line({"command": ["/bin/other"]}, image, {}) == ["/bin/other"]
    assert command_line({"command": ["/bin/other"], "args": ["x"]}, image, {}) == ["/bin/other", "x"]


def test_the_image_table_matches_patterns_in_order() -> None:
    table = ImageTable({"a/*": Image(["first"]), "*": Image(["second"])})
    assert table.resolve("a/b:1").resolved_entrypoint() == ["first"]
    assert table.resolve("c:1").resolved_entrypoint() == ["second"]
    with pytest.raises(ImageNotFound):
        ImageTable({"a/*": Image(["x"])}).resolve("b")


def test_backoff_is_immediate_then_doubles_to_the_maximum() -> None:
    delays = [backoff_delay(restart, 10, 300) for restart in range(1, 9)]
    assert delays == [0, 10, 20, 40, 80, 160, 300, 300]


def test_exit_codes_of_signalled_processes() -> None:
    assert (exit_code(3), exit_code(-15), exit_code(-9)) == (3, 143, 137)


def test_termination_message_is_the_last_80_lines_within_2_kib(tmp_path: Path) -> None:
    log = tmp_path / "0.log"
    log.write_text("".join(f"line {i}\n" for i in range(200)))
    message = termination_message(log)
    assert message.splitlines()[0] == "line 120" and message.splitlines()[-1] == "line 199"
    log.write_text("".join(f"{i:04d}" + "x" * 95 + "\n" for i in range(80)))
    message = termination_message(log)
    assert len(message.encode()) == 2048 and message.endswith("0079" + "x" * 95 + "\n")


def record(state: str, exit_status: int = 0, ran_before: bool = False) -> ContainerRecord:
    last = {"exitCode": 1} if ran_before else None
    return ContainerRecord(name="c", image="i", state=state, exit_code=exit_status, last_terminated=last)


@pytest.mark.parametrize(
    ("policy", "records", "terminal", "phase"),
    [
        ("Always", [record("waiting")], False, "Pending"),
        ("Always", [record("running"), record("waiting")], False, "Pending"),
        ("Always", [record("running"), record("waiting", ran_before=True)], False, "Running"),
        ("Always", [record("terminated", 1)], False, "Running"),
        ("Never", [record("terminated", 0)], False, "Succeeded"),
        ("Never", [record("terminated", 0), record("terminated", 2)], False, "Failed"),
        ("OnFailure", [record("terminated", 2)], False, "Running"),
        ("Always", [record("terminated", 0)], True, "Succeeded"),
        ("Always", [record("terminated", 143)], True, "Failed"),
    ],
)
def test_pod_phase(policy: str, records: list[ContainerRecord], terminal: bool, phase: str) -> None:
    assert pod_phase(policy, records, terminal) == phase


def test_hosts_map_services_to_their_first_ready_endpoint() -> None:
    def service(name: str) -> dict:
        return {"metadata": {"name": name, "namespace": "ns"}}

    def endpoint_slice(service_name: str, endpoints: list[tuple[str, bool]]) -> dict:
        return {
            "metadata": {"namespace": "ns", "labels": {"kubernetes.io/service-name": service_name}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": [ip], "conditions": {"ready": ready}} for ip, ready in endpoints],
        }

    text = hosts_text(
        [service("web"), service("idle")],
        [
            endpoint_slice("web", [("10.1.1.3", True), ("10.1.1.2", False)]),
            endpoint_slice("idle", [("10.1.1.9", False)]),
        ],
    )
    assert "10.1.1.3\tweb.ns.svc.cluster.local web.ns.svc web.ns\n" in text
    assert "idle" not in text and text.startswith("127.0.0.1\tlocalhost\n")


def test_passive_nodes_past_the_250th_have_addresses_but_no_pods(tmp_path: Path) -> None:
    network = ClusterNetwork(octet=201)
    assert network.node_address(MAX_NODES) == "10.201.250.1"
    assert network.node_address(MAX_NODES + 1) == "10.201.251.1"
    assert network.node_address(MAX_NODES + 254) == "10.201.251.254"
    assert network.node_address(MAX_NODES + 255) == "10.201.252.1"
    every = {network.node_address(index) for index in range(1, MAX_PASSIVE_NODES + 1)}
    assert len(every) == MAX_PASSIVE_NODES
    with pytest.raises(ValueError, match="outside"):
        network.node_address(MAX_PASSIVE_NODES + 1)
    with pytest.raises(NetworkError, match="no Pod addresses"):
        network.add_pod(MAX_NODES + 1, "uid")
    many = [TestNode(f"n{index}", passive=True) for index in range(MAX_NODES)]
    LocalCluster(tmp_path, ClusterOptions(nodes=(*many, TestNode("last", passive=True))))
    with pytest.raises(ValueError, match="nodes must be passive"):
        LocalCluster(tmp_path, ClusterOptions(nodes=(*many, TestNode("active"))))


def test_log_options_are_the_ones_the_api_server_forwards() -> None:
    assert parse_log_options({}) == LogOptions()
    query = {"tailLines": ["40"], "limitBytes": ["65536"], "previous": ["true"], "stream": ["All"]}
    assert parse_log_options(query) == LogOptions(tail_lines=40, limit_bytes=65536, previous=True)
    assert parse_log_options({"follow": ["true"], "timestamps": ["false"]}) == LogOptions(follow=True)
    assert parse_log_options({"tail": ["3"]}).tail_lines == 3  # the kubelet's older name
    assert parse_log_options({"tail": ["all"], "tailLines": ["3"]}).tail_lines is None
    refused = [
        ({"timestamps": ["true"]}, 400, "does not record when each line was written"),
        ({"sinceSeconds": ["10"]}, 400, "does not record when each line was written"),
        ({"stream": ["Stdout"]}, 400, "stdout and stderr in one file"),
        ({"tailLines": ["x"]}, 400, "Unable to decode query"),
        ({"previous": ["maybe"]}, 400, "Unable to decode query"),
        ({"tailLines": ["-1"]}, 422, "Invalid request"),
        ({"limitBytes": ["0"]}, 422, "Invalid request"),
    ]
    for query, status, words in refused:
        with pytest.raises(LogRequestError, match=words) as error:
            parse_log_options(query)
        assert error.value.status == status, query


def test_tail_lines_counts_an_unfinished_last_line() -> None:
    data = b"one\ntwo\nthree\n"
    assert tail_lines(data, None) == data
    assert tail_lines(data, 0) == b""
    assert tail_lines(data, 1) == b"three\n"
    assert tail_lines(data, 2) == b"two\nthree\n"
    assert tail_lines(data, 9) == data
    assert tail_lines(b"one\ntwo", 1) == b"two"
    assert tail_lines(b"", 3) == b""


def test_the_log_of_a_run_is_chosen_by_the_kubelets_rules() -> None:
    def record(state: str, restarts: int = 0, ever_ran: bool = True, reason: str = "") -> ContainerRecord:
        found = ContainerRecord(name="c", image="i", state=state, restart_count=restarts, ever_ran=ever_ran)
        found.waiting_reason = reason or found.waiting_reason
        return found

    assert log_run(record("running"), previous=False, pod="p") == 0
    assert log_run(record("running", 2), previous=False, pod="p") == 2
    assert log_run(record("running", 2), previous=True, pod="p") == 1
    assert log_run(record("terminated", 1), previous=True, pod="p") == 0
    # Backing off after run 3 ended: that run is both the current log and lastState's.
    assert log_run(record("waiting", 3, reason="CrashLoopBackOff"), previous=False, pod="p") == 3
    assert log_run(record("waiting", 3, reason="CrashLoopBackOff"), previous=True, pod="p") == 3
    with pytest.raises(LogRequestError, match='previous terminated container "c" in pod "p" not found'):
        log_run(record("running"), previous=True, pod="p")
    with pytest.raises(
        LogRequestError, match='container "c" in pod "p" is waiting to start: PodInitializing'
    ):
        log_run(record("waiting", ever_ran=False, reason="PodInitializing"), previous=False, pod="p")
    with pytest.raises(LogRequestError, match="image can't be pulled"):
        log_run(record("waiting", ever_ran=False, reason="ErrImagePull"), previous=False, pod="p")


def test_the_certificate_user_is_its_common_name() -> None:
    subject = ((("organizationName", "system:nodes"),), (("commonName", "system:node:a"),))
    assert certificate_user({"subject": subject}) == "system:node:a"
    assert certificate_user({}) is None and certificate_user(None) is None
