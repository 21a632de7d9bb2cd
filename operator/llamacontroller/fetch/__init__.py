"""Model sources: where a LlamaModel's GGUF file comes from, and how it is fetched into the models
volume, verified, once per volume (`layout.py` pure, the rest I/O)."""

import os

# huggingface_hub reads this once, when it is imported: without it, it asks the hub (or the mirror
# of HF_ENDPOINT) for a registry of AI agents to describe the caller in its User-Agent.
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
