"""Typed FastAPI dependencies: the app's settings, model and metrics, as route parameters.

The ones that only read app state or the clock are `async def`: FastAPI runs a plain `def`
dependency in its threadpool, a thread hop per dependency per request (about 0.1 ms each on an
idle machine, several times that under CPU load), for work that takes microseconds.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Annotated

from fastapi import Depends, Header, HTTPException, Request
from sqlalchemy.orm import Session, sessionmaker

from serving.metrics import Metrics
from serving.model_source import ModelHolder, ServedModel
from serving.policy.scoring import Scorer
from serving.settings import Settings


async def get_served_model(request: Request) -> ServedModel | None:
    """The model this request decides with, read once: FastAPI caches it per request, so the
    scorer and the policy settings come from the same model even if a reload swaps it meanwhile."""
    holder: ModelHolder | None = getattr(request.app.state, "models", None)
    return holder.current if holder is not None else None


async def get_app_settings(
    request: Request, served: Annotated[ServedModel | None, Depends(get_served_model)]
) -> Settings:
    """The settings the app was created with; in fallback mode, with every invoice on the fixed schedule."""
    if served is not None:
        return served.settings
    settings: Settings = request.app.state.settings
    return settings


async def get_scorer(served: Annotated[ServedModel | None, Depends(get_served_model)]) -> Scorer:
    """The served model as the policy's Scorer (the fallback's in fallback mode), or 503 before startup."""
    if served is None:
        raise HTTPException(status_code=503, detail="model not loaded")
    return served.scorer


async def get_metrics(request: Request) -> Metrics:
    """The app's Prometheus instruments."""
    metrics: Metrics = request.app.state.metrics
    return metrics


def get_session(request: Request) -> Iterator[Session]:
    """A store session for one request, closed afterwards; each write commits before returning."""
    factory: sessionmaker[Session] = request.app.state.sessions
    with factory() as session:
        yield session


async def require_api_key(request: Request, x_api_key: Annotated[str | None, Header()] = None) -> None:
    """With an API key configured, refuse /v1 calls without it (compared in constant time)."""
    settings: Settings = request.app.state.settings
    if settings.api_key is None:
        return
    expected = settings.api_key.get_secret_value().encode()
    if x_api_key is None or not hmac.compare_digest(x_api_key.encode(), expected):
        raise HTTPException(
            status_code=401, detail="missing or wrong X-API-Key", headers={"WWW-Authenticate": "ApiKey"}
        )


def is_loopback(host: str | None) -> bool:
    """True for a loopback client address (127.0.0.0/8, ::1, ::ffff:127.x); false for names and anything else."""
    try:
        address = ipaddress.ip_address(host or "")
    except ValueError:
        return False
    mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
    return address.is_loopback or (mapped is not None and mapped.is_loopback)


async def require_admin_key(request: Request, x_api_key: Annotated[str | None, Header()] = None) -> None:
    """Admin calls need the admin key (else the API key) in X-API-Key; with no key set, a loopback client."""
    settings: Settings = request.app.state.settings
    key = settings.admin_api_key or settings.api_key
    if key is None:
        if not is_loopback(request.client.host if request.client else None):
            raise HTTPException(
                status_code=403, detail="admin endpoints need RETRYOPT_ADMIN_API_KEY or a loopback client"
            )
        return
    if x_api_key is None or not hmac.compare_digest(x_api_key.encode(), key.get_secret_value().encode()):
        raise HTTPException(
            status_code=401, detail="missing or wrong X-API-Key", headers={"WWW-Authenticate": "ApiKey"}
        )


async def get_clock() -> datetime:
    """The server time; overridable in tests through `app.dependency_overrides`."""
    return datetime.now(UTC)


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
ScorerDep = Annotated[Scorer, Depends(get_scorer)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
ClockDep = Annotated[datetime, Depends(get_clock)]
SessionDep = Annotated[Session, Depends(get_session)]
