"""The operator SIGKILLed at seeded random points while a fleet of LlamaModels changes, restarted at
once each time (as a Deployment restarts its Pod), optionally behind the fault proxy: the run of
tests/e2e/test_chaos.py (short) and bench/chaos.py (long).

The changes come in rounds, one per kill (and a last one without): a few random changes with short
random pauses, the kill at a random moment among them, the restart, the rest of the round's changes,
then a wait until the fleet converges (tests/support/churn.py), timed from the restart. What must
hold all along (no two server Pods on overlapping GPUs, no LlamaModel with two Pods) is checked on
a watch of every Pod change; what must hold after each round (nothing unsettled, no orphan) on the
API server's objects.
"""

from __future__ import annotations

import contextlib
import random
import signal
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tests.cluster.cluster import LocalCluster
from tests.support.builders import write_settings
from tests.support.churn import Fleet, shared_owners, unsettled
from tests.support.components import OPERATOR_ACCOUNT, OperatorProcess, service_account_kubeconfig
from tests.support.faultproxy import FaultProxy, Schedule, proxied_kubeconfig
from tests.support.kube import Kube, gpu_conflicts

API_TIMEOUT = 2.0  # the operator's, when faults are on: a slow answer comes a second after it


@dataclass
class ChaosRun:
    """What a run did and saw."""

    changes: Counter[str] = field(default_factory=Counter)
    kills: int = 0
    exits: int = 0  # times the operator ended by itself (and was restarted)
    faults: Counter[str] = field(default_factory=Counter)
    calls: int = 0  # the operator's calls through the proxy
    violations: list[str] = field(default_factory=list)
    # seconds from a kill until the restarted operator holds the lease (none when killed before)
    acting_after: list[float] = field(default_factory=list)
    converged_after: list[float] = field(default_factory=list)  # seconds, from each restart
    seconds: float = 0.0

    def summary(self) -> str:
        times = ", ".join(f"{t:.1f}" for t in self.converged_after)
        acting = ", ".join(f"{t:.1f}" for t in self.acting_after)
        faults = f"{sum(self.faults.values())} faults injected ({dict(self.faults)}) on {self.calls} calls"
        return (
            f"changes made: {sum(self.changes.values())} ({dict(self.changes)})\n"
            f"kills: {self.kills} (and {self.exits} exits of its own)\n"
            f"{faults if self.calls else 'faults: off'}\n"
            f"violations: {len(self.violations)}\n"
            f"the restarted operator acting (holding the lease) after each kill (s): {acting}\n"
            f"converged after each restart (s): {times}\n"
            f"run: {self.seconds:.0f} s"
        )


class Supervisor:
    """The operator as a Deployment runs it: started again whenever it is not running."""

    def __init__(self, process: OperatorProcess, run: ChaosRun) -> None:
        self.process = process
        self.run = run
        self._killed: tuple[float, int] | None = None  # when, and where the log ended then

    def kill(self) -> None:
        assert self.process.process is not None
        self.process.process.send_signal(signal.SIGKILL)
        self.process.process.wait(10)
        self._killed = (time.monotonic(), self.process.log_path.stat().st_size)
        self.run.kills += 1
        self.process.start()

    def check(self) -> None:
        """Restarts an operator that ended by itself (a lease it could not renew); notes when the
        operator restarted after a kill holds the lease."""
        assert self.process.process is not None
        if self.process.process.poll() is not None:
            self.run.exits += 1
            self.process.start()
        if self._killed is not None:
            at, offset = self._killed
            with self.process.log_path.open("rb") as log:
                log.seek(offset)
                if b"Holding the lease" in log.read():
                    self.run.acting_after.append(time.monotonic() - at)
                    self._killed = None


def chaos(
    cluster: LocalCluster,
    kube: Kube,
    folder: Path,
    *,
    seed: int,
    changes: int,
    kills: int,
    size: int = 20,
    faults: bool = False,
    lease: tuple[float, float] = (15.0, 5.0),
    converge_timeout: float = 120.0,
) -> ChaosRun:
    """The run: ``changes`` changes to ``size`` LlamaModels, the operator SIGKILLed ``kills`` times
    (with faults on a fifth of its API calls when ``faults``); ``lease``: its duration and renewal."""
    assert cluster.control_plane is not None and cluster.network is not None
    control = cluster.control_plane
    rng = random.Random(seed)
    run = ChaosRun()
    duration, renew = lease
    settings = write_settings(
        folder,
        adapter={"enabled": False},
        apiTimeoutSeconds=API_TIMEOUT if faults else 30.0,
        leaderElection={
            "leaseName": f"chaos-{kube.namespace}",
            "leaseDurationSeconds": duration,
            "renewSeconds": renew,
        },
    )
    kubeconfig = service_account_kubeconfig(cluster, OPERATOR_ACCOUNT, folder / "operator.kubeconfig")
    proxy = FaultProxy(
        control.server,
        control.ca_file,
        cluster.network.host_address,
        Schedule(seed, rate=0.2),
        slow_seconds=API_TIMEOUT + 1,
    )
    began = time.monotonic()
    fleet = Fleet(kube, size, rng)
    rounds = [changes // (kills + 1) + (1 if i < changes % (kills + 1) else 0) for i in range(kills + 1)]
    with contextlib.ExitStack() as stack:
        if faults:
            stack.enter_context(proxy)
            kubeconfig = proxied_kubeconfig(kubeconfig, proxy, folder / "operator-proxied.kubeconfig")
        pods = stack.enter_context(kube.watch())
        operator = OperatorProcess(kubeconfig, folder / "operator.log", settings)
        supervisor = Supervisor(operator, run)
        operator.start_ready()
        try:
            fleet.create_all()
            for index, count in enumerate(rounds):
                killed = index < kills
                # at least one change after the kill: the restarted operator has work to converge
                kill_after = rng.randrange(max(count - 1, 1)) if killed and count else 0
                restarted = time.monotonic()
                for made in range(count):
                    time.sleep(rng.uniform(0.05, 0.5))
                    fleet.change()
                    if killed and made == kill_after:
                        time.sleep(rng.uniform(0.0, 0.5))  # somewhere in the work this change made
                        supervisor.kill()
                        restarted = time.monotonic()
                    supervisor.check()
                if killed and not count:
                    supervisor.kill()
                    restarted = time.monotonic()
                run.converged_after.append(
                    _converge(kube, fleet, supervisor, restarted, converge_timeout, run)
                )
        finally:
            operator.stop()
            run.changes = fleet.made
            run.faults = proxy.counts()
            run.calls = len(proxy.calls)
        changes_seen = pods.changes
    run.violations += gpu_conflicts(changes_seen) + shared_owners(changes_seen)
    run.seconds = time.monotonic() - began
    return run


def _converge(
    kube: Kube, fleet: Fleet, supervisor: Supervisor, since: float, timeout: float, run: ChaosRun
) -> float:
    """Seconds from ``since`` until the fleet is converged; a violation if it is not in time."""
    deadline = time.monotonic() + timeout
    while problems := unsettled(kube, fleet.wanted):
        if time.monotonic() > deadline:
            run.violations.append(f"not converged after {timeout:.0f} s: {problems}")
            break
        supervisor.check()
        time.sleep(0.2)
    return time.monotonic() - since
