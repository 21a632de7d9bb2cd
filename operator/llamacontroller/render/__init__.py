"""Rendering: the llama-server command line, the Pod and the Service of a LlamaModel. Pure functions."""
