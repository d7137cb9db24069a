"""The compose part of the OpenAPI document: templates and the timeline's JSON Schema (a
compose job's request is its kind's, `http.kinds`); and the helpers every part writes answers
with. The timeline itself is described once, by `GET /v1/schemas/timeline.json` (made from the
models that check it), not copied here.
"""

from __future__ import annotations

from typing import Any

JSON = "application/json"


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": ref("Error")}}}


def ok(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}}


_TIMELINE = {
    "type": "object",
    "description": "A timeline: see GET /v1/schemas/timeline.json.",
}
_NAME = {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"}


SCHEMAS: dict[str, Any] = {
    "TemplateRequest": {
        "type": "object",
        "required": ["name", "timeline"],
        "additionalProperties": False,
        "properties": {
            "name": _NAME,
            "timeline": _TIMELINE,
            "description": {"type": "string", "maxLength": 500},
        },
    },
    "Template": {
        "type": "object",
        "required": ["name", "variables", "created_at", "updated_at"],
        "properties": {
            "name": {"type": "string"},
            "timeline": {"type": "object"},
            "variables": {"type": "array", "items": {"type": "string"}},
            "description": {"type": "string"},
            "created_at": {"type": "string"},
            "updated_at": {"type": "string"},
        },
    },
}

_PATH = [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}]


def paths(common: dict[str, Any]) -> dict[str, Any]:
    invalid = error("The timeline cannot be rendered; `details` names each problem's path.")
    return {
        "/v1/templates": {
            "get": {
                "summary": "Your templates (without their timelines).",
                "responses": {
                    "200": ok(
                        "The templates.",
                        {
                            "type": "object",
                            "required": ["templates"],
                            "properties": {
                                "templates": {"type": "array", "items": ref("Template")}
                            },
                        },
                    ),
                    **common,
                },
            },
            "post": {
                "summary": "Save (or replace) a named timeline with {{placeholders}}.",
                "requestBody": {
                    "required": True,
                    "content": {JSON: {"schema": ref("TemplateRequest")}},
                },
                "responses": {
                    "201": ok("Saved.", ref("Template")),
                    "200": ok("Replaced.", ref("Template")),
                    "409": error("You have the most templates allowed."),
                    "413": error("The template is too large."),
                    "422": invalid,
                    **common,
                },
            },
        },
        "/v1/templates/{name}": {
            "get": {
                "parameters": _PATH,
                "responses": {
                    "200": ok("The template.", ref("Template")),
                    "404": error("No such template of yours."),
                    **common,
                },
            },
            "delete": {
                "parameters": _PATH,
                "responses": {
                    "204": {"description": "Deleted."},
                    "404": error("No such template of yours."),
                    **common,
                },
            },
        },
        "/v1/schemas/timeline.json": {
            "get": {
                "security": [],
                "summary": "The JSON Schema of a compose timeline.",
                "responses": {"200": ok("The schema.", {"type": "object"})},
            }
        },
    }
