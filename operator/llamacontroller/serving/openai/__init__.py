"""The OpenAI API: llama-server's own, passed through with the model name checked."""
