"""The web UI served by the API process at ``/`` (DESIGN.md §13)."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from api.ui import pages
from api.ui.session import SignInRequired
from common.errors import GristmillError


def install(app: FastAPI) -> None:
    app.include_router(pages.router)
    app.mount("/static", StaticFiles(directory=pages.HERE / "static"), name="static")


def error_page(request: Request, exc: GristmillError, status: int) -> Response | None:
    """HTML answers for the UI's pages (never for /api, /metrics)."""
    path = request.url.path
    if path.startswith(("/api/", "/metrics")):
        return None
    if isinstance(exc, SignInRequired):
        return RedirectResponse(f"/signin?next={exc.next_url}", status_code=303)
    context = None
    return pages.render(request, "error.html", context, status_code=status, status=status,
                        message=str(exc))
