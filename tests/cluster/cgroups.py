"""Pod cgroups on a test node: each container's process joins ``kubepods/pod<uid>/<container>``
before it becomes the container's program, the kubelet's cgroupfs layout, so that
``/proc/<pid>/cgroup`` names the Pod as on a real node (the project's node agent reads it there:
llamacontroller.nodeagent.cgroup). Nothing is limited: the cgroups live in the cgroup v2 hierarchy
(or, on a machine with v1 only, the ``pids`` one) with no controller enabled, nested under the
test process's own cgroup so that its accounting stays as it was. Where cgroups cannot be created
(not root, a read-only /sys/fs/cgroup), containers run without: ``available()`` says so.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from pathlib import Path

log = logging.getLogger(__name__)

KUBEPODS = "kubepods"
# Moves the shell into the cgroup folder given as $0, then becomes the rest of the command line.
JOIN_SCRIPT = 'echo $$ > "$0/cgroup.procs" || exit 126; exec "$@"'


def _mounts() -> list[tuple[str, str, set[str]]]:
    """(mount point, type, options) of the cgroup file systems of this machine."""
    found = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        _, point, kind, options, *_ = line.split()
        if kind in ("cgroup", "cgroup2"):
            found.append((point, kind, set(options.split(","))))
    return found


def _own_path(kind: str, controller: str | None) -> str:
    """This process's cgroup in one hierarchy, from /proc/self/cgroup."""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if (kind == "cgroup2" and controllers == "") or (controller and controller in controllers.split(",")):
            return path
    return "/"


@functools.cache
def root() -> Path | None:
    """Where Pod cgroups go on this machine, None when they cannot be made."""
    mounts = _mounts()
    choices = [(point, "cgroup2", None) for point, kind, _ in mounts if kind == "cgroup2"]
    choices += [(point, "cgroup", "pids") for point, kind, options in mounts if "pids" in options]
    for point, kind, controller in choices:
        base = Path(point) / _own_path(kind, controller).lstrip("/") / KUBEPODS
        try:
            base.mkdir(parents=True, exist_ok=True)
            probe = base / "probe"
            probe.mkdir(exist_ok=True)
            probe.rmdir()
        except OSError as error:
            log.debug("no pod cgroups under %s: %s", point, error)
            continue
        return base
    return None


def available() -> bool:
    return root() is not None


def container_cgroup(pod_uid: str, container: str) -> Path | None:
    """The cgroup folder of one container of a Pod, made if missing; None without cgroups."""
    base = root()
    if base is None:
        return None
    folder = base / f"pod{pod_uid}" / container
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        log.warning("no cgroup for %s of pod %s: %s", container, pod_uid, error)
        return None
    return folder


def join_command(folder: Path | None, sh: str) -> list[str]:
    """The command prefix that moves a process into ``folder`` (nothing without one)."""
    return [sh, "-c", JOIN_SCRIPT, str(folder)] if folder is not None else []


def remove_pod_cgroups(pod_uid: str) -> None:
    """The Pod's cgroups, once its processes are gone (a cgroup with a process left stays)."""
    base = root()
    if base is None:
        return
    pod = base / f"pod{pod_uid}"
    if not pod.is_dir():
        return
    for folder in [*(child for child in pod.iterdir() if child.is_dir()), pod]:
        with contextlib.suppress(OSError):
            folder.rmdir()
