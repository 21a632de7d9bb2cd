"""The Ollama- and OpenAI-compatible HTTP API in front of llama-server.

Layout, one job per module:

- ``names``: Ollama model names (``[host/][namespace/]model[:tag]``) and how they compare.
- ``errors``: the API errors the handlers raise and their Ollama/OpenAI shapes.
- ``sse``: splitting llama-server's server-sent events into JSON payloads.
- ``http11``: HTTP/1.1 connections to llama-servers, pooled and kept alive, parsed by httptools.
- ``upstream``: one llama-server over those connections (streams, JSON, errors, timeouts).
- ``ollama``: pure translation of Ollama requests into llama-server requests (options table, format,
  think, messages, tool calls, embeddings).
- ``streams``: pure translation of llama-server stream events into Ollama chunks and answers.
- ``toolcalls``: streamed tool-call fragments joined and parsed into Ollama tool calls.
- ``prompts``: prompts (a generate's, a plain chat's) from cached skeletons of the chat template.
- ``metadata``: model facts from the GGUF header, ``/props`` and ``/v1/models``; the file's sha256.
- ``catalog``: which llama-server answers which model name (one for the adapter, many for a router).
- ``auth``: optional API keys.
- ``asgi``: the plain ASGI app under the routes (bodies, streams, routing, disconnects, lifespan).
- ``http``: what the routes share on top of it (JSON bodies, NDJSON streams, error shapes, keys).
- ``ollama_generate`` / ``ollama_embed`` / ``ollama_models``: the Ollama handlers;
  ``ollama_routes`` wires them; ``openai_routes``: the OpenAI pass-through.
- ``adapter``: the web app for one llama-server, and ``run_adapter`` (``llamacontroller adapter``).
- ``router`` / ``gateway``: the catalog of many llama-servers, and the cluster gateway over it.
- ``serve``: running the app under uvicorn (listen address, uvloop, signals).

The adapter is a sidecar of llama-server: it mounts the models volume at the same path, so that the
``model_path`` llama-server reports is the GGUF file it reads metadata from (see ``metadata``).

A router reuses all of it but ``SingleModelCatalog`` and ``run_adapter``: ``adapter.build_api_app``
takes any ``Catalog``, and a router's picks the upstream per request.
"""
