"""The Kubernetes side: API calls (api.py), reconcile orchestration (reconciler.py), kopf wiring."""
