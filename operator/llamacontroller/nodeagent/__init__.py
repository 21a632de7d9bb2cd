"""The node agent: what one node's GPUs and models volume hold, published as its LlamaNode.

``nvml`` reads the GPUs, ``cgroup`` tells whose Pod a process runs in, ``occupancy`` turns a
reading and the node's slot Pods into the LlamaNode's status (pure), ``models`` reads the GGUF
headers of the models volume, ``agent`` is the loop that writes the LlamaNode.
"""
