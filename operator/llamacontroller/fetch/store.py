"""The models volume as a store of fetched files: each file at its content's path, fetched by one
process at a time (an exclusive lock beside it), verified, then moved into place by a rename, so
a reader sees the whole verified file or none."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from llamacontroller.fetch import layout, transfer
from llamacontroller.fetch.errors import ChecksumMismatch, FetchError, ReadOnlyVolume
from llamacontroller.fetch.progress import Progress

_READ_ONLY = (errno.EROFS, errno.EACCES, errno.EPERM)


def _cannot_write(models_dir: Path, exc: OSError) -> FetchError:
    if exc.errno in _READ_ONLY:
        return ReadOnlyVolume(
            f"cannot write to the models volume at {models_dir}: {exc.strerror}; fetching a model "
            "source needs it writable (or put the file there by hand and use model.path)"
        )
    return FetchError(f"cannot write to the models volume at {models_dir}: {exc.strerror or exc}")


@contextmanager
def exclusive(lock: Path, progress: Progress) -> Iterator[None]:
    """Hold the lock file's flock. The holder removes the file when done, so a failed fetch leaves
    nothing behind; whoever locked a file that was removed meanwhile locks the new one instead."""
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            progress.say(f"another fetch of this file runs on the volume ({lock.name}): waiting for it")
            fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            held = os.stat(lock).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            held = False
        if held:
            break
        os.close(fd)
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)
        os.close(fd)


def _sync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def ensure_blob(
    models_dir: Path,
    sha256: str,
    file_name: str,
    url: str,
    client: httpx.Client,
    progress: Progress,
    *,
    headers: dict[str, str] | None = None,
    size: int | None = None,
) -> Path:
    """The verified file with this sha256 in the volume: there already, or fetched from ``url``."""
    relative = layout.blob_path(sha256, file_name)
    target = models_dir / relative
    if target.is_file():
        progress.say(f"{relative} is in place")
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with exclusive(target.with_name(file_name + layout.LOCK_SUFFIX), progress):
            if target.is_file():
                progress.say(f"{relative} was fetched meanwhile")
                return target
            partial = target.with_name(file_name + layout.PARTIAL_SUFFIX)
            actual = transfer.download(client, url, partial, progress, headers=headers, size=size)
            if actual != sha256:
                partial.unlink(missing_ok=True)
                raise ChecksumMismatch(transfer._shown(url), sha256, actual)
            os.rename(partial, target)
            _sync_dir(target.parent)
            progress.say(f"{relative}: verified and in place")
            return target
    except FetchError:
        _remove_if_empty(target.parent)
        raise
    except OSError as exc:
        _remove_if_empty(target.parent)
        raise _cannot_write(models_dir, exc) from exc


def _remove_if_empty(directory: Path) -> None:
    with contextlib.suppress(OSError):  # not empty (a partial kept for resuming, a lock), or gone
        directory.rmdir()


def place_link(models_dir: Path, link_relative: str, blob_relative: str) -> Path:
    """Point ``link_relative`` at ``blob_relative`` (relative, so it resolves wherever the volume is
    mounted), replacing an older link by a rename: a reader finds the old file or the new one."""
    link = models_dir / link_relative
    target = layout.link_target(link_relative, blob_relative)
    try:
        if link.is_symlink() and os.readlink(link) == target:
            return link
        link.parent.mkdir(parents=True, exist_ok=True)
        staged = link.with_name(f".{link.name}.{os.getpid()}.link")
        staged.unlink(missing_ok=True)
        os.symlink(target, staged)
        os.replace(staged, link)
        _sync_dir(link.parent)
    except OSError as exc:
        raise _cannot_write(models_dir, exc) from exc
    return link
