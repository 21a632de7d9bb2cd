"""``python -m tests.cluster``: a test cluster by hand, until SIGINT or SIGTERM.

    .venv/bin/python -m tests.cluster --nodes node-x,node-y --gpus-per-node 2 [--models-dir DIR]

prints ``KUBECONFIG=<path>`` alone on a line once every node is Ready (no CRD is applied), then runs
until interrupted, stops everything and exits 0.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import signal
import sys
import tempfile
import threading
from pathlib import Path

from tests.cluster.cluster import ClusterOptions, LocalCluster
from tests.cluster.kubelet import TestNode


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.cluster", description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", default="node-1", help="comma-separated node names (default: node-1)")
    parser.add_argument(
        "--gpus-per-node", type=int, default=2, help="nvidia.com/gpu of every node (default: 2)"
    )
    parser.add_argument("--models-dir", type=Path, help="the folder the Pods see at /models")
    parser.add_argument(
        "--state-dir",
        type=Path,
        help="where certificates, data and logs go (default: a temporary folder, removed at exit)",
    )
    parser.add_argument(
        "--backoff-base",
        type=float,
        default=10.0,
        help="CrashLoopBackOff base in seconds (the kubelet's: 10)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log the kubelets' activity")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(asctime)s %(name)s: %(message)s"
    )
    names = [name.strip() for name in args.nodes.split(",") if name.strip()]
    if not names:
        print("--nodes names no node", file=sys.stderr)
        return 2
    models_dir = args.models_dir.resolve() if args.models_dir else None
    if models_dir is not None and not models_dir.is_dir():
        print(f"--models-dir {models_dir}: no such folder", file=sys.stderr)
        return 2
    state_dir = args.state_dir or Path(tempfile.mkdtemp(prefix="llamacontroller-cluster-"))
    options = ClusterOptions(
        nodes=tuple(TestNode(name, gpus=args.gpus_per_node) for name in names),
        models_dir=models_dir,
        backoff_base=args.backoff_base,
    )
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    cluster = LocalCluster(state_dir, options)
    try:
        cluster.start()
        if not stop.is_set():
            print(
                f"# started in {cluster.startup_seconds['total']:.1f} s; logs in {state_dir}", file=sys.stderr
            )
            print(
                f"# Service names resolve in: ip netns exec {cluster.client_namespace} ...", file=sys.stderr
            )
            print(f"KUBECONFIG={cluster.kubeconfig}", flush=True)
        # A timed wait: a signal taken by another thread wakes the main thread only when it runs
        # Python code, and an untimed wait would never let it.
        while not stop.wait(0.2):
            pass
    finally:
        cluster.stop()
        if args.state_dir is None:
            shutil.rmtree(state_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
