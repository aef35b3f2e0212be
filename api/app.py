"""The HTTP API: FastAPI app, served by `gristmill api` (uvicorn)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio.to_thread
from fastapi import FastAPI
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api import errors, ui
from api.auth import Svc
from api.routes import admin, items, jobs, scripts
from api.services import Services
from common import metrics
from common.connection import ping

# Sync endpoints run in a thread pool; run_wait_result and followed logs hold a
# thread while they wait, so the pool is sized for many waiters, not anyio's 40.
THREADS = 256


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    anyio.to_thread.current_default_thread_limiter().total_tokens = THREADS
    yield


def create_app(services: Services) -> FastAPI:
    """The app, bound to one Gristmill instance."""
    app = FastAPI(
        lifespan=lifespan,
        title="Gristmill", version="0.1.0",
        description="Run scripts as jobs on a Redis-backed worker fleet. Authenticate with "
        "`Authorization: Bearer <API token or WM_TOKEN>`.",
        openapi_url="/api/openapi.json", docs_url="/api/docs", redoc_url=None,
    )
    app.state.services = services
    errors.install(app, page=ui.error_page)
    for module in (jobs, scripts, items, admin):
        app.include_router(module.router)
    ui.install(app)

    @app.get("/api/health", tags=["health"])
    def health(svc: Svc) -> dict[str, Any]:
        """No authentication: whether the API reaches Redis."""
        ping(svc.redis)
        return {"status": "ok"}

    @app.get("/metrics", tags=["health"], include_in_schema=False)
    def prometheus() -> Response:
        return Response(generate_latest(metrics.REGISTRY), media_type=CONTENT_TYPE_LATEST)

    return app
