"""Which Pod a process runs in, from its cgroup: the kubelet names each Pod's cgroup after its UID.

``/proc/<pid>/cgroup`` has one line per hierarchy, ``ID:CONTROLLERS:PATH`` (cgroup v1) or
``0::PATH`` (v2). The kubelet puts a Pod's containers under ``kubepods[/QOS]/pod<uid>/<container>``
with the cgroupfs driver and ``kubepods[-QOS].slice/kubepods[-QOS]-pod<uid with _ for ->.slice/
<runtime>-<container>.scope`` with the systemd driver. In a container with a cgroup namespace the
path is relative to the container's own cgroup (``/../../kubepods-...``): the Pod's part is still
there. The node agent runs with ``hostPID`` so that the PIDs NVML names are in its /proc.
"""

from __future__ import annotations

import re
from pathlib import Path

_POD_UID = re.compile(
    r"pod([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12})(?:\.slice)?(?:/|$)"
)


def pod_uid_of(cgroup: str) -> str | None:
    """The Pod UID a ``/proc/<pid>/cgroup`` text names, None for a process outside any Pod."""
    for line in cgroup.splitlines():
        path = line.split(":", 2)[-1]
        found = _POD_UID.findall(path)
        if found:
            return str(found[-1]).replace("_", "-")
    return None


def read_pod_uid(pid: int, proc: Path = Path("/proc")) -> str | None:
    """The Pod UID of a running process; None when it is in no Pod or is gone."""
    try:
        return pod_uid_of((proc / str(pid) / "cgroup").read_text())
    except OSError:  # gone since NVML listed it, or another PID namespace
        return None
