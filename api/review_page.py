"""The review web page: ``GET /review`` and its assets under ``/static`` (plain files, no build step).

The page shell carries no data, so it needs no key; the reviewer types one into the page, which
then calls the JSON routes (``/v1/review``, ``/v1/products/{id}/decisions``, ``/v1/products/{id}/image``)
with it. Neither route is in the OpenAPI schema: they are for people, not clients.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).parent / "static"
router = APIRouter(include_in_schema=False)

# Everything the page loads comes from this origin; photos arrive as blob: URLs made by the script.
_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; "
        "connect-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'")


@router.get("/review")
def review_page() -> FileResponse:
    """The page shell (no data in it, hence public)."""
    return FileResponse(STATIC_DIR / "review.html", media_type="text/html", headers={
        "Content-Security-Policy": _CSP, "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer", "Cache-Control": "no-cache",
    })


def mount_static(app: FastAPI) -> None:
    """Serve the page's script and stylesheet at ``/static`` (mounts never enter the OpenAPI schema)."""
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
