"""Errors that carry their HTTP meaning, in OpenAI's error JSON shape."""
from __future__ import annotations


class APIError(Exception):
    def __init__(self, status: int, message: str, type_: str, param: str | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.param = param

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type,
                          "param": self.param, "code": self.status}}


def bad_request(message: str, param: str | None = None) -> APIError:
    return APIError(400, message, "BadRequestError", param)


def not_found(message: str, param: str | None = None) -> APIError:
    return APIError(404, message, "NotFoundError", param)


def too_many(message: str) -> APIError:
    return APIError(429, message, "RateLimitError")


def unavailable(message: str) -> APIError:
    return APIError(503, message, "ServiceUnavailableError")


def status_error(status: int, message: str) -> APIError:
    types = {400: "BadRequestError", 404: "NotFoundError", 429: "RateLimitError",
             500: "InternalServerError", 502: "BadGatewayError", 503: "ServiceUnavailableError"}
    default = "BadRequestError" if status < 500 else "InternalServerError"
    return APIError(status, message, types.get(status, default))
