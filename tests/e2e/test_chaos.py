"""The operator SIGKILLed at seeded random points while LlamaModels change (tests/support/chaos.py):
restarted each time, it converges after each restart, and never puts two servers on overlapping
GPUs of a node, nor gives a LlamaModel two servers, at any moment a watch of the Pods saw. The long
run, with API faults on as well, is bench/chaos.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cluster.cluster import LocalCluster
from tests.support.chaos import chaos
from tests.support.components import OPERATOR_USER
from tests.support.kube import Kube, refused_by_rbac, requests_of

pytestmark = pytest.mark.timeout(300)


def test_an_operator_killed_at_random_points_converges_after_each_restart(
    cluster: LocalCluster, kube: Kube, tmp_path: Path
) -> None:
    assert cluster.control_plane is not None
    mark = cluster.control_plane.audit_mark()
    # A short lease: each restarted operator waits for its killed predecessor's to expire.
    run = chaos(cluster, kube, tmp_path, seed=7, changes=30, kills=3, lease=(3.0, 1.0), converge_timeout=45)
    print(run.summary())
    assert run.violations == []
    assert run.kills == 3 and len(run.converged_after) == 4
    assert run.acting_after  # (a kill may also hit a restarted operator still waiting for the lease)
    log = (tmp_path / "operator.log").read_text()
    assert "Traceback" not in log, log[-20000:]
    assert refused_by_rbac(requests_of(cluster.control_plane.audit_events(mark), OPERATOR_USER)) == []
