"""Run the emulator standalone for manual kubectl use: ``python -m tests.kube_emulator --port 8001``."""

from __future__ import annotations

import argparse
import logging
import signal
import threading

from .runner import EmulatorThread


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.kube_emulator", description=__doc__)
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: a free one)")
    parser.add_argument("--kubeconfig", default=None, help="where to write a kubeconfig for this emulator")
    parser.add_argument(
        "--pod-termination-seconds",
        type=float,
        default=0.2,
        help="how long deleted pods stay terminating (default: 0.2)",
    )
    parser.add_argument("--verbose", action="store_true", help="log every request")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    stopped = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stopped.set())
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    with EmulatorThread(port=args.port, pod_termination_seconds=args.pod_termination_seconds) as emulator:
        print(f"Kubernetes API emulator serving at {emulator.url}", flush=True)
        if args.kubeconfig:
            path = emulator.write_kubeconfig(args.kubeconfig)
            print(f"kubeconfig written to {path}; export KUBECONFIG={path}", flush=True)
        print("Press Ctrl-C to stop.", flush=True)
        while not stopped.wait(0.5):
            pass
    print("Stopped.", flush=True)


if __name__ == "__main__":
    main()
