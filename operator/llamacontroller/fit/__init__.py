"""What a model needs on the GPUs it is given, from its GGUF header alone: pure functions.

``model.py`` reads the facts from the header, ``graph.py`` and ``allocator.py`` size the compute
buffer as llama.cpp does, ``estimate.py`` puts weights, KV cache, compute buffer and overhead on
each GPU of a slot's split.
"""
