"""Model sources: where a LlamaModel's GGUF file comes from, and how it is fetched into the models
volume, verified, once per volume (`layout.py` pure, the rest I/O)."""
