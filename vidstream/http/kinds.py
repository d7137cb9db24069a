"""`GET /v1/kinds`: the kinds of job the gateway makes, as the registry declares them
(`job.kinds`), for the page and `vidstream submit`; and each kind's request body in the OpenAPI
document, made from the model the gateway checks it against.

Public, as the OpenAPI document is: it says what the API offers, nothing about anyone's jobs.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from vidstream.http.openapi_compose import JSON, ok, ref
from vidstream.job.kinds import DEFAULT, KINDS, Kind, KindSpec

routes = web.RouteTableDef()

SCHEMA_REF = "#/components/schemas/{model}"


def describe(spec: KindSpec) -> dict[str, Any]:
    return {
        "name": spec.kind.value,
        "title": spec.title,
        "summary": spec.summary,
        "default": spec.kind is DEFAULT,
        "from_video": spec.from_video,
        # With its default options (a compose job that transcribes a clip runs both).
        "stages": [stage.value for stage in spec.pipeline(spec.options()).stages],
        "fields": ["kind", *spec.request.model_fields],
        "schema": request_name(spec.kind),
    }


@routes.get("/v1/kinds")
async def list_kinds(request: web.Request) -> web.Response:
    body = {"kinds": [describe(spec) for spec in KINDS.values()]}
    return web.json_response(body, headers={"Cache-Control": "public, max-age=300"})


def request_name(kind: Kind) -> str:
    """The name of a kind's request body among the OpenAPI document's schemas."""
    return f"{kind.value.capitalize()}Request"


def schemas() -> dict[str, Any]:
    """Each kind's request body (and the schemas they share), and the multipart form of the
    kinds made from one video."""
    found: dict[str, Any] = {}
    for kind, spec in KINDS.items():
        schema = spec.request.model_json_schema(ref_template=SCHEMA_REF)
        found.update(schema.pop("$defs", {}))
        chosen: dict[str, Any] = {"const": kind.value}
        required = schema.get("required", [])
        if kind is DEFAULT:  # a request that names no kind asks for this one
            chosen["default"] = kind.value
        else:
            required = ["kind", *required]
        schema["properties"] = {"kind": chosen, **schema["properties"]}
        schema["required"] = required
        schema["description"] = spec.summary
        found[request_name(kind)] = schema
    from_video = [spec for spec in KINDS.values() if spec.from_video]
    fields = {name for spec in from_video for name in spec.request.model_fields} - {"source"}
    found["JobForm"] = {
        "type": "object",
        "required": ["file"],
        "description": "A job made from the video in the `file` part; the other fields as text.",
        "properties": {
            "file": {"type": "string", "contentMediaType": "application/octet-stream"},
            "kind": {"type": "string", "enum": [s.kind.value for s in from_video]},
            **{name: {"type": "string"} for name in sorted(fields)},
        },
    }
    return found


def request_body() -> dict[str, Any]:
    """The request body of `POST /v1/jobs`: any kind's JSON, or a video and its fields."""
    return {
        "required": True,
        "content": {
            JSON: {"schema": {"anyOf": [ref(request_name(kind)) for kind in KINDS]}},
            "multipart/form-data": {"schema": ref("JobForm")},
        },
    }


def paths() -> dict[str, Any]:
    listed = {
        "type": "object",
        "required": ["kinds"],
        "properties": {
            "kinds": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["name", "title", "summary", "default", "from_video", "stages"],
                    "properties": {
                        "name": {"type": "string", "enum": [kind.value for kind in KINDS]},
                        "title": {"type": "string"},
                        "summary": {"type": "string"},
                        "default": {"type": "boolean"},
                        "from_video": {
                            "type": "boolean",
                            "description": "Made from one video sent with the request (or "
                            "uploaded first, and named by key).",
                        },
                        "stages": {"type": "array", "items": {"type": "string"}},
                        "fields": {"type": "array", "items": {"type": "string"}},
                        "schema": {
                            "type": "string",
                            "description": "Its request body among this document's schemas.",
                        },
                    },
                },
            }
        },
    }
    return {
        "/v1/kinds": {
            "get": {
                "security": [],
                "summary": "The kinds of job the gateway makes, and what each runs.",
                "responses": {"200": ok("The kinds.", listed)},
            }
        }
    }
