"""Hostile and malformed LlamaModels, applied with kubectl to the test cluster's API server while the
operator runs: a property-based corpus (tests/support/hostile.py), in batches of one kubectl call.

Each LlamaModel is refused at apply with its defect's field named in kubectl's error, or accepted
and reported Failed by the operator with the field named in its status message, or (well-formed)
served: the Pod the operator would create for it is one the API server takes. Throughout, the
operator never crashes (no traceback in its log: the `operator` fixture), never writes a Pod or a
Service that the API server refuses (its audit log), and it serves a well-formed LlamaModel applied
after the corpus.

Hypothesis draws each LlamaModel's well-formed parts (names up to 253 characters, hundreds of
extraArgs, unicode, quantities, the drawn values of the defects); every defect of the corpus goes
into each round, one per LlamaModel. The draws are seeded (`derandomize`), so that CI sees the same
corpus on each run, and checked in bulk against the cluster (no shrinking: each case carries its
own story, and a failure names the cases that broke the property).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings

from llamacontroller.config import OperatorConfig, load_config
from llamacontroller.render.children import render_children
from llamacontroller.resource import parse_llamamodel
from tests.cluster.cluster import LocalCluster
from tests.support.builders import lm
from tests.support.components import OPERATOR_USER, OperatorProcess
from tests.support.hostile import ROUND, Case, Stage, Surroundings, corpus, surroundings
from tests.support.kube import Kube, requests_of, wait_gone
from tests.support.polling import eventually
from tests.support.project_cluster import NODES

pytestmark = pytest.mark.timeout(300)

ROUNDS = 3  # batches of LlamaModels applied at once (one kubectl call), every defect in each
# Well-formed cases go to the passive node: their Pods are created and scheduled but run nothing,
# so that dozens of them cost the machine nothing.
HOME = "passive"
KNOWN_NODES = frozenset(node.name for node in NODES)
SERVED_PHASES = {"Pending", "Waiting", "Loading", "Ready"}
# kubectl starts each object's error on a line of its own, in the order of the objects.
ERROR_START = re.compile(r"^(Error from server|error when |error: )")


def refusals(stderr: str) -> list[str]:
    """kubectl's errors, one per refused object (an error may span several lines)."""
    blocks: list[str] = []
    for line in stderr.splitlines():
        if ERROR_START.match(line) or not blocks:
            blocks.append(line)
        else:
            blocks[-1] += "\n" + line
    return [b for b in blocks if not b.startswith("Warning:")]


def _story(case: Case, detail: str) -> str:
    return f"{case.what} ({case.stage.value}, naming {' or '.join(case.named) or '-'}): {detail[:600]}"


def clear(kube: Kube) -> None:
    """No LlamaModel and no Pod left from the batch before (the passive node confirms deletions at
    once), so that every batch meets free slots."""
    kube.kubectl("delete", "llamamodels", "--all", "--wait=false")
    wait_gone(lambda: kube.llamamodels() or kube.pods(), "the previous batch", timeout=60)


def apply_batch(kube: Kube, corpus: list[Case]) -> dict[str, dict[str, Any]]:
    """Applies the batch in one kubectl call; checks each refusal; the accepted objects by name."""
    done = kube.kubectl("apply", "-f", "-", stdin="\n".join(json.dumps(c.body) for c in corpus), check=False)
    created = {item["metadata"]["name"]: item for item in kube.llamamodels()}
    refused = [case for case in corpus if case.name not in created]
    problems = [
        _story(case, "accepted") for case in corpus if case.stage is Stage.APPLY and case.name in created
    ]
    problems += [_story(case, "refused") for case in refused if case.stage is not Stage.APPLY]
    errors = refusals(done.stderr)
    assert not problems and len(errors) == len(refused), (
        "\n".join(problems) + f"\nkubectl said:\n{done.stderr}"
    )
    problems = [
        _story(case, error)
        for case, error in zip(refused, errors, strict=True)
        if not any(n in error for n in case.named)
    ]
    assert not problems, "refused without naming the field:\n" + "\n".join(problems)
    return created


def settled(kube: Kube, corpus: list[Case]) -> dict[str, dict[str, Any]]:
    """The statuses of the accepted cases, once the operator has judged each of their generations."""
    wanted = {case.name: case for case in corpus if case.stage is not Stage.APPLY}

    def judged() -> dict[str, dict[str, Any]] | None:
        found = {item["metadata"]["name"]: item for item in kube.llamamodels()}
        statuses = {}
        for name, case in wanted.items():
            item = found[name]
            status = item.get("status") or {}
            if status.get("observedGeneration") != item["metadata"]["generation"]:
                return None
            if case.stage is Stage.OPERATOR and status.get("phase") != "Failed":
                return None
            statuses[name] = {**status, "uid": item["metadata"]["uid"], "object": item}
        return statuses

    return eventually(judged, timeout=60, what="the operator's verdict on every accepted LlamaModel")  # type: ignore[no-any-return]


