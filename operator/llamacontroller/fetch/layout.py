"""Where a source's file lands in the models volume. Pure functions: the renderer, the local runtime
and `llamacontroller fetch` agree on these paths.

A file is kept by its content: ``.sources/sha256/<hex>/<file name>``. A URL source names its sha256,
so its path is known before anything is fetched. A hub file's sha256 is learned from the hub, so its
LlamaModel points at a link named by what it asked for, ``.sources/huggingface/<owner>/<repo>/
<revision>/<file>``, which the fetch points at the blob it verified.
"""

from __future__ import annotations

import posixpath
import re
from urllib.parse import quote, unquote, urlsplit

from llamacontroller.resource import HuggingFaceSource, ModelRef, ModelSource

SOURCES_DIR = ".sources"
BLOBS_DIR = f"{SOURCES_DIR}/sha256"
HUB_DIR = f"{SOURCES_DIR}/huggingface"
PARTIAL_SUFFIX = ".partial"
LOCK_SUFFIX = ".lock"
DEFAULT_FILE_NAME = "model.gguf"
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$")


def url_file_name(url: str) -> str:
    """The last component of the URL's path when it is a plain file name, else ``model.gguf``."""
    name = unquote(urlsplit(url).path.rsplit("/", 1)[-1])
    return name if _SAFE_NAME.fullmatch(name) else DEFAULT_FILE_NAME


def blob_path(sha256: str, file_name: str) -> str:
    return f"{BLOBS_DIR}/{sha256}/{file_name}"


def hub_link_path(hub: HuggingFaceSource) -> str:
    """A branch name may hold slashes (refs/pr/1): it is one path component here, quoted."""
    return f"{HUB_DIR}/{hub.repo}/{quote(hub.revision, safe='')}/{hub.file}"


def hub_blob_name(hub: HuggingFaceSource) -> str:
    name = posixpath.basename(hub.file)
    return name if _SAFE_NAME.fullmatch(name) else DEFAULT_FILE_NAME


def source_path(source: ModelSource) -> str:
    """The file the server opens, relative to the models volume."""
    if source.hugging_face is not None:
        return hub_link_path(source.hugging_face)
    assert source.url is not None and source.sha256 is not None  # the model's validator says so
    return blob_path(source.sha256, url_file_name(source.url))


def model_path(model: ModelRef) -> str:
    """The GGUF file of a LlamaModel, relative to the models volume: put there by hand, or fetched."""
    if model.source is not None:
        return source_path(model.source)
    assert model.path is not None  # the model's validator says so
    return model.path


def link_target(link: str, blob: str) -> str:
    """The relative target of the hub link at ``link`` to ``blob`` (both relative to the volume), so
    the link resolves wherever the volume is mounted."""
    return posixpath.relpath(blob, posixpath.dirname(link))


def fetch_args(source: ModelSource, models_dir: str) -> list[str]:
    """The `llamacontroller fetch` arguments for a source (the init container's, and `up`'s own)."""
    args = ["fetch", "--models-dir", models_dir]
    if source.hugging_face is not None:
        hub = source.hugging_face
        return [*args, "--hf-repo", hub.repo, "--hf-file", hub.file, "--hf-revision", hub.revision]
    assert source.url is not None and source.sha256 is not None
    return [*args, "--url", source.url, "--sha256", source.sha256]
