"""The Ollama- and OpenAI-compatible HTTP API in front of llama-server.

Layout, one job per module:

- ``names``: Ollama model names (``[host/][namespace/]model[:tag]``) and how they compare.
- ``errors``: the API errors the handlers raise and their Ollama/OpenAI shapes.
- ``sse``: splitting llama-server's server-sent events into JSON payloads.
- ``upstream``: the pooled httpx client to one llama-server.
- ``ollama``: pure translation of Ollama requests into llama-server requests.
- ``streams``: pure translation of llama-server stream events into Ollama chunks.
- ``toolcalls``: streamed tool-call fragments joined and parsed into Ollama tool calls.
- ``metadata``: model facts from the GGUF header, ``/props`` and ``/v1/models``.
- ``catalog``: which llama-server answers which model name (one for the adapter, many for a router).
- ``auth``: optional API keys.
- ``http``: the aiohttp plumbing shared by the routes (JSON bodies, NDJSON streams, error shapes).
- ``ollama_routes`` / ``openai_routes``: the handlers, parametrised by a catalog.
- ``adapter``: the web app for one llama-server, and ``run_adapter``.

A router reuses everything but ``adapter``: it builds the app from ``build_api_app`` with its own
``Catalog`` that picks the upstream per request.
"""
