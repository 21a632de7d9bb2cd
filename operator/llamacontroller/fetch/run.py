"""Fetch a LlamaModel's source into the models volume: the one entry of `llamacontroller fetch`
(the slot Pod's init container) and of `llamacontroller up`."""

from __future__ import annotations

import os
from pathlib import Path

import httpx

from llamacontroller.fetch import layout, store
from llamacontroller.fetch.progress import Progress
from llamacontroller.resource import ModelSource

TIMEOUT = httpx.Timeout(30.0, connect=15.0)
DEFAULT_ENDPOINT = "https://huggingface.co"
TOKEN_VARIABLE = "HF_TOKEN"


def hub_endpoint() -> str:
    """$HF_ENDPOINT (a mirror), else the hub itself, as huggingface_hub reads it."""
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def fetch(
    source: ModelSource,
    models_dir: Path,
    progress: Progress,
    *,
    endpoint: str | None = None,
    token: str | None = None,
) -> Path:
    """The verified file of ``source`` in ``models_dir`` (fetched unless there), at
    ``layout.source_path(source)``. Raises FetchError, one line, on any failure."""
    with httpx.Client(timeout=TIMEOUT, follow_redirects=True) as client:
        if source.hugging_face is not None:
            from llamacontroller.fetch import hub  # huggingface_hub: loaded for hub sources only

            return hub.ensure(
                models_dir,
                source.hugging_face,
                client,
                progress,
                endpoint=endpoint or hub_endpoint(),
                token=token,
            )
        assert source.url is not None and source.sha256 is not None
        return store.ensure_blob(
            models_dir, source.sha256, layout.url_file_name(source.url), source.url, client, progress
        )