def check_verdicts(
    kube: Kube, corpus: list[Case], statuses: dict[str, dict[str, Any]], config: OperatorConfig
) -> None:
    problems = []
    for case in corpus:
        if case.stage is Stage.APPLY:
            continue
        status = statuses[case.name]
        message = status.get("message") or ""
        reasons = [c.get("reason") for c in status.get("conditions") or []]
        if "Refused" in reasons:
            problems.append(_story(case, f"the API server refused the operator: {message}"))
        elif case.stage is Stage.OPERATOR and not any(n in message for n in case.named):
            problems.append(_story(case, f"Failed without naming the field: {message}"))
        elif case.stage is Stage.SERVED:
            if status.get("phase") not in SERVED_PHASES:
                problems.append(_story(case, f"{status.get('phase')}: {message}"))
            else:
                problems += [_story(case, p) for p in pod_refusals(kube, status["object"], config)]
    assert not problems, "\n".join(problems)


def pod_refusals(kube: Kube, body: dict[str, Any], config: OperatorConfig) -> list[str]:
    """What the API server says of the Pod and Service the operator renders for a well-formed case
    (a dry run: only a slot's first holder gets its Pod for real); nothing when it takes both. A
    name taken already (409: the operator's own Pod, the slot's Service) is taken all the same: the
    API server validates an object before it looks for its name."""
    children = render_children(parse_llamamodel(body), config)
    problems = []
    for child, resource in ((children.pod, "pods"), (children.service, "services")):
        response = kube.http.post(kube.ns_path(resource), params={"dryRun": "All"}, json=child)
        if response.status_code not in (200, 201, 409):
            problems.append(
                f"the API server refuses its {resource[:-1]}: {response.status_code} {response.text}"
            )
    return problems


def operator_refusals(cluster: LocalCluster, mark: int) -> list[str]:
    """The operator's writes that the API server refused for what they hold: not a conflict (409, a
    race it retries) nor a status of a LlamaModel deleted meanwhile (404: the batches are deleted
    while the operator still judges them)."""
    assert cluster.control_plane is not None
    events = requests_of(cluster.control_plane.audit_events(mark), OPERATOR_USER)
    return [
        f"{e['verb']} {e['requestURI']}: {code}"
        for e in events
        if e["verb"] in ("create", "update", "patch")
        and 400 <= (code := (e.get("responseStatus") or {}).get("code", 0)) < 500
        and code not in (404, 409)
    ]


def drawn_corpus() -> list[Case]:
    """ROUNDS rounds of every defect, each in a well-formed LlamaModel that hypothesis draws (seeded)."""
    drawn: list[Surroundings] = []

    @settings(
        max_examples=ROUNDS * len(ROUND),
        deadline=None,
        derandomize=True,
        database=None,
        phases=(Phase.explicit, Phase.generate),
        suppress_health_check=list(HealthCheck),
    )
    @given(surroundings(HOME, lambda node: node not in KNOWN_NODES))
    def draw(surrounding: Surroundings) -> None:
        drawn.append(surrounding)

    draw()
    assert len(drawn) == ROUNDS * len(ROUND), len(drawn)
    return corpus(drawn)


def test_hostile_llamamodels_are_refused_or_failed_naming_the_field(
    cluster: LocalCluster, kube: Kube, operator: OperatorProcess, operator_config: Path
) -> None:
    assert cluster.control_plane is not None
    mark = cluster.control_plane.audit_mark()
    config = load_config(operator_config)
    cases = drawn_corpus()
    for start in range(0, len(cases), len(ROUND)):
        batch = cases[start : start + len(ROUND)]
        clear(kube)
        apply_batch(kube, batch)
        check_verdicts(kube, batch, settled(kube, batch), config)
    print(f"corpus: {dict(Counter(case.stage.value for case in cases))}")
    refused = operator_refusals(cluster, mark)
    assert not refused, "the API server refused the operator's writes:\n" + "\n".join(refused)

    clear(kube)
    kube.apply(lm("after-the-corpus"))
    kube.wait_phase("after-the-corpus", "Ready", timeout=90)
