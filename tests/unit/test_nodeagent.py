"""The node agent's pure parts: NVML readings (through the fake of NVML and, on this machine, the
real library), PID -> Pod from cgroup lines, the LlamaNode status built from them, the models
volume's headers, and when a status is written."""

from __future__ import annotations

import os
import shutil

import pytest

from llamacontroller.demo_model import write_demo_model
from llamacontroller.llamanode import LlamaNodeStatus
from llamacontroller.nodeagent.agent import Written, significant, status_patch, write_due
from llamacontroller.nodeagent.cgroup import pod_uid_of, read_pod_uid
from llamacontroller.nodeagent.models import ModelsVolume
from llamacontroller.nodeagent.nvml import GpuReading, NvmlReader, NvmlReading, ProcessReading, read_nvml
from llamacontroller.nodeagent.occupancy import (
    Owner,
    gpu_lines,
    local_owners,
    node_status,
    owners_by_pod,
    slot_pod_owner,
)
from llamacontroller.render.children import render_children
from llamacontroller.resource import parse_llamamodel
from tests.support.builders import llamamodel, repo_config
from tests.support.fake_nvml import (
    RECORDINGS,
    FakeNvml,
    NVMLError_DriverNotLoaded,
    NVMLError_LibraryNotFound,
    parse_recording,
)

MIB = 1 << 20
GIB = 1 << 30
UID = "0f1c2d3e-aaaa-4bbb-8ccc-1234567890ab"
REAL_NVML = os.environ.get("LLAMACONTROLLER_REAL_NVML") == "1"


def recorded(name: str) -> NvmlReading:
    return read_nvml(FakeNvml(RECORDINGS / f"{name}.xml"))


# NVML, through the fake of it


def test_an_idle_node_of_two_rtx_3090():
    reading = recorded("rtx3090x2-idle")
    assert reading.ok and reading.driver_version == "550.127.05"
    assert [gpu.index for gpu in reading.gpus] == [0, 1]
    first = reading.gpus[0]
    assert first.uuid == "GPU-5a1c2f9e-3b7d-4c1a-9e8f-0d2b6c4a7e13"
    assert first.name == "NVIDIA GeForce RTX 3090"
    assert (first.memory_total, first.memory_used, first.utilization) == (24576 * MIB, 2 * MIB, 0)
    assert all(gpu.processes == () for gpu in reading.gpus)


def test_processes_come_with_their_memory_once_each():
    reading = recorded("rtx3090x2-two-servers")
    assert reading.gpus[0].processes == (ProcessReading(91342, "/app/llama-server", 18934 * MIB),)
    # 48211 is a compute and graphics process (C+G): listed once.
    assert reading.gpus[1].processes == (
        ProcessReading(48211, "/usr/bin/python3", 1300 * MIB),
        ProcessReading(91877, "/app/llama-server", 5412 * MIB),
    )
    assert reading.gpus[1].utilization == 12


def test_the_recordings_are_nvidia_smi_logs():
    for path in sorted(RECORDINGS.glob("*.xml")):
        driver, gpus = parse_recording(path.read_text())
        assert driver and len(gpus) == 2, path.name
        assert sorted(gpu.minor for gpu in gpus) == [0, 1]
    with pytest.raises(ValueError, match="not an nvidia-smi log"):
        parse_recording("<html/>")


def test_no_library_no_driver_no_gpu_are_readings_that_say_so():
    no_library = read_nvml(FakeNvml(init_error=NVMLError_LibraryNotFound))
    assert no_library.state.startswith("no NVML: libnvidia-ml.so.1 not found") and no_library.gpus == ()
    no_driver = read_nvml(FakeNvml(init_error=NVMLError_DriverNotLoaded))
    assert no_driver.state == "no driver: the NVIDIA kernel driver is not loaded"
    empty = read_nvml(FakeNvml("<nvidia_smi_log><driver_version>550.1</driver_version></nvidia_smi_log>"))
    assert empty.state == "no GPU: NVML lists none" and empty.driver_version == "550.1"


