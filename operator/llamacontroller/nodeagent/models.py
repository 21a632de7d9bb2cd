"""The GGUF files of the models volume and what their headers say about memory.

Each ``*.gguf`` under the folder (sub-folders included, symbolic links to folders not followed) is
read once per version: the cache is keyed by path, size and modification time, so an unchanged
volume costs a ``stat`` per file. At most MAX_MODEL_FILES files are listed (in path order), so the
LlamaNode stays small. A file whose header cannot be read is listed with its error.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

from llamacontroller.errors import UserError
from llamacontroller.fit.model import model_facts
from llamacontroller.gguf_header import GGUFError, read_header
from llamacontroller.llamanode import MAX_MODEL_FILES, ModelFile

log = logging.getLogger(__name__)


def _gguf_files(root: Path) -> list[Path]:
    found: list[Path] = []
    for folder, subfolders, files in os.walk(root):
        subfolders.sort()
        found.extend(Path(folder, name) for name in files if name.endswith(".gguf"))
    return sorted(found)


def _read(path: Path, relative: str, size: int, modified: str) -> ModelFile:
    try:
        facts = model_facts(read_header(path)).model_copy(update={"path": relative})
    except (GGUFError, UserError, OSError) as exc:
        log.info("models volume: %s cannot be read: %s", relative, exc)
        return ModelFile(path=relative, size=size, modified=modified, error=str(exc)[:512])
    return ModelFile(path=relative, size=size, modified=modified, facts=facts)


class ModelsVolume:
    """The models folder, read again on each ``scan`` (headers only of new or changed files)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._cache: dict[str, tuple[int, int, ModelFile]] = {}

    def scan(self) -> list[ModelFile]:
        if not self.root.is_dir():
            return []
        files = _gguf_files(self.root)
        if len(files) > MAX_MODEL_FILES:
            log.warning("models volume: %d GGUF files, listing the first %d", len(files), MAX_MODEL_FILES)
        return self._entries(path.relative_to(self.root).as_posix() for path in files[:MAX_MODEL_FILES])

    def files(self, relatives: Iterable[str]) -> list[ModelFile]:
        """Only these files (paths relative to the folder, as spec.model.path names them); one that
        is not there is left out."""
        return self._entries(relatives)

    def _entries(self, relatives: Iterable[str]) -> list[ModelFile]:
        listed: list[ModelFile] = []
        cache: dict[str, tuple[int, int, ModelFile]] = {}
        for relative in relatives:
            path = self.root / relative
            try:
                stat = path.stat()
            except OSError:  # removed while listing
                continue
            known = self._cache.get(relative)
            if known is not None and known[:2] == (stat.st_size, stat.st_mtime_ns):
                entry = known[2]
            else:
                modified = datetime.fromtimestamp(stat.st_mtime, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
                entry = _read(path, relative, stat.st_size, modified)
            cache[relative] = (stat.st_size, stat.st_mtime_ns, entry)
            listed.append(entry)
        self._cache = cache
        return listed
