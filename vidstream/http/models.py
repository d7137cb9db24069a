"""`GET /v1/models`: the Whisper models a job may choose (`model`), each with the languages it
transcribes and whether it translates, for the page and `vidstream submit`.

Public, as `GET /v1/kinds` is: it says what the deployment offers, never a model's path.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from vidstream.http.openapi_compose import ok
from vidstream.http.state import SERVICES
from vidstream.media.models import catalogue

routes = web.RouteTableDef()


@routes.get("/v1/models")
async def list_models(request: web.Request) -> web.Response:
    s = request.app[SERVICES].settings
    body = catalogue(s.whisper_model, s.whisper_models_dir).to_dict()
    return web.json_response(body, headers={"Cache-Control": "public, max-age=300"})


def paths() -> dict[str, Any]:
    model = {
        "type": "object",
        "required": ["name", "multilingual", "languages", "translate"],
        "properties": {
            "name": {"type": "string", "description": "what a job names in `model`"},
            "multilingual": {"type": "boolean"},
            "languages": {
                "type": "array",
                "items": {"type": "string"},
                "description": "ISO 639 codes it transcribes (`language`); a multilingual "
                "model also detects them (`auto`)",
            },
            "translate": {
                "type": "boolean",
                "description": "whether `task: translate` (captions in English) is offered",
            },
        },
    }
    listed = {
        "type": "object",
        "required": ["default", "models"],
        "properties": {
            "default": {"type": "string", "description": "the model of a job that names none"},
            "models": {"type": "array", "items": model},
        },
    }
    return {
        "/v1/models": {
            "get": {
                "security": [],
                "summary": "The Whisper models a job may choose, with their languages.",
                "responses": {"200": ok("The models.", listed)},
            }
        }
    }
