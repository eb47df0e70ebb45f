"""Running the page: check the optional extra and the address, load the model, run uvicorn.

Kept free of FastAPI and uvicorn imports at module level, so that without the ``serve`` extra
``stackgan serve`` can say how to install it instead of failing on an import.
"""

from __future__ import annotations

import importlib
import ipaddress
import socket
from pathlib import Path
from typing import Any

from stackgan_cli.console import info, warn
from stackgan_cli.errors import StackGANError

EXTRA_HINT = 'pip install "stackgan-cli[serve]"'
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")

HEADER_TIMEOUT_S = 10.0
"""Seconds a connection may wait for its next request head (after it opened or after its last
answer) before it is closed; a client sending half a header and then dripping cannot hold it."""
KEEP_ALIVE_S = 5
"""Seconds an idle keep-alive connection stays open (uvicorn's ``timeout_keep_alive``)."""
MAX_IDLE_CONNECTIONS = 32
"""Connections waiting for a request head; a new one closes the longest waiting beyond this."""
MAX_CONNECTIONS = 128
"""Connections and requests at once (uvicorn's ``limit_concurrency``); past it requests get 503."""
MAX_HEAD_BYTES = 16 * 1024
"""Largest request line plus headers (uvicorn's ``h11_max_incomplete_event_size``)."""


def require_extra() -> None:
    """Raise StackGANError naming the install command if FastAPI or uvicorn is missing."""
    for module in ("fastapi", "uvicorn"):
        try:
            importlib.import_module(module)
        except ImportError:
            raise StackGANError(
                f"`stackgan serve` needs the optional web packages ({module} is not installed): "
                f"{EXTRA_HINT}"
            ) from None


def is_loopback(host: str) -> bool:
    """Whether ``host`` is only reachable from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def page_url(host: str, port: int) -> str:
    """The address to open: a wildcard host is opened through the loopback."""
    shown = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    if ":" in shown:
        shown = f"[{shown}]"
    return f"http://{shown}:{port}/"


def check_address(host: str, port: int) -> None:
    """Fail early, with the option to change, if ``host:port`` cannot be bound."""
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise StackGANError(f"--host {host}: not an address of this machine ({exc})") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            raise StackGANError(
                f"cannot listen on {host}:{port} ({exc.strerror or exc}): pick another --port"
            ) from None


def uvicorn_options(header_timeout: float = HEADER_TIMEOUT_S) -> dict[str, Any]:
    """The connection limits ``stackgan serve`` gives uvicorn (keyword arguments of
    ``uvicorn.run`` and ``uvicorn.Config``): the guarded HTTP/1.1 protocol with
    ``header_timeout``, no WebSockets (no route uses them), at most :data:`MAX_CONNECTIONS`
    at once, :data:`KEEP_ALIVE_S` keep-alive and :data:`MAX_HEAD_BYTES` of request head."""
    from stackgan_cli.serve.connections import guarded_protocol

    return {
        "http": guarded_protocol(header_timeout, MAX_IDLE_CONNECTIONS),
        "ws": "none",
        "limit_concurrency": MAX_CONNECTIONS,
        "timeout_keep_alive": KEEP_ALIVE_S,
        "h11_max_incomplete_event_size": MAX_HEAD_BYTES,
    }


def serve(
    ckpt: Path | None,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    device: str = "auto",
    text_encoder: str | Path | None = None,
    damsm: str | Path | None = None,
    vocabulary: str | Path | None = None,
):
    """Everything ``stackgan serve`` does: load the generator once (with ``text_encoder``, see
    ``--text-encoder``, or for AttnGAN files ``damsm`` and its ``vocabulary``, replacing its
    own), print the URL and serve until Ctrl-C."""
    require_extra()
    import uvicorn

    from stackgan_cli.serve.app import create_app

    check_address(host, port)
    loopback = is_loopback(host)
    # On the loopback only requests naming this machine are answered (DNS rebinding).
    allowed = [*LOOPBACK_NAMES, "[::1]", host] if loopback else None
    app = create_app(
        ckpt,
        device=device,
        allowed_hosts=allowed,
        text_encoder=text_encoder,
        damsm=damsm,
        vocabulary=vocabulary,
    )
    model = app.state.model.describe()
    info(f"serving {model['path']} ({model['label']}, {model['device']})")
    if not loopback:
        warn(
            f"--host {host}: the page is reachable from the network; anyone who can reach "
            "this machine can use it"
        )
    info(f"open {page_url(host, port)}  (Ctrl-C stops)")
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level="warning",
        timeout_graceful_shutdown=5,
        **uvicorn_options(),
    )
    info("stopped")
