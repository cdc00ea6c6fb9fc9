"""The app factory: `create_app()` wires settings, routes, errors and metrics; the model loads at startup.

Nothing happens at import time. Run with `uvicorn --factory serving.app:create_app` (or
`retryopt serve`).
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from fastapi import Depends, FastAPI

from serving.api import admin, dashboard, decisions, health, kpis, outcomes, workflow
from serving.deps import require_admin_key, require_api_key
from serving.errors import install_error_handlers
from serving.limits import install_body_limit
from serving.metrics import create_metrics
from serving.model_source import ModelHolder, follow, is_model_uri, open_model
from serving.settings import Settings, get_settings
from serving.store import make_engine, session_factory, upgrade_database

log = logging.getLogger(__name__)


def _package_version() -> str:
    """The installed retryopt version, for the OpenAPI document."""
    try:
        return version("retryopt")
    except PackageNotFoundError:
        return "0.0.0"


def start_poller(holder: ModelHolder, settings: Settings) -> asyncio.Task[None] | None:
    """Follow the registry (reload when the alias moves) when the source is a URI and polling is on."""
    if settings.model_poll_seconds <= 0 or not is_model_uri(holder.source):
        return None
    return asyncio.create_task(follow(holder, settings.model_poll_seconds), name="retryopt-model-poller")


async def stop_poller(task: asyncio.Task[None] | None) -> None:
    """Cancel the poller and wait for it, so shutdown never leaves a reload half-done on the loop."""
    if task is None:
        return
    task.cancel()
    with suppress(asyncio.CancelledError):
        await task


def create_app(settings: Settings | None = None) -> FastAPI:
    """A configured app; its lifespan loads the model (fallback mode when it cannot) and opens the store."""
    config = settings if settings is not None else get_settings()
    logging.getLogger("serving").setLevel(config.log_level.upper())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        """Load the model, migrate and open the store, follow the registry; undo it all at shutdown."""
        workdir = Path(tempfile.mkdtemp(prefix="retryopt-models-"))  # this process's downloaded versions
        try:
            holder = await open_model(config, workdir, app.state.metrics.model_reloads)
            upgrade_database(config.database_url)  # migrations are the only way the schema is made
            engine = make_engine(config.database_url)
            app.state.engine = engine
            app.state.sessions = session_factory(engine)
            app.state.models = holder
            poller = start_poller(holder, config)
            try:
                yield
            finally:
                await stop_poller(poller)
                holder.close()
                app.state.models = None
                engine.dispose()
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    app = FastAPI(
        title="retryopt",
        version=_package_version(),
        summary="When to retry a failed recurring card payment.",
        lifespan=lifespan,
    )
    app.state.settings = config
    app.state.models = None  # the ModelHolder, from startup on
    app.state.metrics = create_metrics()
    install_error_handlers(app)
    install_body_limit(app)
    app.include_router(health.router)
    guarded = [Depends(require_api_key)]
    app.include_router(decisions.router, dependencies=guarded)
    app.include_router(outcomes.router, dependencies=guarded)
    app.include_router(kpis.router, dependencies=guarded)
    app.include_router(workflow.router, dependencies=guarded)
    app.include_router(dashboard.router)  # guarded by its own router dependency (require_api_key)
    app.include_router(admin.router, dependencies=[Depends(require_admin_key)])
    return app
