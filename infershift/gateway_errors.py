"""The gateway's own error answers, in OpenAI's error JSON: one table for the local stack's Envoy
(devstack/envoy_config.py, `local_reply_config` mappers keyed on status) and for a cluster's
Envoy Gateway (components/gateway.py, a BackendTrafficPolicy's `responseOverride`), so both
answer a malformed request, an oversized body or a failed upstream alike.

`%RESPONSE_CODE_DETAILS%` is an Envoy command operator: local replies (`local_reply_config`
body formats) and Envoy Gateway's response override bodies both substitute it (Envoy Gateway docs,
"Response Override": the body "supports Envoy command operators for dynamic content").
"""
from __future__ import annotations

import json
from typing import NamedTuple

RETRY_AFTER_SECONDS = "1"


def openai_error(message: str, type_: str, code: str) -> str:
    return json.dumps({"error": {"message": message, "type": type_, "param": None, "code": code}})


class Reply(NamedTuple):
    status: int
    rewrite: int | None
    """Answer with this status instead (None: the same)."""
    message: str
    type: str
    code: str
    retry_after: bool


def protocol_replies(max_headers: int | None = None, max_headers_kb: int | None = None) -> list[Reply]:
    """Envoy's protocol-level replies (codec errors, limits, no route, upstream failures), by
    status; HTTP allows a body on all of them. The message names what Envoy found (its response
    code details, e.g. http1.codec_error, missing_host_header, http1.too_many_headers). The 431's
    message names the header limits when the caller knows them."""
    limits = f" (at most {max_headers} headers, {max_headers_kb} KiB in all)" if max_headers and max_headers_kb else ""
    return [
        Reply(400, None, "malformed request (%RESPONSE_CODE_DETAILS%)", "invalid_request_error", "bad_request", False),
        Reply(403, 400, "protocol upgrades (e.g. WebSocket) are not supported here", "invalid_request_error",
              "upgrade_not_supported", False),
        Reply(404, None, "no route matches this request's host and path", "invalid_request_error", "route_not_found",
              False),
        Reply(405, None, "method not allowed", "invalid_request_error", "method_not_allowed", False),
        Reply(408, None, "the request took too long to arrive", "invalid_request_error", "request_timeout", False),
        Reply(413, None, "request body is too large", "invalid_request_error", "request_too_large", False),
        Reply(426, None, "HTTP/1.0 is not supported: use HTTP/1.1 or HTTP/2", "invalid_request_error",
              "http_version_not_supported", False),
        Reply(431, None, f"request headers are too many or too large{limits}", "invalid_request_error",
              "request_header_fields_too_large", False),
        Reply(500, None, "internal gateway error (%RESPONSE_CODE_DETAILS%)", "server_error", "internal_error", False),
        Reply(502, None, "bad gateway (%RESPONSE_CODE_DETAILS%)", "server_error", "bad_gateway", False),
        Reply(503, None, "service unavailable (%RESPONSE_CODE_DETAILS%)", "service_unavailable",
              "service_unavailable", True),
        Reply(504, None, "upstream timeout (%RESPONSE_CODE_DETAILS%)", "server_error", "upstream_timeout", False),
    ]
