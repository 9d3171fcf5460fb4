"""The web console (`/`) and the gate kiosk (`/kiosk`): static pages served by the gateway itself.

Plain files from `services/gateway/web/` (shipped as package data), no build step and nothing from a CDN. The
pages call the public API with the key the user types in, so they need no session or cookie here. Only the
files listed in `services/gateway/web/` are served (no path from the request reaches the filesystem), and a
strict Content-Security-Policy allows scripts, styles and connections to this origin only.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, RedirectResponse, Response

from services.common.errors import NotFound

WEB_DIR = Path(__file__).resolve().parent.parent / "web"
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
# blob: for the photo previews and snapshots the pages make themselves; mediastream: for the camera preview.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
    "media-src 'self' blob: mediastream:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'; form-action 'self'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # the key is typed into these pages: a proxy or the browser must not keep a copy beyond revalidation
    "Cache-Control": "no-cache",
}


def _assets() -> dict[str, Path]:
    return {p.name: p for p in WEB_DIR.iterdir() if p.is_file() and p.suffix in _TYPES}


ASSETS = _assets()
router = APIRouter(tags=["web"], include_in_schema=False)


def _file(name: str) -> Response:
    path = ASSETS.get(name)
    if path is None:
        raise NotFound("no such file")
    return FileResponse(path, media_type=_TYPES[path.suffix], headers=HEADERS)


@router.get("/")
async def console() -> Response:
    return _file("console.html")


@router.get("/kiosk")
async def kiosk() -> Response:
    return _file("kiosk.html")


@router.get("/console")
async def console_alias() -> Response:
    return RedirectResponse("/", status_code=308)


@router.get("/web/{name}")
async def asset(name: str) -> Response:
    return _file(name)
