"""Errors that carry their HTTP meaning from where they start to where the response is written."""
from __future__ import annotations

import json


class PickerError(Exception):
    """A request the picker refuses; rendered as an OpenAI-style error JSON with `status`."""

    status = 500
    type = "server_error"
    code: str | None = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code

    def body(self) -> bytes:
        return json.dumps(
            {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}},
            separators=(",", ":"),
        ).encode()


class BadRequest(PickerError):
    status = 400
    type = "invalid_request_error"
    code = "invalid_request"


class ModelNotFound(PickerError):
    status = 404
    type = "invalid_request_error"
    code = "model_not_found"


class BodyTooLarge(PickerError):
    status = 413
    type = "invalid_request_error"
    code = "request_too_large"


class Shed(PickerError):
    """The pool is saturated and the request's criticality allows dropping it."""

    status = 429
    type = "rate_limit_exceeded"
    code = "pool_saturated"


class NoCapacity(PickerError):
    """No ready endpoint can serve the request."""

    status = 503
    type = "service_unavailable"
    code = "no_ready_endpoint"


class ConfigError(ValueError):
    """Invalid picker configuration; the message names the offending field."""
