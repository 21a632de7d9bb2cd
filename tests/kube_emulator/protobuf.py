"""Decoding of Kubernetes protobuf request bodies for the kinds that kubectl's generators create.

``kubectl create namespace|configmap|secret|serviceaccount`` send their objects as protobuf (the
``k8s\\x00`` envelope around a ``runtime.Unknown``), while ``kubectl apply``/``create -f`` send JSON.
This decodes those few kinds into their JSON form; anything else answers 415 with a clear message.
"""

from __future__ import annotations

import base64
from typing import Any

from .errors import ApiError

MAGIC = b"k8s\x00"

# Message schemas: field number -> (json name, kind, sub-schema or None). Kinds: str, bytes, int, bool,
# msg, map (string->string), bmap (string->bytes, base64 in JSON), time; a trailing "*" means repeated.
Schema = dict[int, tuple[str, str, Any]]

TIME: Schema = {1: ("seconds", "int", None), 2: ("nanos", "int", None)}
OWNER_REFERENCE: Schema = {
    1: ("kind", "str", None),
    3: ("name", "str", None),
    4: ("uid", "str", None),
    5: ("apiVersion", "str", None),
    6: ("controller", "bool", None),
    7: ("blockOwnerDeletion", "bool", None),
}
OBJECT_META: Schema = {
    1: ("name", "str", None),
    2: ("generateName", "str", None),
    3: ("namespace", "str", None),
    4: ("selfLink", "str", None),
    5: ("uid", "str", None),
    6: ("resourceVersion", "str", None),
    7: ("generation", "int", None),
    8: ("creationTimestamp", "time", None),
    9: ("deletionTimestamp", "time", None),
    10: ("deletionGracePeriodSeconds", "int", None),
    11: ("labels", "map", None),
    12: ("annotations", "map", None),
    13: ("ownerReferences", "msg*", OWNER_REFERENCE),
    14: ("finalizers", "str*", None),
    17: ("managedFields", "skip", None),
}
OBJECT_REFERENCE: Schema = {
    1: ("kind", "str", None),
    2: ("namespace", "str", None),
    3: ("name", "str", None),
    4: ("uid", "str", None),
    5: ("apiVersion", "str", None),
    6: ("resourceVersion", "str", None),
    7: ("fieldPath", "str", None),
}
LOCAL_OBJECT_REFERENCE: Schema = {1: ("name", "str", None)}
KINDS: dict[str, Schema] = {
    "ConfigMap": {
        1: ("metadata", "msg", OBJECT_META),
        2: ("data", "map", None),
        3: ("binaryData", "bmap", None),
        4: ("immutable", "bool", None),
    },
    "Secret": {
        1: ("metadata", "msg", OBJECT_META),
        2: ("data", "bmap", None),
        3: ("type", "str", None),
        4: ("stringData", "map", None),
        5: ("immutable", "bool", None),
    },
    "Namespace": {
        1: ("metadata", "msg", OBJECT_META),
        2: ("spec", "msg", {1: ("finalizers", "str*", None)}),
        3: ("status", "msg", {1: ("phase", "str", None)}),
    },
    "ServiceAccount": {
        1: ("metadata", "msg", OBJECT_META),
        2: ("secrets", "msg*", OBJECT_REFERENCE),
        3: ("imagePullSecrets", "msg*", LOCAL_OBJECT_REFERENCE),
        4: ("automountServiceAccountToken", "bool", None),
    },
}


def _unsupported(detail: str) -> ApiError:
    return ApiError(
        415,
        "UnsupportedMediaType",
        f"the kube emulator cannot decode this protobuf body ({detail}); send JSON instead "
        f"(e.g. kubectl apply -f / kubectl create -f)",
        {},
    )


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data):
            raise _unsupported("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(data: bytes) -> list[tuple[int, int, Any]]:
    """Split a message into (field number, wire type, raw value) triples."""
    result = []
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos)
        elif wire == 2:
            length, pos = _varint(data, pos)
            value, pos = data[pos : pos + length], pos + length
        elif wire == 1:
            value, pos = data[pos : pos + 8], pos + 8
        elif wire == 5:
            value, pos = data[pos : pos + 4], pos + 4
        else:
            raise _unsupported(f"wire type {wire}")
        result.append((number, wire, value))
    return result


def _time(data: bytes) -> str | None:
    from datetime import UTC, datetime

    values = {number: value for number, _, value in _fields(data)}
    seconds = values.get(1, 0)
    if not seconds:
        return None
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _map_entry(data: bytes) -> tuple[str, bytes]:
    key, value = "", b""
    for number, _, raw in _fields(data):
        if number == 1:
            key = raw.decode()
        elif number == 2:
            value = raw
    return key, value


def decode_message(data: bytes, schema: Schema, where: str) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for number, _, raw in _fields(data):
        if number not in schema:
            raise _unsupported(f"unknown field {number} in {where}")
        name, kind, sub = schema[number]
        repeated = kind.endswith("*")
        kind = kind.rstrip("*")
        value: Any
        if kind == "skip":
            continue
        if kind == "str":
            value = raw.decode()
        elif kind == "int":
            value = raw if raw < (1 << 63) else raw - (1 << 64)
        elif kind == "bool":
            value = bool(raw)
        elif kind == "bytes":
            value = base64.b64encode(raw).decode()
        elif kind == "time":
            value = _time(raw)
        elif kind == "msg":
            value = decode_message(raw, sub, f"{where}.{name}")
        elif kind in ("map", "bmap"):
            key, entry = _map_entry(raw)
            target = obj.setdefault(name, {})
            target[key] = entry.decode() if kind == "map" else base64.b64encode(entry).decode()
            continue
        else:  # pragma: no cover
            raise _unsupported(f"field kind {kind}")
        if repeated:
            obj.setdefault(name, []).append(value)
        elif value not in ("", 0, None, False) or (kind == "msg" and value):
            obj[name] = value
    return obj


def decode(body: bytes) -> dict[str, Any]:
    """Decode a ``k8s\\x00``-enveloped protobuf object into its JSON form."""
    if not body.startswith(MAGIC):
        raise _unsupported("no k8s protobuf envelope")
    envelope = {number: raw for number, _, raw in _fields(body[len(MAGIC) :])}
    type_meta = {number: raw.decode() for number, _, raw in _fields(envelope.get(1, b""))}
    api_version, kind = type_meta.get(1, ""), type_meta.get(2, "")
    if api_version != "v1" or kind not in KINDS:
        raise _unsupported(f"kind {kind!r} of {api_version!r}")
    obj = decode_message(envelope.get(2, b""), KINDS[kind], kind)
    return {"apiVersion": api_version, "kind": kind, **obj}
