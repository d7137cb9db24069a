"""The error hierarchy, small on purpose.

    VidstreamError
    ├── ConfigError              a setting is missing or malformed; the process refuses to start
    ├── JobCancelled             a user cancelled the job while a worker held it
    ├── RunLost                  another run took over or finished the stage (this one was
    │                            presumed dead)
    └── CodedError               carries a `code` and a `message` a user may see
        ├── StorageError         object storage failed or timed out (worth trying again)
        │   ├── ObjectNotFound   a key does not exist
        │   ├── ObjectTooLarge   more bytes than allowed
        │   └── InvalidKey       a key that breaks the naming rules
        └── JobError             ends or delays one job
            ├── PermanentError   the input is at fault: the job fails, retrying cannot help
            │   ├── InvalidMedia not a playable video with an audio track
            │   └── TooLong      longer than MAX_DURATION_S
            └── TransientError   the system is at fault: the stage may succeed if run again

Storage raises storage errors only; the gateway maps them to HTTP answers (`http.errors`) and
workers to what happens to the job (`policy`): a missing, oversized or misnamed object is
permanent, any other storage failure is retried.
"""

from __future__ import annotations


class VidstreamError(Exception):
    """Base of every error vidstream raises on purpose."""


class ConfigError(VidstreamError):
    """A setting is missing or malformed."""


class JobCancelled(VidstreamError):
    """The job was cancelled (or otherwise ended) while a worker held it."""

    def __init__(self, job_id: str, *, cancelled: bool = True) -> None:
        super().__init__(job_id)
        self.cancelled = cancelled  # False when it ended some other way (failed, expired)


class RunLost(VidstreamError):
    """Another run holds the stage now, or finished it: this one stops without touching the job
    or its entry. `reason` says which, for the logs (`actors.run.Lost`)."""

    def __init__(self, job_id: str, reason: str = "taken_over") -> None:
        super().__init__(job_id)
        self.reason = reason


class CodedError(VidstreamError):
    """An error with a code a user can act on and a message for people."""

    code = "internal_error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class StorageError(CodedError):
    code = "storage_error"


class ObjectNotFound(StorageError):
    code = "not_found"


class ObjectTooLarge(StorageError):
    code = "too_large"


class InvalidKey(StorageError):
    code = "invalid_key"


class JobError(CodedError):
    """An error that ends or delays one job."""


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
