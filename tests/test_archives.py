"""Safe extraction: normal archives unpack; unsafe members and damaged archives are refused."""

import io
import stat
import tarfile
import zipfile

import pytest

from stackgan_cli.data.archives import safe_extract
from stackgan_cli.errors import StackGANError

FILES = {
    "CUB_200_2011/images.txt": b"1 001.Black_footed_Albatross/a.jpg\n",
    "CUB_200_2011/images/001.Black_footed_Albatross/a.jpg": bytes(range(256)) * 40,
    "attributes.txt": b"1 has_bill_shape::curved\n",
}


def make_tar(path, files=FILES, extra=()):
    """A .tgz (or .tar) holding ``files`` plus the TarInfo members in ``extra``."""
    mode = "w:gz" if path.name.endswith(("gz", "tgz")) else "w"
    with tarfile.open(path, mode) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for info in extra:
            tar.addfile(info, io.BytesIO(b"evil") if info.isfile() else None)
    return path


def make_zip(path, files=FILES, extra=()):
    """A .zip holding ``files`` plus the (ZipInfo, data) entries in ``extra``."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as bundle:
        for name, data in files.items():
            bundle.writestr(name, data)
        for info, data in extra:
            bundle.writestr(info, data)
    return path


def tar_member(name, kind=tarfile.REGTYPE, linkname=""):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    info.size = 4 if kind == tarfile.REGTYPE else 0
    return info


def unpacked(folder):
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()
    }


@pytest.mark.parametrize("suffix", [".tgz", ".tar.gz", ".tar", ".zip"])
def test_extracts_every_file(tmp_path, suffix):
    make = make_zip if suffix == ".zip" else make_tar
    archive = make(tmp_path / f"CUB_200_2011{suffix}")
    target = tmp_path / "raw"
    safe_extract(archive, target)
    assert unpacked(target) == FILES
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([archive.name, "raw"])


@pytest.mark.parametrize("suffix", [".tgz", ".zip"])
def test_root_unpacks_one_top_level_folder(tmp_path, suffix):
    make = make_zip if suffix == ".zip" else make_tar
    archive = make(tmp_path / f"a{suffix}")
    target = tmp_path / "raw" / "CUB_200_2011"
    safe_extract(archive, target, root="CUB_200_2011")
    assert set(unpacked(target)) == {"images.txt", "images/001.Black_footed_Albatross/a.jpg"}
    with pytest.raises(StackGANError, match="no top-level folder birds/"):
        safe_extract(archive, tmp_path / "raw" / "birds", root="birds")
    assert not (tmp_path / "raw" / "birds").exists()


def test_replaces_an_existing_target(tmp_path):
    target = tmp_path / "raw"
    (target / "stale").mkdir(parents=True)
    safe_extract(make_tar(tmp_path / "a.tgz"), target)
    assert unpacked(target) == FILES


def test_accepts_dot_slash_names(tmp_path):
    archive = make_tar(
        tmp_path / "a.tgz", {"./birds/x.txt": b"x"}, [tar_member("./", tarfile.DIRTYPE)]
    )
    safe_extract(archive, tmp_path / "raw", root="birds")
    assert unpacked(tmp_path / "raw") == {"x.txt": b"x"}


TAR_ATTACKS = {
    "../evil": tar_member("../evil"),
    "nested/../../evil": tar_member("CUB_200_2011/../../evil"),
    "absolute": tar_member("/tmp/evil"),
    "symlink": tar_member("CUB_200_2011/link", tarfile.SYMTYPE, "/etc/passwd"),
    "relative symlink": tar_member("CUB_200_2011/link", tarfile.SYMTYPE, "../../x"),
    "hardlink": tar_member("CUB_200_2011/hard", tarfile.LNKTYPE, "CUB_200_2011/images.txt"),
    "fifo": tar_member("CUB_200_2011/pipe", tarfile.FIFOTYPE),
    "device": tar_member("CUB_200_2011/dev", tarfile.CHRTYPE),
}


@pytest.mark.parametrize("attack", list(TAR_ATTACKS))
def test_refuses_unsafe_tar_members(tmp_path, attack):
    member = TAR_ATTACKS[attack]
    archive = make_tar(tmp_path / "a.tgz", extra=[member])
    target = tmp_path / "out" / "raw"
    with pytest.raises(StackGANError, match="refusing to unpack member") as caught:
        safe_extract(archive, target)
    assert repr(member.name) in str(caught.value)
    assert list((tmp_path / "out").iterdir()) == []  # neither target nor staging folder left
    assert not (tmp_path / "evil").exists()


def test_refuses_unsafe_members_outside_root_too(tmp_path):
    archive = make_tar(tmp_path / "a.tgz", extra=[tar_member("../evil")])
    with pytest.raises(StackGANError, match="'..'"):
        safe_extract(archive, tmp_path / "raw", root="CUB_200_2011")


def zip_member(name, mode=None):
    info = zipfile.ZipInfo(name)
    if mode is not None:
        info.create_system = 3  # Unix, so the mode bits below count
        info.external_attr = mode << 16
    return info


ZIP_ATTACKS = {
    "../evil": zip_member("../evil"),
    "backslash ..": zip_member("birds\\..\\..\\evil"),
    "absolute": zip_member("/tmp/evil"),
    "drive letter": zip_member("C:/evil"),
    "symlink": zip_member("birds/link", stat.S_IFLNK | 0o777),
    "fifo": zip_member("birds/pipe", stat.S_IFIFO | 0o644),
}


@pytest.mark.parametrize("attack", list(ZIP_ATTACKS))
def test_refuses_unsafe_zip_members(tmp_path, attack):
    member = ZIP_ATTACKS[attack]
    archive = make_zip(tmp_path / "birds.zip", extra=[(member, b"/etc/passwd")])
    target = tmp_path / "out" / "raw"
    with pytest.raises(StackGANError, match="refusing to unpack member"):
        safe_extract(archive, target)
    assert list((tmp_path / "out").iterdir()) == []
    assert not (tmp_path / "evil").exists()


def test_a_failed_extraction_keeps_the_previous_target(tmp_path):
    target = tmp_path / "raw"
    safe_extract(make_tar(tmp_path / "good.tgz"), target)
    with pytest.raises(StackGANError):
        safe_extract(make_tar(tmp_path / "bad.tgz", extra=[tar_member("../evil")]), target)
    assert unpacked(target) == FILES


@pytest.mark.parametrize("suffix", [".tgz", ".zip"])
def test_truncated_archive_is_a_clear_error(tmp_path, suffix):
    make = make_zip if suffix == ".zip" else make_tar
    archive = make(tmp_path / f"a{suffix}")
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    target = tmp_path / "out" / "raw"
    with pytest.raises(StackGANError, match="is truncated or corrupt"):
        safe_extract(archive, target)
    assert list((tmp_path / "out").iterdir()) == []


def test_corrupt_zip_member_is_a_clear_error(tmp_path):
    archive = make_zip(tmp_path / "a.zip", {"birds/x.bin": bytes(1000)}, ())
    raw = bytearray(archive.read_bytes())
    raw[43:47] = b"\xff\xff\xff\xff"  # inside the deflated data (it starts at byte 41)
    archive.write_bytes(bytes(raw))
    with pytest.raises(StackGANError, match="is truncated or corrupt"):
        safe_extract(archive, tmp_path / "raw")
    assert not (tmp_path / "raw").exists()


def test_missing_and_unsupported_archives(tmp_path):
    with pytest.raises(StackGANError, match="archive not found"):
        safe_extract(tmp_path / "absent.tgz", tmp_path / "raw")
    (tmp_path / "a.rar").write_bytes(b"x")
    with pytest.raises(StackGANError, match="unsupported archive type"):
        safe_extract(tmp_path / "a.rar", tmp_path / "raw")
