"""The fixtures live in tests/server/fixtures.py (a plugin for every suite); these names stay
importable from here for older imports."""

from tests.server.fixtures import HOST, StartServer, pod_args

__all__ = ["HOST", "StartServer", "pod_args"]
