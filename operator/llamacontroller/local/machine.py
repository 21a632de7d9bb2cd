"""This machine as the node agent sees a node, for the fit check of `llamacontroller up`: NVML's
reading (whose each process is: the runtime's servers by PID, everything else foreign) and the
headers of the model files the LlamaModels name, as the LlamaNode of the one local node."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

from llamacontroller.llamanode import LlamaNode, NodeMeta
from llamacontroller.local.plan import LOCAL_NODE
from llamacontroller.nodeagent.models import ModelsVolume
from llamacontroller.nodeagent.nvml import NvmlReader
from llamacontroller.nodeagent.occupancy import local_owners, node_status
from llamacontroller.status import rfc3339


class Machine:
    """NVML kept open between readings (its first start can take a second), the headers cached."""

    def __init__(self, models_dir: Path, library: Any = None) -> None:
        self.reader = NvmlReader(library)
        self.volume = ModelsVolume(models_dir)

    def read(self, files: Iterable[str], state: dict[str, Any], now: datetime) -> LlamaNode:
        """``files``: the model paths the LlamaModels name (relative to --models-dir); ``state``: the
        runtime's state, whose servers' PIDs are its own."""
        status = node_status(
            self.reader.read(),
            local_owners(state),
            models_dir=str(self.volume.root),
            models=self.volume.files(files),
        )
        stamp = rfc3339(now)
        return LlamaNode(
            metadata=NodeMeta(name=LOCAL_NODE),
            status=status.model_copy(update={"observed_at": stamp, "heartbeat_at": stamp}),
        )

    def close(self) -> None:
        self.reader.close()
