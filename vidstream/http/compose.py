"""Compose at the gateway, besides its jobs (`kinds.compose`): timelines kept per tenant as
templates, and the timeline's JSON Schema."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from vidstream.compose import rules, variables
from vidstream.compose.timeline import Timeline
from vidstream.http.auth import tenant_of
from vidstream.http.bodies import read_json, short
from vidstream.http.errors import ApiError
from vidstream.http.state import SERVICES
from vidstream.kinds.compose import limits
from vidstream.state.templates import (
    MAX_BYTES,
    MAX_TEMPLATES,
    NAME,
    Template,
    TemplateLimit,
    Templates,
)

routes = web.RouteTableDef()

_SCHEMA: dict[str, Any] = Timeline.model_json_schema()


# -- templates ------------------------------------------------------------------------------


def _template_name(request: web.Request) -> str:
    name = request.match_info["name"]
    if not NAME.fullmatch(name):
        raise ApiError(404, "not_found", "No such template.")
    return name


@routes.post("/v1/templates")
async def save_template(request: web.Request) -> web.Response:
    services, tenant = request.app[SERVICES], tenant_of(request)
    body = await read_json(request)
    unknown = set(body) - {"name", "timeline", "description"}
    if unknown:
        raise ApiError(400, "invalid_request", f"unknown field(s): {short(', '.join(unknown))}")
    name, description = body.get("name"), body.get("description", "")
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise ApiError(400, "invalid_request", "name: 1-64 of letters, digits, _ . - ")
    if not isinstance(description, str) or len(description) > 500:
        raise ApiError(400, "invalid_request", "description: a string of at most 500 characters")
    raw = body.get("timeline")
    if len(json.dumps(raw)) > MAX_BYTES:
        raise ApiError(413, "too_large", f"A template is at most {MAX_BYTES} bytes of JSON.")
    rules.parse(raw, limits(services))  # placeholders sit in strings: the shape is checkable
    assert isinstance(raw, dict)
    template = Template(name, raw, variables.placeholders(raw), description)
    try:
        replaced = await Templates(services.redis, services.keys).save(tenant, template)
    except TemplateLimit:
        raise ApiError(409, "too_many_templates", f"At most {MAX_TEMPLATES} templates.") from None
    stored = await Templates(services.redis, services.keys).get(tenant, name)
    assert stored is not None
    return web.json_response(stored.to_dict(), status=200 if replaced else 201)


@routes.get("/v1/templates")
async def list_templates(request: web.Request) -> web.Response:
    services, tenant = request.app[SERVICES], tenant_of(request)
    found = await Templates(services.redis, services.keys).list(tenant)
    listed = [{k: v for k, v in t.to_dict().items() if k != "timeline"} for t in found]
    return web.json_response({"templates": listed})


@routes.get("/v1/templates/{name}")
async def get_template(request: web.Request) -> web.Response:
    services, tenant = request.app[SERVICES], tenant_of(request)
    found = await Templates(services.redis, services.keys).get(tenant, _template_name(request))
    if found is None:
        raise ApiError(404, "not_found", "No such template.")
    return web.json_response(found.to_dict())


@routes.delete("/v1/templates/{name}")
async def delete_template(request: web.Request) -> web.Response:
    services, tenant = request.app[SERVICES], tenant_of(request)
    if not await Templates(services.redis, services.keys).delete(tenant, _template_name(request)):
        raise ApiError(404, "not_found", "No such template.")
    return web.Response(status=204)


@routes.get("/v1/schemas/timeline.json")
async def timeline_schema(request: web.Request) -> web.Response:
    return web.json_response(_SCHEMA, headers={"Cache-Control": "public, max-age=3600"})
