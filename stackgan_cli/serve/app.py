"""The FastAPI application: the page, its static files and the JSON API.

- ``GET /``: the page; ``/static/*``: its script and style sheet.
- ``POST /api/generate``: ``{"prompts": [...], "n": 8, "seed": S?, "size": 64|128|256?,
  "stages": bool?}`` -> ``{"seed", "size", "captions", "grid", "images"}``, the pictures as
  PNG data URLs (``images[p][k]``: caption p, sample k); with ``stages`` also ``"stages":
  [{"size", "images"}, ...]``, the smaller outputs (Stage-I sketches, smaller v2 branches).
- ``GET /api/runs``: the records of ``stackgan runs --json``; ``GET /api/runs/NAME/sample.png``
  and ``/losses.png``: a run's newest sample grid and its loss chart.
- ``GET /api/health``: the loaded model, the device and the request limits.

Every error is ``{"error": "one line"}`` with a 4xx status (5xx only for a failure of the
server itself). Generation runs in a worker thread, one request at a time per device, so the
page and the other routes stay responsive while it works.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from PIL import Image
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from stackgan_cli import __version__, paths
from stackgan_cli.errors import StackGANError
from stackgan_cli.imaging import to_pixels
from stackgan_cli.runs.records import collect_runs, latest_sample
from stackgan_cli.serve.generation import Generated, LoadedGenerator
from stackgan_cli.serve.validation import (
    ApiError,
    GenerateRequest,
    limits,
    parse_generate_request,
    read_body,
)
from stackgan_cli.training.metrics_file import read_metrics

STATIC_DIR = Path(str(resources.files("stackgan_cli.serve") / "static"))
_PAGE_HEADERS = {
    # Everything comes from this server: no CDN, works offline; data: URLs are the images.
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; object-src 'none'; "
    "base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
}


def create_app(
    ckpt: Path | None = None,
    *,
    device: str = "auto",
    runs_dir: Path | None = None,
    allowed_hosts: Sequence[str] | None = None,
    model: LoadedGenerator | None = None,
    text_encoder: str | Path | None = None,
    damsm: str | Path | None = None,
    vocabulary: str | Path | None = None,
) -> FastAPI:
    """The web app serving generator file ``ckpt`` (default: the newest in the cache's runs),
    loaded now onto ``device``, or an already loaded ``model``. ``runs_dir`` is the folder of
    the runs view (default: the cache's runs/). ``allowed_hosts`` restricts the Host header
    (against DNS rebinding when bound to the loopback); None accepts any. ``text_encoder``
    replaces the file's own (``--text-encoder``; for AttnGAN files ``damsm`` and
    ``vocabulary``, ``--damsm``)."""
    if model is None:
        model = LoadedGenerator.load(ckpt, device, text_encoder, damsm=damsm, vocabulary=vocabulary)
    app = FastAPI(
        title="stackgan",
        version=__version__,
        docs_url=None,  # the interactive docs load their script from a CDN
        redoc_url=None,
    )
    if allowed_hosts is not None:
        app.add_middleware(HostCheck, allowed_hosts=allowed_hosts)
    app.state.model = model
    app.state.runs_dir = Path(runs_dir) if runs_dir is not None else None
    _add_error_handlers(app)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers=_PAGE_HEADERS)

    @app.get("/api/health")
    def health() -> dict[str, Any]:
        """Which model is loaded, on which device, and the request limits."""
        return {
            "status": "ok",
            "version": __version__,
            "model": model.describe(),
            "limits": limits(),
        }

    @app.post(
        "/api/generate",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": GenerateRequest.model_json_schema()}},
            }
        },
    )
    async def generate(request: Request) -> JSONResponse:
        """Images for the prompts: the captioned grid and each image, as PNG data URLs."""
        body = await read_body(request.headers, request.stream())
        query = parse_generate_request(request.headers.get("content-type"), body)
        result = await run_in_threadpool(_generate, model, query)
        return JSONResponse(result)

    @app.get("/api/runs")
    def runs() -> list[dict[str, Any]]:
        """The runs, newest first, as ``stackgan runs --json`` prints them."""
        folder = _runs_dir(app)
        return collect_runs(folder) if folder.is_dir() else []

    @app.get("/api/runs/{name}/sample.png")
    def run_sample(name: str) -> FileResponse:
        """The run's newest sample grid."""
        sample = latest_sample(_run_dir(app, name))
        if sample is None:
            raise HTTPException(404, f"run {name} has no sample grid yet")
        return FileResponse(sample, media_type="image/png", headers={"Cache-Control": "no-cache"})

    @app.get("/api/runs/{name}/losses.png")
    def run_losses(name: str) -> Response:
        """The run's losses.png, or (while it trains) the same chart drawn from its metrics."""
        run_dir = _run_dir(app, name)
        if (run_dir / "losses.png").is_file():
            return FileResponse(
                run_dir / "losses.png",
                media_type="image/png",
                headers={"Cache-Control": "no-cache"},
            )
        from stackgan_cli.charts import draw_losses

        records = read_metrics(run_dir / "metrics.jsonl")
        if not records:
            raise HTTPException(404, f"run {name} has no losses recorded yet")
        return Response(png_bytes(draw_losses(records, name)), media_type="image/png")

    return app


class HostCheck:
    """Answer only requests whose Host header (port aside) is one of ``allowed_hosts``: a
    page on another site cannot then reach this server through a rebound DNS name."""

    def __init__(self, app: ASGIApp, allowed_hosts: Sequence[str]) -> None:
        self.app = app
        self.allowed = {host.lower() for host in allowed_hosts}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            headers = dict(scope["headers"])
            host = headers.get(b"host", b"").decode("latin-1").lower()
            name = host.rsplit(":", 1)[0] if host.count(":") == 1 or "]:" in host else host
            if name not in self.allowed:
                response = _error(
                    400, f"this server answers only {', '.join(sorted(self.allowed))}"
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _generate(model: LoadedGenerator, query: GenerateRequest) -> dict[str, Any]:
    """Run the model (in a worker thread) and encode the result as JSON-ready data."""
    result = model.generate(
        query.prompts, n=query.n, seed=query.seed, size=query.size, stages=bool(query.stages)
    )
    return generated_payload(result)


def generated_payload(result: Generated) -> dict[str, Any]:
    """The JSON answer of ``POST /api/generate``."""
    payload: dict[str, Any] = {
        "seed": result.seed,
        "size": result.size,
        "captions": result.captions,
        "grid": data_url(result.grid),
        "images": [[data_url(frame) for frame in to_pixels(row)] for row in result.images],
    }
    if result.smaller:
        payload["stages"] = [
            {
                "size": int(output.shape[-1]),
                "images": [[data_url(frame) for frame in to_pixels(row)] for row in output],
            }
            for output in result.smaller
        ]
    return payload


def png_bytes(image: Image.Image | np.ndarray) -> bytes:
    """A PIL image or an (H, W, 3) uint8 array as PNG file bytes."""
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image, "RGB")
    buffer = io.BytesIO()
    # Level 1: 5x faster than the default 6 on generator output, about 15 % larger.
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def data_url(image: Image.Image | np.ndarray) -> str:
    """``data:image/png;base64,...`` of an image."""
    return "data:image/png;base64," + base64.b64encode(png_bytes(image)).decode("ascii")


def _runs_dir(app: FastAPI) -> Path:
    return app.state.runs_dir if app.state.runs_dir is not None else paths.runs_dir()


def _run_dir(app: FastAPI, name: str) -> Path:
    """The folder of run ``name``, which must be a direct sub-folder of the runs folder."""
    folder = _runs_dir(app)
    run_dir = folder / name
    if name in ("", ".", "..") or "/" in name or "\\" in name or not run_dir.is_dir():
        raise HTTPException(404, f"no run named {name!r} in {folder}")
    return run_dir


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _add_error_handlers(app: FastAPI) -> None:
    """Every refusal as ``{"error": "..."}``: ours, the library's, and the framework's."""

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return _error(exc.status, exc.message)

    @app.exception_handler(StackGANError)
    async def library_error(request: Request, exc: StackGANError) -> JSONResponse:
        return _error(422, str(exc))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse(
            {"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers
        )

    @app.exception_handler(Exception)
    async def server_error(request: Request, exc: Exception) -> JSONResponse:
        # Starlette still logs the traceback; the client gets a JSON line like any error.
        return _error(500, f"internal error: {type(exc).__name__}: {exc}")

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(part) for part in first.get("loc", ()))
        return _error(422, f"{where}: {first.get('msg', 'invalid')}" if where else first["msg"])
