"""Which llama-server serves a model, and what clients learn of it."""
