"""A Hugging Face file: what the hub says of it (its commit, its LFS sha256, its size, where its bytes
are), asked through `huggingface_hub`, then fetched into the store like any URL."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import httpx2
from huggingface_hub import get_hf_file_metadata, hf_hub_url
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from llamacontroller.fetch import layout, store
from llamacontroller.fetch.errors import FetchError
from llamacontroller.fetch.progress import Progress, human_size
from llamacontroller.resource import SHA256_PATTERN, HuggingFaceSource


@dataclass(frozen=True)
class HubFile:
    """The hub's answer for one file at one revision."""

    commit: str
    sha256: str
    size: int | None
    location: str  # where the bytes are: the hub itself, or the storage it redirects to


class HubUnreachable(FetchError):
    """No answer from the hub, or one of its own failures (5xx): a link made before may serve."""


def _what(hub: HuggingFaceSource) -> str:
    return f"{hub.repo}/{hub.file}@{hub.revision}"


def describe(hub: HuggingFaceSource, endpoint: str, token: str | None) -> HubFile:
    """Ask the hub about the file; its refusals become one-line FetchErrors."""
    url = hf_hub_url(hub.repo, hub.file, revision=hub.revision, endpoint=endpoint)
    try:
        meta = get_hf_file_metadata(url, token=token or False, endpoint=endpoint, retry_on_errors=True)
    except GatedRepoError as exc:
        raise FetchError(f"{hub.repo} is gated: its token (huggingFace.tokenSecret) has no access") from exc
    except RepositoryNotFoundError as exc:
        hint = "" if token else " (a private repository needs huggingFace.tokenSecret)"
        raise FetchError(f"{hub.repo}: no such repository on {endpoint}{hint}") from exc
    except RevisionNotFoundError as exc:
        raise FetchError(f"{hub.repo}: no revision {hub.revision!r}") from exc
    except EntryNotFoundError as exc:
        raise FetchError(f"{hub.repo}: no file {hub.file!r} at {hub.revision}") from exc
    except httpx2.TransportError as exc:
        raise HubUnreachable(f"{_what(hub)}: the hub at {endpoint} is out of reach: {exc}") from exc
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else 0
        if status >= 500:
            raise HubUnreachable(f"{_what(hub)}: the hub at {endpoint} answered {status}") from exc
        raise FetchError(f"{_what(hub)}: the hub answered {exc}".splitlines()[0]) from exc
    etag = (meta.etag or "").lower()
    if not _is_sha256(etag):
        raise FetchError(
            f"{_what(hub)}: the hub publishes no sha256 for it (not an LFS file), so it cannot be verified"
        )
    return HubFile(commit=meta.commit_hash or "", sha256=etag, size=meta.size, location=meta.location)


def _is_sha256(text: str) -> bool:
    return re.fullmatch(SHA256_PATTERN, text) is not None


def _same_origin(a: str, b: str) -> bool:
    one, two = urlsplit(a), urlsplit(b)
    return (one.scheme, one.netloc) == (two.scheme, two.netloc)


def ensure(
    models_dir: Path,
    hub: HuggingFaceSource,
    client: httpx.Client,
    progress: Progress,
    *,
    endpoint: str,
    token: str | None,
) -> Path:
    """The link of the LlamaModel (``layout.hub_link_path``) to the verified file of the revision.

    The hub is asked each time (a branch moves); when it is out of reach, a link made before is
    served as it is, and said so."""
    link_relative = layout.hub_link_path(hub)
    link = models_dir / link_relative
    try:
        found = describe(hub, endpoint, token)
    except HubUnreachable as exc:
        if link.is_file():
            progress.say(f"{exc}: using the file fetched before")
            return link
        raise
    size = f", {human_size(found.size)}" if found.size else ""
    progress.say(f"{_what(hub)}: commit {found.commit[:12]}, sha256 {found.sha256}{size}")
    # the token goes to the hub only, never to the storage it redirects to (a signed URL)
    headers = {"Authorization": f"Bearer {token}"} if token and _same_origin(found.location, endpoint) else {}
    blob_name = layout.hub_blob_name(hub)
    store.ensure_blob(
        models_dir,
        found.sha256,
        blob_name,
        found.location,
        client,
        progress,
        headers=headers,
        size=found.size,
    )
    return store.place_link(models_dir, link_relative, layout.blob_path(found.sha256, blob_name))
