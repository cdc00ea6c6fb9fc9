"""Operations: liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from serving.deps import MetricsDep
from serving.errors import error_body

router = APIRouter(tags=["operations"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is alive."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "Not ready: no model loaded."}})
def readyz(request: Request) -> Any:
    """Ready to decide: the model is loaded (the store check joins when the store does)."""
    bundle = getattr(request.app.state, "bundle", None)
    if bundle is None:
        body = {"status": "not_ready", **error_body("unavailable", "model not loaded")}
        return JSONResponse(body, status_code=503)
    return {"status": "ready", "model_version": bundle.model_version}


@router.get("/metrics", response_class=Response)
def metrics(instruments: MetricsDep) -> Response:
    """Prometheus exposition of this app's registry."""
    return Response(generate_latest(instruments.registry), media_type=CONTENT_TYPE_LATEST)
