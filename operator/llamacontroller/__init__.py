"""LlamaController: serve GGUF models with llama.cpp's llama-server, declared as LlamaModel resources."""

__version__ = "0.1.0"
