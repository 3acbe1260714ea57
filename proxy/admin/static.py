"""The web console's files: ``/`` (the page) and ``/console/{name}`` (its script and style).

They ship inside the package (``admin/console/``) and are read once, at the first
request. Every answer carries a Content-Security-Policy that allows scripts, styles
and requests from this origin only (no inline script, no other host), and is not
framed by another site. The page itself holds no secret: the API behind it asks for
a token on every request, as it does of any other client.
"""

from __future__ import annotations

from importlib import resources
from typing import Final

from aiohttp import web

__all__ = ["CSP", "add_console"]

CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
    " connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
)
HEADERS: Final = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-cache",
}
TYPES: Final = {
    "index.html": "text/html",
    "app.js": "text/javascript",
    "charts.js": "text/javascript",
    "style.css": "text/css",
    "favicon.svg": "image/svg+xml",
}

_cache: dict[str, bytes] = {}


def _file(name: str) -> bytes:
    body = _cache.get(name)
    if body is None:
        body = _cache[name] = (resources.files("bounceback.admin") / "console" / name).read_bytes()
    return body


def _answer(name: str) -> web.Response:
    return web.Response(
        body=_file(name), content_type=TYPES[name], charset="utf-8", headers=HEADERS
    )


async def index(request: web.Request) -> web.StreamResponse:
    return _answer("index.html")


async def asset(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    if name not in TYPES or name == "index.html":
        raise web.HTTPNotFound()
    return _answer(name)


def add_console(app: web.Application) -> None:
    """Serve the console on `app` (its routes are not part of the API's document)."""
    app.router.add_get("/", index, allow_head=True)
    app.router.add_get("/console/{name}", asset, allow_head=True)
