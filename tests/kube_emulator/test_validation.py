"""Validation of custom resources against their CRD schema: messages, causes, defaults, pruning and
the three fieldValidation modes."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from .conftest import widget
from .runner import EmulatorThread

pytestmark = pytest.mark.timeout(60)
W_URL = "/apis/example.test/v1/namespaces/default/widgets"


def create(http: httpx.Client, body: dict[str, Any], **params: str) -> httpx.Response:
    return http.post(W_URL, json=body, params=params)


def message(http: httpx.Client, **spec: Any) -> str:
    body = widget("w", **spec) if "size" in spec else {**widget("w"), "spec": spec}
    response = create(http, body)
    assert response.status_code == 422, response.text
    assert response.json()["reason"] == "Invalid"
    text = response.json()["message"]
    prefix = 'Widget.example.test "w" is invalid: '
    assert text.startswith(prefix)
    return text[len(prefix) :]


@pytest.mark.usefixtures("widgets")
@pytest.mark.parametrize(
    "spec, expected",
    [
        (
            {"size": 3, "mode": "triple"},
            'spec.mode: Unsupported value: "triple": supported values: "single", "both"',
        ),
        (
            {"size": 200},
            "spec.size: Invalid value: 200: spec.size in body should be less than or equal to 100",
        ),
        ({"size": 0}, "spec.size: Invalid value: 0: spec.size in body should be greater than or equal to 1"),
        (
            {"size": "big"},
            'spec.size: Invalid value: "string": spec.size in body must be of type integer: "string"',
        ),
        (
            {"size": 3, "color": "Red"},
            "spec.color: Invalid value: \"Red\": spec.color in body should match '^[a-z]+$'",
        ),
        ({"size": 3, "color": "abcdefghijk"}, "spec.color: Too long: may not be more than 10 bytes"),
        ({"size": 3, "tags": ["a", "b", "c", "d"]}, "spec.tags: Too many: 4: must have at most 3 items"),
        (
            {"size": 3, "tags": ["a", 5]},
            'spec.tags[1]: Invalid value: "integer": spec.tags[1] in body must be of type string: "integer"',
        ),
        (
            {"size": 3, "gpu": {"count": 0}},
            "spec.gpu.count: Invalid value: 0: spec.gpu.count in body should be greater than 0",
        ),
        (
            {"size": 3, "labels": {"a": "x"}},
            'spec.labels.a: Invalid value: "x": spec.labels.a in body should be at least 2 chars long',
        ),
        (
            {"size": 3, "port": True},
            'spec.port: Invalid value: "boolean": spec.port in body must be of type '
            'integer,string: "boolean"',
        ),
        ({"mode": "single"}, "spec.size: Required value"),
    ],
)
def test_messages(http: httpx.Client, spec: dict[str, Any], expected: str) -> None:
    assert message(http, **spec) == expected


def test_several_errors_and_causes(http: httpx.Client, widgets: tuple[str, str, str]) -> None:
    response = create(http, widget("w", size=300, mode="triple"))
    body = response.json()
    assert body["message"] == (
        'Widget.example.test "w" is invalid: [spec.size: Invalid value: 300: spec.size in body '
        'should be less than or equal to 100, spec.mode: Unsupported value: "triple": '
        'supported values: "single", "both"]'
    )
    assert body["details"]["kind"] == "Widget" and body["details"]["group"] == "example.test"
    assert body["details"]["name"] == "w"
    assert body["details"]["causes"] == [
        {
            "reason": "FieldValueInvalid",
            "message": "Invalid value: 300: spec.size in body should be less than or equal to 100",
            "field": "spec.size",
        },
        {
            "reason": "FieldValueNotSupported",
            "message": 'Unsupported value: "triple": supported values: "single", "both"',
            "field": "spec.mode",
        },
    ]


def test_valid_values(http: httpx.Client, widgets: tuple[str, str, str]) -> None:
    body = widget(
        "ok",
        size=100,
        mode="both",
        color="blue",
        tags=["a"],
        port="http",
        gpu={"count": 2, "ratio": None},
        extra={"anything": {"goes": [1, 2]}},
    )
    response = create(http, body)
    assert response.status_code == 201, response.text
    spec = response.json()["spec"]
    assert spec["extra"] == {"anything": {"goes": [1, 2]}}
    assert spec["gpu"] == {"count": 2, "ratio": None}


def test_defaults_are_applied(http: httpx.Client, widgets: tuple[str, str, str]) -> None:
    spec = create(http, widget("d", size=1)).json()["spec"]
    assert spec == {"size": 1, "mode": "single", "gpu": {"count": 1}}
    spec = create(http, widget("e", size=1, gpu={})).json()["spec"]
    assert spec["gpu"] == {"count": 1}


def test_unknown_fields_per_field_validation(http: httpx.Client, widgets: tuple[str, str, str]) -> None:
    body = widget("u", size=1, foo="bar")
    body["metadata"]["bogus"] = 1
    strict = create(http, body, fieldValidation="Strict")
    assert strict.status_code == 400
    assert strict.json()["reason"] == "BadRequest"
    assert strict.json()["message"] == (
        'Widget in version "v1" cannot be handled as a Widget: strict decoding error: '
        'unknown field "metadata.bogus", unknown field "spec.foo"'
    )
    warn = create(http, body, fieldValidation="Warn")
    assert warn.status_code == 201
    assert warn.headers.get_list("Warning") == [
        '299 - "unknown field \\"metadata.bogus\\""',
        '299 - "unknown field \\"spec.foo\\""',
    ]
    assert "foo" not in warn.json()["spec"]
    body["metadata"]["name"] = "v"
    ignore = create(http, body, fieldValidation="Ignore")
    assert ignore.status_code == 201
    assert "Warning" not in ignore.headers
    assert "foo" not in ignore.json()["spec"]


def test_status_is_validated(kube: EmulatorThread, http: httpx.Client, widgets: tuple[str, str, str]) -> None:
    kube.create(widgets, widget("s", size=1))
    response = http.patch(
        f"{W_URL}/s/status",
        headers={"Content-Type": "application/merge-patch+json"},
        json={"status": {"phase": "Weird"}},
    )
    assert response.status_code == 422
    assert response.json()["message"] == (
        'Widget.example.test "s" is invalid: status.phase: Unsupported value: '
        '"Weird": supported values: "Pending", "Ready", "Failed"'
    )
    response = http.patch(
        f"{W_URL}/s/status",
        headers={"Content-Type": "application/merge-patch+json"},
        json={"status": {"conditions": [{"type": "Ready"}], "junk": 1}},
    )
    assert response.status_code == 422
    assert "status.conditions[0].status: Required value" in response.json()["message"]


def test_updates_are_validated(
    kube: EmulatorThread, http: httpx.Client, widgets: tuple[str, str, str]
) -> None:
    kube.create(widgets, widget("x", size=1))
    response = http.patch(
        f"{W_URL}/x", headers={"Content-Type": "application/merge-patch+json"}, json={"spec": {"size": -1}}
    )
    assert response.status_code == 422
