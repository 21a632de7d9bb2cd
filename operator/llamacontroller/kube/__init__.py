"""The Kubernetes side: every API call (api.py), the reconcile loop (reconciler.py), kopf wiring
(handlers.py), and the gateway's watch of LlamaModels (watch.py)."""