def test_the_agents_reader_keeps_nvml_open_and_sees_each_new_reading(tmp_path):
    recording = tmp_path / "nvidia-smi.xml"
    recording.write_text((RECORDINGS / "rtx3090x2-idle.xml").read_text())
    nvml = FakeNvml(recording)
    reader = NvmlReader(nvml)
    assert reader.read().gpus[1].processes == ()
    recording.write_text((RECORDINGS / "rtx3090x2-foreign.xml").read_text())
    assert [p.pid for p in reader.read().gpus[1].processes] == [48211]
    assert (nvml.inits, nvml.initialized) == (1, 1)  # one nvmlInit for both readings
    reader.close()
    assert nvml.initialized == 0
    failing = FakeNvml(recording, init_error=NVMLError_DriverNotLoaded)
    later = NvmlReader(failing)
    assert later.read().state.startswith("no driver")
    failing.init_error = None  # the driver is loaded meanwhile: the next reading tries again
    assert later.read().ok and failing.inits == 1


def test_the_real_library_reads_what_this_machine_has():
    """pynvml itself: without an NVIDIA driver (CI), it says there is no NVML; on a machine with a
    GPU (LLAMACONTROLLER_REAL_NVML=1), it reads what nvidia-smi reads."""
    if not REAL_NVML:
        reading = read_nvml()
        assert not reading.ok and reading.state.startswith("no NVML: libnvidia-ml.so.1 not found")
        return
    import subprocess

    smi = shutil.which("nvidia-smi")
    assert smi, "nvidia-smi is not on PATH"
    xml = subprocess.run([smi, "-q", "-x"], check=True, capture_output=True, text=True).stdout
    real, recording = read_nvml(), read_nvml(FakeNvml(xml))
    assert real.ok and real.driver_version == recording.driver_version
    assert [(g.index, g.uuid, g.name, g.memory_total) for g in real.gpus] == [
        (g.index, g.uuid, g.name, g.memory_total) for g in recording.gpus
    ]
    for ours, theirs in zip(real.gpus, recording.gpus, strict=True):
        assert abs(ours.memory_used - theirs.memory_used) < 512 * MIB  # read a moment apart


# PID -> Pod: /proc/<pid>/cgroup as the kubelet's cgroup drivers lay it out

CGROUP_V1_CGROUPFS = f"""12:pids:/kubepods/burstable/pod{UID}/4d9f0c2a8b1e
11:memory:/kubepods/burstable/pod{UID}/4d9f0c2a8b1e
1:name=systemd:/kubepods/burstable/pod{UID}/4d9f0c2a8b1e
"""
SLICE = f"kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID.replace('-', '_')}.slice"
CGROUP_V1_SYSTEMD = f"""4:memory:/{SLICE}/cri-containerd-4d9f0c2a8b1e.scope
1:name=systemd:/{SLICE}/cri-containerd-4d9f0c2a8b1e.scope
"""
CGROUP_V2_SYSTEMD = (
    f"0::/kubepods.slice/kubepods-pod{UID.replace('-', '_')}.slice/cri-containerd-4d9f.scope\n"
)
CGROUP_V2_CGROUPFS = f"0::/kubepods/pod{UID}/4d9f0c2a8b1e\n"
CGROUP_V2_NAMESPACED = f"0::/../../kubepods-burstable-pod{UID.replace('-', '_')}.slice/crio-4d9f.scope\n"


@pytest.mark.parametrize(
    "text",
    [CGROUP_V1_CGROUPFS, CGROUP_V1_SYSTEMD, CGROUP_V2_SYSTEMD, CGROUP_V2_CGROUPFS, CGROUP_V2_NAMESPACED],
)
def test_the_pod_uid_of_every_cgroup_layout(text):
    assert pod_uid_of(text) == UID


@pytest.mark.parametrize(
    "text",
    [
        "0::/user.slice/user-1000.slice/session-2.scope\n",
        "0::/system.slice/docker-4d9f0c2a8b1e.scope\n",
        "0::/kubepods.slice/kubepods-besteffort.slice\n",  # the QoS level, no Pod
        "12:pids:/\n0::/\n",
        "",
    ],
)
def test_a_process_outside_any_pod_has_no_pod_uid(text):
    assert pod_uid_of(text) is None


