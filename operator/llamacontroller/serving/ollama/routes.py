"""The Ollama API (``/`` and ``/api/*``): which handler answers which route.

The handlers know nothing of how many llama-servers there are: they ask the app's ``Catalog``.
"""

from __future__ import annotations

from llamacontroller.serving.ollama.embed import embed, embeddings
from llamacontroller.serving.ollama.generate import chat, generate
from llamacontroller.serving.ollama.models import not_supported, ps, pull, root, show, tags, version
from llamacontroller.serving.web.router import Router


def add_routes(router: Router) -> None:
    router.add("GET", "/", root)
    router.add("GET", "/api/version", version)
    router.add("GET", "/api/tags", tags)
    router.add("GET", "/api/ps", ps)
    router.add("POST", "/api/show", show)
    router.add("POST", "/api/generate", generate)
    router.add("POST", "/api/chat", chat)
    router.add("POST", "/api/embed", embed)
    router.add("POST", "/api/embeddings", embeddings)
    router.add("POST", "/api/pull", pull)
    router.add("POST", "/api/push", not_supported("pushing a model"))
    router.add("POST", "/api/create", not_supported("creating a model"))
    router.add("POST", "/api/copy", not_supported("copying a model"))
    router.add("DELETE", "/api/delete", not_supported("deleting a model"))
    router.add("*", "/api/blobs/{digest}", not_supported("uploading a blob"))
