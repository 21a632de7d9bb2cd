"""A real kopf operator (``kopf run --standalone`` in a subprocess) against the emulator: creation,
status patching, its finalizer on deletion, and no double processing after a restart."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import widget
from .runner import EmulatorThread

pytestmark = pytest.mark.timeout(120)
OPERATOR = Path(__file__).with_name("kopf_smoke_operator.py")
FINALIZER = "example.test/smoke-finalizer"


class Operator:
    """One run of the smoke operator; its output goes to a file that the test reads."""

    def __init__(self, kube: EmulatorThread, log: Path) -> None:
        self.kube = kube
        self.log = log
        self._file = log.open("w")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "kopf",
                "run",
                "--standalone",
                "--all-namespaces",
                "--verbose",
                str(OPERATOR),
            ],
            stdout=self._file,
            stderr=subprocess.STDOUT,
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
        )

    @property
    def output(self) -> str:
        return self.log.read_text()

    def wait_for_output(self, text: str, timeout: float = 60) -> None:
        self.kube.wait_for(
            lambda: text in self.output or self.process.poll() is not None,
            timeout=timeout,
            message=f"{text!r} not in the operator output:\n{self.output}",
        )
        assert text in self.output, f"the operator exited:\n{self.output}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(30)
        self._file.close()


@pytest.fixture()
def operators(kube: EmulatorThread, tmp_path: Path) -> Iterator[list[Operator]]:
    started: list[Operator] = []
    yield started
    for operator in started:
        operator.stop()


def test_kopf_operator_smoke(
    kube: EmulatorThread, widgets: tuple[str, str, str], tmp_path: Path, operators: list[Operator]
) -> None:
    first = Operator(kube, tmp_path / "kopf-1.log")
    operators.append(first)
    kube.create(widgets, widget("w1", size=4))
    ready = kube.wait_for(
        lambda: (lambda o: o if o and (o.get("status") or {}).get("phase") == "Ready" else None)(
            kube.get(widgets, "default", "w1")
        ),
        timeout=60,
        message="w1 never became Ready",
    )
    assert ready["status"] == {"phase": "Ready", "observed": 4}
    assert FINALIZER in ready["metadata"]["finalizers"]
    assert "kopf.zalando.org/last-handled-configuration" in ready["metadata"]["annotations"]
    first.wait_for_output("SMOKE-CREATED w1 size=4")
    patches = kube.requests(verb="patch", resource="widgets", name="w1")
    assert patches and all(record.status == 200 for record in patches)
    assert any(record.subresource == "status" for record in patches)
    first.stop()
    assert first.process.returncode == 0, first.output

    # A restarted operator sees w1 as already handled: no handler runs for it again.
    second = Operator(kube, tmp_path / "kopf-2.log")
    operators.append(second)
    second.wait_for_output("[default/w1] Handling cycle is finished")
    kube.create(widgets, widget("w2", size=2))
    second.wait_for_output("SMOKE-CREATED w2 size=2")
    assert "SMOKE-CREATED w1" not in second.output
    assert first.output.count("SMOKE-CREATED w1") == 1

    # Deletion runs the delete handler, then kopf removes its finalizer and the object goes away.
    kube.delete(widgets, "default", "w1")
    kube.wait_for(
        lambda: kube.get(widgets, "default", "w1") is None, timeout=60, message="w1 was never deleted"
    )
    second.wait_for_output("SMOKE-DELETED w1")
    types = [record.type for record in kube.events(resource="widgets", name="w1")]
    assert types[0] == "ADDED" and types[-1] == "DELETED"
    assert all(record.status < 500 for record in kube.audit_log)