def test_the_pod_uid_of_a_running_process_and_of_one_gone(tmp_path):
    assert read_pod_uid(os.getpid()) is None  # the tests run in no Pod
    (tmp_path / "42").mkdir()
    (tmp_path / "42" / "cgroup").write_text(CGROUP_V2_SYSTEMD)
    assert read_pod_uid(42, proc=tmp_path) == UID
    assert read_pod_uid(43, proc=tmp_path) is None


# The status: whose each process is, foreign memory, holders, the summary


def slot_pod(name: str, uid: str, namespace: str = "team-a", **spec) -> dict:
    body = llamamodel(name=name, uid=f"uid-{name}", namespace=namespace, **spec)
    pod = render_children(parse_llamamodel(body), repo_config()).pod
    pod["metadata"]["uid"] = uid
    return pod


def test_a_rendered_slot_pod_names_its_llamamodel():
    uid, owner = slot_pod_owner(slot_pod("phi-4", UID)) or (None, None)
    assert uid == UID
    assert owner is not None
    assert owner.llama_model == "team-a/phi-4" and owner.pod.startswith("team-a/phi-4-")
    assert slot_pod_owner({"metadata": {"name": "x", "namespace": "y", "uid": "z"}}) is None


def test_servers_of_slot_pods_are_told_from_foreign_processes():
    pods = [slot_pod("phi-4", "uid-a", gpu={"mode": "single", "gpuId": 0}), slot_pod("qwen", "uid-b")]
    cgroups = {91342: "uid-a", 91877: "uid-b"}  # 48211: in no Pod
    status = node_status(recorded("rtx3090x2-two-servers"), owners_by_pod(pods, cgroups.get))
    first, second = status.gpus
    assert status.nvml == "ok" and status.driver_version == "550.127.05"
    assert first.holders == ["team-a/phi-4"] and first.foreign_memory == 0
    assert first.summary == "held by team-a/phi-4"
    assert first.processes[0].pod == pods[0]["metadata"]["namespace"] + "/" + pods[0]["metadata"]["name"]
    assert second.holders == ["team-a/qwen"] and second.foreign_memory == 1300 * MIB
    assert second.summary == "held by team-a/qwen; occupied: 1.3 GiB by others"
    foreign = second.processes[0]
    assert foreign.pid == 48211 and foreign.foreign and foreign.pod is None


def test_idle_and_occupied_gpus_in_a_word():
    nobody = node_status(recorded("rtx3090x2-foreign"), lambda pid: None)
    assert [gpu.summary for gpu in nobody.gpus] == ["idle", "occupied: 3.2 GiB by others"]
    assert nobody.gpus[1].foreign_memory == 3270 * MIB
    # A local server known by its PID (llamacontroller status): held, not foreign.
    local = node_status(recorded("rtx3090x2-foreign"), {48211: Owner("local/phi-4")}.get)
    assert local.gpus[1].summary == "held by local/phi-4" and local.gpus[1].foreign_memory == 0


def test_a_foreign_process_whose_memory_nvml_cannot_say():
    gpu = GpuReading(0, "GPU-x", "T4", 16 * GIB, 3 * GIB, None, (ProcessReading(7, "Xorg", None),))
    status = node_status(NvmlReading("ok", "550", (gpu,)), lambda pid: None)
    assert status.gpus[0].summary == "occupied by others" and status.gpus[0].utilization is None


def test_no_nvml_is_a_status_without_gpus():
    status = node_status(read_nvml(FakeNvml(init_error=NVMLError_LibraryNotFound)), lambda pid: None)
    assert status.nvml.startswith("no NVML") and status.gpus == []


# The models volume


