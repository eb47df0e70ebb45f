"""Downloading upstream artifacts: resumable, retried, verified, and renamed into place whole.

A download streams into ``NAME.part``; an interrupted one resumes from there with an HTTP
``Range`` request. Only a complete file that matches its known checksums is renamed to ``NAME``,
so a file under its final name is always whole.
"""

import os
import re
import time
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin

import requests

from stackgan_cli import __version__
from stackgan_cli.console import download_progress, info, warn
from stackgan_cli.data.sources import Artifact, mirror_base, resolve_url
from stackgan_cli.errors import StackGANError
from stackgan_cli.fsutil import file_hashes, fsync_dir

# Read size for the network: a cut connection loses what urllib3 had buffered of the current
# chunk, so keep it small enough that a resume starts close to where the cut happened.
STREAM_CHUNK_BYTES = 1 << 16
TIMEOUT = (15, 60)  # seconds to connect, and seconds allowed between two reads
MAX_BACKOFF = 60.0  # seconds; caps the exponential wait between attempts
MAX_DRIVE_HOPS = 3  # confirmation pages Google Drive may put in front of a file

_CONTENT_RANGE = re.compile(r"bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)")

Report = Callable[[int, int | None], None]  # (bytes done, total bytes if known)


class _Transient(Exception):
    """A failure worth another attempt (server error, cut connection); the ``.part`` stays."""


_RETRYABLE = (
    _Transient,
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,  # the connection was cut mid-body
)


def describe_mismatch(path: Path, artifact: Artifact) -> str | None:
    """Why ``path`` is not ``artifact`` (its size, MD5 or SHA-256 differs from the known value),
    or ``None`` when nothing known contradicts it. Values that are unknown are not checked."""
    path = Path(path)
    size = path.stat().st_size
    if artifact.size is not None and size != artifact.size:
        return f"is {size:,} bytes, expected {artifact.size:,}"
    expected = {"md5": artifact.md5, "sha256": artifact.sha256}
    expected = {algorithm: digest.lower() for algorithm, digest in expected.items() if digest}
    actual = file_hashes(path, expected)
    for algorithm, digest in expected.items():
        if actual[algorithm] != digest:
            return f"has {algorithm.upper()} {actual[algorithm]}, expected {digest}"
    return None


def verify_file(path: Path, artifact: Artifact) -> bool:
    """True when ``path`` is a file whose size and checksums match what is known of
    ``artifact`` (an artifact with no known size or checksum matches any existing file)."""
    path = Path(path)
    return path.is_file() and describe_mismatch(path, artifact) is None


def fetch(
    artifact: Artifact,
    dest_dir: Path,
    *,
    mirror: str | None = None,
    verify: bool = True,
    session: requests.Session | None = None,
    retries: int = 5,
    backoff: float = 1.0,
) -> Path:
    """Download ``artifact`` to ``dest_dir/NAME`` and return that path.

    A file already there that verifies is returned without touching the network. Otherwise the
    download resumes from ``NAME.part`` if one exists, retries connection errors, timeouts, cut
    connections and 5xx answers up to ``retries`` times (waiting ``backoff * 2**attempt``
    seconds), checks the result against the artifact's known size and checksums, and renames
    it into place. A mismatch deletes the file and raises ``StackGANError``; with
    ``verify=False`` it only warns and keeps the file. ``mirror`` (else ``$STACKGAN_MIRROR``)
    replaces the upstream base URL; Google Drive's confirmation flow applies only upstream.

    Example: ``fetch(ARTIFACTS["CUB_200_2011.tgz"], paths.downloads_dir())``
    """
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    final = dest_dir / artifact.name
    if final.is_file():
        problem = describe_mismatch(final, artifact)
        if problem is None:
            return final
        if not verify:
            warn(f"{final} {problem}; using it anyway because verification is off")
            return final
        info(f"{final} {problem}; downloading it again")
        final.unlink()

    url = resolve_url(artifact, mirror)
    part = dest_dir / f"{artifact.name}.part"
    drive = artifact.drive_id is not None and mirror_base(mirror) is None
    own_session = session is None
    session = session or _new_session()
    try:
        _download_with_retries(session, url, part, artifact, drive, retries, backoff)
    finally:
        if own_session:
            session.close()

    problem = describe_mismatch(part, artifact)
    if problem is not None:
        if verify:
            part.unlink()
            raise StackGANError(
                f"{artifact.name} downloaded from {url} {problem}; the bad file was deleted "
                "(pass --no-verify to accept a repacked archive)"
            )
        warn(f"{artifact.name} from {url} {problem}; keeping it because verification is off")
    os.replace(part, final)
    fsync_dir(dest_dir)
    return final


def _new_session() -> requests.Session:
    session = requests.Session()
    session.headers["User-Agent"] = f"stackgan-cli/{__version__}"
    return session


def _download_with_retries(
    session: requests.Session,
    url: str,
    part: Path,
    artifact: Artifact,
    drive: bool,
    retries: int,
    backoff: float,
) -> None:
    with download_progress() as progress:
        task = progress.add_task(artifact.name, total=artifact.size)

        def report(done: int, total: int | None) -> None:
            progress.update(task, completed=done, total=total)

        for attempt in range(retries + 1):
            try:
                _download_once(session, url, part, artifact, drive, report)
                return
            except _RETRYABLE as exc:
                reason = _describe_failure(exc)
                if attempt == retries:
                    raise StackGANError(
                        f"could not download {url}: {reason} (gave up after {retries + 1} "
                        "attempts; run the command again to resume)"
                    ) from exc
                delay = min(backoff * 2**attempt, MAX_BACKOFF)
                info(f"{artifact.name}: {reason}; retrying in {delay:.0f} s")
                time.sleep(delay)
            except requests.RequestException as exc:  # a bad URL, TLS trouble, too many redirects
                raise StackGANError(f"could not download {url}: {exc}") from exc


