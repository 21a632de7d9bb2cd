"""Running llama-server on this machine: finding the binary and supervising its processes."""
