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
server itself, or 503 when the generation queue is full). Generation runs in a worker thread,
one request at a time per device, so the page and the other routes stay responsive while it
works; at most ``MAX_WAITING_REQUESTS`` wait behind it, and one whose client has gone when its
turn comes is skipped. The runs view serves only regular files that resolve inside the runs
folder (no symbolic link out of it), and its errors name the run, never a path.
"""

from __future__ import annotations

import base64
import io
import stat
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from anyio import from_thread
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
from stackgan_cli.runs.records import collect_runs
from stackgan_cli.serve.generation import ClientGone, Generated, LoadedGenerator, RequestQueue
from stackgan_cli.serve.validation import (
    MAX_WAITING_REQUESTS,
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
    app.state.queue = RequestQueue(MAX_WAITING_REQUESTS)
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
        queue: RequestQueue = app.state.queue

        def still_wanted() -> bool:
            # Asked from the worker thread; the disconnect is seen on the event loop.
            return not from_thread.run(request.is_disconnected)

        if not queue.enter():
            raise ApiError(
                503,
                f"the generator is busy: {queue.max_waiting} requests are already waiting; "
                "try again in a moment",
            )
        try:
            result = await run_in_threadpool(_generate, model, query, still_wanted)
        except ClientGone:
            return _error(499, "the client closed the connection before its turn")
        finally:
            queue.leave()
        return JSONResponse(result)

    @app.get("/api/runs")
    def runs() -> list[dict[str, Any]]:
        """The runs, newest first, as ``stackgan runs --json`` prints them."""
        folder = _runs_dir(app)
        return collect_runs(folder) if folder.is_dir() else []

    @app.get("/api/runs/{name}/sample.png")
    def run_sample(name: str) -> FileResponse:
        """The run's newest sample grid."""
        sample = newest_sample(_run_dir(app, name), _runs_dir(app))
        if sample is None:
            raise HTTPException(404, f"run {name} has no sample grid yet")
        return FileResponse(sample, media_type="image/png", headers={"Cache-Control": "no-cache"})

    @app.get("/api/runs/{name}/losses.png")
    def run_losses(name: str) -> Response:
        """The run's losses.png, or (while it trains) the same chart drawn from its metrics."""
        run_dir, runs_dir = _run_dir(app, name), _runs_dir(app)
        chart = servable_file(run_dir / "losses.png", runs_dir)
        if chart is not None:
            return FileResponse(
                chart, media_type="image/png", headers={"Cache-Control": "no-cache"}
            )
        from stackgan_cli.charts import draw_losses

        metrics = servable_file(run_dir / "metrics.jsonl", runs_dir)
        records = read_metrics(metrics) if metrics is not None else []
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


def _generate(
    model: LoadedGenerator, query: GenerateRequest, still_wanted: Callable[[], bool]
) -> dict[str, Any]:
    """Run the model (in a worker thread) and encode the result as JSON-ready data, unless
    ``still_wanted`` says the client has gone (ClientGone)."""
    result = model.generate(
        query.prompts,
        n=query.n,
        seed=query.seed,
        size=query.size,
        stages=bool(query.stages),
        attention=bool(query.attention),
        still_wanted=still_wanted,
    )
    if not still_wanted():  # gone while it generated: skip encoding the pictures
        raise ClientGone
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
    if result.attention is not None:
        payload["attention"] = [[data_url(figure) for figure in row] for row in result.attention]
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
    """The folder of run ``name``: a direct entry of the runs folder that is a folder inside
    it (a link to a folder elsewhere is not a run of this server). The 404 names the run
    only, never the runs folder's path."""
    folder = _runs_dir(app)
    run_dir = folder / name
    if name in ("", ".", "..") or "/" in name or "\\" in name:
        raise HTTPException(404, f"no run named {_shown(name)}")
    try:
        root = folder.resolve(strict=True)
        resolved = run_dir.resolve(strict=True)
        inside = resolved != root and resolved.is_relative_to(root) and resolved.is_dir()
    except (OSError, RuntimeError, ValueError):  # missing, name too long, a link loop, NUL
        inside = False
    if not inside:
        raise HTTPException(404, f"no run named {_shown(name)}")
    return run_dir


def _shown(name: str, limit: int = 80) -> str:
    """``name`` quoted for an error line, shortened when long."""
    return repr(name if len(name) <= limit else name[: limit - 3] + "...")


def servable_file(path: Path, runs_dir: Path) -> Path | None:
    """``path`` resolved, if it is a regular file inside ``runs_dir`` (following any links);
    None for a missing file, a folder, a FIFO or a link that leads out of the runs folder."""
    try:
        resolved = path.resolve(strict=True)
        if not resolved.is_relative_to(runs_dir.resolve(strict=True)):
            return None
        return resolved if stat.S_ISREG(resolved.stat().st_mode) else None
    except (OSError, RuntimeError, ValueError):
        return None


def newest_sample(run_dir: Path, runs_dir: Path) -> Path | None:
    """The run's newest servable sample grid, ``samples/epoch_NNNN.png`` with the largest
    epoch, skipping those :func:`servable_file` refuses."""
    try:
        grids = list((run_dir / "samples").glob("epoch_*.png"))
    except OSError:
        return None
    for grid in sorted(grids, key=_sample_order, reverse=True):
        servable = servable_file(grid, runs_dir)
        if servable is not None:
            return servable
    return None


def _sample_order(path: Path) -> tuple[int, str]:
    digits = path.stem.removeprefix("epoch_")
    return (int(digits) if digits.isascii() and digits.isdigit() else -1, path.name)


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
