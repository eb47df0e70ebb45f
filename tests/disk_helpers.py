"""Real small disks for tests: tmpfs mounts (Linux, root), used by tests that fill a disk."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest


def mount_command(*args: str) -> subprocess.CompletedProcess:
    """``mount ARGS``, its output captured."""
    return subprocess.run(["mount", *args], capture_output=True, text=True, timeout=60)


def unmount(path: Path) -> None:
    """Unmount ``path`` (lazily when it is busy)."""
    if subprocess.run(["umount", str(path)], capture_output=True, timeout=60).returncode:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=60)


@pytest.fixture
def tmpfs(request):
    """``mount(path, size)``: a fresh tmpfs of ``size`` bytes at ``path`` (created), unmounted
    when the test ends; skips the test where mounting is not permitted."""

    def mount(path: Path, size: int) -> Path:
        if sys.platform != "linux" or shutil.which("mount") is None:
            pytest.skip("a real full disk needs tmpfs mounts (Linux with mount(8))")
        path.mkdir(parents=True, exist_ok=True)
        result = mount_command("-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path))
        if result.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs (needs root): {result.stderr.strip()}")
        request.addfinalizer(lambda: unmount(path))
        return path

    return mount
