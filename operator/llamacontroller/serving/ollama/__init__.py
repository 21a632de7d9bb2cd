"""The Ollama API: typed requests, their translation to llama-server and back, and the handlers."""
