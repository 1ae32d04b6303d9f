"""`/docs` (Swagger UI) and `/redoc` with every asset served by this server.

FastAPI's built-in pages load Swagger UI, ReDoc, a favicon and Google Fonts from CDNs,
so an air-gapped install shows a blank page. The `fastapi-offline` package ships those
files (Swagger UI 5, ReDoc 2, FastAPI's favicon); this module mounts its directory and
points FastAPI's page builders at it. Like `/openapi.json`, the pages and their assets
need no API key: only `/v1` is protected (api/auth.py).
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

DOCS_URL = "/docs"
REDOC_URL = "/redoc"
# Outside `/v1`, so the assets are public like the pages that load them.
ASSETS_URL = "/docs-assets"
# The package and its data directory holding the bundles, read where pip installed them.
ASSETS_PACKAGE = ("fastapi_offline", "static")


def install_docs(app: FastAPI) -> None:
    """Serve Swagger UI and ReDoc from local assets.

    Build the app with `docs_url=None, redoc_url=None` so FastAPI's CDN pages stay off.
    Fails at startup, not in the browser, if the asset package is missing.
    """
    openapi_url = app.openapi_url
    if openapi_url is None:
        return  # No schema, nothing to render.
    app.mount(ASSETS_URL, StaticFiles(packages=[ASSETS_PACKAGE]), name="docs-assets")

    # The bearer scheme needs no OAuth2 redirect page, so none is served or configured.
    @app.get(DOCS_URL, include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "").rstrip("/")
        return get_swagger_ui_html(
            openapi_url=root + openapi_url,
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{root}{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
            swagger_ui_parameters=app.swagger_ui_parameters,
        )

    @app.get(REDOC_URL, include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "").rstrip("/")
        return get_redoc_html(
            openapi_url=root + openapi_url,
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{ASSETS_URL}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
            with_google_fonts=False,
        )
