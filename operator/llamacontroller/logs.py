"""Logging for every command: text lines for people, JSON lines for log pipelines (``--log-format``).

Levels: what the program decides and does at INFO (a Pod created, a server started, a request
served), each call to the Kubernetes API at DEBUG (seen with ``--verbose``). The HTTP clients'
own per-request lines stay off: the code that makes a call logs it.
"""

from __future__ import annotations

import logging
import sys
from enum import StrEnum

from pythonjsonlogger.json import JsonFormatter

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
JSON_FIELDS = "%(asctime)s %(levelname)s %(name)s %(message)s"
# Libraries that log every request at INFO: only their warnings are kept.
CHATTY_LIBRARIES = ("httpx", "httpx2", "httpcore", "kubernetes", "urllib3", "aiohttp.access")


class LogFormat(StrEnum):
    TEXT = "text"
    JSON = "json"


def configure_logging(log_format: LogFormat = LogFormat.TEXT, verbose: bool = False) -> None:
    """One handler on stderr for the whole process; DEBUG with ``verbose``, else INFO."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(log_format))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    quiet_libraries()


def formatter(log_format: LogFormat) -> logging.Formatter:
    if log_format is LogFormat.JSON:
        return JsonFormatter(JSON_FIELDS, rename_fields={"levelname": "level", "name": "logger"})
    return logging.Formatter(TEXT_FORMAT)


def quiet_libraries() -> None:
    for name in CHATTY_LIBRARIES:
        logging.getLogger(name).setLevel(logging.WARNING)
