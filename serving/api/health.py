"""Operations: liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from serving.deps import MetricsDep
from serving.errors import error_body
from serving.store import is_reachable

router = APIRouter(tags=["operations"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is alive."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "Not ready: no model loaded or the store is unreachable."}})
def readyz(request: Request) -> Any:
    """Ready to decide and to store outcomes: the model is loaded and the store answers."""
    bundle = getattr(request.app.state, "bundle", None)
    if bundle is None:
        body = {"status": "not_ready", **error_body("unavailable", "model not loaded")}
        return JSONResponse(body, status_code=503)
    engine = getattr(request.app.state, "engine", None)
    if engine is None or not is_reachable(engine):
        body = {"status": "not_ready", **error_body("unavailable", "store unreachable")}
        return JSONResponse(body, status_code=503)
    return {"status": "ready", "model_version": bundle.model_version}


@router.get("/metrics", response_class=Response)
def metrics(instruments: MetricsDep) -> Response:
    """Prometheus exposition of this app's registry."""
    return Response(generate_latest(instruments.registry), media_type=CONTENT_TYPE_LATEST)
