"""Serving the web UI: the page shell at `/` and its static files under `/ui/`.

The files ship in the package (driftline/ui/static) and are served as they are: no
build step, no file fetched from elsewhere. The shell and the files are open; the data
the page shows comes from the JSON API, which checks the token the page sends.
The page's colours are the HTML report's (driftline.reporting.html), served as one
more stylesheet, so a severity looks the same in the UI and in a report.
"""

from __future__ import annotations

import importlib.resources
from collections.abc import Mapping
from functools import cache

from aiohttp import web

from driftline.reporting.html import CSS as REPORT_CSS

FILES: Mapping[str, str] = {
    "app.js": "text/javascript",
    "ui.css": "text/css",
}
# Scripts and styles from this origin only; the API is called on the same origin.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


@cache
def _text(name: str) -> str:
    return (
        importlib.resources.files("driftline.ui")
        .joinpath("static", name)
        .read_text(encoding="utf-8")
    )


async def index(request: web.Request) -> web.Response:
    """The page shell: the script draws the overview or a monitor from the URL's fragment."""
    return web.Response(text=_text("index.html"), content_type="text/html", headers=HEADERS)


async def asset(request: web.Request) -> web.Response:
    """One of the UI's static files (FILES), or the report's stylesheet (`report.css`)."""
    name = request.match_info["file"]
    if name == "report.css":
        return web.Response(text=REPORT_CSS, content_type="text/css", headers=HEADERS)
    if name not in FILES:
        raise web.HTTPNotFound  # answered as a problem document, like any unknown path
    return web.Response(text=_text(name), content_type=FILES[name], headers=HEADERS)


def add_routes(router: web.UrlDispatcher) -> None:
    """Register the shell at `/` and the files at `/ui/{file}` (no token needed)."""
    router.add_get("/", index)
    router.add_get("/ui/{file}", asset)
