"""A Kubernetes API emulator for end-to-end tests of operators, built on kmock.

Start one with :class:`EmulatorThread` (or the ``kube`` fixture from :mod:`.fixtures`), point the
operator, kubectl or the kubernetes client at it with ``write_kubeconfig``, and assert over its
audit and event logs.
"""

from .audit import AuditRecord, WatchEventRecord
from .errors import ApiError, FieldError
from .handler import KubeEmulator
from .resources import Registry, ResourceDef
from .runner import EmulatorThread
from .store import DeleteOptions, Store

__all__ = [
    "ApiError",
    "AuditRecord",
    "DeleteOptions",
    "EmulatorThread",
    "FieldError",
    "KubeEmulator",
    "Registry",
    "ResourceDef",
    "Store",
    "WatchEventRecord",
]
