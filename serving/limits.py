"""A request body size limit: bodies over it get a 413 in the error shape before they are parsed.

Without one, a client (or a bug) can send a body of any size and the service reads it all into
memory before pydantic counts its items. The limit is checked twice: on ``Content-Length``
before anything is read, and on the bytes actually received, for chunked bodies or a header
that lies. Install it with ``install_body_limit(app)`` in the app factory.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.errors import error_body

# A full batch (10,000 requests with short histories) is about 8 MB of JSON; 32 MiB leaves room
# for longer histories and still bounds what one request can make the service hold in memory.
DEFAULT_MAX_BODY_BYTES = 32 * 1024 * 1024


def too_large_message(max_bytes: int) -> str:
    """The one-line reason of a 413."""
    return f"request body is larger than the {max_bytes} bytes this service accepts; split the batch"


def declared_length(scope: Scope) -> int | None:
    """The request's Content-Length, or None when absent or not a number (the server then counts bytes)."""
    for name, value in scope.get("headers", []):
        if name.lower() == b"content-length":
            text = value.decode("latin-1").strip()
            return int(text) if text.isdigit() else None
    return None


class BodyLimitMiddleware:
    """ASGI middleware answering 413 for request bodies over ``max_bytes``."""

    def __init__(self, app: ASGIApp, max_bytes: int = DEFAULT_MAX_BODY_BYTES) -> None:
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Refuse by Content-Length up front; otherwise count the body as the app reads it."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = declared_length(scope)
        if length is not None and length > self.max_bytes:
            body = error_body("payload_too_large", too_large_message(self.max_bytes))
            await JSONResponse(body, status_code=413)(scope, receive, send)
            return
        await self.app(scope, self._counting(receive), send)

    def _counting(self, receive: Receive) -> Receive:
        """`receive` that raises a 413 once the body read so far passes the limit.

        An HTTPException is what FastAPI lets through its body parsing unchanged (any other error
        there becomes a 400), so the app's own handler answers it in the error shape.
        """
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise HTTPException(status_code=413, detail=too_large_message(self.max_bytes))
            return message

        return counted


def install_body_limit(app: FastAPI, max_bytes: int = DEFAULT_MAX_BODY_BYTES) -> None:
    """Add the body limit to ``app`` (before it starts serving)."""
    app.add_middleware(BodyLimitMiddleware, max_bytes=max_bytes)
