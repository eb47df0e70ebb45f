"""Downloads over real HTTP from a local server: resume, retries, checksums, Drive, mirrors."""

import hashlib
import random

import pytest
from http_server import LocalHTTPServer, PageRoute

from stackgan_cli.data.download import fetch, verify_file
from stackgan_cli.data.sources import ARTIFACTS, Artifact, resolve_url
from stackgan_cli.errors import StackGANError

DATA = random.Random(0).randbytes(300_000)
DRIVE_ID = "0B3y_testfile"


@pytest.fixture
def server():
    with LocalHTTPServer() as running:
        yield running


def artifact_for(url: str, data: bytes = DATA, **overrides) -> Artifact:
    fields = {
        "name": "archive.tgz",
        "url": url,
        "md5": hashlib.md5(data).hexdigest(),
        "sha256": hashlib.sha256(data).hexdigest(),
        "size": len(data),
    }
    return Artifact(**{**fields, **overrides})


def get(artifact, dest, **kwargs):
    return fetch(artifact, dest, backoff=0.0, **kwargs)


def test_full_download_is_verified_and_renamed_into_place(server, tmp_path):
    server.add_file("/files/archive.tgz", DATA)
    path = get(artifact_for(server.url("/files/archive.tgz")), tmp_path)
    assert path == tmp_path / "archive.tgz"
    assert path.read_bytes() == DATA
    assert sorted(p.name for p in tmp_path.iterdir()) == ["archive.tgz"]
    assert len(server.requests) == 1
    assert "Range" not in server.requests[0].headers


def test_resumes_with_range_after_a_cut_mid_file(server, tmp_path):
    server.add_file("/archive.tgz", DATA, cut_after=200_000)
    path = get(artifact_for(server.url("/archive.tgz")), tmp_path)
    assert path.read_bytes() == DATA
    assert len(server.requests) == 2
    assert "Range" not in server.requests[0].headers
    # It resumes from what reached the disk: all but the last partly read network chunk.
    start = int(server.requests[1].headers["Range"].removeprefix("bytes=").removesuffix("-"))
    assert 200_000 - 65_536 <= start <= 200_000


def test_resumes_an_existing_part_file(server, tmp_path):
    server.add_file("/archive.tgz", DATA)
    (tmp_path / "archive.tgz.part").write_bytes(DATA[:1234])
    path = get(artifact_for(server.url("/archive.tgz")), tmp_path)
    assert path.read_bytes() == DATA
    assert server.requests[0].headers["Range"] == "bytes=1234-"


def test_restarts_from_zero_when_the_server_ignores_range(server, tmp_path):
    server.add_file("/archive.tgz", DATA, ignore_range=True)
    (tmp_path / "archive.tgz.part").write_bytes(b"x" * 5000)  # would corrupt an append
    path = get(artifact_for(server.url("/archive.tgz")), tmp_path)
    assert path.read_bytes() == DATA
    assert server.requests[0].headers["Range"] == "bytes=5000-"


def test_a_complete_part_answered_416_is_used(server, tmp_path):
    server.add_file("/archive.tgz", DATA)
    (tmp_path / "archive.tgz.part").write_bytes(DATA)
    path = get(artifact_for(server.url("/archive.tgz")), tmp_path)
    assert path.read_bytes() == DATA
    assert len(server.requests) == 1


def test_an_oversized_part_answered_416_restarts(server, tmp_path):
    server.add_file("/archive.tgz", DATA)
    (tmp_path / "archive.tgz.part").write_bytes(DATA + b"junk")
    path = get(artifact_for(server.url("/archive.tgz")), tmp_path)
    assert path.read_bytes() == DATA
    assert "Range" not in server.requests[-1].headers


