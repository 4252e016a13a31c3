"""The API's reference, /docs: Swagger UI from files the server serves itself.

FastAPI's own page loads Swagger UI from a CDN and starts it with an inline script: a blank page
on a machine without internet and, with it, another site's script running on the API's origin,
which accepts the UI's cookie. This page loads Swagger UI's files from the fastapi-offline
package and starts it from orch's own file (api_docs.js), so its policy can allow the server's
own scripts and styles and nothing else. FastAPI's /redoc is not served: its page loads Google's
fonts, and Redoc injects its styles inline, which that policy refuses."""

from __future__ import annotations

from html import escape
from pathlib import Path

import fastapi_offline
from fastapi import FastAPI
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles

PAGE = "/docs"
ASSETS = "/docs/swagger-ui"  # Swagger UI's script and style sheet
STARTER = "/docs/orch.js"
ICON = "/ui/static/favicon.svg"  # the web UI's
SWAGGER_UI = Path(fastapi_offline.__file__).parent / "static"
STARTER_FILE = Path(__file__).with_name("api_docs.js")

# The page's Content-Security-Policy: the server's own files only. Swagger UI's style sheet draws
# its icons as data: images; its script sets styles through the DOM, which style-src allows.
POLICY = (
    b"content-security-policy",
    b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    b"connect-src 'self'; form-action 'self'; base-uri 'none'; object-src 'none'; "
    b"frame-ancestors 'none'",
)


def install(app: FastAPI) -> None:
    """/docs and the files it loads; the app is made with `docs_url=None, redoc_url=None`."""
    app.mount(ASSETS, StaticFiles(directory=SWAGGER_UI), name="swagger-ui")
    openapi_url = app.openapi_url or "/openapi.json"
    html = _page(f"{app.title} - Swagger UI", openapi_url)

    @app.get(STARTER, include_in_schema=False)
    def starter() -> FileResponse:
        return FileResponse(STARTER_FILE, media_type="text/javascript")

    @app.get(PAGE, include_in_schema=False)
    def page() -> HTMLResponse:
        return HTMLResponse(html)


def _page(title: str, openapi_url: str) -> str:
    """The page: Swagger UI's files, then the starter, which reads the document's address here."""
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{escape(title)}</title>
<link rel="icon" type="image/svg+xml" href="{ICON}">
<link rel="stylesheet" href="{ASSETS}/swagger-ui.css">
</head>
<body>
<div id="swagger-ui" data-openapi-url="{escape(openapi_url)}"></div>
<script src="{ASSETS}/swagger-ui-bundle.js"></script>
<script src="{STARTER}"></script>
</body>
</html>
"""
