"""Errors of the HTTP API, in OpenAI's envelope ``{"error": {"message", "type", "param", "code"}}``.

Every failure a client can cause is an :class:`ApiError` with its HTTP status; the app turns it into the
envelope, so nothing a client sends reaches a 500 or a traceback.
"""

from __future__ import annotations

from typing import Any

import orjson


class ApiError(Exception):
    """One error response: ``status``, OpenAI's ``type``, the offending ``param`` and a ``code``."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers or {}

    def envelope(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def body(self) -> bytes:
        return orjson.dumps(self.envelope())


def invalid(message: str, param: str | None = None, code: str | None = None) -> ApiError:
    return ApiError(400, message, param=param, code=code)


def unavailable(message: str) -> ApiError:
    return ApiError(503, message, type="service_unavailable", code="triton_unavailable")