def _describe_failure(exc: Exception) -> str:
    if isinstance(exc, _Transient):
        return str(exc)
    if isinstance(exc, requests.Timeout):
        return "the server stopped answering (timeout)"
    if isinstance(exc, requests.exceptions.ChunkedEncodingError):
        return "the connection was cut mid-download"
    return "could not connect"


def _download_once(
    session: requests.Session,
    url: str,
    part: Path,
    artifact: Artifact,
    drive: bool,
    report: Report,
) -> None:
    """One attempt: request the rest of the file and append it to ``part``."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"Accept-Encoding": "identity"}  # byte offsets must be those of the file itself
    if offset:
        headers["Range"] = f"bytes={offset}-"
    with _open(session, url, headers, drive, artifact.name) as response:
        status = response.status_code
        if status == 416 and offset:
            _, total = _content_range(response)
            if offset == (total if total is not None else artifact.size):
                report(offset, offset)  # the .part already holds the whole file
                return
            part.unlink()
            raise _Transient("the server refused to resume; starting over")
        if status >= 500:
            raise _Transient(f"the server answered HTTP {status}")
        if status not in (200, 206):
            raise StackGANError(f"downloading {response.url} failed: HTTP {status}")
        length = _int_header(response, "Content-Length")
        if status == 206:
            start, total = _content_range(response)
            if start != offset:
                part.unlink()
                raise _Transient("the server resumed at the wrong offset; starting over")
            if total is None and length is not None:
                total = offset + length
            mode = "ab"
        else:  # a full answer: the server ignored the range, so start from zero
            offset, total, mode = 0, length, "wb"
        _stream_to(response, part, mode, offset, total, report)


def _stream_to(
    response: requests.Response,
    part: Path,
    mode: str,
    offset: int,
    total: int | None,
    report: Report,
) -> None:
    written = offset
    report(written, total)
    with open(part, mode) as handle:
        for chunk in response.iter_content(STREAM_CHUNK_BYTES):
            handle.write(chunk)
            written += len(chunk)
            report(written, total)
        handle.flush()
        os.fsync(handle.fileno())
    if total is not None and written != total:
        if written > total:
            part.unlink()
        raise _Transient(f"the connection closed after {written:,} of {total:,} bytes")


def _int_header(response: requests.Response, name: str) -> int | None:
    value = response.headers.get(name, "")
    return int(value) if value.isdigit() else None


def _content_range(response: requests.Response) -> tuple[int | None, int | None]:
    """(first byte, total size) from ``Content-Range``; either is ``None`` when not given."""
    match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
    if match is None:
        return None, None
    start = int(match[1]) if match[1] else None
    total = int(match[2]) if match[2] != "*" else None
    return start, total


def _get(session: requests.Session, url: str, headers: dict, params=None) -> requests.Response:
    return session.get(url, headers=headers, params=params, stream=True, timeout=TIMEOUT)


def _open(
    session: requests.Session, url: str, headers: dict, drive: bool, name: str
) -> requests.Response:
    """GET ``url``; for a Google Drive file, get past the confirmation page Drive shows
    instead of large files ("can't scan this file for viruses")."""
    response = _get(session, url, headers)
    hops = 0
    while drive and response.status_code == 200 and _is_html(response):
        page, page_url = response.text, response.url
        cookies = dict(response.cookies.items())
        response.close()
        target = _drive_confirmation(page, page_url, cookies)
        if target is None or hops == MAX_DRIVE_HOPS:
            raise StackGANError(
                f"Google Drive answered with a web page instead of {name} (download quota "
                "exceeded, or the file is no longer shared); download it in a browser and pass "
                "its folder with --source-dir, or set STACKGAN_MIRROR"
            )
        hops += 1
        response = _get(session, target[0], headers, params=target[1])
    return response


def _is_html(response: requests.Response) -> bool:
    return response.headers.get("Content-Type", "").lower().startswith("text/html")


class _ConfirmationPage(HTMLParser):
    """Collects a page's forms (action and hidden fields) and links that carry ``confirm=``."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[tuple[str, dict[str, str]]] = []
        self.links: list[str] = []
        self._in_form = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {key: value or "" for key, value in attrs}
        if tag == "form":
            self.forms.append((attributes.get("action", ""), {}))
            self._in_form = True
        elif tag == "input" and self._in_form and attributes.get("type", "").lower() == "hidden":
            if attributes.get("name"):
                self.forms[-1][1][attributes["name"]] = attributes.get("value", "")
        elif tag == "a" and "confirm=" in attributes.get("href", ""):
            self.links.append(attributes["href"])

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._in_form = False


def _drive_confirmation(
    page: str, page_url: str, cookies: dict[str, str]
) -> tuple[str, dict[str, str] | None] | None:
    """Where Drive's confirmation page leads: (URL, query parameters), or ``None`` if the page
    offers no download. Current Drive pages submit a form (``id``, ``export``, ``confirm``,
    ``uuid``) to drive.usercontent.google.com; older ones set a ``download_warning*`` cookie
    whose value is the ``confirm`` token, or link to ``...&confirm=TOKEN``."""
    parser = _ConfirmationPage()
    parser.feed(page)
    parser.close()
    for action, fields in parser.forms:
        if "confirm" in fields:
            return urljoin(page_url, action), fields
    for cookie, value in cookies.items():
        if cookie.startswith("download_warning"):
            return page_url, {"confirm": value}
    if parser.links:
        return urljoin(page_url, parser.links[0]), None
    return None
