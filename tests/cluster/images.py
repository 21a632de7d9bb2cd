"""What an image means on a test node: the local command that stands in for its entrypoint.

A container's command line follows the image rules of a container runtime: the container's
``command`` replaces the image's entrypoint, its ``args`` replace the image's default arguments, and
``$(VAR)`` references to the container's environment are expanded in both, as the kubelet does.
"""

from __future__ import annotations

import fnmatch
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import llamacontroller
from llamacontroller.local.binary import find_llama_server

LLAMA_CPP_IMAGES = "ghcr.io/ggml-org/llama.cpp:*"
PROJECT_IMAGES = "ghcr.io/llamacontroller/llamacontroller:*"


@dataclass(frozen=True)
class Image:
    """An image's stand-in: its entrypoint (a local program) and default arguments."""

    entrypoint: Sequence[str] | Callable[[], Sequence[str]]
    default_args: Sequence[str] = ()
    env: Mapping[str, str] = field(default_factory=dict)

    def resolved_entrypoint(self) -> list[str]:
        """The entrypoint; a callable is asked only when a container of the image starts, so that a
        node without llama-server still runs every other image."""
        entrypoint = self.entrypoint() if callable(self.entrypoint) else self.entrypoint
        return list(entrypoint)


class ImageNotFound(LookupError):
    """No entry of the table matches the image: the container cannot start (ErrImagePull)."""


@dataclass
class ImageTable:
    """Image patterns (fnmatch, tried in order) to their local stand-ins."""

    entries: dict[str, Image] = field(default_factory=dict)

    def resolve(self, image: str) -> Image:
        for pattern, entry in self.entries.items():
            if fnmatch.fnmatchcase(image, pattern):
                return entry
        raise ImageNotFound(f'image "{image}" is not in the kubelet\'s image table')

    def with_entries(self, entries: Mapping[str, Image]) -> ImageTable:
        """A table where ``entries`` come first (so they win), then these."""
        return ImageTable({**entries, **self.entries})


def project_images(python: str = sys.executable) -> ImageTable:
    """The project's images: llama.cpp's server image runs the llama-server that the project finds
    (find_llama_server), the project's image runs the package's CLI with this Python, from the very
    package the tests import (a checkout's, not whichever is installed)."""
    package_root = str(Path(llamacontroller.__file__).resolve().parents[1])
    return ImageTable(
        {
            LLAMA_CPP_IMAGES: Image(lambda: [str(find_llama_server())]),
            PROJECT_IMAGES: Image(
                [python, "-m", "llamacontroller.cli"], ["--help"], env={"PYTHONPATH": package_root}
            ),
        }
    )


def expand(value: str, env: Mapping[str, str]) -> str:
    """The kubelet's ``$(VAR)`` expansion: defined variables are replaced, ``$$`` is a literal ``$``,
    anything else stays as written."""
    out: list[str] = []
    i = 0
    while i < len(value):
        if value.startswith("$$", i):
            out.append("$")
            i += 2
        elif value.startswith("$(", i) and (end := value.find(")", i + 2)) != -1:
            name = value[i + 2 : end]
            out.append(env[name] if name in env else value[i : end + 1])
            i = end + 1
        else:
            out.append(value[i])
            i += 1
    return "".join(out)


def command_line(container: Mapping[str, object], image: Image, env: Mapping[str, str]) -> list[str]:
    """The argv of a container: (command or the entrypoint) + (args, or the image's defaults when the
    container sets neither command nor args)."""
    command = [str(part) for part in container.get("command") or []]  # type: ignore[union-attr]
    args = [str(part) for part in container.get("args") or []]  # type: ignore[union-attr]
    argv = command + args if command else image.resolved_entrypoint() + (args or list(image.default_args))
    return [expand(part, env) for part in argv]
