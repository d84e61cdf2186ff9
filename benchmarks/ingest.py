"""Cohort ingestion at scale (issue 22 findings 4 and 5): rows/s on a huge manifest, and peak
memory for N vs 4N large images.

    python benchmarks/ingest.py scale [--rows 200000] [--valid 20] [--unreadable 0.1]
    python benchmarks/ingest.py memory [--images 2] [--side 5000]

`scale` writes, in a temporary folder, a manifest whose rows point mostly at missing files, a
share at unreadable ones (bytes that are no image) and a few valid images, then runs the
domain side of the `ingest_cohort` node (`ingest.ingest_images`: discovery, checks,
pseudonyms, quarantine report, linkage) and prints rows/s.

`memory` writes N and 4N valid images of `side` x `side` pixels and, each in a fresh process,
ingests them with `min_tissue_fraction: 0` and saves images and pseudo-masks through the
catalog's dataset (`PartitionedDataset` of `pillow.ImageDataset`), printing the peak RSS above
the process's RSS before ingestion. The target: the same for N and 4N.
Nothing is written outside the temporary folder.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from kedro_datasets.partitions import PartitionedDataset
from PIL import Image

from ssc_skin.cohort import ingest

ALLOWED = ["normal", "early", "late"]


def _tissue(side: int, seed: int) -> np.ndarray:
    """A pink section on white glass: valid, with tissue."""
    rng = np.random.default_rng(seed)
    image = np.full((side, side, 3), 242, np.uint8)
    margin = side // 8
    image[margin:-margin, margin:-margin] = (200 - seed % 40, 90 + seed % 30, 160)
    noise = rng.integers(0, 6, (64, 64, 3), dtype=np.uint8)
    tiled = np.tile(noise, (side // 64 + 1, side // 64 + 1, 1))[:side, :side]
    return image + tiled


def write_manifest(folder: Path, rows: int, valid: int, unreadable: float) -> Path:
    """A manifest of `rows` rows: `valid` real images, a share of unreadable files, the
    rest missing. Patient ids are shaped like real ones (PAT_000042)."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    garbage = max(1, int(rows * unreadable))
    lines = ["image_path,patient_id,label"]
    for i in range(rows):
        name = f"images/PAT_{i // 3:06d}_slide{i % 3}.png"
        if i < valid:
            Image.fromarray(_tissue(96, i)).save(folder / name)
        elif i < valid + garbage:
            (folder / name).write_bytes(b"not an image " * 4)
        lines.append(f"{name},PAT_{i // 3:06d},{ALLOWED[(i // 3) % 3]}")
    manifest = folder / "manifest.csv"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


def _cohort(source: dict, min_tissue_fraction: float) -> dict:
    return {
        "source": source,
        "checks": {"min_tissue_fraction": min_tissue_fraction, "allowed_labels": ALLOWED},
        "masks": "auto",
    }


def run_scale(rows: int, valid: int, unreadable: float) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        manifest = write_manifest(Path(tmp), rows, valid, unreadable)
        built = time.perf_counter() - start
        cohort = _cohort({"layout": "manifest", "manifest": str(manifest)}, 0.05)
        start, cpu = time.perf_counter(), time.process_time()
        result = ingest.ingest_images(cohort, min_side=64, min_saturation=12, key="bench")
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    return {
        "rows": rows,
        "valid": len(result.manifest),
        "quarantined": len(result.report),
        "seconds": round(seconds, 1),
        "rows_per_s": round(rows / seconds),
        "cpu_seconds": round(cpu, 1),  # this process only: the wall time includes others' load
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "build_seconds": round(built, 1),
        "workers": ingest.default_workers(),
    }


def _rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def measure_memory(root: Path, out: Path) -> dict:
    """In this process: ingest `root` (a folder cohort) and save images and masks."""
    before = _rss_mb()
    start = time.perf_counter()
    cohort = _cohort({"layout": "folder", "root": str(root)}, 0.0)
    result = ingest.ingest_images(cohort, min_side=64, min_saturation=12, key="bench")
    checked = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    for name, data in (("images", result.images), ("masks", result.masks)):
        PartitionedDataset(
            path=str(out / name),
            dataset="pillow.ImageDataset",
            filename_suffix=".png",
            overwrite=True,
        ).save(data)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "images": len(result.manifest),
        "rss_before_mb": round(before),
        "peak_checks_above_mb": round(checked - before),
        "peak_above_mb": round(peak - before),
        "seconds": round(time.perf_counter() - start, 1),
    }


def run_memory(images: int, side: int) -> list[dict]:
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for count in (images, 4 * images):
            root = Path(tmp) / f"cohort{count}"
            for i in range(count):
                path = root / ALLOWED[i % 2] / f"P{i:04d}_a.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(_tissue(side, i)).save(path, compress_level=1)
            done = subprocess.run(
                [sys.executable, __file__, "_measure", str(root), str(Path(tmp) / f"out{count}")],
                capture_output=True,
                text=True,
                check=True,
            )
            result = json.loads(done.stdout.strip().splitlines()[-1])
            results.append({"side": side, **result})
            print(json.dumps(results[-1]), flush=True)  # noqa: T201
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    scale = sub.add_parser("scale")
    scale.add_argument("--rows", type=int, default=200_000)
    scale.add_argument("--valid", type=int, default=20)
    scale.add_argument("--unreadable", type=float, default=0.1)
    memory = sub.add_parser("memory")
    memory.add_argument("--images", type=int, default=2)
    memory.add_argument("--side", type=int, default=5000)
    measure = sub.add_parser("_measure")
    measure.add_argument("root")
    measure.add_argument("out")
    args = parser.parse_args()
    if args.command == "scale":
        print(json.dumps(run_scale(args.rows, args.valid, args.unreadable)))  # noqa: T201
    elif args.command == "memory":
        run_memory(args.images, args.side)
    else:
        print(json.dumps(measure_memory(Path(args.root), Path(args.out))))  # noqa: T201


if __name__ == "__main__":
    main()
