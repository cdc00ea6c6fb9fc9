"""Typed FastAPI dependencies: the app's settings, model and metrics, as route parameters."""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Annotated

from fastapi import Depends, Header, HTTPException, Request
from sqlalchemy.orm import Session, sessionmaker

from features.bundle import Bundle
from serving.metrics import Metrics
from serving.policy.scoring import BundleScorer
from serving.settings import Settings


def get_app_settings(request: Request) -> Settings:
    """The settings the app was created with (`create_app(settings)` or `get_settings()`)."""
    settings: Settings = request.app.state.settings
    return settings


def get_bundle(request: Request) -> Bundle:
    """The loaded model, or 503 while there is none."""
    bundle: Bundle | None = getattr(request.app.state, "bundle", None)
    if bundle is None:
        raise HTTPException(status_code=503, detail="model not loaded")
    return bundle


def get_scorer(request: Request) -> BundleScorer:
    """The loaded model as the policy's Scorer, or 503 while there is none."""
    return BundleScorer(get_bundle(request))


def get_metrics(request: Request) -> Metrics:
    """The app's Prometheus instruments."""
    metrics: Metrics = request.app.state.metrics
    return metrics


def get_session(request: Request) -> Iterator[Session]:
    """A store session for one request, closed afterwards; each write commits before returning."""
    factory: sessionmaker[Session] = request.app.state.sessions
    with factory() as session:
        yield session


def require_api_key(request: Request, x_api_key: Annotated[str | None, Header()] = None) -> None:
    """With an API key configured, refuse /v1 calls without it (compared in constant time)."""
    settings: Settings = request.app.state.settings
    if settings.api_key is None:
        return
    expected = settings.api_key.get_secret_value().encode()
    if x_api_key is None or not hmac.compare_digest(x_api_key.encode(), expected):
        raise HTTPException(
            status_code=401, detail="missing or wrong X-API-Key", headers={"WWW-Authenticate": "ApiKey"}
        )


def get_clock() -> datetime:
    """The server time; overridable in tests through `app.dependency_overrides`."""
    return datetime.now(UTC)


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
BundleDep = Annotated[Bundle, Depends(get_bundle)]
ScorerDep = Annotated[BundleScorer, Depends(get_scorer)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
ClockDep = Annotated[datetime, Depends(get_clock)]
SessionDep = Annotated[Session, Depends(get_session)]
