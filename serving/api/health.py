"""Operations: liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from serving.deps import MetricsDep, get_served_model
from serving.errors import error_body
from serving.model_source import ServedModel
from serving.store import is_reachable

router = APIRouter(tags=["operations"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is alive."""
    return {"status": "ok"}


def model_status(served: ServedModel) -> dict[str, Any]:
    """What /readyz says of the model: ready, or degraded (fallback mode) with the reason.

    `compiled_inference`: whether the model's probabilities come from its compiled code (`ready`)
    or from LightGBM (`off`, `compiling`, `failed`, `unavailable`: lleaves not installed).
    """
    where = {
        "model_version": served.model_version,
        "model_source": served.source,
        "source_version": served.source_version,
        "compiled_inference": served.compiled_inference,
    }
    if served.degraded:
        return {"status": "degraded", "reason": served.fallback_reason, **where}
    return {"status": "ready", **where}


@router.get(
    "/readyz",
    responses={
        200: {"description": "Ready, or `degraded`: deciding in fallback mode (rules + fixed schedule); alert on it."},
        503: {"description": "Not ready: startup is not over or the store is unreachable."},
    },
)
def readyz(request: Request, served: Annotated[ServedModel | None, Depends(get_served_model)]) -> Any:
    """Ready to decide and to store outcomes: a model (or fallback mode) is served and the store answers."""
    if served is None:
        body = {"status": "not_ready", **error_body("unavailable", "model not loaded")}
        return JSONResponse(body, status_code=503)
    engine = getattr(request.app.state, "engine", None)
    if engine is None or not is_reachable(engine):
        body = {"status": "not_ready", **error_body("unavailable", "store unreachable")}
        return JSONResponse(body, status_code=503)
    return model_status(served)


@router.get("/metrics", response_class=Response)
def metrics(instruments: MetricsDep) -> Response:
    """Prometheus exposition of this app's registry."""
    return Response(generate_latest(instruments.registry), media_type=CONTENT_TYPE_LATEST)
