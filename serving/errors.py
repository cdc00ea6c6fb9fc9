"""Every error as JSON `{"code", "message", "field"}`: the contract's error shape.

FastAPI's own validation answer is replaced so a client always finds the offending field as a
dotted path (`attempts.0.attempted_at`), and malformed JSON is a 400, never a 500.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import InterfaceError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from serving.policy import InvalidFieldError
from serving.schemas import CARD_NUMBER_ERROR
from serving.store import ConflictError

log = logging.getLogger(__name__)

STORE_RETRY_AFTER_SECONDS = 5

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    503: "unavailable",
}


def error_body(code: str, message: str, field: str | None = None, **extra: Any) -> dict[str, Any]:
    """The one error shape."""
    return {"code": code, "message": message, "field": field, **extra}


def field_path(loc: Sequence[int | str]) -> str | None:
    """A pydantic error location as a dotted path, without the leading `body`."""
    parts = [str(part) for part in loc]
    if parts and parts[0] in {"body", "query", "path", "header"}:
        parts = parts[1:]
    return ".".join(parts) or None


def error_field(error: dict[str, Any]) -> str | None:
    """The dotted path of a pydantic error, down to the unknown key when the error names one.

    A card number in a field the model ignores (`card.number`) is reported by the model's own
    validator, whose location is the model (`card`); the key it found is in the error's context.
    """
    path = field_path(error.get("loc", ()))
    key = (error.get("ctx") or {}).get("key")
    if error.get("type") != CARD_NUMBER_ERROR or not key:
        return path
    return f"{path}.{key}" if path else str(key)


def _error_message(error: dict[str, Any], field: str | None) -> str:
    """One line naming the field and what is wrong with it."""
    reason = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
    if error.get("type") == "timezone_aware":
        reason = "timestamps must carry a timezone offset (e.g. 2026-11-01T14:00:00Z)"
    return f"{field or 'request body'}: {reason}"


async def validation_error(request: Request, exc: Exception) -> JSONResponse:
    """422 naming the first offending field (all of them under `errors`); 400 for malformed JSON."""
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    if any(e.get("type") == "json_invalid" for e in errors):
        first = next(e for e in errors if e.get("type") == "json_invalid")
        detail = first.get("ctx", {}).get("error", "invalid JSON")
        return JSONResponse(error_body("malformed_json", f"request body is not valid JSON: {detail}"), status_code=400)
    details = [
        {"field": error_field(e), "message": _error_message(e, error_field(e)), "type": e.get("type")} for e in errors
    ]
    first = details[0] if details else {"field": None, "message": "invalid request"}
    body = error_body("invalid_request", str(first["message"]), first["field"], errors=details)
    return JSONResponse(body, status_code=422)


async def invalid_field(request: Request, exc: Exception) -> JSONResponse:
    """422 for fields that contradict each other (attempt order, now, window)."""
    assert isinstance(exc, InvalidFieldError)
    body = error_body("invalid_request", f"{exc.field}: {exc.message}", exc.field)
    return JSONResponse(body, status_code=422)


async def http_error(request: Request, exc: Exception) -> JSONResponse:
    """404, 405, 503... in the same shape."""
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, "error")
    return JSONResponse(error_body(code, str(exc.detail)), status_code=exc.status_code, headers=exc.headers)


async def conflict(request: Request, exc: Exception) -> JSONResponse:
    """409: the id is already stored with different content; nothing was changed."""
    assert isinstance(exc, ConflictError)
    differing = ", ".join(exc.differing)
    message = f"{exc.key} is already stored with different {differing}; nothing was changed"
    return JSONResponse(error_body("conflict", message, exc.differing[0] if exc.differing else None), status_code=409)


async def store_unavailable(request: Request, exc: Exception) -> JSONResponse:
    """503 with Retry-After when the store cannot be reached or the connection broke: not acknowledged.

    Usually nothing was written; when the connection broke during the commit itself the write may
    have landed, which is why the answer says "resend", not "nothing was written": resending the
    identical request is safe, an id already stored is answered 200 `duplicate`.
    """
    log.warning("store unavailable on %s %s: %s", request.method, request.url.path, exc)
    body = error_body(
        "store_unavailable",
        "the store is unreachable; not acknowledged, resend the same request later (a repeat is safe)",
    )
    return JSONResponse(body, status_code=503, headers={"Retry-After": str(STORE_RETRY_AFTER_SECONDS)})


async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    """A bug: logged with its traceback, answered in the error shape without internals."""
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return JSONResponse(error_body("internal_error", "internal error; see the service log"), status_code=500)


def install_error_handlers(app: FastAPI) -> None:
    """Route every error through the one shape."""
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(InvalidFieldError, invalid_field)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(ConflictError, conflict)
    app.add_exception_handler(OperationalError, store_unavailable)
    app.add_exception_handler(InterfaceError, store_unavailable)
    app.add_exception_handler(Exception, unexpected_error)
