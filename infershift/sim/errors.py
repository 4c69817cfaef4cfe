"""Errors that carry their HTTP meaning, in OpenAI's error JSON shape."""
from __future__ import annotations

import math


class APIError(Exception):
    def __init__(self, status: int, message: str, type_: str, param: str | None = None,
                 retry_after: float | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.param = param
        # 429 and 503 tell clients when to come back (the OpenAI SDK honours Retry-After)
        if retry_after is None and status in (429, 503):
            retry_after = 1
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        if self.retry_after is None:
            return {}
        return {"Retry-After": str(max(1, math.ceil(self.retry_after)))}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type,
                          "param": self.param, "code": self.status}}


def bad_request(message: str, param: str | None = None) -> APIError:
    return APIError(400, message, "BadRequestError", param)


def not_found(message: str, param: str | None = None) -> APIError:
    return APIError(404, message, "NotFoundError", param)


def too_many(message: str) -> APIError:
    return APIError(429, message, "RateLimitError")


def unavailable(message: str, retry_after: float | None = None) -> APIError:
    return APIError(503, message, "ServiceUnavailableError", retry_after=retry_after)


def status_error(status: int, message: str) -> APIError:
    types = {400: "BadRequestError", 404: "NotFoundError", 429: "RateLimitError",
             500: "InternalServerError", 502: "BadGatewayError", 503: "ServiceUnavailableError"}
    default = "BadRequestError" if status < 500 else "InternalServerError"
    return APIError(status, message, types.get(status, default))
