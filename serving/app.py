"""The app factory: `create_app()` wires settings, routes, errors and metrics; the model loads at startup.

Nothing happens at import time. Run with `uvicorn --factory serving.app:create_app` (or
`retryopt serve`).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version

from fastapi import Depends, FastAPI

from features.bundle import BundleError, load_bundle
from serving.api import dashboard, decisions, health, kpis, outcomes
from serving.deps import require_api_key
from serving.errors import install_error_handlers
from serving.metrics import create_metrics
from serving.settings import Settings, get_settings
from serving.store import make_engine, session_factory, upgrade_database

log = logging.getLogger(__name__)


def _package_version() -> str:
    """The installed retryopt version, for the OpenAPI document."""
    try:
        return version("retryopt")
    except PackageNotFoundError:
        return "0.0.0"


def create_app(settings: Settings | None = None) -> FastAPI:
    """A configured app; its lifespan loads the model bundle and fails startup if it cannot."""
    config = settings if settings is not None else get_settings()
    logging.getLogger("serving").setLevel(config.log_level.upper())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        """Load the bundle once; a bundle that cannot be served stops the startup with its reason."""
        try:
            app.state.bundle = load_bundle(config.model_dir)
        except BundleError as exc:
            log.error("cannot serve the model: %s", exc)
            raise
        log.info("serving model %s from %s", app.state.bundle.model_version, config.model_dir)
        upgrade_database(config.database_url)  # migrations are the only way the schema is made
        engine = make_engine(config.database_url)
        app.state.engine = engine
        app.state.sessions = session_factory(engine)
        yield
        app.state.bundle = None
        engine.dispose()

    app = FastAPI(
        title="retryopt",
        version=_package_version(),
        summary="When to retry a failed recurring card payment.",
        lifespan=lifespan,
    )
    app.state.settings = config
    app.state.bundle = None
    app.state.metrics = create_metrics()
    install_error_handlers(app)
    app.include_router(health.router)
    guarded = [Depends(require_api_key)]
    app.include_router(decisions.router, dependencies=guarded)
    app.include_router(outcomes.router, dependencies=guarded)
    app.include_router(kpis.router, dependencies=guarded)
    app.include_router(dashboard.router)  # guarded by its own router dependency (require_api_key)
    return app
