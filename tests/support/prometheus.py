"""A real Prometheus server (Debian's ``prometheus`` package) on loopback, scraping given targets
every second, and its HTTP API for PromQL; promtool for the rest."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from llamacontroller.local.server import stop_process
from tests.ports import free_port
from tests.support.paths import REPO

SCRAPE_INTERVAL = "1s"
DASHBOARD = REPO / "deploy" / "components" / "monitoring" / "grafana-dashboard.json"
# Grafana's variables, as Grafana replaces them before Prometheus sees a query
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "${datasource}": ""}


def dashboard_queries() -> list[str]:
    """Every query of the Grafana dashboard, with Grafana's variables replaced as Grafana does."""
    queries = []
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        for target in panel["targets"]:
            expr = target["expr"]
            for variable, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            queries.append(expr)
    return queries


def tool(name: str) -> str:
    found = shutil.which(name)
    assert found, f"{name} is missing: bash .ci/setup tests installs Debian's prometheus package"
    return found


LINT_FINDINGS = 3  # promtool's exit code for an exposition that parses but has lint findings


def promtool_check_metrics(exposition: str, tolerated: tuple[str, ...] = ()) -> None:
    """promtool's lint of an exposition: it parses, and promtool finds nothing but findings that
    contain one of ``tolerated``."""
    checked = subprocess.run(
        [tool("promtool"), "check", "metrics"], input=exposition, capture_output=True, text=True
    )
    said = (checked.stdout + checked.stderr).splitlines()
    findings = [line for line in said if line.strip() and not any(t in line for t in tolerated)]
    parsed = checked.returncode == 0 or (checked.returncode == LINT_FINDINGS and bool(tolerated))
    assert parsed and not findings, "\n".join(said)


def promtool_parse_queries(queries: list[str], folder: Path) -> None:
    """Each query parses as PromQL: promtool checks a rules file that records each one."""
    rules = {
        "groups": [
            {"name": "parse", "rules": [{"record": f"q:{i}", "expr": q} for i, q in enumerate(queries)]}
        ]
    }
    path = folder / "queries.rules.yaml"
    path.write_text(yaml.safe_dump(rules))
    checked = subprocess.run([tool("promtool"), "check", "rules", str(path)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr


class Prometheus:
    """``prometheus`` with a generated config: one job per name, scraping its ``host:port`` targets."""

    def __init__(self, folder: Path, jobs: dict[str, list[str]]) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        scrape = [
            {"job_name": job, "scrape_interval": SCRAPE_INTERVAL, "static_configs": [{"targets": targets}]}
            for job, targets in jobs.items()
        ]
        self.config = folder / "prometheus.yml"
        self.config.write_text(
            yaml.safe_dump({"global": {"scrape_interval": SCRAPE_INTERVAL}, "scrape_configs": scrape})
        )
        self.log_path = folder / "prometheus.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> None:
        command = [
            tool("prometheus"),
            f"--config.file={self.config}",
            f"--storage.tsdb.path={self.folder / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
        ]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"prometheus exited:\n{self.log_path.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/-/ready", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"prometheus is not ready after {timeout:.0f} s")

    def stop(self) -> None:
        stop_process(self.process)

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's vector; a query Prometheus refuses fails the test with its error."""
        answer = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10).json()
        assert answer["status"] == "success", answer
        result: list[dict[str, Any]] = answer["data"]["result"]
        return result

    def targets_up(self) -> dict[str, str]:
        """Each active target's scrape URL and health (``up``, ``down``, ``unknown``)."""
        answer = httpx.get(f"{self.url}/api/v1/targets", timeout=10).json()
        return {t["scrapeUrl"]: t["health"] for t in answer["data"]["activeTargets"]}
