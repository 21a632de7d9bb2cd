"""Tool calls between OpenAI's wire form (llama-server) and Ollama's.

llama-server streams a call as fragments: the first delta of an index carries its id and name, the
next ones pieces of the ``arguments`` JSON text. Ollama clients want whole calls whose ``arguments``
is an object, so fragments are joined per index and parsed once the choice has finished.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)


@dataclass
class _Call:
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


class ToolCallAccumulator:
    def __init__(self) -> None:
        self._calls: dict[int, _Call] = {}

    def __bool__(self) -> bool:
        return bool(self._calls)

    def add(self, deltas: list[dict[str, Any]]) -> None:
        """One delta's ``tool_calls`` list; fragments without an index belong to the first call."""
        for delta in deltas:
            call = self._calls.setdefault(int(delta.get("index") or 0), _Call())
            call.id = delta.get("id") or call.id
            function = delta.get("function") or {}
            call.name += function.get("name") or ""
            if function.get("arguments"):
                call.arguments.append(function["arguments"])

    def take(self) -> list[dict[str, Any]]:
        """The calls so far in Ollama's shape, in index order; the accumulator starts over."""
        calls = [ollama_call(index, call) for index, call in sorted(self._calls.items())]
        self._calls.clear()
        return calls


def ollama_call(index: int, call: _Call) -> dict[str, Any]:
    out: dict[str, Any] = {
        "function": {"index": index, "name": call.name, "arguments": parse_arguments("".join(call.arguments))}
    }
    if call.id:
        out["id"] = call.id
    return out


def parse_arguments(text: str) -> dict[str, Any]:
    """The arguments as an object: empty text is ``{}``; text that is no JSON object is logged, ``{}``."""
    if not text.strip():
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        log.warning("tool call arguments are not JSON, answering {}: %.200r", text)
        return {}
    if isinstance(value, dict):
        return value
    log.warning("tool call arguments are not a JSON object, answering {}: %.200r", text)
    return {}


def openai_tool_calls(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """An Ollama message's calls (object arguments) as OpenAI's (JSON text, an id per call)."""
    out = []
    for position, call in enumerate(calls):
        function = call.get("function") or {}
        arguments = function.get("arguments")
        out.append(
            {
                "id": call.get("id") or f"call_{position}",
                "type": "function",
                "function": {
                    "name": function.get("name", ""),
                    "arguments": arguments if isinstance(arguments, str) else json.dumps(arguments or {}),
                },
            }
        )
    return out
