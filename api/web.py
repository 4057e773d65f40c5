"""The live web view at `/`: one page and its two assets, shipped in the package (nothing
fetched from elsewhere). The page holds no data: it asks for a token and reads the API with
it, so the view is exactly as protected as the API."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import Response

from api.errors import ApiError

WEB = Path(__file__).resolve().parent / "web"
ASSETS = {
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
_SECURITY = {
    # only this origin's own scripts, styles and API; no framing
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
router = APIRouter(include_in_schema=False)


@router.get("/")
async def page() -> Response:
    return Response(
        (WEB / "index.html").read_bytes(), media_type="text/html; charset=utf-8", headers=_SECURITY
    )


@router.get("/static/{name}")
async def asset(name: str) -> Response:
    media = ASSETS.get(name)
    if media is None:  # a fixed list: no path ever reaches the file system
        raise ApiError(404, f"no asset {name!r}")
    return Response((WEB / name).read_bytes(), media_type=media, headers=_SECURITY)