def test_md5_mismatch_deletes_the_file_and_says_so(server, tmp_path):
    server.add_file("/archive.tgz", DATA)
    artifact = artifact_for(server.url("/archive.tgz"), md5="0" * 32, sha256=None)
    with pytest.raises(StackGANError, match="MD5.*deleted"):
        get(artifact, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_sha256_mismatch_is_caught_too(server, tmp_path):
    server.add_file("/archive.tgz", DATA)
    artifact = artifact_for(server.url("/archive.tgz"), md5=None, sha256="f" * 64)
    with pytest.raises(StackGANError, match="SHA256"):
        get(artifact, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_no_verify_warns_and_keeps_a_mismatching_file(server, tmp_path, capsys):
    server.add_file("/archive.tgz", DATA)
    artifact = artifact_for(server.url("/archive.tgz"), md5="0" * 32)
    path = get(artifact, tmp_path, verify=False)
    assert path.read_bytes() == DATA
    assert "warning" in capsys.readouterr().err
    # The kept file is used again as is, still with a warning and no download.
    assert get(artifact, tmp_path, verify=False) == path
    assert "warning" in capsys.readouterr().err
    assert len(server.requests) == 1


def test_5xx_answers_are_retried_until_success(server, tmp_path):
    server.add_file("/archive.tgz", DATA, fail_times=2, fail_status=503)
    path = get(artifact_for(server.url("/archive.tgz")), tmp_path)
    assert path.read_bytes() == DATA
    assert len(server.requests) == 3


def test_gives_up_after_the_retries(server, tmp_path):
    server.add_file("/archive.tgz", DATA, fail_times=10, fail_status=500)
    with pytest.raises(StackGANError, match=r"HTTP 500.*3 attempts"):
        get(artifact_for(server.url("/archive.tgz")), tmp_path, retries=2)
    assert len(server.requests) == 3
    assert not (tmp_path / "archive.tgz").exists()


def test_a_4xx_answer_fails_at_once_naming_url_and_status(server, tmp_path):
    url = server.url("/missing.tgz")
    with pytest.raises(StackGANError, match=f"{url}.*HTTP 404"):
        get(artifact_for(url), tmp_path)
    assert len(server.requests) == 1


def test_an_unreachable_server_is_a_clear_error(tmp_path):
    with LocalHTTPServer() as stopped:
        url = stopped.url("/archive.tgz")
    with pytest.raises(StackGANError, match="could not connect"):
        get(artifact_for(url), tmp_path, retries=1)


@pytest.mark.parametrize("variant", ["form", "cookie"])
def test_google_drive_confirmation_flow(server, tmp_path, variant):
    url = server.add_drive_file(DRIVE_ID, DATA, variant=variant, confirm="Xy-9", uuid="u-123")
    artifact = artifact_for(url, md5=None, sha256=None, size=None, drive_id=DRIVE_ID)
    path = get(artifact, tmp_path)
    assert path.read_bytes() == DATA
    assert len(server.requests) == 2
    first, second = server.requests
    assert (first.path, first.query) == ("/uc", {"export": "download", "id": DRIVE_ID})
    if variant == "form":
        expected = {"id": DRIVE_ID, "export": "download", "confirm": "Xy-9", "uuid": "u-123"}
        assert (second.path, second.query) == ("/download", expected)
    else:
        assert (second.path, second.query["confirm"]) == ("/uc", "Xy-9")


def test_a_drive_page_without_a_download_is_a_clear_error(server, tmp_path):
    server.routes["/uc"] = PageRoute("<html><body>Quota exceeded</body></html>")
    url = server.url(f"/uc?export=download&id={DRIVE_ID}")
    artifact = artifact_for(url, md5=None, sha256=None, size=None, drive_id=DRIVE_ID)
    with pytest.raises(StackGANError, match="Google Drive.*--source-dir"):
        get(artifact, tmp_path)
    assert not (tmp_path / "archive.tgz").exists()


def test_mirror_argument_replaces_the_upstream_base(server, tmp_path):
    server.add_file("/mirror/archive.tgz", DATA)
    artifact = artifact_for("https://upstream.invalid/files/archive.tgz")
    path = get(artifact, tmp_path, mirror=server.url("/mirror/"))
    assert path.read_bytes() == DATA
    assert server.paths_requested() == ["/mirror/archive.tgz"]


def test_stackgan_mirror_env_replaces_the_base_and_skips_the_drive_flow(
    server, tmp_path, monkeypatch
):
    server.add_file("/m/archive.tgz", DATA)
    monkeypatch.setenv("STACKGAN_MIRROR", server.url("/m"))
    artifact = artifact_for("https://drive.invalid/uc?id=x", drive_id="x")
    path = get(artifact, tmp_path)
    assert path.read_bytes() == DATA
    assert server.paths_requested() == ["/m/archive.tgz"]


def test_a_present_verified_file_needs_no_request(server, tmp_path):
    (tmp_path / "archive.tgz").write_bytes(DATA)
    path = get(artifact_for(server.url("/archive.tgz")), tmp_path)
    assert path.read_bytes() == DATA
    assert server.requests == []


def test_a_present_file_that_fails_verification_is_downloaded_again(server, tmp_path):
    server.add_file("/archive.tgz", DATA)
    (tmp_path / "archive.tgz").write_bytes(bytes(len(DATA)))  # right size, wrong bytes
    path = get(artifact_for(server.url("/archive.tgz")), tmp_path)
    assert path.read_bytes() == DATA
    assert len(server.requests) == 1


def test_verify_file(tmp_path):
    path = tmp_path / "archive.tgz"
    path.write_bytes(DATA)
    assert verify_file(path, artifact_for("u"))
    assert not verify_file(path, artifact_for("u", md5="0" * 32))
    assert not verify_file(path, artifact_for("u", size=len(DATA) + 1))
    assert verify_file(path, Artifact("archive.tgz", "u"))  # nothing known: any file matches
    assert not verify_file(tmp_path / "absent.tgz", artifact_for("u"))


def test_resolve_url(monkeypatch):
    cub = ARTIFACTS["CUB_200_2011.tgz"]
    assert resolve_url(cub) == cub.url
    assert resolve_url(cub, "http://m.example/data/") == "http://m.example/data/CUB_200_2011.tgz"
    monkeypatch.setenv("STACKGAN_MIRROR", "http://env.example")
    assert resolve_url(cub) == "http://env.example/CUB_200_2011.tgz"
    assert resolve_url(cub, "http://arg.example") == "http://arg.example/CUB_200_2011.tgz"


def test_manifest():
    cub, birds = ARTIFACTS["CUB_200_2011.tgz"], ARTIFACTS["birds.zip"]
    assert cub.url == "https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz"
    assert (cub.md5, cub.size) == ("97eceeb196236b17998738112f37df78", 1150585339)
    assert birds.drive_id == "0B3y_msrWZaXLT1BZdVdycDY5TEE"
    assert birds.url == f"https://drive.google.com/uc?export=download&id={birds.drive_id}"
    assert (birds.md5, birds.sha256, birds.size) == (None, None, None)
