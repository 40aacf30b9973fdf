"""The FastAPI app of the speech service, mounted at the root of the BentoML service by ``service.py``:
HTTP routes, the ``/realtime`` WebSocket, error bodies, the OpenAPI document and the demo page."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from starlette.staticfiles import StaticFiles

from deeptalk.serving import schemas
from deeptalk.serving.capacity import EngineHolder
from deeptalk.serving.errors import ERRORS, ApiError, describe_validation
from deeptalk.serving.http import add_http_routes
from deeptalk.serving.realtime import add_realtime_route


def create_app(holder: EngineHolder, static_dir: str | Path | None = None) -> FastAPI:
    app = FastAPI(
        title="DeepTalk",
        version="0.1.0",
        description="Speech-in, speech-out dialogue with a modality-specific MoE. Errors: "
        + "; ".join(f"{k}: {v}" for k, v in ERRORS.items()),
    )

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, err: ApiError) -> JSONResponse:
        return JSONResponse(err.body(), err.status, headers=err.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, err: RequestValidationError) -> JSONResponse:
        return JSONResponse({"error": {"code": "bad_request", "message": describe_validation(err)}}, 400)

    default_openapi = app.openapi

    def openapi() -> dict:
        """FastAPI's document plus the models the hand-declared request/response bodies refer to."""
        if app.openapi_schema is None:
            doc = default_openapi()
            doc.setdefault("components", {}).setdefault("schemas", {}).update(schemas.components())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    add_http_routes(app, holder)
    add_realtime_route(app, holder)

    if static_dir is not None and Path(static_dir).is_dir():
        static_dir = Path(static_dir)
        app.mount("/static", StaticFiles(directory=static_dir), name="static")

        @app.get("/demo", include_in_schema=False)
        async def demo() -> FileResponse:
            return FileResponse(static_dir / "index.html")

    return app
