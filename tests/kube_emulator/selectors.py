"""Label and field selectors, parsed and matched as the API server does for list/watch/deletecollection."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

_KEY_RE = re.compile(r"^([a-z0-9A-Z]([-a-z0-9A-Z.]*[a-z0-9A-Z])?/)?[a-z0-9A-Z]([-a-z0-9A-Z_.]*[a-z0-9A-Z])?$")


class SelectorError(ValueError):
    """A selector that cannot be parsed; answered as 400 BadRequest."""


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # exists, !exists, =, !=, in, notin, gt, lt
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        match self.op:
            case "exists":
                return present
            case "!exists":
                return not present
            case "=" | "in":
                return present and value in self.values
            case "!=" | "notin":
                return not present or value not in self.values
            case "gt" | "lt":
                try:
                    number, bound = int(value or ""), int(self.values[0])
                except ValueError:
                    return False
                return number > bound if self.op == "gt" else number < bound
        return False  # pragma: no cover


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside parentheses (the ``in (a,b)`` value sets)."""
    parts: list[str] = []
    depth = 0
    current = ""
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return parts


def _check_key(key: str) -> str:
    if not _KEY_RE.match(key):
        raise SelectorError(f'unable to parse requirement: invalid label key "{key}"')
    return key


_SET_RE = re.compile(r"^\s*(\S+)\s+(in|notin)\s*\((.*)\)\s*$")
_OP_RE = re.compile(r"^\s*([^!=<>\s]+)\s*(==|=|!=|>|<)\s*(.*?)\s*$")


def parse_label_selector(text: str | None) -> tuple[Requirement, ...]:
    """Parse ``a=b,c!=d,e in (f,g),!h,i`` into requirements (all must match)."""
    if not text or not text.strip():
        return ()
    requirements: list[Requirement] = []
    for part in _split_top_level(text):
        part = part.strip()
        if not part:
            raise SelectorError(f"unable to parse requirement: found '', expected: identifier in \"{text}\"")
        if match := _SET_RE.match(part):
            values = tuple(v.strip() for v in match.group(3).split(",") if v.strip())
            requirements.append(Requirement(_check_key(match.group(1)), match.group(2), values))
        elif match := _OP_RE.match(part):
            key, op, value = match.groups()
            if op in (">", "<"):
                if not re.fullmatch(r"-?\d+", value):
                    raise SelectorError(
                        f"unable to parse requirement: for 'gt', 'lt' operators, "
                        f'the value must be an integer: "{value}"'
                    )
                requirements.append(Requirement(_check_key(key), "gt" if op == ">" else "lt", (value,)))
            else:
                requirements.append(Requirement(_check_key(key), "!=" if op == "!=" else "=", (value,)))
        elif part.startswith("!"):
            requirements.append(Requirement(_check_key(part[1:].strip()), "!exists"))
        else:
            requirements.append(Requirement(_check_key(part), "exists"))
    return tuple(requirements)


def match_labels(requirements: tuple[Requirement, ...], obj: Mapping[str, Any]) -> bool:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return all(req.matches(labels) for req in requirements)


@dataclass(frozen=True)
class FieldRequirement:
    path: str
    op: str  # = or !=
    value: str

    def matches(self, obj: Mapping[str, Any]) -> bool:
        actual = field_value(obj, self.path)
        return (actual == self.value) if self.op == "=" else (actual != self.value)


def field_value(obj: Mapping[str, Any], path: str) -> str:
    """The string form of a dotted field in an object; missing fields read as the empty string."""
    current: Any = obj
    for part in path.split("."):
        if not isinstance(current, Mapping) or part not in current:
            return ""
        current = current[part]
    if current is None:
        return ""
    if isinstance(current, bool):
        return "true" if current else "false"
    if isinstance(current, (dict, list)):
        return ""
    return str(current)


def _split_escaped(text: str, separator: str) -> list[str]:
    parts: list[str] = []
    current = ""
    escaped = False
    for char in text:
        if escaped:
            current += "\\" + char
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == separator:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current + ("\\" if escaped else ""))
    return parts


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


_FIELD_OP_RE = re.compile(r"^(.*?)(==|!=|=)(.*)$")


def parse_field_selector(text: str | None) -> tuple[FieldRequirement, ...]:
    """Parse ``metadata.name=x,status.phase!=Running`` (with ``\\,`` and ``\\=`` escapes)."""
    if not text or not text.strip():
        return ()
    requirements: list[FieldRequirement] = []
    for part in _split_escaped(text, ","):
        if not part:
            continue
        # Find the first unescaped operator.
        index = 0
        found = None
        while index < len(part):
            if part[index] == "\\":
                index += 2
                continue
            if part.startswith(("==", "!="), index):
                found = (index, part[index : index + 2])
                break
            if part[index] == "=":
                found = (index, "=")
                break
            index += 1
        if found is None:
            raise SelectorError(f"invalid selector: '{text}'; can't understand '{part}'")
        pos, op = found
        path = _unescape(part[:pos]).strip()
        value = _unescape(part[pos + len(op) :])
        requirements.append(FieldRequirement(path, "!=" if op == "!=" else "=", value))
    return tuple(requirements)


def match_fields(requirements: tuple[FieldRequirement, ...], obj: Mapping[str, Any]) -> bool:
    return all(req.matches(obj) for req in requirements)


Matcher = Callable[[Mapping[str, Any]], bool]


def make_matcher(label_selector: str | None, field_selector: str | None) -> Matcher:
    """One predicate for both selectors; raises SelectorError on syntax errors (before any matching)."""
    labels = parse_label_selector(label_selector)
    fields = parse_field_selector(field_selector)
    if not labels and not fields:
        return lambda obj: True
    return lambda obj: match_labels(labels, obj) and match_fields(fields, obj)
