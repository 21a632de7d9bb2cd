"""The operator SIGKILLed at seeded random points during random changes, behind a faulty API: the
long run of tests/e2e/test_chaos.py.

    .venv/bin/python bench/chaos.py [--changes 200] [--kills 10] [--size 20] [--seed 20]
        [--no-faults] [--lease 15,5] [--log FILE]

Starts the project's test cluster (tests/cluster, as the e2e suites run it: needs root and the
cached Kubernetes binaries), installs LlamaController as deploy/ does, and runs the operator with
its ServiceAccount behind the fault proxy (tests/support/faultproxy.py: 500s, 429 with Retry-After,
409s, answers lost past the client's 2 s timeout, watches reset and expired, on a fifth of its
calls). ``--size`` LlamaModels on three two-GPU nodes go through ``--changes`` random creates,
switches, moves, deletes and re-creates; the operator is SIGKILLed ``--kills`` times at random
points among them and restarted at once (tests/support/chaos.py). The lease is the production one
(15 s, renewed every 5 s) unless ``--lease`` says otherwise: each restarted operator waits for its
killed predecessor's lease to expire, so that wait is most of the time to converge after a kill.

Prints the changes made, the kills, the faults injected, the violations (two server Pods on
overlapping GPUs of a node, a LlamaModel with two Pods, at any moment a watch of the Pods saw, or a
fleet that did not converge: must be 0) and the seconds to converge after each restart.
Exits 1 on any violation.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository: tests/ is a package

from tests.cluster.cluster import LocalCluster
from tests.support.chaos import chaos
from tests.support.kube import Kube, new_namespace, remove_namespace
from tests.support.project_cluster import install, project_cluster_options


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--changes", type=int, default=200)
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--size", type=int, default=20, help="LlamaModels")
    parser.add_argument("--seed", type=int, default=20)
    parser.add_argument("--no-faults", action="store_true", help="the operator talks to the API directly")
    parser.add_argument("--lease", default="15,5", help="the lease's duration and renewal, seconds")
    parser.add_argument("--log", type=Path, help="keep the operator's log here")
    args = parser.parse_args()
    duration, renew = (float(part) for part in args.lease.split(","))
    with tempfile.TemporaryDirectory(prefix="chaos-") as folder:
        root = Path(folder)
        (root / "models").mkdir()
        cluster = LocalCluster(root / "cluster", project_cluster_options(root / "models", {}))
        cluster.start()
        try:
            install(cluster)
            namespace = new_namespace(cluster, "chaos")
            kube = Kube(cluster, namespace)
            (root / "run").mkdir()
            try:
                run = chaos(
                    cluster,
                    kube,
                    root / "run",
                    seed=args.seed,
                    changes=args.changes,
                    kills=args.kills,
                    size=args.size,
                    faults=not args.no_faults,
                    lease=(duration, renew),
                )
            finally:
                kube.close()
                if args.log:
                    args.log.write_bytes((root / "run" / "operator.log").read_bytes())
                remove_namespace(cluster, namespace)
        finally:
            cluster.stop()
    print(f"lease {duration:g} s, renewed every {renew:g} s; seed {args.seed}")
    print(run.summary())
    for violation in run.violations:
        print(f"  {violation}")
    return 1 if run.violations else 0


if __name__ == "__main__":
    sys.exit(main())