def test_the_models_volume_lists_headers_and_errors_and_reads_each_version_once(tmp_path):
    write_demo_model(tmp_path / "tiny.gguf")
    (tmp_path / "team").mkdir()
    write_demo_model(tmp_path / "team" / "other.gguf", seed=1)
    (tmp_path / "broken.gguf").write_bytes(b"GGUF\x03\x00\x00\x00 truncated")
    (tmp_path / "notes.txt").write_text("not a model")
    volume = ModelsVolume(tmp_path)
    files = volume.scan()
    assert [file.path for file in files] == ["broken.gguf", "team/other.gguf", "tiny.gguf"]
    broken, other, tiny = files
    assert broken.facts is None and broken.error and "broken.gguf" in broken.error
    assert tiny.facts is not None and tiny.facts.path == "tiny.gguf" and tiny.facts.n_layer > 0
    assert tiny.size == (tmp_path / "tiny.gguf").stat().st_size and tiny.modified.endswith("Z")
    assert other.error is None
    again = volume.scan()
    assert all(a is b for a, b in zip(files, again, strict=True))  # unchanged: not read again
    (tmp_path / "broken.gguf").unlink()
    shutil.copy(tmp_path / "tiny.gguf", tmp_path / "broken.gguf")
    fixed = volume.scan()[0]
    assert fixed.error is None and fixed.facts is not None and fixed.facts.path == "broken.gguf"
    assert ModelsVolume(tmp_path / "missing").scan() == []


def test_the_models_volume_lists_at_most_max_model_files(tmp_path, monkeypatch):
    monkeypatch.setattr("llamacontroller.nodeagent.models.MAX_MODEL_FILES", 2)
    for name in ("c", "a", "b"):
        (tmp_path / f"{name}.gguf").write_bytes(b"")
    assert [file.path for file in ModelsVolume(tmp_path).scan()] == ["a.gguf", "b.gguf"]


# When the agent writes


def test_a_status_is_written_on_change_at_most_every_interval_and_on_each_heartbeat():
    one = significant(node_status(recorded("rtx3090x2-idle"), lambda pid: None))
    two = significant(node_status(recorded("rtx3090x2-foreign"), lambda pid: None))
    assert write_due(0.0, None, one, 5, 30) == "first reading"
    last = Written(at=100.0, what=one)
    assert write_due(102.0, last, two, 5, 30) is None  # changed, but written 2 s ago
    assert write_due(105.0, last, two, 5, 30) == "changed"
    assert write_due(129.0, last, one, 5, 30) is None
    assert write_due(130.0, last, one, 5, 30) == "heartbeat"


def test_utilization_and_small_memory_moves_are_no_change():
    base = recorded("rtx3090x2-idle")
    gpu = base.gpus[0]
    busier = GpuReading(gpu.index, gpu.uuid, gpu.name, gpu.memory_total, gpu.memory_used + 8 * MIB, 97, ())
    moved = NvmlReading(base.state, base.driver_version, (busier, base.gpus[1]))
    assert significant(node_status(base, lambda pid: None)) == significant(
        node_status(moved, lambda pid: None)
    )


def test_the_patch_removes_what_the_status_no_longer_says():
    patch = status_patch(LlamaNodeStatus(nvml="no NVML: gone"))
    assert patch["nvml"] == "no NVML: gone"
    assert patch["driverVersion"] is None and patch["heartbeatAt"] is None and patch["gpus"] == []


def test_the_local_view_knows_the_runtimes_servers_by_pid():
    state = {
        "servers": [
            {"slot": "gpu1", "pid": 48211, "llamamodel": "default/phi"},
            {"slot": "gpu0", "pid": None},
        ]
    }
    status = node_status(recorded("rtx3090x2-foreign"), local_owners(state))
    assert gpu_lines(status) == [
        "gpu 0    NVIDIA GeForce RTX 3090  0.0/24.0 GiB  idle",
        "gpu 1    NVIDIA GeForce RTX 3090  3.2/24.0 GiB  held by default/phi",
    ]
    nothing = node_status(read_nvml(FakeNvml(init_error=NVMLError_DriverNotLoaded)), local_owners({}))
    assert gpu_lines(nothing) == ["gpus     no driver: the NVIDIA kernel driver is not loaded"]
