"""The error hierarchy, small on purpose.

    VidstreamError
    ├── ConfigError              a setting is missing or malformed; the process refuses to start
    ├── JobCancelled             a user cancelled the job while a worker held it
    ├── RunLost                  another run took over the stage (this one was presumed dead)
    └── JobError                 ends or delays one job; `code` and `message` are shown to users
        ├── PermanentError       the input is at fault: the job fails, retrying cannot help
        │   ├── InvalidMedia     not a playable video with an audio track
        │   ├── TooLong          longer than MAX_DURATION_S
        │   └── ObjectNotFound   a storage key does not exist
        └── TransientError       the system is at fault: the stage may succeed if run again
            └── StorageError     object storage failed or timed out

Workers map `PermanentError` to a `failed` job, `TransientError` to a retry (or `failed` when out
of attempts), and `JobCancelled` to dropping the work without writing anything more.
"""

from __future__ import annotations


class VidstreamError(Exception):
    """Base of every error vidstream raises on purpose."""


class ConfigError(VidstreamError):
    """A setting is missing or malformed."""


class JobError(VidstreamError):
    """An error that ends or delays one job, with a code a user can act on."""

    code = "internal_error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class PermanentError(JobError):
    """The input is at fault; running the stage again cannot help."""

    code = "invalid_request"


class InvalidMedia(PermanentError):
    code = "invalid_media"


class TooLong(PermanentError):
    code = "too_long"


class TransientError(JobError):
    """The system is at fault; the stage may succeed when run again."""

    code = "transient_error"


class JobCancelled(VidstreamError):
    """The job was cancelled while a worker held it."""


class ObjectNotFound(PermanentError):
    code = "not_found"


class RunLost(VidstreamError):
    """Another run holds the stage now: this one stops without touching the job or its entry."""


class StorageError(TransientError):
    code = "storage_error"
