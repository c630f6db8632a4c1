"""Typed serving errors: whose fault a failure is, never which HTTP status it gets.

Three families, as aws/sagemaker-xgboost-container separates them: the caller sent something wrong
(`UserError`), the model could not answer (`ModelError`), the server itself is broken or not ready
(`PlatformError`). `serving.app.STATUS_BY_ERROR` is the one place that maps them to status codes.
"""

from __future__ import annotations


class ServingError(Exception):
    """Base of every error the server answers with a JSON message."""

    code = "serving_error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code  # a more precise machine-readable code than the class default


class UserError(ServingError):
    """The request is wrong: body, shape, values, parameters. The caller can fix it."""

    code = "invalid_request"


class EndpointNotFound(UserError):
    """The request names an endpoint or deployment that this server does not serve."""

    code = "not_found"


class UnsupportedMediaType(UserError):
    """The Content-Type is not one the contract accepts."""

    code = "unsupported_media_type"


class NotAcceptable(UserError):
    """The Accept header asks for a format the contract cannot produce."""

    code = "not_acceptable"


class PayloadTooLarge(UserError):
    """The body is larger than the platform accepts in one request."""

    code = "payload_too_large"


class RequestTimeout(UserError):
    """The client did not send its whole body in time (a slow or stalled client)."""

    code = "request_timeout"


class ModelError(ServingError):
    """The model failed while predicting, or answered something that is not 10 probabilities per image."""

    code = "model_error"


class PlatformError(ServingError):
    """The server cannot serve: the artifact is missing or unreadable, or a runtime is not installed."""

    code = "platform_error"


class ModelNotReady(PlatformError):
    """The model has not finished loading yet."""

    code = "model_not_ready"
