"""Prepare throughput: `stackgan prepare coco` on a synthetic COCO-layout source, as JSON.

Builds a source in StackGAN-Pytorch's COCO layout (tests/prepare_helpers.py's ``build_coco``:
``--images`` generated 640x480 JPEGs, the size of most COCO images, in ``train2014.zip``, a few
test images in ``val2014.zip``, ``coco.zip`` with the split pickles, captions and 1024-d
embeddings, ``val_captions.t7``), then prepares it once per ``--workers`` value, each in a fresh
process with its own cache, from the archives (the zips read in place, as for the real COCO;
``--no-verify``, since they are not the published files; no text encoder). Prints one JSON
object per run: images, seconds spent on the images (decode, resize, write, checkpoints),
images/s, and peak resident memory: the high-water mark (VmHWM) of the preparing process, of its
largest worker and their sum, and ``ru_maxrss`` of the process and of its children (the
children's figure is inflated on Linux: see ``_WorkerPeaks``). With ``--workers 1`` the images
are decoded in the preparing process itself. Linux only (it reads /proc).

    python benchmarks/prepare_throughput.py --images 3000 --workers 1 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1] / "tests"


def build_source(folder: Path, images: int, test_images: int) -> dict:
    """The archives of a synthetic COCO source in ``folder``; what was built."""
    sys.path.insert(0, str(TESTS))
    from prepare_helpers import build_coco, pack_coco

    started = time.monotonic()
    layout = build_coco(
        folder / "layout", train=images, test=test_images, unlisted=0, size=(640, 480)
    )
    files = pack_coco(layout, folder / "archives")
    shutil.rmtree(folder / "layout")  # only the archives are read
    return {
        "train_images": images,
        "test_images": test_images,
        "image_size": [640, 480],
        "train2014_zip_bytes": files["train2014"].stat().st_size,
        "build_seconds": round(time.monotonic() - started, 1),
    }


def run_one(source: Path, workers: int) -> dict:
    """Prepare the source in this process (a fresh one per configuration) and measure it."""
    from stackgan_cli.data.prepare import prepare_coco

    sampler = _WorkerPeaks()
    sampler.start()
    cpu_started = time.process_time()
    try:
        result = prepare_coco(source_dir=source, verify=False, workers=workers, text_encoder=False)
    finally:
        sampler.stop.set()
        sampler.join()
    metadata = result.metadata
    images = sum(split["images"] for split in metadata["splits"].values())
    seconds = metadata["seconds"]["images"]
    return {
        "workers": workers,
        "images": images,
        "image_seconds": seconds,
        "images_per_second": round(images / seconds, 1),
        "total_seconds": round(result.seconds, 1),
        "peak_rss_mib": round(_high_water_kib("self") / 1024, 1),
        "peak_worker_rss_mib": round(max(sampler.peaks.values(), default=0) / 1024, 1),
        "peak_total_rss_mib": round(
            (_high_water_kib("self") + sum(sampler.peaks.values())) / 1024, 1
        ),
        "ru_maxrss_mib": _mib(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss),
        "ru_maxrss_children_mib": _mib(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss),
        "process_cpu_seconds": round(time.process_time() - cpu_started, 1),
        "prepared_bytes": metadata["bytes"],
    }


class _WorkerPeaks(threading.Thread):
    """Samples the resident high-water mark (VmHWM) of this process's children, the image
    workers, until ``stop`` is set: ``peaks`` maps each worker's pid to it, in KiB. (Their
    ``ru_maxrss`` is no use here: on Linux it starts from the parent's resident size at fork,
    so every worker would report at least what the parent held when the pool started.)"""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.stop = threading.Event()
        self.peaks: dict[int, int] = {}

    def run(self) -> None:
        while not self.stop.wait(0.05):
            for pid in _children():
                peak = _high_water_kib(str(pid))
                if peak:
                    self.peaks[pid] = max(peak, self.peaks.get(pid, 0))


def _children() -> list[int]:
    """The pids whose parent is this process (from /proc; Linux only)."""
    me, found = os.getpid(), []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and _status_field(entry.name, "PPid") == me:
            found.append(int(entry.name))
    return found


def _high_water_kib(pid: str) -> int:
    """VmHWM of a process (``self`` or a pid) in KiB; 0 when it is gone."""
    return _status_field(pid, "VmHWM")


def _status_field(pid: str, name: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{name}:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _mib(maxrss: int) -> float:
    # ru_maxrss is in KiB on Linux, bytes on macOS
    scale = 1 if sys.platform == "darwin" else 1024
    return round(maxrss * scale / 2**20, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=3000, help="training images to generate")
    parser.add_argument("--test-images", type=int, default=100)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    # internal: build the source, or run one measured prepare, each in a process of its own
    parser.add_argument("--build", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--run", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.build is not None:
        print(json.dumps(build_source(args.build, args.images, args.test_images)))
        return
    if args.run is not None:
        print(json.dumps(run_one(args.run, args.workers[0])))
        return

    # This process stays small and starts every step as a fresh process: on Linux a child's
    # ru_maxrss starts from its parent's resident size at fork, so building the source here
    # (the builders import torch) would inflate every measurement after it.
    with tempfile.TemporaryDirectory(prefix="prepare-bench-") as tmp:
        tmp_path = Path(tmp)
        sizes = ["--images", str(args.images), "--test-images", str(args.test_images)]
        built = _child(["--build", str(tmp_path), *sizes], os.environ)
        print(json.dumps({"source": built, "machine": _machine()}), flush=True)
        for workers in args.workers:
            home = tmp_path / f"home-{workers}"
            load_before = os.getloadavg()[0]
            record = _child(
                ["--run", str(tmp_path / "archives"), "--workers", str(workers)],
                {**os.environ, "STACKGAN_HOME": str(home)},
            )
            record["load_average_before"] = round(load_before, 2)
            record["load_average_after"] = round(os.getloadavg()[0], 2)
            print(json.dumps(record), flush=True)
            shutil.rmtree(home)


def _child(args: list[str], env) -> dict:
    """Run this script with ``args`` in a new process; the JSON object it printed last."""
    output = subprocess.run(
        [sys.executable, __file__, *args], env=env, check=True, capture_output=True, text=True
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def _machine() -> dict:
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count()
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cores": cores,
        "python": platform.python_version(),
        "numpy": _version("numpy"),
        "pillow": _version("pillow"),
    }


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


if __name__ == "__main__":
    main()
