"""Where the control plane's programs are: the cache folder that build.sh fills.

Python asks build.sh itself for the folder (``--print-bin-dir``), so the cache key has one definition.
``$LLAMACONTROLLER_CONTROL_PLANE_BIN`` points at another folder with the same programs.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

BUILD_SCRIPT = Path(__file__).resolve().with_name("build.sh")
BUILD_COMMAND = "bash tests/cluster/build.sh"
PROGRAMS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl")
ENV_VAR = "LLAMACONTROLLER_CONTROL_PLANE_BIN"
COMPLETE_MARKER = ".complete"


class ControlPlaneNotBuilt(FileNotFoundError):
    """The programs are not in the cache; the message says which command builds them."""


def bin_dir() -> Path:
    """The folder with etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kubectl."""
    override = os.environ.get(ENV_VAR)
    if override:
        folder = Path(override)
    else:
        done = subprocess.run(
            ["bash", str(BUILD_SCRIPT), "--print-bin-dir"], capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise ControlPlaneNotBuilt(f"{BUILD_SCRIPT} --print-bin-dir failed: {done.stderr.strip()}")
        folder = Path(done.stdout.strip())
    missing = [name for name in PROGRAMS if not os.access(folder / name, os.X_OK)]
    if missing or (not override and not (folder / COMPLETE_MARKER).is_file()):
        raise ControlPlaneNotBuilt(
            f"the test control plane is not built in {folder} "
            f"(missing: {', '.join(missing) or 'the build'}): "
            f"run `{BUILD_COMMAND}` from the repository root (.ci/setup does; up to ~30 minutes on 2 cores "
            f"the first time, seconds afterwards)"
        )
    return folder
