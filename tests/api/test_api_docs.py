"""The API's reference page, /docs: everything it loads comes from the server itself, so it works
on a machine without internet, and its policy lets no other site's script run on the API's
origin (which accepts the UI's cookie)."""

from __future__ import annotations

import re

import httpx

# What each kind of file the page loads must be answered as (nosniff: a wrong type is not run).
TYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml", ".png": "image/png"}


def _loaded(html: str) -> list[str]:
    """The addresses the page's tags load (scripts, style sheets, icons)."""
    return re.findall(r"""<(?:script|link)\b[^>]*?\b(?:src|href)=["']([^"']*)["']""", html)


def test_the_page_loads_only_the_servers_own_files(api: httpx.Client) -> None:
    page = api.get("/docs", headers={"Authorization": ""})
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    html = page.text
    loaded = _loaded(html)
    assert len(loaded) >= 3, html  # Swagger UI's script and style sheet, and orch's starter
    for url in loaded:
        assert url.startswith("/") and not url.startswith("//"), url  # this origin, no other
    assert "http://" not in html and "https://" not in html and "cdn" not in html.lower()
    # Nothing inline, which the policy below would block: Swagger UI starts from a file.
    assert re.findall(r"<script(?![^>]*\bsrc=)", html) == []
    assert "<style" not in html and " style=" not in html
    for url in loaded:
        asset = api.get(url, headers={"Authorization": ""})
        assert asset.status_code == 200, url
        suffix = url[url.rfind(".") :]
        assert asset.headers["content-type"].startswith(TYPES[suffix]), (url, asset.headers["content-type"])
        assert asset.content, url


def test_the_starter_loads_the_servers_openapi_document(api: httpx.Client) -> None:
    html = api.get("/docs").text
    starter = [url for url in _loaded(html) if url.endswith(".js") and "swagger-ui" not in url]
    assert starter, html
    code = api.get(starter[0]).text
    assert "SwaggerUIBundle(" in code
    said = re.search(r'data-openapi-url="([^"]+)"', html)
    assert said is not None and said.group(1) == "/openapi.json"
    assert api.get("/openapi.json").json()["paths"]


def test_the_page_allows_only_the_servers_own_scripts_and_styles(api: httpx.Client) -> None:
    csp = api.get("/docs").headers["content-security-policy"]
    rules = {rule.split()[0]: rule.split()[1:] for rule in csp.split(";") if rule.strip()}
    assert rules["default-src"] == ["'self'"]
    assert rules["script-src"] == ["'self'"]  # no 'unsafe-inline', no 'unsafe-eval', no CDN
    assert rules["style-src"] == ["'self'"]
    assert rules["img-src"] == ["'self'", "data:"]  # Swagger UI's style sheet draws its icons so
    assert rules["connect-src"] == ["'self'"]
    assert rules["frame-ancestors"] == ["'none'"] and rules["object-src"] == ["'none'"]
    assert "http" not in csp and "cdn" not in csp
    resp = api.get("/docs")
    assert resp.headers["x-frame-options"] == "DENY" and resp.headers["x-content-type-options"] == "nosniff"


def test_redoc_is_not_served(api: httpx.Client) -> None:
    """FastAPI's /redoc loads Redoc and Google's fonts from other sites: orch has none."""
    resp = api.get("/redoc")
    assert resp.status_code == 404 and resp.json()["error"] == "http_error"


def test_an_address_under_the_docs_that_is_no_file_is_404(api: httpx.Client) -> None:
    resp = api.get("/docs/swagger-ui/nothing.js")
    assert resp.status_code == 404 and resp.json()["message"] == "Nothing is at /docs/swagger-ui/nothing.js."
