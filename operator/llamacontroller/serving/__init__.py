"""The Ollama- and OpenAI-compatible HTTP API in front of llama-server."""
