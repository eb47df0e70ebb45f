"""Reading a ``POST /api/generate`` body: byte limit first, then JSON, then types and ranges.

Every problem is an :class:`ApiError` carrying the HTTP status and a one-line message that
names the field, which the app returns as ``{"error": "..."}``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from stackgan_cli.limits import MAX_SAMPLES

MAX_BODY_BYTES = 64 * 1024
"""Largest request body; bigger ones are refused (413) before they are parsed."""
MAX_PROMPTS = 16
"""Captions per request (grid rows)."""
MAX_IMAGES = MAX_SAMPLES
"""Images per request, all captions together (bounds memory and time per request)."""
MAX_PROMPT_CHARS = 2000
"""Longest caption in characters; the text encoder reads at most 96 tokens of it anyway."""
MAX_SEED = 2**32 - 2
"""Largest seed, as for the ``--seed`` option."""
MAX_WAITING_REQUESTS = 4
"""Generate requests that may wait for the device behind the one generating; more are refused
(503) at once rather than queued for minutes, each holding a worker thread."""
BODY_TIMEOUT_S = 10.0
"""Seconds a client has to send the whole request body; a slower one is refused (408)."""


class ApiError(Exception):
    """A request the server refuses: ``status`` (4xx) and a one-line ``message``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class GenerateRequest(BaseModel):
    """The body of ``POST /api/generate``. Types are strict: ``"8"`` is not a number."""

    model_config = ConfigDict(extra="forbid", strict=True)

    prompts: list[str] = Field(min_length=1, max_length=MAX_PROMPTS)
    n: int = Field(default=8, ge=1, le=MAX_SAMPLES)
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED)
    size: int | None = None
    stages: bool | None = None
    attention: bool | None = None


def limits() -> dict[str, int]:
    """The request limits, as ``GET /api/health`` reports them."""
    return {
        "max_prompts": MAX_PROMPTS,
        "max_n": MAX_SAMPLES,
        "max_images": MAX_IMAGES,
        "max_prompt_chars": MAX_PROMPT_CHARS,
        "max_body_bytes": MAX_BODY_BYTES,
        "max_waiting_requests": MAX_WAITING_REQUESTS,
    }


async def read_body(
    headers: dict[str, str] | Any,
    chunks: AsyncIterator[bytes],
    limit: int = MAX_BODY_BYTES,
    timeout: float | None = None,
) -> bytes:
    """The request body, refusing (413) a declared or actual size over ``limit`` without
    reading further, and (408) a body that takes longer than ``timeout`` seconds (default
    :data:`BODY_TIMEOUT_S`) to arrive."""
    timeout = BODY_TIMEOUT_S if timeout is None else timeout
    try:
        with anyio.fail_after(timeout):
            return await _read_chunks(headers, chunks, limit)
    except TimeoutError:
        raise ApiError(
            408, f"the request body did not arrive within {timeout:g} s; send it at once"
        ) from None


async def _read_chunks(
    headers: dict[str, str] | Any, chunks: AsyncIterator[bytes], limit: int
) -> bytes:
    declared = headers.get("content-length")
    if declared is not None and declared.strip().isdigit() and int(declared) > limit:
        raise ApiError(
            413, f"the request body has {int(declared)} bytes; at most {limit} bytes are accepted"
        )
    body = bytearray()
    async for chunk in chunks:
        body += chunk
        if len(body) > limit:
            raise ApiError(
                413, f"the request body has over {limit} bytes; at most {limit} bytes are accepted"
            )
    return bytes(body)


def parse_generate_request(content_type: str | None, body: bytes) -> GenerateRequest:
    """Check the content type, parse the JSON and validate it (415, 400 or 422 on error)."""
    media_type = (content_type or "").split(";")[0].strip().lower()
    if media_type != "application/json":
        raise ApiError(415, "send the request as JSON (Content-Type: application/json)")
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise ApiError(400, f"the request body is not valid JSON ({_short(exc)})") from None
    if not isinstance(data, dict):
        raise ApiError(422, 'the request must be a JSON object such as {"prompts": ["a red bird"]}')
    try:
        request = GenerateRequest.model_validate(data)
    except ValidationError as exc:
        raise ApiError(422, validation_message(exc)) from None
    for index, prompt in enumerate(request.prompts):
        if not prompt.strip():
            raise ApiError(422, f"prompts[{index}] is empty: give a sentence such as 'a red bird'")
        try:
            prompt.encode("utf-8")
        except UnicodeEncodeError as exc:
            # The JSON escape \ud800 decodes to a lone surrogate: no UTF-8 answer can hold it.
            raise ApiError(
                422,
                f"prompts[{index}] is not valid Unicode: a lone surrogate "
                f"U+{ord(prompt[exc.start]):04X} at character {exc.start}",
            ) from None
        if len(prompt) > MAX_PROMPT_CHARS:
            raise ApiError(
                422,
                f"prompts[{index}] has {len(prompt)} characters; at most {MAX_PROMPT_CHARS}",
            )
    images = len(request.prompts) * request.n
    if images > MAX_IMAGES:
        raise ApiError(
            422,
            f"{len(request.prompts)} prompts x n {request.n} = {images} images; at most "
            f"{MAX_IMAGES} per request",
        )
    return request


def validation_message(exc: ValidationError) -> str:
    """The first problem pydantic found, as ``field: message`` (``prompts[2]: ...``)."""
    error = exc.errors(include_url=False, include_input=False)[0]
    where = ""
    for part in error["loc"]:
        where += f"[{part}]" if isinstance(part, int) else (f".{part}" if where else str(part))
    if error["type"] == "missing":
        message = "is missing"
    elif error["type"] == "extra_forbidden":
        message = "is not a known field (known: prompts, n, seed, size, stages)"
    else:
        message = error["msg"][:1].lower() + error["msg"][1:]
    return f"{where or 'request'}: {message}"


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 120 else text[:117] + "..."
