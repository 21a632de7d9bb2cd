"""Log lines: text for people, JSON lines for log pipelines; decisions at INFO, details at DEBUG."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest

from tests.ports import free_port

pytestmark = pytest.mark.timeout(60)


def first_line_of_adapter(*options: str) -> tuple[str, int]:
    """The adapter's first log line (it says where it serves), and its exit code after Ctrl-C."""
    port = free_port()
    adapter = subprocess.Popen(
        [sys.executable, "-m", "llamacontroller.cli", "adapter", "--upstream", "http://127.0.0.1:1",
         "--listen", f"127.0.0.1:{port}", *options],
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    assert adapter.stderr is not None
    line = adapter.stderr.readline()
    adapter.send_signal(signal.SIGINT)
    return line, adapter.wait(30)


def test_json_lines_for_log_pipelines():
    line, code = first_line_of_adapter("--log-format", "json")
    record = json.loads(line)
    assert record["level"] == "INFO" and record["logger"] == "llamacontroller.serving.web.server"
    assert record["message"].startswith("the Ollama and OpenAI APIs for llama-server at http://127.0.0.1:1")
    assert "asctime" in record and code == 0


def test_text_lines_by_default():
    line, code = first_line_of_adapter()
    assert " INFO llamacontroller.serving.web.server: the Ollama and OpenAI APIs" in line and code == 0
