"""Operations that change the running service: reload the model now.

Guarded by `require_admin_key` (the admin key, else the API key, in X-API-Key; with no key at
all, loopback clients only).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict

from serving.errors import error_body
from serving.model_source import ModelHolder, Reload
from serving.schemas import ErrorResponse

router = APIRouter(prefix="/admin", tags=["admin"])

# A registry outage usually lasts longer than a request; a minute between attempts is enough.
SOURCE_RETRY_AFTER_SECONDS = 60


class ReloadResponse(BaseModel):
    """The model served after the reload."""

    model_config = ConfigDict(protected_namespaces=())

    model_version: str
    source: str
    source_version: str | None = None
    changed: bool


def failure_response(result: Reload) -> JSONResponse:
    """409 when the new version cannot be served, 503 when the source cannot be reached; the old model stays."""
    served = result.served
    message = f"reload failed, still serving {served.model_version}: {result.error}"
    kept = {"model_version": served.model_version, "source": served.source, "source_version": served.source_version}
    if result.failure == "rejected":
        return JSONResponse(error_body("model_rejected", message, **kept), status_code=409)
    headers = {"Retry-After": str(SOURCE_RETRY_AFTER_SECONDS)}
    return JSONResponse(error_body("model_source_unavailable", message, **kept), status_code=503, headers=headers)


@router.post(
    "/reload",
    response_model=ReloadResponse,
    responses={
        401: {"model": ErrorResponse, "description": "Missing or wrong X-API-Key."},
        403: {"model": ErrorResponse, "description": "No admin key configured and the client is not loopback."},
        409: {"model": ErrorResponse, "description": "The source's model cannot be served; the old one stays."},
        503: {"model": ErrorResponse, "description": "The source cannot be reached (or startup is not over)."},
    },
)
async def reload_model(request: Request) -> Any:
    """Load the model source's current version now and serve it; `changed` says whether the model changed."""
    holder: ModelHolder | None = getattr(request.app.state, "models", None)
    if holder is None:
        raise HTTPException(status_code=503, detail="the service is still starting")
    result = await holder.reload(force=True)
    if result.failure is not None:
        return failure_response(result)
    served = result.served
    return ReloadResponse(
        model_version=served.model_version,
        source=served.source,
        source_version=served.source_version,
        changed=result.changed,
    )
