"""The Ollama API (``/`` and ``/api/*``): which handler answers which route.

The handlers know nothing of how many llama-servers there are: they ask the app's ``Catalog``.
"""

from __future__ import annotations

from aiohttp import web

from llamacontroller.serving.ollama_embed import embed, embeddings
from llamacontroller.serving.ollama_generate import chat, generate
from llamacontroller.serving.ollama_models import not_supported, ps, pull, root, show, tags, version


def add_routes(app: web.Application) -> None:
    app.router.add_get("/", root)
    app.router.add_get("/api/version", version)
    app.router.add_get("/api/tags", tags)
    app.router.add_get("/api/ps", ps)
    app.router.add_post("/api/show", show)
    app.router.add_post("/api/generate", generate)
    app.router.add_post("/api/chat", chat)
    app.router.add_post("/api/embed", embed)
    app.router.add_post("/api/embeddings", embeddings)
    app.router.add_post("/api/pull", pull)
    app.router.add_post("/api/push", not_supported("pushing a model"))
    app.router.add_post("/api/create", not_supported("creating a model"))
    app.router.add_post("/api/copy", not_supported("copying a model"))
    app.router.add_delete("/api/delete", not_supported("deleting a model"))
    app.router.add_route("*", "/api/blobs/{digest}", not_supported("uploading a blob"))
