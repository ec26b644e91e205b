"""The API reference pages, /docs (Swagger UI) and /redoc (ReDoc), served from files the
project installs rather than from a CDN, so they render on a machine with no internet.

The files come from the fastapi-offline package, which ships Swagger UI's and ReDoc's
built bundles (it tracks Swagger UI 5, which renders the OpenAPI 3.1 documents FastAPI
writes); only its static folder is used, mounted here beside the pages that load it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import fastapi_offline
from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from service.examples import schema_examples

ASSETS_URL = "/docs/assets"
ASSETS_DIR = Path(fastapi_offline.__file__).resolve().parent / "static"
ASSET_FILES = ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js", "favicon.png")

# Both pages may load images, fonts and data from this server only. ReDoc's bundle links
# its "by Redocly" logo from the vendor's CDN; under this policy the browser never asks.
OFFLINE_POLICY = "img-src 'self' data:; font-src 'self' data:; connect-src 'self'"

SWAGGER_UI_PARAMETERS = {
    # Swagger UI would otherwise send the document to validator.swagger.io for a badge.
    "validatorUrl": None,
    # The key typed into "Authorize" survives a reload of the page.
    "persistAuthorization": True,
    "displayRequestDuration": True,
}


def _check_assets() -> None:
    missing = [name for name in ASSET_FILES if not (ASSETS_DIR / name).is_file()]
    if missing:
        raise RuntimeError(
            f"The API docs' assets {', '.join(missing)} are missing from {ASSETS_DIR}; "
            "reinstall the fastapi-offline package (pip install -e .)."
        )


VALIDATION_ARRAY = "#/components/schemas/HTTPValidationError"


def _drop_validation_array(document: dict[str, Any]) -> None:
    """FastAPI advertises a 422 with its own error array on every route that has a parameter
    and declares no 422 itself. No route here answers that: a request that fails validation
    gets the one {error, detail} body (service.errors), and a path id that is not well formed
    is a 404. So the routes that can send a 422 declare it with `responses(422)`, and the
    others lose the one they never send."""
    for item in document["paths"].values():
        for operation in item.values():
            answers = operation.get("responses", {})
            media = answers.get("422", {}).get("content", {}).get("application/json", {})
            if media.get("schema", {}).get("$ref") == VALIDATION_ARRAY:
                del answers["422"]
    schemas = document["components"]["schemas"]
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)


def _set_examples(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    for name, values in schema_examples().items():
        if name not in schemas:  # a renamed model: say so, rather than lose its example
            raise RuntimeError(f"service.examples names a schema '{name}' the API lacks.")
        schemas[name]["examples"] = values


def _install_openapi(app: FastAPI) -> None:
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = build()
            _drop_validation_array(document)
            _set_examples(document)
        return app.openapi_schema or build()

    app.openapi = openapi  # type: ignore[method-assign]


def install_docs(app: FastAPI) -> None:
    """Mount the assets and add /docs and /redoc; the app is built with docs_url=None and
    redoc_url=None so FastAPI's CDN-loading pages never exist."""
    _check_assets()
    _install_openapi(app)
    openapi_url = app.openapi_url or "/openapi.json"
    app.mount(ASSETS_URL, StaticFiles(directory=ASSETS_DIR), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "").rstrip("/")
        page = get_swagger_ui_html(
            openapi_url=root + openapi_url,
            title=f"{app.title} API",
            swagger_js_url=f"{root}{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
            swagger_ui_parameters=SWAGGER_UI_PARAMETERS,
        )
        page.headers["Content-Security-Policy"] = OFFLINE_POLICY
        return page

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "").rstrip("/")
        page = get_redoc_html(
            openapi_url=root + openapi_url,
            title=f"{app.title} API",
            redoc_js_url=f"{root}{ASSETS_URL}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
            with_google_fonts=False,
        )
        page.headers["Content-Security-Policy"] = OFFLINE_POLICY
        return page
