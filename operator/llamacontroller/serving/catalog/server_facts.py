"""What llama-server says about its model: ``/props``, ``/v1/models``, and whether it embeds."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llamacontroller.serving.errors import UpstreamError
from llamacontroller.serving.upstream.llama_server import Upstream


@dataclass(frozen=True)
class ServerFacts:
    alias: str
    model_path: str
    n_ctx: int
    n_ctx_train: int | None
    n_params: int | None
    size: int | None
    ftype: str
    created: int | None
    chat_template: str
    template_caps: dict[str, Any] = field(default_factory=dict)
    modalities: dict[str, Any] = field(default_factory=dict)
    embeddings: bool = False


async def fetch_server_facts(upstream: Upstream) -> ServerFacts:
    props, models, embeddings = await asyncio.gather(
        upstream.get_json("/props"), upstream.get_json("/v1/models"), serves_embeddings(upstream)
    )
    entry = (models.get("data") or [{}])[0]
    meta = entry.get("meta") or {}
    alias = props.get("model_alias") or entry.get("id") or Path(props.get("model_path", "model")).stem
    return ServerFacts(
        alias=alias,
        model_path=props.get("model_path") or "",
        n_ctx=int((props.get("default_generation_settings") or {}).get("n_ctx") or meta.get("n_ctx") or 0),
        n_ctx_train=meta.get("n_ctx_train"),
        n_params=meta.get("n_params"),
        size=meta.get("size"),
        ftype=props.get("model_ftype") or meta.get("ftype") or "",
        created=entry.get("created"),
        chat_template=props.get("chat_template") or "",
        template_caps=props.get("chat_template_caps") or {},
        modalities=props.get("modalities") or {},
        embeddings=embeddings,
    )


async def serves_embeddings(upstream: Upstream) -> bool:
    """Whether llama-server runs with ``--embeddings``: /props does not say, an empty request does.

    Without the flag it answers 501 at once; with it, 400 for the empty input. Nothing is computed.
    """
    try:
        await upstream.post_json("/v1/embeddings", {"input": []})
    except UpstreamError as exc:
        return exc.code == 400
    return True
