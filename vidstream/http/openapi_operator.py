"""The operator's routes (workers, stats, pause) and the signed object links, for the OpenAPI
document (`openapi.py`): apart, so neither module outgrows one screenful of concepts."""

from __future__ import annotations

from typing import Any

from vidstream.http.openapi_compose import error as _error
from vidstream.http.openapi_compose import ok as _ok

# Every field of a worker in `GET /v1/workers`, and of a stage in `GET /v1/stats`.
_WORKER_FIELDS = ["name", "role", "slot", "host", "pid", "version", "concurrency", "jobs",
                  "started_at", "last_seen", "done", "failed"]  # fmt: skip
_STAGE_FIELDS = ["stage", "queue", "throughput_per_min", "duration_s", "runs_last_hour"]


def paths(common: dict[str, Any]) -> dict[str, Any]:
    """The paths, with `common`: the answers any authenticated route may give."""
    _COMMON = common  # the name the entries share with openapi.py's
    return {
        "/v1/workers": {
            "get": {
                "summary": "The live workers: what each runs, since when, how many runs it ended.",
                "responses": {
                    "200": _ok(
                        "Workers by role and name "
                        "(operators: an admin key, or authentication off).",
                        {
                            "type": "object",
                            "required": ["workers"],
                            "properties": {
                                "workers": {
                                    "type": "array",
                                    "items": {
                                        "type": "object",
                                        "required": _WORKER_FIELDS,
                                        "properties": {
                                            "name": {"type": "string"},
                                            "role": {"type": "string"},
                                            "slot": {"type": ["integer", "null"], "minimum": 0},
                                            "host": {"type": "string"},
                                            "pid": {"type": "integer"},
                                            "version": {"type": "string"},
                                            "concurrency": {"type": "integer", "minimum": 1},
                                            "jobs": {"type": "array", "items": {"type": "object"}},
                                            "started_at": {"type": "string"},
                                            "last_seen": {"type": "string"},
                                            "done": {"type": "integer", "minimum": 0},
                                            "failed": {"type": "integer", "minimum": 0},
                                        },
                                    },
                                }
                            },
                        },
                    ),
                    "404": _error("Not an admin key: no such route for it."),
                    **_COMMON,
                },
            }
        },
        "/v1/stats": {
            "get": {
                "summary": "Per stage: queue, throughput, durations; jobs by status; dead letters.",
                "responses": {
                    "200": _ok(
                        "The numbers now (operators: an admin key, or authentication off).",
                        {
                            "type": "object",
                            "required": ["at", "stages", "jobs", "dead_letters"],
                            "properties": {
                                "at": {"type": "string"},
                                "stages": {
                                    "type": "array",
                                    "items": {
                                        "type": "object",
                                        "required": _STAGE_FIELDS,
                                    },
                                },
                                "jobs": {
                                    "type": "object",
                                    "additionalProperties": {"type": "integer", "minimum": 0},
                                },
                                "dead_letters": {"type": "integer", "minimum": 0},
                            },
                        },
                    ),
                    "404": _error("Not an admin key: no such route for it."),
                    **_COMMON,
                },
            }
        },
        **{
            f"/v1/admin/{action}/{{role}}": {
                "post": {
                    "summary": f"{action.capitalize()} a role (gateway: new jobs). "
                    "Admin keys only.",
                    "parameters": [
                        {
                            "name": "role",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string"},
                        }
                    ],
                    "responses": {
                        "200": _ok("Which roles are paused now.", {"type": "object"}),
                        "404": _error("Not an admin key."),
                        **_COMMON,
                    },
                }
            }
            for action in ("pause", "resume")
        },
        "/v1/admin/paused": {
            "get": {
                "responses": {
                    "200": _ok("Which roles are paused.", {"type": "object"}),
                    "404": _error("Not an admin key."),
                    **_COMMON,
                }
            }
        },
        "/v1/objects/{key}": {
            # The links `POST /v1/uploads` and the job's outputs hand out, with local storage: the
            # signature is the permission, not a key. (With S3 they point at the bucket instead.)
            "parameters": [
                {
                    "name": "key",
                    "in": "path",
                    "required": True,
                    "description": "The object's key, as the link has it (`uploads/<hex>/source`).",
                    "schema": {"type": "string"},
                },
                {
                    "name": "expires",
                    "in": "query",
                    "required": True,
                    "description": "Unix time after which the link is refused.",
                    "schema": {"type": "integer"},
                },
                {
                    "name": "sig",
                    "in": "query",
                    "required": True,
                    "description": "HMAC of the method, the key and every other parameter.",
                    "schema": {"type": "string"},
                },
            ],
            "put": {
                "summary": "Upload a source's bytes, once, to the link `POST /v1/uploads` gave.",
                "security": [],
                "parameters": [
                    {
                        "name": "max_size",
                        "in": "query",
                        "required": True,
                        "description": "The most bytes this link accepts (the size announced).",
                        "schema": {"type": "integer", "minimum": 1},
                    }
                ],
                "requestBody": {
                    "required": True,
                    "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}},
                },
                "responses": {
                    "200": _ok(
                        "Stored.",
                        {
                            "type": "object",
                            "required": ["key", "size"],
                            "properties": {"key": {"type": "string"}, "size": {"type": "integer"}},
                        },
                    ),
                    "400": _error("The key breaks the naming rules (`invalid_key`)."),
                    "403": _error(
                        "A tampered or expired link (`invalid_signature`), or one used already "
                        "(`link_used`)."
                    ),
                    "404": _error("This gateway does not serve objects (S3 storage)."),
                    "408": _error("The body stopped arriving for HTTP_BODY_TIMEOUT_S."),
                    "413": _error("More bytes than `max_size` (`too_large`)."),
                    "503": _error("Redis or object storage is unavailable; try again shortly."),
                },
            },
            "get": {
                "summary": "Download an output (or a source) through a link vidstream signed.",
                "security": [],
                "parameters": [
                    {
                        "name": "filename",
                        "in": "query",
                        "description": "The file name the download is saved under (signed too).",
                        "schema": {"type": "string"},
                    }
                ],
                "responses": {
                    "200": {
                        "description": "The object's bytes, with its content type.",
                        "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}},
                    },
                    "400": _error("The key breaks the naming rules (`invalid_key`)."),
                    "403": _error("A tampered or expired link (`invalid_signature`)."),
                    "404": _error("The object no longer exists, or this gateway serves none."),
                    "503": _error("Redis or object storage is unavailable; try again shortly."),
                },
            },
        },
    }
