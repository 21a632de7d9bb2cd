"""A real Kubernetes control plane for the tests, and kubelets that run Pods as local processes.

``python -m tests.cluster --nodes a,b`` starts one by hand; ``fixtures.py`` has the pytest fixtures;
``build.sh`` builds the programs (the Go module in go/) into a cache outside the work tree.
"""
