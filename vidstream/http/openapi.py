"""`GET /v1/openapi.json`: the gateway's API as an OpenAPI 3.1 document.

Written by hand next to the handlers it describes; `tests/test_fuzz.py` runs schemathesis against
a live gateway with it, so a response the document does not allow fails the tests.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from vidstream import __version__
from vidstream.http import kinds, models, openapi_compose, openapi_operator
from vidstream.http.openapi_compose import JSON
from vidstream.http.state import base_url
from vidstream.job.kinds import KINDS

routes = web.RouteTableDef()

_ID = {"type": "string", "pattern": "^[0-9a-hjkmnp-tv-z]{26}$"}
_EVENT_ID = {"type": "string", "pattern": "^[0-9]{1,19}-[0-9]{1,19}$"}
_ref, _error, _ok = openapi_compose.ref, openapi_compose.error, openapi_compose.ok


# Answers any authenticated route may give, besides its own.
_COMMON = {
    "400": _error("The request is malformed; the message says what is wrong."),
    "401": _error("No API key, or an unknown one."),
    "429": _error(
        "Too many requests for this key (`rate_limited`), or connections from this address "
        "(`too_many_connections`); see Retry-After."
    ),
    "503": _error(
        "Redis or object storage is unavailable, or the gateway holds all the connections it "
        "can (`too_many_connections`); try again shortly."
    ),
}
_JOB_PATH = [{"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"}}]

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {
                    "code": {"type": "string"},
                    "message": {"type": "string"},
                    "details": {"type": "array", "items": {"type": "object"}},
                },
            }
        },
    },
    "Output": {
        "type": "object",
        "required": ["key", "url", "size", "content_type"],
        "properties": {
            "key": {"type": "string"},
            "url": {"type": "string"},
            "size": {"type": "integer"},
            "content_type": {"type": "string"},
        },
    },
    "Job": {
        "type": "object",
        "required": ["id", "kind", "status", "progress", "created_at", "outputs", "attempts"],
        "properties": {
            "id": _ID,
            "tenant": {"type": "string"},
            "kind": {"type": "string", "enum": [kind.value for kind in KINDS]},
            "status": {
                "type": "string",
                "enum": ["queued", "running", "completed", "failed", "cancelled"],
            },
            "stage": {"type": ["string", "null"]},
            "progress": {"type": "number", "minimum": 0, "maximum": 1},
            "created_at": {"type": "string"},
            "updated_at": {"type": "string"},
            "source": {"type": "object"},
            "options": {"type": "object"},
            "media": {"type": ["object", "null"]},
            "outputs": {"type": "object", "additionalProperties": _ref("Output")},
            "error": {"type": ["object", "null"]},
            "attempts": {"type": "integer", "minimum": 0},
            "ws_token": {"type": "string"},
            "links": {"type": "object"},
        },
    },
    "Event": {
        "type": "object",
        "required": ["type", "id", "job_id", "event", "status", "progress", "at"],
        "properties": {
            "type": {"const": "event"},
            "id": _EVENT_ID,
            "job_id": _ID,
            "kind": {"type": "string"},
            "event": {"type": "string"},
            "status": {"type": "string"},
            "stage": {"type": ["string", "null"]},
            "progress": {"type": "number"},
            "attempts": {"type": "integer"},
            "stage_progress": {"type": "number"},
            "eta_s": {"type": "number", "description": "Seconds until the job ends (estimate)."},
            "pieces": {
                "type": "object",
                "description": "A long source's stage in pieces (FANOUT_MIN_S): done, in all.",
                "properties": {"done": {"type": "integer"}, "total": {"type": "integer"}},
            },
            "at": {"type": "string"},
        },
    },
}


def _job_answers(ok: str, code: str = "200") -> dict[str, Any]:
    return {code: _ok(ok, _ref("Job")), "404": _error("No such job of yours."), **_COMMON}


PATHS: dict[str, Any] = {
    "/healthz": {"get": {"security": [], "responses": {"200": _ok("The process is up.", {})}}},
    "/readyz": {
        "get": {
            "security": [],
            "responses": {
                "200": _ok("Redis and storage answer.", {"type": "object"}),
                "503": _ok("Something is down; `checks` names it.", {"type": "object"}),
            },
        }
    },
    "/v1/uploads": {
        "post": {
            "summary": "A presigned PUT URL to upload a source to.",
            "requestBody": {
                "required": True,
                "content": {
                    JSON: {
                        "schema": {
                            "type": "object",
                            "required": ["filename", "size"],
                            "additionalProperties": False,
                            "properties": {
                                "filename": {"type": "string", "minLength": 1},
                                "content_type": {"type": ["string", "null"]},
                                "size": {"type": "integer", "minimum": 1},
                            },
                        }
                    }
                },
            },
            "responses": {
                "201": _ok(
                    "Upload with `method` and `headers` to `upload_url`.", {"type": "object"}
                ),
                "413": _error("Larger than MAX_UPLOAD_BYTES."),
                **_COMMON,
            },
        }
    },
    "/v1/jobs": {
        "get": {
            "summary": "Your jobs, newest first, a page at a time.",
            "parameters": [
                {
                    "name": "limit",
                    "in": "query",
                    "schema": {"type": "integer", "minimum": 1, "maximum": 200},
                },
                {"name": "before", "in": "query", "schema": {"type": "string"}},
            ],
            "responses": {
                "200": _ok(
                    "A page of jobs; `next` is the cursor of the next page (null at the end).",
                    {
                        "type": "object",
                        "required": ["jobs", "next"],
                        "properties": {
                            "jobs": {"type": "array", "items": _ref("Job")},
                            "next": {"type": ["string", "null"]},
                        },
                    },
                ),
                **_COMMON,
            },
        },
        "post": {
            "summary": "Create a job from an upload (JSON) or from a file in the request.",
            "parameters": [
                {"name": "Idempotency-Key", "in": "header", "schema": {"type": "string"}}
            ],
            "requestBody": kinds.request_body(),
            "responses": {
                "202": _ok("Queued.", _ref("Job")),
                "200": _ok(
                    "The job an earlier request with this Idempotency-Key made.", _ref("Job")
                ),
                "408": _error("The body stopped arriving for HTTP_BODY_TIMEOUT_S."),
                "409": _error("A request with this Idempotency-Key is in progress."),
                "413": _error("The source is too large."),
                "415": _error("Neither JSON nor multipart."),
                "404": _error("A job the request names is no job of yours."),
                "422": _error(
                    "What the request names cannot be made (a compose timeline: `details` "
                    "names each problem), or this Idempotency-Key was used with another request."
                ),
                **_COMMON,
            },
        },
    },
    "/v1/jobs/{job_id}": {
        "parameters": _JOB_PATH,
        "get": {"responses": _job_answers("The job.")},
        "delete": {
            "summary": "Cancel a queued or running job.",
            "responses": {**_job_answers("Cancelled."), "409": _error("The job has ended.")},
        },
    },
    "/v1/jobs/{job_id}/events": {
        "parameters": _JOB_PATH,
        "get": {
            "summary": "The job's events; with `Accept: text/event-stream`, live (SSE).",
            "parameters": [
                {"name": "after", "in": "query", "schema": _EVENT_ID},
                {
                    "name": "token",
                    "in": "query",
                    "schema": {"type": "string"},
                    "description": "The job's ws_token, for EventSource (which cannot send "
                    "headers) instead of a key. Refusals count per address: 429 past "
                    "RATE_LIMIT_PER_MIN a minute.",
                },
                {"name": "last_event_id", "in": "query", "schema": _EVENT_ID},
                {"name": "Last-Event-ID", "in": "header", "schema": _EVENT_ID},
            ],
            "responses": {
                "200": {
                    "description": "The job's events after `after`, oldest first; or, with"
                    " `Accept: text/event-stream`, a snapshot and then each event as it happens.",
                    "content": {
                        JSON: {
                            "schema": {
                                "type": "object",
                                "required": ["job_id", "events"],
                                "properties": {
                                    "job_id": _ID,
                                    "events": {"type": "array", "items": _ref("Event")},
                                },
                            }
                        },
                        "text/event-stream": {"schema": {"type": "string"}},
                    },
                },
                "204": {"description": "Event stream: the job ended and you have every event."},
                "404": _error("No such job of yours, or the token does not open it."),
                **_COMMON,
            },
        },
    },
    "/v1/jobs/{job_id}/logs": {
        "parameters": _JOB_PATH,
        "get": {
            "summary": "The log lines every role wrote about the job, oldest first.",
            "parameters": [
                {"name": "after", "in": "query", "schema": _EVENT_ID},
                {
                    "name": "limit",
                    "in": "query",
                    "schema": {"type": "integer", "minimum": 1, "maximum": 1000},
                },
            ],
            "responses": {
                "200": _ok(
                    "Lines after `after`; `next` is the next page's `after` (null at the end).",
                    {
                        "type": "object",
                        "required": ["job_id", "logs", "next"],
                        "properties": {
                            "job_id": _ID,
                            "logs": {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "required": [
                                        "id",
                                        "at",
                                        "level",
                                        "event",
                                        "stage",
                                        "role",
                                        "fields",
                                    ],
                                    "properties": {
                                        "id": _EVENT_ID,
                                        "at": {"type": "string"},
                                        "level": {"type": "string"},
                                        "event": {"type": "string"},
                                        "stage": {"type": ["string", "null"]},
                                        "role": {"type": ["string", "null"]},
                                        "fields": {"type": "object"},
                                    },
                                },
                            },
                            "next": {"type": ["string", "null"]},
                        },
                    },
                ),
                "404": _error("No such job of yours."),
                **_COMMON,
            },
        },
    },
    "/v1/jobs/{job_id}/retry": {
        "parameters": _JOB_PATH,
        "post": {
            "summary": "Run a failed job again from its first unfinished stage.",
            "responses": {**_job_answers("Queued again.", "202"), "409": _error("Not failed.")},
        },
    },
    "/v1/dead-letters": {
        "get": {
            "parameters": [
                {
                    "name": "limit",
                    "in": "query",
                    "schema": {"type": "integer", "minimum": 1, "maximum": 1000},
                }
            ],
            "responses": {
                "200": _ok(
                    "Your jobs that ran out of attempts, newest first.",
                    {
                        "type": "object",
                        "required": ["dead_letters"],
                        "properties": {"dead_letters": {"type": "array"}},
                    },
                ),
                **_COMMON,
            },
        }
    },
    "/v1/openapi.json": {
        "get": {"security": [], "responses": {"200": _ok("This document.", {"type": "object"})}}
    },
}


def document(server_url: str) -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "vidstream", "version": __version__},
        "servers": [{"url": server_url}],
        "security": [{"apiKey": []}],
        "paths": {
            **PATHS,
            **kinds.paths(),
            **models.paths(),
            **openapi_operator.paths(_COMMON),
            **openapi_compose.paths(_COMMON),
        },
        "components": {
            "schemas": {**SCHEMAS, **kinds.schemas(), **openapi_compose.SCHEMAS},
            "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer"}},
        },
    }


@routes.get("/v1/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    return web.json_response(document(base_url(request)))
