"""The in-house ASGI layer under the API routes, and running it under uvicorn."""
