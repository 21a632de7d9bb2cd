"""The JSON codec of the API and of the client to llama-server: compact, UTF-8 as is.

orjson, not json: JSON is most of the adapter's own work per request, and orjson reads and writes it
several times faster (see docs/decisions/serving-stack.md). Invalid input is a ``ValueError``.
"""

from __future__ import annotations

from typing import Any

import orjson


def dumps(value: Any) -> bytes:
    return orjson.dumps(value)


def loads(data: bytes | str) -> Any:
    """The value of a JSON text; ``ValueError`` when it is none."""
    return orjson.loads(data)
